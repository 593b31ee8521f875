"""Search spaces (luce-tune): `field=distribution` entries of `config.tune.space`, parsed
and checked against the schema (here, beside it, so `checked_config` checks a space).

    optimizer.learning_rate=loguniform(1e-4, 1e-2)
    model.dropout=uniform(0.0, 0.5)
    model.hidden=int(32, 128, 32)          # low, high, step
    train.batch_size=logint(16, 256)
    model.encoder=categorical(mlp, transformer)

Every entry names a field of `luce.train.base_config()`; a value of the wrong
type for that field, an empty range or a log range reaching 0 is a ConfigError
naming the field, raised before any trial runs.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import re

import numpy as np

from luce.errors import ConfigError

KINDS = ("uniform", "loguniform", "int", "logint", "categorical")
# Fields population training may vary between its members (one jitted step
# with the members' parameters and optimizer states stacked under vmap).
POPULATION_FIELDS = ("optimizer.learning_rate", "optimizer.weight_decay", "model.dropout", "seed")

_ENTRY = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([a-z]+)\s*\((.*)\)\s*$", re.S)


@dataclasses.dataclass(frozen=True)
class Param:
  """One searched field: `kind` in KINDS; `low`/`high`/`step` for ranges, `choices`
  for categorical."""
  field: str
  kind: str
  low: float | int | None = None
  high: float | int | None = None
  step: int | None = None
  choices: tuple = ()

  def distribution(self):
    """The optuna distribution of this parameter."""
    import optuna
    d = optuna.distributions
    if self.kind == "uniform":
      return d.FloatDistribution(self.low, self.high)
    if self.kind == "loguniform":
      return d.FloatDistribution(self.low, self.high, log=True)
    if self.kind == "int":
      return d.IntDistribution(self.low, self.high, step=self.step or 1)
    if self.kind == "logint":
      return d.IntDistribution(self.low, self.high, log=True)
    return d.CategoricalDistribution(list(self.choices))

  def grid(self, points: int) -> list:
    """The values a grid search tries: every int or choice; `points` evenly
    spaced values (geometrically for log ranges) of a continuous range."""
    if self.kind == "categorical":
      return list(self.choices)
    if self.kind == "int":
      return list(range(self.low, self.high + 1, self.step or 1))
    if self.kind == "logint":
      values = np.geomspace(self.low, self.high, min(points, self.high - self.low + 1))
      return sorted({int(round(v)) for v in values})
    if self.kind == "loguniform":
      return [float(v) for v in np.geomspace(self.low, self.high, points)]
    return [float(v) for v in np.linspace(self.low, self.high, points)]

  def describe(self) -> str:
    if self.kind == "categorical":
      return f"{self.field}=categorical({', '.join(map(repr, self.choices))})"
    step = f", {self.step}" if self.step else ""
    return f"{self.field}={self.kind}({self.low!r}, {self.high!r}{step})"


def _value(token: str):
  token = token.strip()
  try:
    return ast.literal_eval(token)
  except (ValueError, SyntaxError):
    return token  # a bare word: categorical(mlp, transformer)


def _split_args(text: str) -> list[str]:
  """Top-level comma-separated arguments (commas inside quotes or brackets stay)."""
  out, depth, quote, current = [], 0, None, []
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      out.append("".join(current))
      current = []
      continue
    current.append(ch)
  if "".join(current).strip():
    out.append("".join(current))
  return out


def _entries(space) -> list[str]:
  if isinstance(space, str):
    space = [space]
  out = []
  for item in space:
    if not isinstance(item, str):
      raise ConfigError(f"tune.space entry {item!r} is not a 'field=distribution(...)' string.")
    out.extend(part for part in item.split(";") if part.strip())
  return out


def parse_space(space, *, population: bool = False) -> list[Param]:
  """The checked parameters of a search space (`config.tune.space`: a tuple of
  entries, or one string of entries separated by ';').

  Raises ConfigError naming the field for an unknown field, a distribution
  luce does not know, an empty range, a log range with low <= 0, a categorical
  value of the wrong type for the field, a field given twice, or (with
  `population`) a field population training cannot vary.
  """
  from luce.train._config import base_config, flatten
  known = flatten(base_config())
  params, seen = [], set()
  for entry in _entries(space):
    match = _ENTRY.match(entry)
    if match is None:
      raise ConfigError(f"tune.space entry {entry.strip()!r}: write 'field=distribution(args)', e.g. "
                        f"'optimizer.learning_rate=loguniform(1e-4, 1e-2)'; distributions: "
                        f"{', '.join(KINDS)}.")
    field, kind, body = match.group(1), match.group(2), match.group(3)
    where = f"tune.space: {field}"
    if field not in known:
      close = difflib.get_close_matches(field, list(known), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"{where}: no such config field.{hint} The fields are listed in "
                        f"luce.train.base_config().")
    if field.startswith("tune."):
      raise ConfigError(f"{where}: the tune section itself cannot be searched.")
    if field in seen:
      raise ConfigError(f"{where}: the field is given twice.")
    seen.add(field)
    if kind not in KINDS:
      raise ConfigError(f"{where}: unknown distribution {kind!r}; valid: {', '.join(KINDS)}.")
    args = [_value(a) for a in _split_args(body)]
    params.append(_check(field, kind, args, known[field], where))
  if population:
    for p in params:
      if p.field not in POPULATION_FIELDS:
        raise ConfigError(f"tune.space: {p.field}: population training (tune.population > 1) "
                          f"trains its members in one vmapped step, so they may differ only in "
                          f"{', '.join(POPULATION_FIELDS)}; search {p.field} with "
                          f"tune.population=1.")
  return params


def _type_name(value) -> str:
  return type(value).__name__


def _fits(value, default) -> bool:
  """Whether `value` may be assigned to a field whose default is `default`."""
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(default, str):
    return isinstance(value, str)
  return default is None or value is None or isinstance(value, type(default))


def _check(field: str, kind: str, args: list, default, where: str) -> Param:
  if isinstance(default, list):
    raise ConfigError(f"{where}: a list field (default {tuple(default)!r}) cannot be searched "
                      f"(Optuna stores numbers, strings and booleans); search a scalar field.")
  if kind == "categorical":
    if not args:
      raise ConfigError(f"{where}: categorical() needs at least one value.")
    for value in args:
      if not _fits(value, default):
        raise ConfigError(f"{where}: categorical value {value!r} is a {_type_name(value)}, but the "
                          f"field holds a {_type_name(default)} (default {default!r}).")
    choices = tuple(args)
    if len(set(map(repr, choices))) != len(choices):
      raise ConfigError(f"{where}: categorical values repeat: {choices}.")
    return Param(field, kind, choices=choices)

  integer = kind in ("int", "logint")
  wanted = 3 if kind == "int" else 2
  if not (2 <= len(args) <= wanted):
    form = "int(low, high[, step])" if kind == "int" else f"{kind}(low, high)"
    raise ConfigError(f"{where}: {kind} takes {form}, got {len(args)} argument(s).")
  for value in args:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise ConfigError(f"{where}: {kind} bounds must be finite numbers, got {value!r}.")
    if integer and not float(value).is_integer():
      raise ConfigError(f"{where}: {kind} bounds must be integers, got {value!r}.")
  if isinstance(default, bool) or not isinstance(default, (int, float)):
    raise ConfigError(f"{where}: a numeric range for a {_type_name(default)} field (default "
                      f"{default!r}); use categorical(...).")
  if isinstance(default, int) and not integer:
    raise ConfigError(f"{where}: the field holds an int (default {default!r}); use int(...) or "
                      f"logint(...), not {kind}.")
  low, high = args[0], args[1]
  if integer:
    low, high = int(low), int(high)
  else:
    low, high = float(low), float(high)
  if not low < high:
    raise ConfigError(f"{where}: the range [{low!r}, {high!r}] is empty (need low < high).")
  if kind in ("loguniform", "logint") and low <= 0:
    raise ConfigError(f"{where}: a log range needs low > 0, got low={low!r}.")
  step = None
  if kind == "int" and len(args) == 3:
    step = int(args[2])
    if step < 1 or not float(args[2]).is_integer():
      raise ConfigError(f"{where}: int step must be a positive integer, got {args[2]!r}.")
    if (high - low) % step:
      raise ConfigError(f"{where}: int({low}, {high}, {step}): high - low must be a multiple of "
                        f"the step.")
  return Param(field, kind, low, high, step)


def apply_params(config, values: dict):
  """A checked copy of `config` with `values` (field -> value) set."""
  import ml_collections
  from luce.train._config import checked_config
  c = ml_collections.ConfigDict(config.to_dict())
  for field, value in values.items():
    *path, leaf = field.split(".")
    node = c
    for part in path:
      node = node[part]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return checked_config(c)
