"""Events drawn from a known context-dependent Plackett-Luce model (`synthetic:`).

The generating model scores item i at event t as

    s_{t,i} = θ_i + α · in_last_1_{t,i} + γ · rank_last_1_{t,i}

with θ_i ~ N(0, item_spread²), in_last_1 = 1 if i was in event t-1 and
rank_last_1 = (k - position)/k its rank score there (the `luce.data`
features of the same names), and draws each event's top-k list from PL(s_t)
(Gumbel-top-k). A model that reads those features can match it exactly, so the
generating model's NLL (the `oracle`) is the floor a trained model approaches.

The generating scores travel with the table as the context column
`ctx_oracle_scores` (fixed-size list<float32>[n] per event), so they survive
`luce.data.write` / `read_parquet`, are covered by the content hash, and
`oracle_scores(table)` finds them again for any table that has them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa

from luce.data._readers import Loaded
from luce.data._source import integer, number
from luce.data._table import CONTEXT_PREFIX, EventTable
from luce.data._validate import Provenance
from luce.errors import ConfigError, DataError

ORACLE_COLUMN = CONTEXT_PREFIX + "oracle_scores"
SYNTHETIC_KINDS = ("ranking", "set")
# Option -> (type, default) of `synthetic:KIND?...`; the same names as synthetic_pl's arguments.
SYNTHETIC_OPTIONS: dict[str, tuple[type, int | float]] = {
    "n_items": (int, 20),
    "k": (int, 5),
    "n_events": (int, 4000),
    "item_spread": (float, 1.0),
    "momentum": (float, 1.0),
    "rank_momentum": (float, 1.0),
    "seed": (int, 0),
}


@dataclasses.dataclass(frozen=True)
class SyntheticPL:
  """A drawn data set and the scores that generated it.

  Attributes:
    table: EventTable of m events (times 0..m-1), kind "ranking" or "set",
      with the scores in its `ctx_oracle_scores` column.
    scores: float32[m, n] the generating scores of every event (the oracle),
      equal to `oracle_scores(table)`.
  """
  table: EventTable
  scores: np.ndarray


def _check_number(name: str, value, *, lo: float | None = None, integral: bool = False) -> None:
  if integral:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok:
      raise ConfigError(f"synthetic data: {name}={value!r} must be an integer.")
  else:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)):
      raise ConfigError(f"synthetic data: {name}={value!r} must be a finite number.")
  if lo is not None and value < lo:
    raise ConfigError(f"synthetic data: {name}={value!r} must be at least {lo}.")


def synthetic_pl(*, n_items: int = 20, k: int = 5, n_events: int = 4000, kind: str = "ranking",
                 item_spread: float = 1.0, momentum: float = 1.0, rank_momentum: float = 1.0,
                 seed: int = 0) -> SyntheticPL:
  """Draw `n_events` top-k events over `n_items` items (see the module docstring).

  Also reachable as a source string: `luce.data.read("synthetic:ranking?n_items=20&k=5")`.

  Args:
    n_items, k: n and k (1 <= k <= n).
    n_events: m (at least 1).
    kind: "ranking" (ordered top-k lists) or "set" (the same draws, order dropped).
    item_spread: standard deviation of the static strengths θ (>= 0).
    momentum: α, the score bonus of being in the previous event.
    rank_momentum: γ, the extra bonus per unit of previous rank score
      (rankings only; sets carry no rank).
    seed: the draw's seed (>= 0); the same arguments give the same table.

  Raises:
    ConfigError naming the argument for a bad value.
  """
  _check_number("n_items", n_items, lo=1, integral=True)
  _check_number("k", k, lo=1, integral=True)
  _check_number("n_events", n_events, lo=1, integral=True)
  _check_number("seed", seed, lo=0, integral=True)
  _check_number("item_spread", item_spread, lo=0.0)
  _check_number("momentum", momentum)
  _check_number("rank_momentum", rank_momentum)
  if not 1 <= k <= n_items:
    raise ConfigError(f"synthetic data: k={k} must be between 1 and n_items={n_items}.")
  if kind not in SYNTHETIC_KINDS:
    raise ConfigError(f"synthetic data: kind={kind!r}; valid: {', '.join(SYNTHETIC_KINDS)}.")
  rng = np.random.default_rng(seed)
  theta = rng.normal(0.0, item_spread, n_items)
  gamma = rank_momentum if kind == "ranking" else 0.0
  items = np.empty((n_events, k), np.int32)
  scores = np.empty((n_events, n_items), np.float32)
  last_in = np.zeros(n_items)
  last_rank = np.zeros(n_items)
  for t in range(n_events):
    s = theta + momentum * last_in + gamma * last_rank
    scores[t] = s
    picks = np.argsort(-(s + rng.gumbel(size=n_items)))[:k]
    items[t] = picks
    last_in = np.zeros(n_items)
    last_in[picks] = 1.0
    last_rank = np.zeros(n_items)
    last_rank[picks] = (k - np.arange(k)) / k
  table = EventTable.from_arrays(items, catalog=n_items, kind=kind,
                                 metadata={"source": "synthetic", "k": str(k)})
  column = pa.FixedSizeListArray.from_arrays(pa.array(scores.reshape(-1), pa.float32()), n_items)
  table = EventTable(table.events.append_column(ORACLE_COLUMN, column), table.catalog,
                     dict(table.metadata))
  return SyntheticPL(table, scores)


def oracle_scores(table: EventTable) -> np.ndarray | None:
  """The generating scores stored with a table, or None when it has none.

  Args:
    table: an EventTable; synthetic ones (`synthetic:` sources, `synthetic_pl`,
      or such a table written and read back) carry `ctx_oracle_scores`.

  Returns:
    float32[m, n]: row t is the score of every item at event t under the model
    that drew the events (its PL NLL is the `oracle` row of the reports); None
    when the table has no `ctx_oracle_scores` column.

  Raises:
    DataError when the column is there but is not one list of n numbers per event.
  """
  if ORACLE_COLUMN not in table.events.column_names:
    return None
  column = table.events.column(ORACLE_COLUMN)
  column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
  m, n = table.n_events, table.n_items
  t = column.type
  if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
      or not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
    raise DataError(f"column {ORACLE_COLUMN!r} has type {t}; it must hold one list of "
                    f"{n} float32 scores per event (as synthetic_pl writes it).")
  if column.null_count:
    raise DataError(f"column {ORACLE_COLUMN!r} has {column.null_count} null events; every "
                    f"event needs its {n} generating scores.")
  if pa.types.is_fixed_size_list(t):
    lengths = np.full(m, t.list_size)
  else:
    lengths = np.diff(np.asarray(column.offsets, dtype=np.int64))
  if len(lengths) and not (lengths == n).all():
    bad = int(np.flatnonzero(lengths != n)[0])
    raise DataError(f"column {ORACLE_COLUMN!r}: event {bad} has {int(lengths[bad])} scores, the "
                    f"catalog has {n} items; write one score per item.")
  values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
  return values.reshape(m, n)


def read_synthetic(path: str, opts: dict, source: str) -> Loaded:
  """`synthetic:KIND?option=value&...` -> a `_readers.Loaded` of synthetic_pl's draw."""
  kind = path.strip().lower() or "ranking"
  if kind not in SYNTHETIC_KINDS:
    raise ConfigError(f"data source {source!r}: synthetic:{path} names kind {path!r}; write "
                      f"synthetic:ranking, synthetic:set (or synthetic: for ranking).")
  args = {}
  for name, (kind_of, default) in SYNTHETIC_OPTIONS.items():
    if name not in opts:
      args[name] = default
    elif kind_of is int:
      args[name] = integer(opts[name], name)
    else:
      args[name] = number(opts[name], name)
  drawn = synthetic_pl(kind=kind, **args)
  return Loaded(drawn.table, Provenance(file=source), args["k"], [])

