"""Ensembles: M member models whose event probabilities are averaged.

`model.ensemble.members` lists the members as model-field overrides, one
string each ("encoder=s5", "family=diffusion, depth=1", "" for the config's
own model); `model.ensemble.seeds` repeats each of them with that many
different initialisations (members x seeds models; with no members listed,
seeds copies of the config's model). The ensemble is the equal-weight
mixture

    P(event) = (1/M) sum_m P_m(event),   NLL = -log mean_m exp(-NLL_m),

computed with logsumexp over the members' own NLLs (exact when every member's
is exact; when one is a bound, -log mean exp(-bound_m) bounds the mixture's
NLL from above, so the ensemble reports "bound"). Samples come from the
mixture: each draw picks a member uniformly, then samples it. Its scores are
log P(item first) under the mixture.

Training fits the members side by side in one step: the objective is the
mean of their own losses, so each member learns as it would alone (its
gradient scaled by 1/M, which Adam undoes), not the mixture likelihood,
which lets one member take over. They see the same batches; their
initialisations and dropout noise differ (Flax derives each member's keys
from its name). Gradient clipping (`optimizer.clip_norm`) acts on the global
norm over all members.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from scipy.special import logsumexp

from luce.errors import ConfigError
from luce.models import inclusion_counts

_SEPARATOR = "/"


def parse_member(spec: str, model_config) -> dict:
  """{field: value} of one member spec "field=value, field=value" over `model_config`'s fields.

  Values are read as the field's type (int, float, bool or str); ensemble
  fields cannot be set per member.
  """
  out = {}
  for part in (p.strip() for p in str(spec).split(",")):
    if not part:
      continue
    if "=" not in part:
      raise ConfigError(f"model.ensemble.members entry {spec!r}: {part!r} is not field=value "
                        f"(e.g. 'encoder=s5, depth=1').")
    name, value = (s.strip() for s in part.split("=", 1))
    if name == "ensemble" or name.startswith("ensemble."):
      raise ConfigError(f"model.ensemble.members entry {spec!r}: a member cannot set {name!r}.")
    if name not in model_config:
      import difflib
      close = difflib.get_close_matches(name, list(model_config), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"model.ensemble.members entry {spec!r}: model.{name} does not exist.{hint}")
    default = model_config[name]
    try:
      if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
          raise ValueError("not true or false")
        parsed = value.lower() == "true"
      elif isinstance(default, int):
        parsed = int(value)
      elif isinstance(default, float):
        parsed = float(value)
      else:
        parsed = value.strip("'\"")
    except ValueError as e:
      raise ConfigError(f"model.ensemble.members entry {spec!r}: model.{name}={value!r} is not a "
                        f"{type(default).__name__} ({e}).") from None
    out[name] = parsed
  return out


def member_model_configs(model_config) -> list:
  """The model section of each member (members x seeds of them); [] when it is no ensemble."""
  e = model_config.ensemble
  specs = list(e.members) or ([""] if e.seeds > 1 else [])
  out = []
  for spec in specs:
    overrides = parse_member(spec, model_config)
    for _ in range(e.seeds):
      member = copy.deepcopy(model_config)
      member.unlock()
      for name, value in overrides.items():
        member[name] = value
      member.ensemble.members, member.ensemble.seeds = (), 1
      out.append(member)
  return out


class EnsembleModel(nn.Module):
  """The members' Flax modules side by side: a tuple of their outputs, member m
  reading the keys of the batch prefixed "m/" (its own layout)."""
  members: Sequence[nn.Module]

  @nn.compact
  def __call__(self, batch, *, deterministic: bool = True):
    return tuple(member(_member_batch(batch, m), deterministic=deterministic)
                 for m, member in enumerate(self.members))


def _member_batch(batch: dict, m: int) -> dict:
  prefix = f"{m}{_SEPARATOR}"
  return {key[len(prefix):]: value for key, value in batch.items() if key.startswith(prefix)}


def _member_params(params: dict, m: int) -> dict:
  return params[f"members_{m}"]


class EnsembleFamily:
  """The family object of an ensemble (see `luce.models.PLFamily` for the interface)."""
  name = "ensemble"
  scores_meaning = "log P(item ranked or picked first) under the equal-weight mixture of the members"

  def __init__(self, members: Sequence, *, n_items: int, kind: str, k: int):
    if len(members) < 2:
      raise ConfigError("an ensemble needs at least 2 members (model.ensemble.members x seeds).")
    self.members, self.n_items, self.kind, self.k = list(members), n_items, kind, k
    self.nll_kind = "exact" if all(m.nll_kind == "exact" for m in self.members) else "bound"
    self.model = EnsembleModel(tuple(m.model for m in self.members))

  def take(self, arrays: dict, rows) -> dict:
    """Each member's batch under its index prefix, plus the events' weights (the step reads them)."""
    out = {"weights": arrays["weights"][np.asarray(rows)]}
    for m, member in enumerate(self.members):
      for key, value in member.take(arrays, rows).items():
        out[f"{m}{_SEPARATOR}{key}"] = value
    return out

  def loss(self, outputs, batch):
    """float32[B]: the mean of the members' own losses."""
    losses = [member.loss(out, _member_batch(batch, m))
              for m, (member, out) in enumerate(zip(self.members, outputs))]
    return sum(losses) / len(losses)

  def member_nll(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    """float64[M, m]: each member's own per-event NLL."""
    return np.stack([member.nll(_member_params(params, m), arrays, batch_size)
                     for m, member in enumerate(self.members)])

  def nll(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    """float64[m]: -log mean_m exp(-NLL_m), by logsumexp (inf only when every member's is)."""
    return mixture_nll(self.member_nll(params, arrays, batch_size))

  def scores(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    """float32[m, n]: log of the mixture's P(item first); -inf for unavailable items."""
    logs = []
    for m, member in enumerate(self.members):
      s = np.asarray(member.scores(_member_params(params, m), arrays, batch_size), np.float64)
      s = np.where(np.asarray(arrays["available"]), s, -np.inf)
      logs.append(s - logsumexp(s, axis=1, keepdims=True))
    out = logsumexp(np.stack(logs), axis=0) - math.log(len(logs))
    return out.astype(np.float32)

  def sample(self, params, arrays, key, samples: int, k: int, batch_size: int | None = None) -> np.ndarray:
    """int32[m, samples, k]: draws from the mixture (member chosen uniformly per draw)."""
    m = len(arrays["items"])
    pick_key, *keys = jax.random.split(key, len(self.members) + 1)
    pick = np.asarray(jax.random.randint(pick_key, (m, samples), 0, len(self.members)))
    out = np.full((m, samples, k), -1, np.int32)
    for j, member in enumerate(self.members):
      need = int((pick == j).sum(axis=1).max(initial=0))
      if need == 0:
        continue
      extra = {} if batch_size is None else {"batch_size": batch_size}
      drawn = np.asarray(member.sample(_member_params(params, j), arrays, keys[j], need, k, **extra))
      # The r-th draw of member j for an event fills that event's r-th slot picking j.
      rank = np.cumsum(pick == j, axis=1) - 1
      rows, cols = np.nonzero(pick == j)
      out[rows, cols] = drawn[rows, rank[rows, cols]]
    return out

  def inclusion(self, params, arrays, key, draws: int, k: int, batch_size: int | None = None) -> np.ndarray:
    return inclusion_counts(self.sample(params, arrays, key, draws, k, batch_size), self.n_items)


def mixture_nll(member_nll: np.ndarray) -> np.ndarray:
  """float64[m]: -log((1/M) sum_m exp(-nll[m])) over axis 0 of float[M, m], stably."""
  member_nll = np.asarray(member_nll, np.float64)
  return -(logsumexp(-member_nll, axis=0) - math.log(member_nll.shape[0]))
