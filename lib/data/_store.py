"""The on-disk feature store: features built in chunks of events, in shards of .npy files.

For tables whose features do not fit in memory (`build_features` of 10,000,000
events of 80 items is a 24 GiB array), `build_store` builds them a chunk of
events at a time (memory bounded by the chunk) and writes each chunk as one
shard: plain `.npy` files, one per array, read back row by row with `pread`
(`FeatureStore.rows`), so a random batch costs one small read per event and
the reader's memory does not grow with the store. Item features may be stored
as float16 or bfloat16 (half the disk and reads); the rest keeps its dtype.

`store.json` in the folder holds the data's content hash, the feature config,
the storage dtype and the shard list; a later `build_store` with the same three
reuses the store, and rebuilds it (saying why) when any changed.

Chunked building gives exactly the features of `build_features`: a chunk's
rows whose windows (the last L events, the rate horizons, the group-history
horizons, the calendar gap) reach before the chunk are computed from the
events before it, re-read from the table, and the state with unbounded reach
(each item's last pick, the group history's running sums) is carried from the
previous chunk.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable, Iterator

import numpy as np

from luce.data._features import (FEATURES_VERSION, FeatureConfig, Features, _covariate_features,
                                 _item_history, calendar, covariate_levels, static_items)
from luce.data._table import EventTable, padded
from luce.errors import ConfigError, DataError

STORE_VERSION = 1
STORE_DTYPES = ("float32", "float16", "bfloat16")
# Per-event arrays of a shard: name -> what it holds.
SHARD_ARRAYS = ("item", "event", "available", "items", "lengths", "weights")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
  """uint16 bit patterns of float32 `x` rounded to bfloat16 (to nearest, ties to even).

  `x` must be finite (the store refuses non-finite features before this).
  """
  bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
  rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
  return ((bits + rounding) >> np.uint32(16)).astype(np.uint16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
  """float32 values of bfloat16 bit patterns (uint16); exact."""
  return (np.asarray(bits, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _is_categorical(table: EventTable, column: str) -> bool:
  import pyarrow as pa
  value_type = table.events.schema.field(column).type.value_type
  if pa.types.is_dictionary(value_type):
    value_type = value_type.value_type
  return not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type))


def _last_picks(table: EventTable, starts) -> list[np.ndarray]:
  """int64[n] per start s: each item's last pick before event s (-1: none), one pass."""
  out, last = [], np.full(table.n_items, -1, dtype=np.int64)
  bounds = list(starts) + [len(table)]
  for s, e in zip(bounds[:-1], bounds[1:]):
    out.append(last.copy())
    inc = table.slice(s, e).inclusion_matrix()
    seen = inc.any(axis=0)
    last = np.where(seen, s + len(inc) - 1 - np.argmax(inc[::-1], axis=0), last)
  return out


@dataclasses.dataclass(frozen=True)
class _ChunkPlan:
  """What building any chunk of a table needs, found once for the whole table.

  Attributes:
    config: the features.
    chunk_events: events per chunk.
    starts: the first event of each chunk.
    span: events before a chunk re-read for the windows that reach before it.
    covariates: whether the covariate features are built.
    static, static_names: the catalog features (the same for every chunk).
    picks: per chunk, int64[n] each item's last pick before its first event (-1: none).
    groups: categorical covariate -> (levels, sums, counts), the group history's
      running sums before event 0 (zeros); a chunk needs them before `lo(start)`.
  """
  config: FeatureConfig
  chunk_events: int
  starts: tuple[int, ...]
  span: int
  covariates: bool
  static: np.ndarray
  static_names: tuple[str, ...]
  picks: tuple[np.ndarray, ...]
  groups: dict

  def lo(self, start: int) -> int:
    """The first event re-read for the chunk starting at `start`."""
    return max(start - self.span, 0)


def _plan_chunks(table: EventTable, config: FeatureConfig, chunk_events: int) -> _ChunkPlan:
  if chunk_events < 1:
    raise ConfigError(f"chunk_events={chunk_events} must be >= 1.")
  m, n = len(table), table.n_items
  covariates = config.covariates and bool(table.covariate_columns())
  categorical = [c for c in table.covariate_columns() if _is_categorical(table, c)] if covariates else []
  spans = [1, config.last, *config.horizons]
  if categorical and config.group_horizons:
    spans += list(config.group_horizons)
  static, static_names = (static_items(table) if config.static
                          else (np.zeros((n, 0), np.float32), ()))
  groups = {}
  if config.group_horizons:
    for name in categorical:
      levels = np.unique(np.concatenate(
          [covariate_levels(table.slice(s, s + chunk_events), name) for s in range(0, m, chunk_events)]
          or [np.array([""])]))
      groups[name] = (levels, np.zeros(len(levels)), np.zeros(len(levels)))
  starts = list(range(0, m, chunk_events))
  # Each chunk's carried last picks come from one cheap pass, so chunks build independently.
  picks = _last_picks(table, starts) if config.since_last else [np.full(n, -1, np.int64)] * len(starts)
  return _ChunkPlan(config, chunk_events, tuple(starts), max(spans), covariates, static,
                    static_names, tuple(picks), groups)


def _build_chunk(table: EventTable, plan: _ChunkPlan, start: int, groups: dict
                 ) -> tuple[tuple[int, int, Features], dict]:
  """Features of the chunk starting at `start`, given the group sums before `plan.lo(start)`;
  returns them with the group sums before the next chunk's `lo`."""
  config = plan.config
  stop = min(start + plan.chunk_events, len(table))
  lo = plan.lo(start)                                                # the history span re-read
  part = table.slice(lo, stop)
  keep = start - lo
  last_pick = plan.picks[start // plan.chunk_events]
  # The re-read rows before the chunk see last picks from after them (log1p of a
  # negative gap); they are dropped, and the chunk's own rows are exact.
  with np.errstate(divide="ignore", invalid="ignore"):
    item, item_names, _ = _item_history(part, config, (last_pick - lo).astype(np.int32))
  item = item[keep:]
  if plan.covariates:
    cov, cov_names, groups = _covariate_features(part, config, groups, carry_at=plan.lo(stop) - lo)
    item, item_names = np.concatenate([item, cov[keep:]], axis=2), item_names + cov_names
  if config.calendar:
    event, event_names = calendar(part)
    event = event[keep:]
  else:
    event, event_names = np.zeros((stop - start, 0), np.float32), ()
  available = part.available_mask()[keep:]
  return (start, stop, Features(item, item_names, event, event_names, plan.static, plan.static_names,
                                available)), groups


def feature_chunks(table: EventTable, config: FeatureConfig | None = None, *,
                   chunk_events: int = 65_536, threads: int = 1) -> Iterator[tuple[int, int, Features]]:
  """`build_features(table, config)` a chunk of events at a time.

  Yields (start, stop, features of events [start, stop)), chunks of
  `chunk_events` events in time order; their concatenation equals
  `build_features(table, config)` bit for bit. Memory is bounded by a chunk
  (plus the history span before it) times `threads`, not by the table.
  `threads` chunks are built at once (numpy releases the GIL), except for
  tables with categorical covariates, whose group history runs chunk after chunk.
  """
  plan = _plan_chunks(table, config or FeatureConfig(), chunk_events)
  groups = plan.groups
  if groups or threads <= 1:
    for start in plan.starts:
      chunk, groups = _build_chunk(table, plan, start, groups)
      yield chunk
    return
  with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
    queue = collections.deque()
    for start in plan.starts:
      queue.append(pool.submit(_build_chunk, table, plan, start, {}))
      if len(queue) >= threads:
        yield queue.popleft().result()[0]
    while queue:
      yield queue.popleft().result()[0]


@dataclasses.dataclass(frozen=True)
class _Column:
  """One array of one shard on disk: where its rows start and how long a row is."""
  path: str
  offset: int
  rows: int
  row_shape: tuple[int, ...]
  dtype: np.dtype

  @property
  def row_bytes(self) -> int:
    return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize


def _npy_column(path: pathlib.Path) -> _Column:
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = reader(f)
      offset = f.tell()
  except (OSError, ValueError) as err:
    raise DataError(f"{path}: not a readable .npy file ({err}); the store is damaged: rebuild "
                    f"it (delete {path.parent}).") from None
  if fortran:
    raise DataError(f"{path}: a Fortran-ordered array; the feature store writes C order.")
  return _Column(str(path), offset, int(shape[0]), tuple(int(d) for d in shape[1:]), np.dtype(dtype))


class FeatureStore:
  """A feature store on disk (`build_store`), read by rows.

  Attributes:
    folder: the store's folder.
    meta: the content of `store.json` (data_hash, feature_config, dtype, n_events,
      n_items, k_max, item_names, event_names, static_names, shards, ...).
    static: float32[n, s] per-item catalog features.
  """

  def __init__(self, folder: str | os.PathLike):
    self.folder = pathlib.Path(folder)
    meta_path = self.folder / "store.json"
    if not meta_path.exists():
      raise DataError(f"{self.folder}: no feature store there (no store.json); build one with "
                      f"luce.data.build_store.")
    self.meta = json.loads(meta_path.read_text())
    if self.meta.get("version") != STORE_VERSION:
      raise DataError(f"{meta_path}: store version {self.meta.get('version')!r}, this luce reads "
                      f"version {STORE_VERSION}; rebuild it (luce.data.build_store).")
    self.starts = np.array([s["start"] for s in self.meta["shards"]] + [self.meta["n_events"]],
                           dtype=np.int64)
    self.columns = {key: [_npy_column(self.folder / s["files"][key]) for s in self.meta["shards"]]
                    for key in SHARD_ARRAYS}
    for cols in self.columns.values():
      for shard, col in enumerate(cols):
        want = self.starts[shard + 1] - self.starts[shard]
        if col.rows != want:
          raise DataError(f"{col.path}: {col.rows} rows, store.json says shard {shard} holds "
                          f"{want}; the store is damaged: rebuild it (delete {self.folder}).")
    self.static = np.load(self.folder / "static.npy")
    self.reused = False   # build_store: True when it found this store whole and current
    self._fds: dict[str, int] = {}

  def __len__(self) -> int:
    return int(self.meta["n_events"])

  def __getstate__(self):  # picklable for Grain's worker processes: file descriptors reopen
    return {"folder": self.folder}

  def __setstate__(self, state):
    self.__init__(state["folder"])

  def _fd(self, path: str) -> int:
    fd = self._fds.get(path)
    if fd is None:
      fd = self._fds[path] = os.open(path, os.O_RDONLY)
    return fd

  def shard_of(self, rows: np.ndarray) -> np.ndarray:
    """int64[len(rows)]: the shard holding each event row."""
    return np.searchsorted(self.starts, rows, side="right") - 1

  def rows(self, key: str, rows) -> np.ndarray:
    """The event rows `rows` (int array, any order) of array `key` (SHARD_ARRAYS),
    as stored (item features as float32 whatever the storage dtype)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    m = len(self)
    if rows.size and (rows.min() < 0 or rows.max() >= m):
      bad = int(rows[(rows < 0) | (rows >= m)][0])
      raise DataError(f"{self.folder}: event row {bad} is outside the store's {m} events.")
    cols = self.columns[key]
    first = cols[0]
    out = np.empty((len(rows),) + first.row_shape, dtype=first.dtype)
    flat = out.reshape(len(rows), -1).view(np.uint8).reshape(len(rows), -1) if len(rows) else out
    shards = self.shard_of(rows)
    # Runs of consecutive rows in one shard are one read each.
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shards) != 0)) + 1
    for lo, hi in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
      if lo == hi:
        continue
      col = cols[int(shards[lo])]
      local = int(rows[lo] - self.starts[shards[lo]])
      size = (hi - lo) * col.row_bytes
      data = os.pread(self._fd(col.path), size, col.offset + local * col.row_bytes)
      if len(data) != size:
        raise DataError(f"{col.path}: short read ({len(data)} of {size} bytes); the store is "
                        f"damaged: rebuild it (delete {self.folder}).")
      flat[lo:hi] = np.frombuffer(data, np.uint8).reshape(hi - lo, -1)
    if key == "item":
      if self.meta["dtype"] == "bfloat16":
        return from_bfloat16_bits(out)
      return out.astype(np.float32, copy=False)
    return out

  def close(self) -> None:
    for fd in self._fds.values():
      os.close(fd)
    self._fds = {}


def _store_key(table: EventTable, config: FeatureConfig, dtype: str) -> dict:
  return {"features_version": FEATURES_VERSION, "data_hash": table.content_hash,
          "feature_config": json.loads(config.key()), "dtype": dtype}


_ENCODE_BLOCK = 8192  # events per block of the dtype conversion: its temporaries stay small


def _encode_item(item: np.ndarray, names, dtype: str, where: str) -> np.ndarray:
  """The chunk's item features as stored (float32, float16, or bfloat16 bits as uint16),
  after checking they are finite (and, for float16, within its range). Works in
  blocks of events, in place on `item` for bfloat16 (the chunk's own array)."""
  out = np.empty(item.shape, {"float32": np.float32, "float16": np.float16,
                              "bfloat16": np.uint16}[dtype])
  for lo in range(0, len(item), _ENCODE_BLOCK):
    block = item[lo:lo + _ENCODE_BLOCK]
    if not np.isfinite(block).all():
      j = int(np.flatnonzero(~np.isfinite(block).reshape(-1, item.shape[2]).all(axis=0))[0])
      raise DataError(f"{where}: feature {names[j]!r} has non-finite values; the store keeps "
                      f"finite features only.")
    if dtype == "float32":
      out[lo:lo + _ENCODE_BLOCK] = block
    elif dtype == "float16":
      big = np.abs(block).reshape(-1, item.shape[2]).max(axis=0, initial=0) > _FLOAT16_MAX
      if big.any():
        j = int(np.flatnonzero(big)[0])
        raise DataError(f"{where}: feature {names[j]!r} reaches beyond float16's range "
                        f"(|x| > {_FLOAT16_MAX:g}); use store dtype bfloat16 or float32.")
      out[lo:lo + _ENCODE_BLOCK] = block
    else:  # to_bfloat16_bits, in place: round to nearest even, keep the top 16 bits
      bits = block.view(np.uint32)
      rounding = bits >> np.uint32(16)
      rounding &= np.uint32(1)
      rounding += np.uint32(0x7FFF)
      bits += rounding
      bits >>= np.uint32(16)
      out[lo:lo + _ENCODE_BLOCK] = bits
  return out


def _open_store(table: EventTable, folder: pathlib.Path, config: FeatureConfig | None, dtype: str,
                chunk_events: int, say: Callable[[str], None]
                ) -> tuple[FeatureConfig, dict, FeatureStore | None]:
  """Checks the arguments; returns (float32 config, store key, the store when it is
  current and whole, else None with `folder` emptied of any old store)."""
  config = dataclasses.replace(config or FeatureConfig(), dtype="float32")
  if dtype not in STORE_DTYPES:
    raise ConfigError(f"store dtype={dtype!r}; valid: {', '.join(STORE_DTYPES)}.")
  if chunk_events < 1:
    raise ConfigError(f"chunk_events={chunk_events} must be >= 1.")
  meta_path = folder / "store.json"
  key = _store_key(table, config, dtype)
  if meta_path.exists():
    try:
      old = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
      old = {}
    changed = [name for name in key if old.get(name) != key[name]]
    if not changed and old.get("version") == STORE_VERSION:
      store = FeatureStore(folder)
      store.reused = True
      return config, key, store
    say(f"feature store {folder}: {', '.join(changed) or 'store version'} changed since it was "
        f"built; rebuilding it")
    meta_path.unlink()                    # the folder holds no store until the new one is whole
  folder.mkdir(parents=True, exist_ok=True)
  for old_file in folder.glob("shard-*.npy"):
    old_file.unlink()
  return config, key, None


def _shard_arrays(table: EventTable, start: int, stop: int, feats: Features, k_max: int) -> dict:
  """The per-event arrays of the shard of events [start, stop) but `item` (SHARD_ARRAYS)."""
  part = table.slice(start, stop)
  values, offsets = part.items_flat()
  arrays = {
      "event": np.ascontiguousarray(feats.event, np.float32),
      "available": np.ascontiguousarray(feats.available),
      "items": padded(values, offsets - offsets[0], fill=-1) if k_max else np.zeros((stop - start, 0), np.int32),
      "lengths": part.lengths().astype(np.int32),
      "weights": part.weights().astype(np.float32),
  }
  if arrays["items"].shape[1] < k_max:
    arrays["items"] = np.pad(arrays["items"], ((0, 0), (0, k_max - arrays["items"].shape[1])),
                             constant_values=-1)
  arrays["items"] = arrays["items"].astype(np.int32)
  return arrays


def _write_shard(folder: pathlib.Path, index: int, start: int, stop: int, feats: Features,
                 arrays: dict, dtype: str) -> dict:
  """Writes shard `index` (the item features encoded as `dtype`); returns its store.json entry."""
  arrays["item"] = _encode_item(feats.item, feats.item_names, dtype,
                                f"{folder} events {start}..{stop - 1}")
  files = {}
  for name in SHARD_ARRAYS:
    files[name] = f"shard-{index:05d}.{name}.npy"
    np.save(folder / files[name], arrays[name])
  return {"start": start, "stop": stop, "files": files}


def _most_available(feats: Features) -> int:
  return int(feats.available.sum(axis=1).max(initial=0))


def _finish_store(folder: pathlib.Path, table: EventTable, key: dict, chunk_events: int,
                  shards: list[dict], most_available: int, names: tuple | None, static: np.ndarray,
                  t0: float) -> FeatureStore:
  """Writes static.npy and, last, store.json; `names` = (item, event, static) feature names
  of any chunk (None: there was none)."""
  if names is None:
    raise DataError("build_store: the table has no events.")
  np.save(folder / "static.npy", static.astype(np.float32))
  item_names, event_names, static_names = names
  meta = {"version": STORE_VERSION, **key, "n_events": len(table), "n_items": table.n_items,
          "k_max": table.k_max, "kind": table.kind, "chunk_events": chunk_events,
          "max_available": most_available, "item_names": list(item_names),
          "event_names": list(event_names), "static_names": list(static_names), "shards": shards,
          "build_seconds": round(time.perf_counter() - t0, 2)}
  meta_path = folder / "store.json"
  tmp = meta_path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(meta, indent=1) + "\n")
  os.replace(tmp, meta_path)  # store.json last: its presence says the store is whole
  return FeatureStore(folder)


def build_store(table: EventTable, folder: str | os.PathLike, config: FeatureConfig | None = None, *,
                dtype: str = "bfloat16", chunk_events: int = 65_536,
                say: Callable[[str], None] = print) -> FeatureStore:
  """Build (or reuse) the feature store of `table` in `folder`.

  Args:
    table: the events.
    folder: the store's folder (created); it holds `store.json`, `static.npy`
      and per shard `shard-NNNNN.{item,event,available,items,lengths,weights}.npy`.
    config: the features (default FeatureConfig()); built as float32, then
      the item features are stored as `dtype`.
    dtype: storage dtype of the item features: "float32", "float16" (refused,
      naming the feature, when a value is beyond its range) or "bfloat16"
      (float32's range, 8 bits of mantissa).
    chunk_events: events per chunk (and per shard); memory is bounded by it.
    say: where the build/reuse message goes.

  Returns:
    The FeatureStore. When `folder` already holds a store of the same data
    (content hash), feature config and dtype it is reused as it is; when any
    of the three differs it is rebuilt, and `say` names what changed.
    `luce.data.build_store_distributed` builds the same files on a Ray cluster.
  """
  folder = pathlib.Path(folder)
  config, key, store = _open_store(table, folder, config, dtype, chunk_events, say)
  if store is not None:
    return store
  t0 = time.perf_counter()
  k_max = table.k_max
  shards, last = [], None
  most_available = 0
  # One thread converts and writes chunk i while this one builds chunk i + 1 (numpy and
  # file writes release the GIL): two chunks in memory at most.
  writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  pending = None
  for index, (start, stop, feats) in enumerate(feature_chunks(table, config, chunk_events=chunk_events)):
    arrays = _shard_arrays(table, start, stop, feats, k_max)
    most_available = max(most_available, _most_available(feats))
    if pending is not None:
      shards.append(pending.result())
    pending = writer.submit(_write_shard, folder, index, start, stop, feats, arrays, dtype)
    last = feats
  if pending is not None:
    shards.append(pending.result())
  writer.shutdown()
  names = None if last is None else (last.item_names, last.event_names, last.static_names)
  return _finish_store(folder, table, key, chunk_events, shards, most_available, names,
                       None if last is None else last.static, t0)
