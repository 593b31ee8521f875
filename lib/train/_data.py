"""From a config's `data` section to the arrays of each split, the baselines and the oracle."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

import luce.data
from luce import baselines as baselines_lib
from luce.errors import ConfigError
from luce.models import BATCH_KEYS, max_available

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Prepared:
  """One data set ready for training and evaluation.

  Attributes:
    table: the full EventTable, time-ordered.
    kind: "ranking" or "set".
    n_items: n.
    data_hash: the table's content hash (what a checkpoint is bound to).
    bounds: (0, a, b, m): train = [0, a), valid = [a, b), test = [b, m).
    arrays: split -> name -> array (BATCH_KEYS of luce.train), leading axis events.
    item_names: names of the item feature columns.
    oracle: float32[m, n] generating scores (synthetic data) or None.
    fit_until: covariates are standardised with statistics of events [0, fit_until).
    k: the events' list length (the widest event; shorter ones are -1 padded).
  """
  table: luce.data.EventTable
  kind: str
  n_items: int
  data_hash: str
  bounds: tuple[int, int, int, int]
  arrays: dict
  item_names: tuple[str, ...]
  oracle: np.ndarray | None
  fit_until: int = 0
  store: luce.data.FeatureStore | None = None
  rows_of: luce.data.FeatureRows | None = None

  @property
  def max_available(self) -> int:
    """The most available items of any event (the PL family's entrant block)."""
    if self.store is not None:
      return max(int(self.store.meta["max_available"]), 1)
    return max_available(self.arrays["all"])

  @property
  def k(self) -> int:
    return int(self.arrays["all"]["items"].shape[1])

  def split_arrays(self, split: str) -> dict:
    """The arrays of `split` ("train", "valid" or "test")."""
    self.split_range(split)  # raises with the valid names
    return self.arrays[split]

  def split_range(self, split: str) -> range:
    if split not in SPLITS:
      raise ConfigError(f"split={split!r}; valid: {', '.join(SPLITS)}.")
    a, b, c, d = self.bounds
    return {"train": range(a, b), "valid": range(b, c), "test": range(c, d)}[split]


def _cut(times: np.ndarray, value: str, name: str) -> int:
  """Index of the first event at or after `value` (a date or an integer step)."""
  try:
    if np.issubdtype(times.dtype, np.datetime64):
      at = np.datetime64(value, "s")
    else:
      at = int(value)
  except ValueError:
    raise ConfigError(f"data.{name}={value!r}: write an ISO date (YYYY-MM-DD) for dated events or "
                      f"an integer step.") from None
  return int(np.searchsorted(times, at, side="left"))


def split_bounds(table, data_config) -> tuple[int, int, int, int]:
  m = len(table)
  if bool(data_config.valid_from) != bool(data_config.test_from):
    raise ConfigError("data.valid_from and data.test_from go together: set both (dates or steps) "
                      "or neither (then data.split's fractions cut the events).")
  if data_config.valid_from:
    times = table.times()
    a = _cut(times, data_config.valid_from, "valid_from")
    b = _cut(times, data_config.test_from, "test_from")
    if not 0 < a < b < m:
      raise ConfigError(f"data.valid_from={data_config.valid_from!r}, test_from="
                        f"{data_config.test_from!r} cut {m} events at {a} and {b}: each split "
                        f"needs at least one event (times run {times[0]} .. {times[-1]}).")
    return (0, a, b, m)
  bounds = luce.data.split_by_time(table, tuple(data_config.split)).bounds
  if not bounds[0] < bounds[1] < bounds[2] < bounds[3]:
    raise ConfigError(f"data.split={tuple(data_config.split)} leaves a split of the {m} events "
                      f"empty (bounds {bounds}).")
  return bounds


def load_table(data_config):
  """(EventTable, oracle scores or None) for `data.source`."""
  table = luce.data.read(data_config.source)
  return table, luce.data.oracle_scores(table)


def feature_config(data_config) -> luce.data.FeatureConfig:
  """The FeatureConfig of `config.data.features`."""
  f = data_config.features
  return luce.data.FeatureConfig(
      last=f.last, horizons=tuple(f.horizons), since_last=f.since_last, calendar=f.calendar,
      static=f.static, covariates=f.covariates, group_horizons=tuple(f.group_horizons))


def prepare(config, *, fit_until: int | None = None, loaded: tuple | None = None,
            store_dir=None, say=print) -> Prepared:
  """Read, featurise and split the data of `config.data`.

  Covariate columns (`cov_*` features) are standardised with the mean and
  standard deviation over the available items of the events before
  `fit_until` (default: the training split's end), so no statistic of a
  predicted event enters its own features. `loaded`: the (table, oracle) of
  `load_table`, when the caller has read them already.

  With `data.pipeline = "store"` the features go to the feature store in
  `data.store_dir` (else `store_dir`, which luce-train sets to WORKDIR/features;
  built or reused, `say` tells which) and the split arrays are `StoreColumn` objects
  that read their rows from it.
  """
  table, oracle = loaded if loaded is not None else load_table(config.data)
  kind = table.kind
  if kind not in ("ranking", "set"):
    raise ConfigError(f"{config.data.source}: the table mixes rankings and sets; train on one kind.")
  if config.data.pipeline == "store":
    return _prepare_store(config, table, oracle, fit_until, config.data.store_dir or store_dir, say)
  features = luce.data.build_features(table, feature_config(config.data))
  full = luce.data.model_arrays(table, features)
  if features.static.shape[1]:
    # Catalog features are per item: append them to every event's item features.
    static = np.broadcast_to(features.static[None], (len(table),) + features.static.shape)
    full["item_features"] = np.concatenate([full["item_features"], static.astype(np.float32)], axis=2)
  names = features.item_names + features.static_names
  full["item_features"] = full["item_features"].astype(np.float32)
  bounds = split_bounds(table, config.data)
  fit_until = bounds[1] if fit_until is None else fit_until
  standardise_covariates(full["item_features"], full["available"], names, fit_until)
  keys = BATCH_KEYS
  arrays = {}
  for split, (lo, hi) in zip(SPLITS, zip(bounds[:-1], bounds[1:])):
    arrays[split] = {k: full[k][lo:hi] for k in keys}
  arrays["all"] = {k: full[k] for k in keys}
  return Prepared(table, kind, table.n_items, data_hash(table), bounds, arrays, names, oracle,
                  fit_until)


class StoreColumn:
  """One array of the model's event arrays (a `BATCH_KEYS` key) for the events
  [start, stop) of a feature store, read on indexing: `column[rows]`,
  `column[rows, cols]` (the PL family's entrant gathering), `column[a:b]`,
  `np.asarray(column)` (every row). Rows index the split, from 0.
  """

  def __init__(self, rows_of: luce.data.FeatureRows, key: str, start: int, stop: int):
    self.rows_of, self.key, self.start, self.stop = rows_of, key, start, stop
    example = rows_of(np.array([0], np.int64))[key]
    self.shape = (stop - start,) + example.shape[1:]
    self.dtype = example.dtype
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    rest = ()
    if isinstance(index, tuple):
      index, rest = index[0], index[1:]
    if isinstance(index, slice):
      index = np.arange(len(self))[index]
    rows = np.asarray(index, dtype=np.int64)
    if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
      raise IndexError(f"event rows outside the {len(self)} events of this split")
    rows = np.where(rows < 0, rows + len(self), rows)
    unique, inverse = np.unique(rows.reshape(-1), return_inverse=True)
    compact = self.rows_of(unique + self.start)[self.key]        # each row read once
    # Fancy indexing of the compact rows: (rows[:, None], cols) broadcasts as on the full array.
    return compact[(inverse.reshape(rows.shape),) + rest]

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)


def _prepare_store(config, table, oracle, fit_until, store_dir, say) -> Prepared:
  d = config.data
  if not store_dir:
    raise ConfigError("data.pipeline='store' needs data.store_dir (luce-train uses WORKDIR/features "
                      "when it is ''); backtests read in memory: set data.pipeline='memory'.")
  t0 = time.perf_counter()
  if d.store_engine == "ray":
    store = luce.data.build_store_distributed(table, store_dir, feature_config(d), dtype=d.store_dtype,
                                              chunk_events=d.chunk_events,
                                              address=d.ray_address or None, say=say)
  else:
    store = luce.data.build_store(table, store_dir, feature_config(d), dtype=d.store_dtype,
                                  chunk_events=d.chunk_events, say=say)
  say(f"feature store {store_dir}: {'reused' if store.reused else 'built'} ({len(store.meta['shards'])} "
      f"shards, item features {store.meta['dtype']}) in {time.perf_counter() - t0:.1f}s")
  bounds = split_bounds(table, d)
  fit_until = bounds[1] if fit_until is None else fit_until
  names = tuple(store.meta["item_names"]) + tuple(store.meta["static_names"])
  stats = covariate_stats(store, names, fit_until)
  rows_of = luce.data.FeatureRows(store, stats)
  arrays = {}
  for split, (lo, hi) in zip(SPLITS + ("all",), list(zip(bounds[:-1], bounds[1:])) + [(0, len(table))]):
    arrays[split] = {k: StoreColumn(rows_of, k, lo, hi) for k in BATCH_KEYS}
  return Prepared(table, table.kind, table.n_items, data_hash(table), bounds, arrays, names, oracle,
                  fit_until, store=store, rows_of=rows_of)


def covariate_stats(store, names, fit_until: int, chunk: int = 65_536) -> dict:
  """Column index -> (mean, std) of each `cov_*` item feature over the available
  items of store events [0, fit_until) (std 1 if constant): what
  `standardise_covariates` computes in memory, summed chunk by chunk."""
  columns = [j for j, name in enumerate(names) if name.startswith("cov_")]
  if not columns:
    return {}
  n_static = store.static.shape[1]
  columns = [j for j in columns if j < len(names) - n_static]
  sums, counts, squares = np.zeros(len(columns)), 0, np.zeros(len(columns))
  for pass_ in (0, 1):
    for lo in range(0, fit_until, chunk):
      rows = np.arange(lo, min(lo + chunk, fit_until))
      seen = store.rows("available", rows)
      values = store.rows("item", rows)[:, :, columns][seen].astype(np.float64)
      if pass_ == 0:
        sums += values.sum(axis=0)
        counts += len(values)
      else:
        squares += ((values - sums / counts) ** 2).sum(axis=0)
    if counts == 0:
      raise ConfigError(f"covariate {names[columns[0]]!r}: no available item before event "
                        f"{fit_until} to take its training statistics from.")
  means, stds = sums / counts, np.sqrt(squares / counts)
  return {j: (np.float64(mean), np.float64(std if std > 0 else 1.0))
          for j, mean, std in zip(columns, means, stds)}


def standardise_covariates(item_features: np.ndarray, available: np.ndarray, names, fit_until: int):
  """In place: each `cov_*` column minus its mean over the available items of
  events [0, fit_until), divided by their standard deviation (1 if constant);
  unavailable items stay 0."""
  for j, name in enumerate(names):
    if not name.startswith("cov_"):
      continue
    seen = available[:fit_until]
    values = item_features[:fit_until, :, j][seen].astype(np.float64)
    if values.size == 0:
      raise ConfigError(f"covariate {name!r}: no available item before event {fit_until} to take "
                        f"its training statistics from.")
    mean, std = values.mean(), values.std()
    std = std if std > 0 else 1.0
    item_features[:, :, j] = np.where(available, (item_features[:, :, j] - mean) / std, 0.0)


def data_hash(table) -> str:
  """The table's sha256 content hash (saved with checkpoints)."""
  return table.content_hash


def numeric_covariates(table) -> tuple[np.ndarray, tuple[str, ...]]:
  """(float64[m, n, p] raw numeric covariates, 0 where an item is not available; their p
  names without the `cov_` prefix): what the covariate baselines fit on."""
  cols, names = [], []
  for column in table.covariate_columns():
    values = table.covariates(column)
    if values.dtype != object:
      cols.append(np.nan_to_num(values))
      names.append(column.removeprefix("cov_"))
  if not cols:
    return np.zeros((len(table), table.n_items, 0)), ()
  return np.stack(cols, axis=2), tuple(names)


def baseline_scores(prepared: Prepared, config) -> dict[str, np.ndarray]:
  """name -> float32[m, n] scores of every event for each configured baseline."""
  b = config.baselines
  items, available = prepared.arrays["all"]["items"], prepared.arrays["all"]["available"]
  n_train = prepared.bounds[1]
  covariates, names = numeric_covariates(prepared.table)
  return {name: baselines_lib.baseline_scores(name, items, available, n_train, prepared.kind,
                                              covariates=covariates, covariate_names=names,
                                              half_life=b.recency_half_life, prior=b.static_prior)
          for name in b.names}


def reference_scores(prepared: Prepared, config, split: str,
                     baselines: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """The baselines' (and, for synthetic data, the oracle's) scores on `split`."""
  rows = prepared.split_range(split)
  baselines = baselines if baselines is not None else baseline_scores(prepared, config)
  out = {name: s[rows.start:rows.stop] for name, s in baselines.items()}
  if prepared.oracle is not None:
    out["oracle"] = prepared.oracle[rows.start:rows.stop]
  return out
