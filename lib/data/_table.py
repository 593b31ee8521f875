"""The event table and the item catalog: Arrow in memory, Parquet on disk.

An event table has one row per event, ordered by time:

| column      | Arrow type             | meaning                                        |
| ----------- | ---------------------- | ---------------------------------------------- |
| `event_id`  | int64                  | stable id of the event (source's id or row)    |
| `time`      | timestamp[s] or int64  | when; strictly increasing within a series      |
| `series`    | int64 or string        | optional: e.g. a season                        |
| `items`     | list<int32>            | item ids 0..n-1; best-first for a ranking      |
| `kind`      | string                 | `ranking` or `set`                             |
| `weight`    | float64                | optional: how many times the event counts      |
| `available` | list<int32>            | optional: the items that could be picked       |
| `tied`      | list<bool>             | optional: aligned with `items`, True where the |
|             |                        | item is tied with the one before it (ties=keep)|
| `ctx_*`     | any                    | optional event-level context (bonus balls, ...)|
| `cov_*`     | list<double> or        | optional per-item covariates known before the  |
|             | list<string>           | event (grid slot, team), aligned as below      |

Covariates (`cov_NAME`) say what a forecaster knows about each item that could be
picked, before the event: numeric ones are `list<double>` (float64), categorical
ones `list<string>` (a label such as a constructor id). Element j of an event's
list belongs to the j-th item of that event's `available` list when the table has
an `available` column, else to item j of the catalog (the list then has n
elements). Validation requires that length, finite non-null numbers and non-null,
non-empty labels; the columns are part of the content hash. Read one as a dense
[m, n] array with `EventTable.covariates(NAME)`.

Any other column is an unknown column and fails validation. The catalog maps each
id to the source's label (ball number, driver id), a name and an optional group.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from luce.errors import DataError

SCHEMA_VERSION = 1
KINDS = ("ranking", "set")
CORE_COLUMNS = ("event_id", "time", "series", "items", "kind", "weight", "available", "tied")
CONTEXT_PREFIX = "ctx_"
COVARIATE_PREFIX = "cov_"
_META_VERSION = b"luce.schema_version"
_META_HASH = b"luce.content_hash"
_META_CATALOG = b"luce.catalog"
_META_INFO = b"luce.metadata"


@dataclasses.dataclass(frozen=True)
class Catalog:
  """Items of a table: id i (0-based) has `labels[i]`, `names[i]`, `groups[i]`.

  `labels` keep the source's own identifiers as strings ("17" for ball 17, "1"
  for Ergast driverId 1); `features` maps a name to a float32[n] static feature.
  """
  labels: tuple[str, ...]
  names: tuple[str, ...]
  groups: tuple[str, ...] | None = None
  features: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.labels)
    if len(self.names) != n:
      raise DataError(f"catalog: {len(self.names)} names for {n} labels.")
    if self.groups is not None and len(self.groups) != n:
      raise DataError(f"catalog: {len(self.groups)} groups for {n} labels.")
    for key, value in self.features.items():
      if np.shape(value) != (n,):
        raise DataError(f"catalog feature {key!r} has shape {np.shape(value)}, expected ({n},).")
    if len(set(self.labels)) != n:
      seen, dup = set(), None
      for label in self.labels:
        if label in seen:
          dup = label
          break
        seen.add(label)
      raise DataError(f"catalog: label {dup!r} appears twice; labels must be unique.")

  @classmethod
  def from_labels(cls, labels: Sequence, names: Sequence | None = None,
                  groups: Sequence | None = None) -> "Catalog":
    labels = tuple(str(x) for x in labels)
    names = labels if names is None else tuple(str(x) for x in names)
    groups = None if groups is None else tuple(str(x) for x in groups)
    return cls(labels, names, groups)

  @classmethod
  def numbered(cls, n: int, first: int = 1) -> "Catalog":
    """Items labelled first, first+1, ..., first+n-1 (lottery balls)."""
    return cls.from_labels(range(first, first + n))

  def __len__(self) -> int:
    return len(self.labels)

  @functools.cached_property
  def index(self) -> dict[str, int]:
    """Label -> id."""
    return {label: i for i, label in enumerate(self.labels)}

  def numeric_labels(self) -> np.ndarray | None:
    """int64[n] labels when every label is an integer (ball numbers), else None."""
    try:
      return np.array([int(x) for x in self.labels], dtype=np.int64)
    except ValueError:
      return None

  def ids(self, labels: Sequence, *, what: str = "label") -> np.ndarray:
    """int32 ids of `labels`; -1 where a label is not in the catalog."""
    index = self.index
    return np.fromiter((index.get(str(x), -1) for x in labels), dtype=np.int32, count=len(labels))

  def to_json(self) -> str:
    return json.dumps({
        "labels": list(self.labels), "names": list(self.names),
        "groups": None if self.groups is None else list(self.groups),
        "features": {k: np.asarray(v, np.float32).tolist() for k, v in self.features.items()},
    }, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "Catalog":
    d = json.loads(text)
    groups = None if d.get("groups") is None else tuple(d["groups"])
    features = {k: np.asarray(v, np.float32) for k, v in d.get("features", {}).items()}
    return cls(tuple(d["labels"]), tuple(d["names"]), groups, features)


def _type_tag(t: pa.DataType) -> str:
  """The type as hashed: list field names (`item`, `element`) left out."""
  if pa.types.is_list(t) or pa.types.is_large_list(t):
    return f"list<{_type_tag(t.value_type)}>"
  if pa.types.is_fixed_size_list(t):
    return f"list<{_type_tag(t.value_type)}>[{t.list_size}]"
  return str(t)


def canonical_events(events: pa.Table) -> pa.Table:
  """`events` with the types luce writes: list<int32> named `item`, time in seconds,
  covariates as list<double> or list<string>.

  Parquet has no seconds unit and names list fields `element`; reading a table
  back passes through this so the round trip gives equal tables and hashes.
  """
  for name in ("items", "available"):
    if name in events.column_names:
      i = events.column_names.index(name)
      events = events.set_column(i, name, events.column(name).cast(pa.list_(pa.int32())))
  if "tied" in events.column_names and events.schema.field("tied").type != pa.list_(pa.bool_()):
    i = events.column_names.index("tied")
    events = events.set_column(i, "tied", events.column("tied").cast(pa.list_(pa.bool_())))
  for name in events.column_names:
    if name.startswith(COVARIATE_PREFIX):
      t = events.schema.field(name).type
      if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        continue  # validation names the type
      value = t.value_type
      if pa.types.is_dictionary(value):
        value = value.value_type
      if pa.types.is_floating(value) or pa.types.is_integer(value):
        target = pa.list_(pa.float64())
      elif pa.types.is_string(value) or pa.types.is_large_string(value):
        target = pa.list_(pa.string())
      else:
        continue
      if t != target:
        i = events.column_names.index(name)
        events = events.set_column(i, name, events.column(name).cast(target))
  if "time" in events.column_names and pa.types.is_timestamp(events.schema.field("time").type):
    t = events.schema.field("time").type
    if t.unit != "s" or t.tz is not None:
      i = events.column_names.index("time")
      events = events.set_column(i, "time", events.column("time").cast(pa.timestamp("s")))
  return events


HASH_PIECE = 1 << 22  # elements hashed at a time: the temporaries stay small on any table


def _pieces(a: pa.Array | pa.ChunkedArray, piece: int) -> list[pa.Array]:
  """`a` as zero-copy slices of at most `piece` elements, in order."""
  chunks = a.chunks if isinstance(a, pa.ChunkedArray) else [a]
  return [c.slice(s, piece) for c in chunks for s in range(0, len(c), piece)]


class _Bits:
  """np.packbits of a bool array fed in pieces: whole bytes go to `h`, the rest waits."""

  def __init__(self, h):
    self.h, self.rest = h, np.zeros(0, dtype=bool)

  def add(self, bits: np.ndarray) -> None:
    bits = np.concatenate([self.rest, bits]) if len(self.rest) else bits
    whole = len(bits) // 8 * 8
    self.h.update(np.packbits(bits[:whole]).tobytes())
    self.rest = bits[whole:]

  def close(self) -> None:
    if len(self.rest):
      self.h.update(np.packbits(self.rest).tobytes())


def _update_with_offsets(h, pieces: list[np.ndarray]) -> None:
  """Feed the offsets of a whole array, `offsets - offsets[0]` as int64, from its pieces'."""
  base = 0
  for i, offsets in enumerate(pieces):
    offsets = offsets.astype(np.int64)
    h.update((offsets[(i > 0):] - offsets[0] + base).tobytes())
    base += int(offsets[-1] - offsets[0])


def _update_with_array(h, a: pa.Array | pa.ChunkedArray, piece: int = HASH_PIECE) -> None:
  """Feed a canonical byte form of `a` (independent of chunking and slicing) to h.

  The bytes are those of the whole array (its type, length, null count, validity
  bits, offsets and values, each section whole), produced `piece` elements at a
  time so that no copy of the array is made.
  """
  t = a.type
  if pa.types.is_dictionary(t):
    t = t.value_type
  parts = _pieces(a, piece)
  if pa.types.is_dictionary(a.type):
    parts = [p.dictionary_decode() for p in parts]
  if not parts:  # an empty array: one empty piece of its type keeps the layout below
    parts = [pa.array([], t)]
  length, nulls = sum(len(p) for p in parts), sum(p.null_count for p in parts)
  h.update(f"{_type_tag(t)}|{length}|{nulls}|".encode())
  if nulls:
    bits = _Bits(h)
    for p in parts:
      bits.add(np.asarray(p.is_valid().to_numpy(zero_copy_only=False), dtype=bool))
    bits.close()
  if pa.types.is_list(t) or pa.types.is_large_list(t):
    _update_with_offsets(h, [np.asarray(p.offsets) for p in parts])
    _update_with_array(h, pa.chunked_array([p.flatten() for p in parts], t.value_type), piece)
  elif pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) \
      or pa.types.is_large_binary(t):
    wide = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    offsets, data = [], []
    for p in parts:
      bufs = p.buffers()
      o = np.frombuffer(bufs[1], dtype=np.int64 if wide else np.int32)[p.offset:p.offset + len(p) + 1]
      offsets.append(o)
      if bufs[2] is not None and len(p):
        data.append(memoryview(bufs[2])[int(o[0]):int(o[-1])])
    _update_with_offsets(h, offsets)
    for d in data:
      h.update(d)
  elif pa.types.is_fixed_size_list(t):
    h.update(f"size {t.list_size}|".encode())
    _update_with_array(h, pa.chunked_array([p.flatten() for p in parts], t.value_type), piece)
  elif pa.types.is_boolean(t):
    bits = _Bits(h)
    for p in parts:
      bits.add(np.asarray(p.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool))
    bits.close()
  elif pa.types.is_primitive(t) and t.bit_width % 8 == 0 and t.num_buffers == 2:
    width = t.bit_width // 8
    for p in parts:
      values = np.frombuffer(p.buffers()[1], dtype=f"u{width}")[p.offset:p.offset + len(p)]
      if p.null_count:
        values = np.where(np.asarray(p.is_valid().to_numpy(zero_copy_only=False), dtype=bool),
                          values, 0)
      h.update(np.ascontiguousarray(values).data)
  else:
    # Rare types in context columns: fall back to their Python values.
    h.update(repr(pa.chunked_array(parts, t).to_pylist()).encode())


def content_hash(events: pa.Table, catalog: Catalog, *, piece: int = HASH_PIECE) -> str:
  """sha256 (hex) of the table's columns and the catalog.

  The digest depends on the column names, types and values only: not on Arrow
  chunking, slicing, column order or Parquet encoding. Columns are hashed
  `piece` elements at a time (memory: a few bytes per element of one piece).
  """
  h = hashlib.sha256()
  h.update(f"luce-events-v{SCHEMA_VERSION}|".encode())
  for name in sorted(events.column_names):
    h.update(f"column {name}|".encode())
    _update_with_array(h, events.column(name), piece)
  h.update(catalog.to_json().encode())
  return h.hexdigest()


def list_arrays(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
  """(values int32[nnz], offsets int64[m+1] starting at 0) of a list<int32> column."""
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
  offsets = np.asarray(column.offsets, dtype=np.int64)
  values = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
  return values, offsets - offsets[0]


def padded(values: np.ndarray, offsets: np.ndarray, fill: int = -1) -> np.ndarray:
  """Ragged lists (values[nnz], offsets[m+1]) as int32[m, k_max] padded with `fill`."""
  lengths = np.diff(offsets)
  m = len(lengths)
  k_max = int(lengths.max()) if m else 0
  if m and (lengths == k_max).all():
    return values.astype(np.int32, copy=False).reshape(m, k_max)
  out = np.full((m, k_max), fill, dtype=np.int32)
  rows = np.repeat(np.arange(m), lengths)
  pos = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
  out[rows, pos] = values
  return out


def list_column(lists: np.ndarray | Sequence, lengths: np.ndarray | None = None) -> pa.ListArray:
  """A list<int32> Arrow array from int[m, k] (with `lengths`) or a sequence of lists."""
  if isinstance(lists, np.ndarray) and lists.ndim == 2:
    m, k = lists.shape
    if lengths is None:
      lengths = np.full(m, k, dtype=np.int64)
    keep = np.arange(k)[None, :] < lengths[:, None]
    values = lists[keep].astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))
  return pa.array([list(map(int, x)) for x in lists], pa.list_(pa.int32()))


def covariate_column(values, keep: np.ndarray, *, name: str = "covariate") -> pa.ListArray:
  """A `cov_` column from a dense [m, n] array: row i keeps `values[i, keep[i]]`.

  Numeric (float, int, bool) values give list<double>; object or string values
  list<string> (None and float NaN become null, anything else its str()).
  """
  values = np.asarray(values)
  keep = np.asarray(keep, dtype=bool)
  if values.shape != keep.shape:
    raise DataError(f"covariate {name!r} has shape {values.shape}, expected {keep.shape} "
                    f"(events, items).")
  offsets = pa.array(np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32))
  picked = values[keep]
  if picked.dtype.kind in "fiub":
    flat = pa.array(picked.astype(np.float64), pa.float64())
  else:
    cells = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in picked]
    flat = pa.array(cells, pa.string())
  return pa.ListArray.from_arrays(offsets, flat)


@dataclasses.dataclass(frozen=True, eq=False)
class EventTable:
  """Events (an Arrow table, schema in the module docstring) with their catalog.

  Build one with a reader (`luce.data.read`) or `EventTable.from_arrays`; both
  validate. `metadata` holds strings: the source, the game (`k`), reader notes.
  """
  events: pa.Table
  catalog: Catalog
  metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

  # ---- sizes ------------------------------------------------------------------
  def __len__(self) -> int:
    return self.events.num_rows

  @property
  def n_events(self) -> int:
    return self.events.num_rows

  @property
  def n_items(self) -> int:
    return len(self.catalog)

  @functools.cached_property
  def _lists(self) -> tuple[np.ndarray, np.ndarray]:
    return list_arrays(self.events.column("items"))

  def lengths(self) -> np.ndarray:
    """int64[m]: number of items each event lists."""
    return np.diff(self._lists[1])

  @property
  def k(self) -> int | None:
    """The fixed event size of the game, or None when sizes vary."""
    if "k" in self.metadata:
      return int(self.metadata["k"])
    lengths = self.lengths()
    return int(lengths[0]) if len(lengths) and (lengths == lengths[0]).all() else None

  @property
  def k_max(self) -> int:
    lengths = self.lengths()
    return int(lengths.max()) if len(lengths) else 0

  @property
  def kind(self) -> str:
    """`ranking`, `set`, or `mixed` when the table holds both."""
    kinds = self.events.column("kind").unique().to_pylist()
    return kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "set")

  @functools.cached_property
  def content_hash(self) -> str:
    return content_hash(self.events, self.catalog)

  # ---- dense views for models -------------------------------------------------
  def items_array(self) -> np.ndarray:
    """int32[m, k_max]: item ids per event, best-first for rankings, padded with -1."""
    return padded(*self._lists)

  def items_flat(self) -> tuple[np.ndarray, np.ndarray]:
    """(values int32[nnz], offsets int64[m+1]): the ragged item lists."""
    return self._lists

  def has_ties(self) -> bool:
    """Whether the table keeps ties (a `tied` column, from a reader's ties=keep)."""
    return "tied" in self.events.column_names

  def tied_array(self) -> np.ndarray:
    """bool[m, k_max] aligned with `items_array()`: True where an item is tied
    with the one before it (False on padding, and everywhere when the table
    keeps no ties). Feed it to `luce.fit_pl_tied(..., tied=...)`."""
    values, offsets = self._lists
    m = len(offsets) - 1
    if not self.has_ties():
      return np.zeros((m, self.k_max), dtype=bool)
    flags, flag_offsets = list_arrays(self.events.column("tied"))
    if not np.array_equal(flag_offsets, offsets):
      row = int(np.flatnonzero(np.diff(flag_offsets) != np.diff(offsets))[0])
      raise DataError(f"column 'tied', row {row}: {int(np.diff(flag_offsets)[row])} flags for "
                      f"{int(np.diff(offsets)[row])} items; the flags must align with 'items'.")
    first = flags[offsets[:-1][np.diff(offsets) > 0]].astype(bool)
    if first.any():
      row = int(np.flatnonzero(np.diff(offsets) > 0)[np.flatnonzero(first)[0]])
      raise DataError(f"column 'tied', row {row}: the first item is marked tied with the one "
                      f"before it (there is none).")
    return padded(flags.astype(np.int32), offsets, fill=0).astype(bool)

  def has_availability(self) -> bool:
    return "available" in self.events.column_names

  def available_mask(self) -> np.ndarray:
    """bool[m, n]: items that could be picked in each event (all, unless the
    table has an `available` column, e.g. a race's entrants)."""
    m, n = self.n_events, self.n_items
    if not self.has_availability():
      return np.ones((m, n), dtype=bool)
    values, offsets = list_arrays(self.events.column("available"))
    mask = np.zeros((m, n), dtype=bool)
    mask[np.repeat(np.arange(m), np.diff(offsets)), values] = True
    return mask

  def inclusion_matrix(self) -> np.ndarray:
    """bool[m, n]: True where the item is in the event."""
    values, offsets = self._lists
    m = self.n_events
    inc = np.zeros((m, self.n_items), dtype=bool)
    inc[np.repeat(np.arange(m), np.diff(offsets)), values] = True
    return inc

  def times(self) -> np.ndarray:
    """datetime64[s][m] or int64[m]: the time column."""
    col = self.events.column("time")
    if pa.types.is_timestamp(col.type):
      return col.to_numpy().astype("datetime64[s]")
    return col.to_numpy()

  def weights(self) -> np.ndarray:
    """float64[m]: event weights (ones when the table has none)."""
    if "weight" in self.events.column_names:
      return self.events.column("weight").to_numpy()
    return np.ones(self.n_events)

  def context_columns(self) -> list[str]:
    return [c for c in self.events.column_names if c.startswith(CONTEXT_PREFIX)]

  def covariate_columns(self) -> list[str]:
    """Names of the per-item covariate columns (`cov_grid`, ...), in table order."""
    return [c for c in self.events.column_names if c.startswith(COVARIATE_PREFIX)]

  def covariates(self, name: str) -> np.ndarray:
    """One covariate scattered to the catalog's item axis.

    Args:
      name: the column (`cov_grid`) or its suffix (`grid`).

    Returns:
      float64[m, n] for a numeric covariate (NaN where the item is not
      available), object[m, n] of str for a categorical one (None there).
      Entry [i, a] is the value of item a in event i: element j of row i's list
      goes to item `available[i][j]` (item j when the table has no `available`).
    """
    col = name if name.startswith(COVARIATE_PREFIX) else COVARIATE_PREFIX + name
    if col not in self.events.column_names:
      have = ", ".join(self.covariate_columns()) or "none"
      raise DataError(f"no covariate column {col!r}; the table's covariate columns: {have}.")
    column = self.events.column(col)
    if isinstance(column, pa.ChunkedArray):
      column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.null_count:
      column = column.fill_null(pa.scalar([], column.type))
    offsets = np.asarray(column.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    flat = column.flatten()
    if pa.types.is_dictionary(flat.type):
      flat = flat.dictionary_decode()
    numeric = pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)
    m, n = self.n_events, self.n_items
    if self.has_availability():
      ids, avail_offsets = list_arrays(self.events.column("available"))
    else:
      ids = np.tile(np.arange(n, dtype=np.int32), m)
      avail_offsets = np.arange(m + 1, dtype=np.int64) * n
    if not np.array_equal(np.diff(offsets), np.diff(avail_offsets)):
      bad = int(np.flatnonzero(np.diff(offsets) != np.diff(avail_offsets))[0])
      raise DataError(f"covariate {col!r}: event row {bad} has {int(np.diff(offsets)[bad])} "
                      f"values for {int(np.diff(avail_offsets)[bad])} available items; "
                      f"validate the table (luce.data.validate) to list every such row.")
    rows = np.repeat(np.arange(m), np.diff(avail_offsets))
    if numeric:
      out = np.full((m, n), np.nan)
      out[rows, ids] = np.asarray(flat.cast(pa.float64()).to_numpy(zero_copy_only=False),
                                  dtype=np.float64)
    else:
      out = np.full((m, n), None, dtype=object)
      out[rows, ids] = np.asarray(flat.to_pylist(), dtype=object)
    return out

  def slice(self, start: int, stop: int) -> "EventTable":
    """Events start..stop-1 (in time order) with the same catalog."""
    return EventTable(self.events.slice(start, max(stop - start, 0)), self.catalog, dict(self.metadata))

  # ---- construction -----------------------------------------------------------
  @classmethod
  def from_arrays(cls, items, *, catalog: Catalog | int, times=None, kind: str = "set",
                  lengths=None, series=None, weights=None, available=None, tied=None,
                  context: Mapping[str, object] | None = None,
                  covariates: Mapping[str, object] | None = None,
                  metadata: Mapping[str, str] | None = None,
                  on_invalid: str = "raise") -> "EventTable":
    """Build and validate a table from dense arrays.

    Args:
      items: int[m, k] item ids (padded with -1 where `lengths` says so).
      catalog: a Catalog, or n for items labelled 1..n.
      times: int64[m] steps or datetime64[m]; default 0..m-1.
      kind: `ranking` or `set` (all events), or a sequence of m kinds.
      lengths: int[m] list lengths; default: count of ids >= 0 per row.
      series, weights: optional [m] arrays; available: optional bool[m, n].
      tied: optional bool[m, k] aligned with `items` (True: tied with the item
        before it), stored as the `tied` column.
      context: optional name -> [m] array, stored as `ctx_<name>`.
      covariates: optional name -> [m, n] array, stored as `cov_<name>`: a
        numeric (float, int or bool) array becomes list<double>, an object or
        string array list<string> (None stays null, reported by validation).
        Row i keeps the values at its available items (all n without
        `available`), in item order; the other entries are ignored.
    """
    from luce.data._validate import validate  # validation imports this module
    items = np.asarray(items)
    if items.ndim != 2:
      raise DataError(f"items must be int[m, k], got shape {items.shape}.")
    m = items.shape[0]
    if isinstance(catalog, (int, np.integer)):
      catalog = Catalog.numbered(int(catalog))
    if lengths is None:
      lengths = (items >= 0).sum(axis=1)
    lengths = np.asarray(lengths, dtype=np.int64)
    columns = {"event_id": pa.array(np.arange(m, dtype=np.int64))}
    if times is None:
      times = np.arange(m, dtype=np.int64)
    times = np.asarray(times)
    if np.issubdtype(times.dtype, np.datetime64):
      columns["time"] = pa.array(times.astype("datetime64[s]"), pa.timestamp("s"))
    else:
      columns["time"] = pa.array(times.astype(np.int64))
    if series is not None:
      columns["series"] = pa.array(np.asarray(series))
    columns["items"] = list_column(items, lengths)
    kinds = [kind] * m if isinstance(kind, str) else list(kind)
    columns["kind"] = pa.array(kinds, pa.string())
    if tied is not None:
      tied = np.asarray(tied, dtype=bool)
      if tied.shape != items.shape:
        raise DataError(f"tied must be bool{list(items.shape)} like items, got shape "
                        f"{list(tied.shape)}.")
      keep_t = np.arange(items.shape[1])[None, :] < lengths[:, None]
      offsets_t = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
      columns["tied"] = pa.ListArray.from_arrays(pa.array(offsets_t), pa.array(tied[keep_t]))
    if weights is not None:
      columns["weight"] = pa.array(np.asarray(weights, dtype=np.float64))
    if available is not None:
      available = np.asarray(available, dtype=bool)
      rows, ids = np.nonzero(available)
      offsets = np.concatenate([[0], np.cumsum(available.sum(axis=1))]).astype(np.int32)
      columns["available"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids.astype(np.int32)))
    for name, value in (context or {}).items():
      columns[CONTEXT_PREFIX + name] = pa.array(np.asarray(value))
    keep = available if available is not None else np.ones((m, len(catalog)), dtype=bool)
    for name, value in (covariates or {}).items():
      columns[COVARIATE_PREFIX + name] = covariate_column(value, keep, name=name)
    table = cls(pa.table(columns), catalog, dict(metadata or {}))
    validate(table, on_invalid=on_invalid)
    return table


def write(table: EventTable, path: str | os.PathLike) -> str:
  """Write `table` to Parquet with its catalog, schema version and content hash.

  Returns the content hash (sha256 hex).
  """
  meta = dict(table.events.schema.metadata or {})
  meta.update({
      _META_VERSION: str(SCHEMA_VERSION).encode(),
      _META_HASH: table.content_hash.encode(),
      _META_CATALOG: table.catalog.to_json().encode(),
      _META_INFO: json.dumps(dict(table.metadata), sort_keys=True).encode(),
  })
  pq.write_table(table.events.replace_schema_metadata(meta), os.fspath(path))
  return table.content_hash


def _read_row_groups(path: str) -> pa.Table:
  """The file's table, read one row group at a time: the decoding buffers of one row group
  are live at once, not the whole file's (pq.read_table holds ~0.8x the table more)."""
  try:
    file = pq.ParquetFile(path)
  except (pa.ArrowException, OSError):
    return pq.read_table(path)  # fails again, with the message users have always had
  with file:
    parts = [file.read_row_group(i) for i in range(file.num_row_groups)]
    return pa.concat_tables(parts) if parts else file.schema_arrow.empty_table()


def read_parquet(path: str | os.PathLike, *, verify_hash: bool = True) -> EventTable:
  """Read a table written by `write`; checks schema version and content hash.

  Raises DataError (naming the file) for an unreadable or truncated file, a
  missing or different schema version, or a content hash that does not match.
  Validation of the rows is `luce.data.read`'s job (it calls this).
  """
  path = os.fspath(path)
  try:
    events = _read_row_groups(path)
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e}). "
                    f"Is it truncated? Rewrite it with luce.data.write.") from e
  meta = events.schema.metadata or {}
  if _META_VERSION not in meta or _META_CATALOG not in meta:
    raise DataError(f"{path}: no luce metadata (schema version, catalog); event tables "
                    f"are written by luce.data.write(table, path).")
  version = int(meta[_META_VERSION])
  if version != SCHEMA_VERSION:
    raise DataError(f"{path}: schema version {version}, this luce reads version "
                    f"{SCHEMA_VERSION}.")
  catalog = Catalog.from_json(meta[_META_CATALOG].decode())
  info = json.loads(meta.get(_META_INFO, b"{}").decode())
  try:
    events = canonical_events(events.replace_schema_metadata(None))
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
    raise DataError(f"{path}: items, available, time or a cov_ column has the wrong type "
                    f"({e}); see luce.data's event table schema.") from e
  table = EventTable(events, catalog, info)
  if verify_hash:
    stored = meta.get(_META_HASH, b"").decode()
    if stored != table.content_hash:
      raise DataError(f"{path}: content hash mismatch: the file says {stored or '(none)'}, "
                      f"its contents hash to {table.content_hash}. The file was changed "
                      f"after luce wrote it.")
  return table
