"""Checking a training config: known fields only, sane values, compatible resumes."""

from __future__ import annotations

import difflib
import json

import ml_collections

from luce.configs.common import RESUMABLE_CHANGES, base_config
from luce.errors import ConfigError
from luce.models import ENCODERS


def flatten(config, prefix: str = "") -> dict:
  """{"train.batch_size": 128, ...} from a (nested) ConfigDict or dict; tuples as lists."""
  out = {}
  items = config.items() if hasattr(config, "items") else []
  for key, value in items:
    name = f"{prefix}{key}"
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, name + "."))
    else:
      out[name] = list(value) if isinstance(value, tuple) else value
  return out


def checked_config(config) -> ml_collections.ConfigDict:
  """`config` laid over `base_config()`, locked, its values checked.

  Accepts a ConfigDict or a nested dict naming any subset of the fields (the
  rest keep their defaults). Unknown fields raise ConfigError naming the
  closest known one.
  """
  base = base_config()
  known = flatten(base)
  for name, value in flatten(config).items():
    if name not in known:
      close = difflib.get_close_matches(name, list(known), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"config field {name!r} does not exist.{hint} Fields are listed in "
                        f"configs/common.py.")
    *path, leaf = name.split(".")
    node = base
    for part in path:
      node = node[part]
    try:
      node[leaf] = tuple(value) if isinstance(known[name], list) else value
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config field {name!r}={value!r}: {e}") from None
  _check_values(base)
  base.lock()
  return base


def _check_values(c) -> None:
  def need(ok, message):
    if not ok:
      raise ConfigError(message)
  need(c.model.encoder in ENCODERS, f"model.encoder={c.model.encoder!r}; valid: {', '.join(ENCODERS)}.")
  for name in ("hidden", "heads"):
    need(c.model[name] >= 1, f"model.{name}={c.model[name]} must be >= 1.")
  need(c.model.hidden % c.model.heads == 0,
       f"model.hidden={c.model.hidden} must be a multiple of model.heads={c.model.heads}.")
  need(0 <= c.model.dropout < 1, f"model.dropout={c.model.dropout} must be in [0, 1).")
  for name in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every",
               "max_to_keep", "eval_batch_size"):
    need(c.train[name] >= 1, f"train.{name}={c.train[name]} must be >= 1.")
  need(c.train.patience >= 0, f"train.patience={c.train.patience} must be >= 0 (0: no early stop).")
  need(c.optimizer.learning_rate > 0, f"optimizer.learning_rate={c.optimizer.learning_rate} must be > 0.")
  need(c.optimizer.schedule in ("cosine", "constant"),
       f"optimizer.schedule={c.optimizer.schedule!r}; valid: cosine, constant.")
  need(c.data.eval_k >= 1, f"data.eval_k={c.data.eval_k} must be >= 1.")
  from luce.baselines import NAMES
  for name in c.baselines.names:
    need(name in NAMES, f"baselines.names has {name!r}; valid: {', '.join(NAMES)}.")


def config_json(config) -> str:
  return json.dumps(flatten(config), sort_keys=True)


def incompatible_changes(saved: dict, current: dict) -> list[str]:
  """Fields (outside RESUMABLE_CHANGES) whose values differ, as 'name: old -> new'.

  `train.num_steps` may change (train longer) when both use the constant
  schedule; the cosine schedule's shape depends on it.
  """
  out = []
  constant = saved.get("optimizer.schedule") == current.get("optimizer.schedule") == "constant"
  for name in sorted(set(saved) | set(current)):
    if name in RESUMABLE_CHANGES or (constant and name == "train.num_steps"):
      continue
    if saved.get(name) != current.get(name):
      out.append(f"{name}: {saved.get(name)!r} -> {current.get(name)!r}")
  return out
