"""Leak-free features of an event table, built for all events at once.

For event t every feature comes from events 0..t-1 only (plus the event's own
time and its list of available items, which are known before it happens).
`check_no_lookahead` proves it for any feature function: it rewrites the events
from t on and checks that rows 0..t did not change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Callable

import numpy as np

from luce.data._table import EventTable, list_column
from luce.errors import ConfigError, DataError

FEATURES_VERSION = 2


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  """Which features to build.

  Attributes:
    last: L, the number of previous events whose inclusion (and, for rankings,
      rank score) each item gets as a feature.
    horizons: counts of each item over the last h events, divided by h (the
      item's recent rate), one feature per h.
    since_last: log(1 + events since the item was last picked); never picked
      counts as picked just before the first event.
    ranks: add the rank scores of the last L events (None: when the table holds
      rankings).
    calendar: per-event time features (weekday, season, gap to the previous event).
    static: per-item features from the catalog (group one-hot, catalog features).
    covariates: per-event item covariates (`cov_*` columns: what is known about
      each available item before the event, e.g. an F1 driver's grid slot and
      team). A numeric covariate X gives `cov_X` (its value; luce.train
      standardises it with training-window statistics) and `covz_X` (its
      z-score across the event's available items). A categorical covariate
      (a team) gives group history: `grp_X_rate_h`, the mean outcome score of
      the item's group over its entries in the last h events (rank score for
      rankings, inclusion for sets), and `grp_X_new`, 1 when the group has no
      entry in the last max(h) events (an unseen or returning level).
    group_horizons: the h of the group-history features.
    dtype: storage dtype of the feature arrays, "float32" or "float16".
  """
  last: int = 4
  horizons: tuple[int, ...] = (10, 50, 200)
  since_last: bool = True
  ranks: bool | None = None
  calendar: bool = True
  static: bool = True
  covariates: bool = True
  group_horizons: tuple[int, ...] = (5, 20)
  dtype: str = "float32"

  def __post_init__(self):
    if self.last < 0 or any(h < 1 for h in self.horizons):
      raise ConfigError(f"FeatureConfig: last={self.last} must be >= 0 and horizons="
                        f"{self.horizons} >= 1.")
    if any(h < 1 for h in self.group_horizons):
      raise ConfigError(f"FeatureConfig: group_horizons={self.group_horizons} must be >= 1.")
    if self.dtype not in ("float32", "float16"):
      raise ConfigError(f"FeatureConfig.dtype={self.dtype!r}; valid: float32, float16.")

  def key(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Features:
  """Features of m events over n items.

  Attributes:
    item: [m, n, f] per event and item (history), dtype from the config.
    item_names: f names, e.g. `in_last_1`, `rate_50`, `since_last`.
    event: float32[m, g] per event (calendar).
    event_names: g names.
    static: float32[n, s] per item (catalog).
    static_names: s names.
    available: bool[m, n] items that could be picked in each event.
  """
  item: np.ndarray
  item_names: tuple[str, ...]
  event: np.ndarray
  event_names: tuple[str, ...]
  static: np.ndarray
  static_names: tuple[str, ...]
  available: np.ndarray

  def __len__(self) -> int:
    return self.item.shape[0]

  def slice(self, start: int, stop: int) -> "Features":
    return dataclasses.replace(self, item=self.item[start:stop], event=self.event[start:stop],
                               available=self.available[start:stop])


def _lagged(x: np.ndarray, lag: int) -> np.ndarray:
  """x shifted down by `lag` rows (row t holds row t - lag), zeros on top."""
  out = np.zeros_like(x)
  if lag < len(x):
    out[lag:] = x[:len(x) - lag]
  return out


def rank_scores(table: EventTable) -> np.ndarray:
  """float32[m, n]: (len - position) / len for listed items (1 for the first), else 0."""
  values, offsets = table.items_flat()
  lengths = np.diff(offsets)
  m = len(lengths)
  event_of = np.repeat(np.arange(m), lengths)
  position = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
  scores = np.zeros((m, table.n_items), dtype=np.float32)
  scores[event_of, values] = (lengths[event_of] - position) / lengths[event_of]
  return scores


_BLOCK = 4096  # events per block: a block's features stay in cache while they are written


def item_history(table: EventTable, config: FeatureConfig) -> tuple[np.ndarray, tuple[str, ...]]:
  """[m, n, f] per-item history features from events before each event.

  Built in blocks of events with carried state (running counts, last pick), as
  numpy's accumulations along the event axis of an [m, n] array are slow.
  """
  out, names, _ = _item_history(table, config)
  return out, names


def _item_history(table: EventTable, config: FeatureConfig, last_pick: np.ndarray | None = None
                  ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
  """`item_history` of `table`, the items' last picks carried in and out.

  `last_pick`: int32[n], the index (relative to the table's first event) of
  each item's last pick before the first event; -1 (the default) is "never
  picked". Returns the features, their names and the last picks before the
  event after the last one. `luce.data.build_store` builds a long table in
  chunks this way: rows whose windows reach before the chunk are read again
  from the events before it, and only the last picks are carried.
  """
  inc = table.inclusion_matrix()                                   # bool[m, n]
  m, n = inc.shape
  ranks = config.ranks if config.ranks is not None else table.kind != "set"
  scores = rank_scores(table) if ranks else None
  names = [f"in_last_{lag}" for lag in range(1, config.last + 1)]
  if ranks:
    names += [f"rank_last_{lag}" for lag in range(1, config.last + 1)]
  names += [f"rate_{h}" for h in config.horizons]
  if config.since_last:
    names.append("since_last")
  out = np.empty((m, n, len(names)), dtype=np.dtype(config.dtype))
  # counts[t] = number of events < t that picked the item.
  counts = np.zeros((m + 1, n), dtype=np.int32) if config.horizons else None
  last_pick = (np.full(n, -1, dtype=np.int32) if last_pick is None    # carried across blocks
               else np.asarray(last_pick, np.int32).copy())
  for s in range(0, m, _BLOCK):
    e = min(s + _BLOCK, m)
    block = out[s:e]
    if counts is not None:
      np.cumsum(inc[s:e], axis=0, dtype=np.int32, out=counts[s + 1:e + 1])
      counts[s + 1:e + 1] += counts[s]
    f = 0
    for source in ([inc, scores] if ranks else [inc]):
      for lag in range(1, config.last + 1):
        lo = max(s - lag, 0)                                       # rows t - lag for t in [s, e)
        zeros = min(lo - (s - lag), e - s)                          # rows with no event lag back
        block[:zeros, :, f] = 0
        block[zeros:, :, f] = source[lo:max(e - lag, lo)]
        f += 1
    t = np.arange(s, e)
    for h in config.horizons:
      lo = np.maximum(t - h, 0)
      scale = (1.0 / np.maximum(t - lo, 1)).astype(np.float32)[:, None]
      block[:, :, f] = (counts[t] - counts[lo]) * scale
      f += 1
    if config.since_last:
      # Never picked in the block: below any carried last pick (which may be < -1).
      seen = np.where(inc[s:e], t.astype(np.int32)[:, None], np.int32(min(-1, int(last_pick.min(initial=-1)))))
      seen[0] = np.maximum(seen[0], last_pick)
      np.maximum.accumulate(seen, axis=0, out=seen)                 # last pick at or before t
      before = np.empty_like(seen)
      before[0] = last_pick
      before[1:] = seen[:-1]
      block[:, :, f] = np.log1p((t[:, None] - before).astype(np.float32))
      last_pick = seen[-1]
      f += 1
  return out, tuple(names), last_pick


def calendar(table: EventTable) -> tuple[np.ndarray, tuple[str, ...]]:
  """float32[m, g]: weekday one-hot, season (sin/cos of day of year) and
  log(1 + days since the previous event) for timestamps; log(1 + steps) else."""
  times = table.times()
  m = len(times)
  if np.issubdtype(times.dtype, np.datetime64):
    days = times.astype("datetime64[D]").astype(np.int64)
    weekday = (days + 3) % 7                                         # 1970-01-01 was a Thursday
    year_start = times.astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    angle = 2 * np.pi * (days - year_start) / 365.25
    gap = np.diff(days, prepend=days[0] if m else 0)
    cols = [np.eye(7, dtype=np.float32)[weekday], np.sin(angle)[:, None], np.cos(angle)[:, None],
            np.log1p(np.maximum(gap, 0))[:, None]]
    names = tuple(f"weekday_{d}" for d in range(7)) + ("season_sin", "season_cos", "log_days_since_prev")
    return np.concatenate(cols, axis=1).astype(np.float32), names
  steps = times.astype(np.int64)
  gap = np.diff(steps, prepend=steps[0] if m else 0)
  return np.log1p(np.maximum(gap, 0)).astype(np.float32)[:, None], ("log_steps_since_prev",)


def static_items(table: EventTable) -> tuple[np.ndarray, tuple[str, ...]]:
  """float32[n, s]: one-hot catalog groups, then the catalog's feature columns."""
  catalog = table.catalog
  cols, names = [], []
  if catalog.groups is not None:
    groups = sorted(set(catalog.groups))
    code = np.array([groups.index(g) for g in catalog.groups])
    cols.append(np.eye(len(groups), dtype=np.float32)[code])
    names += [f"group={g}" for g in groups]
  for key, value in sorted(catalog.features.items()):
    cols.append(np.asarray(value, np.float32)[:, None])
    names.append(key)
  if not cols:
    return np.zeros((table.n_items, 0), np.float32), ()
  return np.concatenate(cols, axis=1), tuple(names)


def outcome_scores(table: EventTable) -> np.ndarray:
  """float32[m, n]: how well each item did in each event, in [0, 1]: the rank
  score for rankings (1 for the winner), inclusion for sets, 0 if not listed."""
  if table.kind == "set":
    return table.inclusion_matrix().astype(np.float32)
  return rank_scores(table)


def covariate_features(table: EventTable, config: FeatureConfig) -> tuple[np.ndarray, tuple[str, ...]]:
  """[m, n, c] features of the per-event item covariates (see FeatureConfig.covariates).

  Covariates of event t are known before it (a grid is set before the race);
  the group history of event t uses the outcomes of events < t only. Items
  not available in an event get 0 in every column.
  """
  out, names, _ = _covariate_features(table, config)
  return out, names


def covariate_levels(table: EventTable, name: str) -> np.ndarray:
  """The sorted levels (str) of categorical covariate `name` in `table`, "" included
  (what unavailable items count as)."""
  values = table.covariates(name)
  return np.unique(np.append(np.where(table.available_mask(), values, "").astype(str), ""))


def _covariate_features(table: EventTable, config: FeatureConfig, groups: dict | None = None,
                        carry_at: int | None = None) -> tuple[np.ndarray, tuple[str, ...], dict]:
  """`covariate_features` of `table`, the group history's running sums carried in and out.

  `groups`: categorical covariate name -> (levels, sums float64[g], counts
  float64[g]): the levels of the whole table (`covariate_levels`) and the sums
  of outcomes and entries of each level over the events before `table`'s first
  (default: this table's own levels, zeros). Returns the features, their names
  and the same dict for the events before row `carry_at` of this table (a
  running sum continued from the carried one adds the same numbers in the same
  order as one over the whole table, so the chunks agree with it bit for bit).
  """
  groups = groups or {}
  carried = {}
  names = table.covariate_columns()
  m, n = len(table), table.n_items
  available = table.available_mask()
  cols, out_names = [], []
  outcome = None
  for name in names:
    values = table.covariates(name)
    short = name[len("cov_"):] if name.startswith("cov_") else name
    if values.dtype != object:
      x = np.where(available, values, np.nan).astype(np.float64)
      count = np.maximum(available.sum(axis=1, keepdims=True), 1)
      mean = np.nansum(x, axis=1, keepdims=True) / count
      var = np.nansum((x - mean) ** 2, axis=1, keepdims=True) / count
      z = np.where(var > 0, (x - mean) / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
      cols += [np.nan_to_num(x), np.where(available, z, 0.0)]
      out_names += [f"cov_{short}", f"covz_{short}"]
      continue
    if not config.group_horizons:
      continue
    if outcome is None:
      outcome = outcome_scores(table).astype(np.float64)
    text = np.where(available, values, "").astype(str)
    if name in groups:
      levels, start_sums, start_counts = groups[name]
      codes = np.searchsorted(levels, text)
      if not np.array_equal(levels[np.minimum(codes, len(levels) - 1)], text):
        raise DataError(f"covariate {name!r}: a level of these events is not among the {len(levels)} "
                        f"levels given for the whole table.")
    else:
      levels, codes = np.unique(text, return_inverse=True)
      start_sums = start_counts = None
    codes = codes.reshape(m, n)
    present = available & (text != "")
    g = len(levels)
    rows = np.repeat(np.arange(m), n).reshape(m, n)
    sums = np.zeros((m + 1, g))
    counts = np.zeros((m + 1, g))
    if start_sums is not None:
      sums[0], counts[0] = start_sums, start_counts
    np.add.at(sums[1:], (rows[present], codes[present]), outcome[present])
    np.add.at(counts[1:], (rows[present], codes[present]), 1.0)
    np.cumsum(sums, axis=0, out=sums)                                 # sums[t]: events < t
    np.cumsum(counts, axis=0, out=counts)
    if carry_at is not None:
      carried[name] = (levels, sums[carry_at].copy(), counts[carry_at].copy())
    t = np.arange(m)
    for h in config.group_horizons:
      lo = np.maximum(t - h, 0)
      s_h, c_h = sums[t] - sums[lo], counts[t] - counts[lo]           # events [t - h, t)
      rate = np.where(c_h > 0, s_h / np.maximum(c_h, 1), 0.0)
      cols.append(np.where(present, np.take_along_axis(rate, codes, axis=1), 0.0))
      out_names.append(f"grp_{short}_rate_{h}")
    h = max(config.group_horizons)
    lo = np.maximum(t - h, 0)
    seen = np.take_along_axis(counts[t] - counts[lo], codes, axis=1) > 0
    cols.append((present & ~seen).astype(np.float64))
    out_names.append(f"grp_{short}_new")
  if not cols:
    return np.zeros((m, n, 0), np.dtype(config.dtype)), (), carried
  return np.stack(cols, axis=2).astype(np.dtype(config.dtype)), tuple(out_names), carried


def cache_key(table: EventTable, config: FeatureConfig) -> str:
  text = f"{FEATURES_VERSION}|{table.content_hash}|{config.key()}"
  return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_features(table: EventTable, config: FeatureConfig | None = None, *,
                   cache_dir: str | os.PathLike | None = None) -> Features:
  """All features of `table` (see FeatureConfig), vectorised over events.

  With `cache_dir`, the result is stored as `features-<key>.npz` there, the key
  being a hash of the table's content hash and the config; a later call with
  the same data and config loads it instead of building.
  """
  config = config or FeatureConfig()
  path = None
  if cache_dir is not None:
    path = pathlib.Path(cache_dir) / f"features-{cache_key(table, config)}.npz"
    if path.exists():
      with np.load(path, allow_pickle=False) as z:
        return Features(z["item"], tuple(z["item_names"]), z["event"], tuple(z["event_names"]),
                        z["static"], tuple(z["static_names"]), z["available"])
  item, item_names = item_history(table, config)
  if config.covariates and table.covariate_columns():
    cov, cov_names = covariate_features(table, config)
    item, item_names = np.concatenate([item, cov], axis=2), item_names + cov_names
  event, event_names = calendar(table) if config.calendar else (np.zeros((len(table), 0), np.float32), ())
  static, static_names = static_items(table) if config.static else (np.zeros((table.n_items, 0), np.float32), ())
  feats = Features(item, item_names, event, event_names, static, static_names, table.available_mask())
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, item=item, item_names=np.array(item_names, dtype=str), event=event,
             event_names=np.array(event_names, dtype=str), static=static,
             static_names=np.array(static_names, dtype=str), available=feats.available)
    os.replace(tmp, path)  # a crash mid-write leaves no half file under the real name
  return feats


def perturb_from(table: EventTable, t: int, seed: int = 0) -> EventTable:
  """`table` with the items of events t, t+1, ... replaced by other random valid
  lists of the same lengths (same times, same available items)."""
  rng = np.random.default_rng(seed)
  items = table.items_array()
  lengths = table.lengths()
  avail = table.available_mask()[t:]
  keys = np.where(avail, rng.random(avail.shape), np.inf)
  new = np.argsort(keys, axis=1)[:, :items.shape[1]].astype(np.int32)
  items = items.copy()
  items[t:] = np.where(np.arange(items.shape[1])[None, :] < lengths[t:, None], new, -1)
  events = table.events.set_column(table.events.column_names.index("items"), "items",
                                   list_column(items, lengths))
  return EventTable(events, table.catalog, dict(table.metadata))


def check_no_lookahead(build: Callable[[EventTable], object], table: EventTable, *,
                       at: tuple[int, ...] | None = None, seed: int = 0) -> None:
  """Raise DataError if row t of `build(table)` depends on event t or later.

  `build` maps a table to an array, a Features, or a dict/tuple of arrays whose
  leading axis is the event. For each t in `at` (default: a few spread over the
  table) the events from t on are rewritten at random; rows 0..t must not change.
  """
  m = len(table)
  at = at or tuple(sorted({1, m // 3, m // 2, m - 1} & set(range(1, m))))

  def rows(result) -> list[np.ndarray]:
    if isinstance(result, Features):
      return [result.item, result.event]
    if isinstance(result, dict):
      return [np.asarray(v) for v in result.values()]
    if isinstance(result, (tuple, list)):
      return [np.asarray(v) for v in result]
    return [np.asarray(result)]

  base = rows(build(table))
  for t in at:
    changed = rows(build(perturb_from(table, t, seed=seed + t)))
    for index, (a, b) in enumerate(zip(base, changed)):
      if a.ndim == 0 or a.shape[0] != m:
        continue
      diff = np.flatnonzero(np.any((a[:t + 1] != b[:t + 1]).reshape(t + 1, -1), axis=1))
      if diff.size:
        raise DataError(f"look-ahead: feature array {index} at event {int(diff[0])} changes when "
                        f"events {t}.. change; features of event t may use only events before t.")
