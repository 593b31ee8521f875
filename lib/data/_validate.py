"""Validation of event tables: every problem named by file, row, column and value.

`find_problems` returns every problem; `validate` raises `luce.DataError` at the
first one (`on_invalid="raise"`) or with all of them listed
(`on_invalid="report"`). The checks are vectorised over the flat item lists of a chunk
of events at a time (`chunk_events`), so a million events validate in about a second
and memory stays bounded by the table plus one chunk's temporaries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from luce.data._table import (
    CONTEXT_PREFIX,
    CORE_COLUMNS,
    COVARIATE_PREFIX,
    KINDS,
    EventTable,
    list_arrays,
)
from luce.errors import ConfigError, DataError

ON_INVALID = ("raise", "report", "drop")
_REPORT_LINES = 30


@dataclasses.dataclass(frozen=True)
class Problem:
  """One validation problem. `row` is the file's line number (header = 1) for
  text files, the 0-based table row for tables."""
  check: str
  file: str
  row: int | None
  column: str | None
  value: object
  message: str

  def __str__(self) -> str:
    where = [self.file]
    if self.row is not None:
      where.append(f"row {self.row}")
    if self.column is not None:
      where.append(f"column {self.column!r}")
    return f"{', '.join(where)}: {self.message} (value: {self.value!r})"


@dataclasses.dataclass(frozen=True)
class Provenance:
  """Where the rows and values of a table came from, for error messages.

  Attributes:
    file: the file's name as the user gave it.
    event_rows: int64[m] line (or row) of each event; default the table row.
    value_rows: int64[nnz] line of each item value; default its event's line.
    value_columns: the file column of each value: one name, or one name per
      position in the event (wide files: `pos1`, `pos2`, ...).
    value_labels: [nnz] the source's label of each value, shown instead of the id.
    columns: table column -> file column (`time` -> `date`, `cov_grid` -> `grid`).
    covariate_rows: int64[total available] line of each entry of the flat
      `available` lists (the entrant's row), where the `cov_` values of that
      entry came from; default its event's line.
  """
  file: str
  event_rows: np.ndarray | None = None
  value_rows: np.ndarray | None = None
  value_columns: str | Sequence[str] = "items"
  value_labels: np.ndarray | None = None
  columns: dict = dataclasses.field(default_factory=dict)
  covariate_rows: np.ndarray | None = None

  def event_row(self, i: int) -> int:
    return int(self.event_rows[i]) if self.event_rows is not None else int(i)

  def value_row(self, j: int, event: int) -> int:
    return int(self.value_rows[j]) if self.value_rows is not None else self.event_row(event)

  def value_column(self, position: int) -> str:
    if isinstance(self.value_columns, str):
      return self.value_columns
    cols = self.value_columns
    return cols[position] if position < len(cols) else f"{cols[-1]}+{position - len(cols) + 1}"

  def column(self, name: str) -> str:
    return self.columns.get(name, name)


CHUNK_EVENTS = 1 << 16  # events checked at a time: the per-item temporaries are one chunk's
_MASK_BYTES = 1 << 24  # the availability check's bool[events, n + 1] mask, at most
_NULL_ID = -(2**31)  # a null item, once filled: reported as missing, not as outside the catalog


def _first(mask: np.ndarray, limit: int | None) -> np.ndarray:
  idx = np.flatnonzero(mask)
  return idx if limit is None else idx[:limit]


def _rows(column: pa.ChunkedArray | pa.Array, start: int, stop: int) -> pa.Array:
  """Rows start..stop-1 of a column as one array: a view, a copy only where they span chunks."""
  part = column.slice(start, stop - start)
  if isinstance(part, pa.ChunkedArray):
    part = part.chunk(0) if part.num_chunks == 1 else part.combine_chunks()
  return part


def _event_at(offsets: np.ndarray, j: int) -> int:
  """The list holding flat entry j (offsets int64[c+1] from 0): `repeat(arange(c), lengths)[j]`."""
  return int(np.searchsorted(offsets, j, side="right") - 1)


class _Found:
  """The problems of each check, at most `limit` per check, kept until every chunk is seen."""

  def __init__(self, limit: int | None):
    self.limit, self.lists = limit, {}

  def first(self, check: str, mask: np.ndarray) -> np.ndarray:
    """Indices of `mask`, as many as `check` still has room for."""
    found = self.lists.setdefault(check, [])
    return _first(mask, None if self.limit is None else max(self.limit - len(found), 0))

  def add(self, check: str, problem: Problem) -> None:
    self.lists.setdefault(check, []).append(problem)

  def take(self, check: str) -> list[Problem]:
    return self.lists.pop(check, [])


def find_problems(table: EventTable, provenance: Provenance | None = None, *,
                  k: int | None = None, limit: int | None = None,
                  chunk_events: int = CHUNK_EVENTS) -> list[Problem]:
  """Every problem of `table` (at most `limit` per check), in check order.

  Checks: unknown columns, missing columns, nulls, kinds, event size (when the
  game fixes `k`, else metadata's `k`), ids outside the catalog, duplicate items
  in an event, items not available, time not increasing within a series,
  non-positive weights, covariates (`cov_*`: type list<double> or list<string>,
  one value per available item, numbers finite and not null, labels not null
  or empty).

  The rows are checked `chunk_events` events at a time (the problems and their
  order do not depend on it): memory is the table's plus a few arrays per event
  and one chunk's per-item temporaries, never arrays per item of the whole table.
  """
  if chunk_events < 1:
    raise ConfigError(f"chunk_events={chunk_events}: validation needs a positive number of events "
                      f"per chunk.")
  prov = provenance or Provenance(file=table.metadata.get("source", "<table>"))
  events = table.events
  problems: list[Problem] = []
  add = problems.append

  # Columns.
  for name in events.column_names:
    if name not in CORE_COLUMNS and not name.startswith((CONTEXT_PREFIX, COVARIATE_PREFIX)):
      add(Problem("unknown_column", prov.file, None, name, name,
                  f"unknown column; event tables have {', '.join(CORE_COLUMNS)}, "
                  f"context columns named {CONTEXT_PREFIX}* and per-item covariate "
                  f"columns named {COVARIATE_PREFIX}*"))
  for name in ("event_id", "time", "items", "kind"):
    if name not in events.column_names:
      add(Problem("missing_column", prov.file, None, name, None, "required column is missing"))
  if problems:
    return problems  # the row checks need the columns

  # Types.
  items_type = events.schema.field("items").type
  if not (pa.types.is_list(items_type) and pa.types.is_integer(items_type.value_type)):
    add(Problem("type", prov.file, None, "items", str(items_type), "items must be list<int32>"))
    return problems
  time_type = events.schema.field("time").type
  if not (pa.types.is_timestamp(time_type) or pa.types.is_integer(time_type)):
    add(Problem("type", prov.file, None, prov.column("time"), str(time_type),
                "time must be a timestamp or an integer step"))
    return problems

  # Nulls in the core columns (context columns may hold nulls).
  for name in ("event_id", "time", "series", "items", "kind", "weight"):
    if name in events.column_names and events.column(name).null_count:
      mask = np.asarray(events.column(name).is_null().to_numpy(zero_copy_only=False))
      for i in _first(mask, limit):
        add(Problem("null", prov.file, prov.event_row(i), prov.column(name), None,
                    "missing value"))

  if k is None and "k" in table.metadata:
    k = int(table.metadata["k"])
  found = _Found(limit)
  outside_any = _item_problems(table, prov, k, found, chunk_events)
  for check in ("item_null", "kind", "event_size_k", "event_size_0", "unknown_item",
                "duplicate_item"):
    problems += found.take(check)
  if not outside_any:  # ids outside the catalog make availability moot
    problems += found.take("not_available")
  _time_problems(table, prov, found, chunk_events)
  problems += found.take("time_order")

  if "weight" in events.column_names and events.column("weight").null_count == 0:
    weight = events.column("weight")
    for a in range(0, len(table), chunk_events):
      w = _rows(weight, a, a + chunk_events).to_numpy(zero_copy_only=False)
      for i in found.first("weight", ~(w > 0)):
        found.add("weight", Problem("weight", prov.file, prov.event_row(a + i), "weight",
                                    float(w[i]), "weights must be positive"))
    problems += found.take("weight")

  for name in table.covariate_columns():
    problems += _covariate_problems(table, name, prov, limit, chunk_events)
  return problems


def _item_problems(table: EventTable, prov: Provenance, k: int | None, found: _Found,
                   chunk_events: int) -> bool:
  """The checks of the item lists and kinds, a chunk of events at a time, into `found`.

  Returns whether any id is outside the catalog (then availability is not checked).
  """
  events = table.events
  n, m = table.n_items, len(table)
  column, kind_column = events.column("items"), events.column("kind")
  has_available = "available" in events.column_names
  outside_any = False
  base = 0  # flat index (of the whole table's item lists) of the chunk's first item
  for a in range(0, m, chunk_events):
    b = min(a + chunk_events, m)
    col = _rows(column, a, b)
    if col.null_count:
      col = col.fill_null(pa.scalar([], col.type))
    values, offsets = list_arrays(col)
    lengths = np.diff(offsets)
    flat = col.flatten()
    if flat.null_count:
      mask = np.asarray(flat.is_null().to_numpy(zero_copy_only=False))
      for j in found.first("item_null", mask):
        e = _event_at(offsets, j)
        found.add("item_null", Problem("null", prov.file, prov.value_row(base + j, a + e),
                                       prov.value_column(j - offsets[e]), None, "missing item"))
      values = np.asarray(flat.fill_null(_NULL_ID).to_numpy())
    else:
      values = np.asarray(values)

    kinds = _rows(kind_column, a, b).fill_null("")
    bad_kind = np.asarray(pc.invert(pc.is_in(kinds, pa.array(KINDS))).to_numpy(zero_copy_only=False))
    for i in found.first("kind", bad_kind):
      found.add("kind", Problem("kind", prov.file, prov.event_row(a + i), "kind",
                                kinds[int(i)].as_py(), f"kind must be one of {KINDS}"))

    # Sizes.
    if k is not None:
      for i in found.first("event_size_k", lengths != k):
        found.add("event_size_k", Problem("event_size", prov.file, prov.event_row(a + i),
                                          prov.value_column(0), int(lengths[i]),
                                          f"event lists {lengths[i]} items, the game picks {k}"))
    for i in found.first("event_size_0", lengths == 0):
      found.add("event_size_0", Problem("event_size", prov.file, prov.event_row(a + i),
                                        prov.value_column(0), 0, "event lists no items"))

    # Ids.
    def label(j, values=values, base=base):
      return prov.value_labels[base + j] if prov.value_labels is not None else int(values[j])

    outside = ((values < 0) | (values >= n)) & (values != _NULL_ID)
    outside_any = outside_any or bool(outside.any())
    for j in found.first("unknown_item", outside):
      e = _event_at(offsets, j)
      found.add("unknown_item", Problem(
          "unknown_item", prov.file, prov.value_row(base + j, a + e), prov.value_column(j - offsets[e]),
          label(j), f"item is not in the catalog of {n} items (ids 0..{n - 1})"))

    # Duplicates within an event: (event, id) keys equal to a neighbour once sorted. A plain
    # sort finds whether there are any; the stable argsort names them in the whole-table order.
    if len(values):
      # int32 keys where a chunk's fit (they sort faster; the order is the same).
      narrow = (b - a) * (n + 2) < 2**31 and values.dtype.kind == "i" and values.dtype.itemsize <= 4
      key_type = np.int32 if narrow else np.int64
      event_of = np.repeat(np.arange(b - a, dtype=key_type), lengths)
      key = event_of * key_type(n + 2) + np.clip(values, -1, n).astype(key_type, copy=False)
      ordered = np.sort(key)
      if (ordered[1:] == ordered[:-1]).any():
        order = np.argsort(key, kind="stable")
        same = key[order][1:] == key[order][:-1]
        for d in found.first("duplicate_item", same):
          j = int(order[d + 1])
          e = a + int(event_of[j])
          found.add("duplicate_item", Problem(
              "duplicate_item", prov.file, prov.value_row(base + j, e),
              prov.value_column(j - offsets[e - a]), label(j),
              f"item listed twice in one event (event_id "
              f"{events.column('event_id')[e].as_py()}); an item can be picked once"))
      del event_of, key, ordered

    # Availability: every listed item must be available (a mask per block of events).
    if has_available and not outside_any:
      avail_values, avail_offsets = list_arrays(_rows(events.column("available"), a, b))
      block = max(1, _MASK_BYTES // (n + 1))
      for e0 in range(0, b - a, block):
        e1 = min(e0 + block, b - a)
        mask = np.zeros((e1 - e0, n + 1), dtype=bool)
        rows = np.repeat(np.arange(e1 - e0), np.diff(avail_offsets[e0:e1 + 1]))
        mask[rows, np.clip(avail_values[avail_offsets[e0]:avail_offsets[e1]], 0, n)] = True
        local = np.repeat(np.arange(e1 - e0), lengths[e0:e1])
        missing = ~mask[local, np.clip(values[offsets[e0]:offsets[e1]], 0, n)]
        for jj in found.first("not_available", missing):
          j = int(offsets[e0] + jj)
          e = e0 + int(local[jj])
          found.add("not_available", Problem(
              "not_available", prov.file, prov.value_row(base + j, a + e),
              prov.value_column(j - offsets[e]), label(j),
              "item is ranked but not in the event's `available` list"))
    base += len(values)
  return outside_any


def _time_problems(table: EventTable, prov: Provenance, found: _Found, chunk_events: int) -> None:
  """Time strictly increasing within each series and non-decreasing overall, a chunk at a
  time (each series' last time carried), into `found`."""
  events = table.events
  column = events.column("time")
  if column.null_count:
    return
  stamps = pa.types.is_timestamp(column.type)
  codes = last = seen = None
  if "series" in events.column_names and events.column("series").null_count == 0:
    encoded = _rows(events.column("series"), 0, len(table)).dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))
    seen = np.zeros(len(encoded.dictionary), dtype=bool)
  previous = None  # the time of the event before the chunk
  for a in range(0, len(table), chunk_events):
    part = _rows(column, a, a + chunk_events)
    t = part.cast(pa.int64()).to_numpy() if stamps else part.to_numpy(zero_copy_only=False)
    joined = t if previous is None else np.concatenate([previous, t])
    shift = len(joined) - len(t)  # 1 when joined starts with the event before the chunk
    if codes is None:
      bad = np.flatnonzero(joined[1:] <= joined[:-1]) + 1 - shift
    else:
      c = codes[a:a + len(t)]
      if last is None:
        last = np.zeros(len(seen), dtype=t.dtype)
      order = np.lexsort((np.arange(len(t)), c))
      same_series = c[order][1:] == c[order][:-1]
      bad_series = order[1:][same_series & (t[order][1:] <= t[order][:-1])]
      first = order[np.concatenate([[True], ~same_series])]  # each series' first event here
      earlier = seen[c[first]]
      bad_first = first[earlier][t[first[earlier]] <= last[c[first[earlier]]]]
      final = order[np.concatenate([~same_series, [True]])]  # and its last
      last[c[final]], seen[c[final]] = t[final], True
      decreasing = np.flatnonzero(joined[1:] < joined[:-1]) + 1 - shift
      bad = np.union1d(np.union1d(bad_series, bad_first), decreasing)
    previous = t[-1:]
    for i in found.first("time_order", np.isin(np.arange(len(t)), bad)) if len(bad) else ():
      row = a + int(i)
      value, before = _time_at(column, row, stamps), _time_at(column, row - 1, stamps)
      found.add("time_order", Problem(
          "time_order", prov.file, prov.event_row(row), prov.column("time"), str(value),
          f"time is not after the previous event's {before if row > 0 else ''} "
          f"(times must increase within a series)"))


def _time_at(column: pa.ChunkedArray, i: int, stamps: bool):
  """Event i's time as `EventTable.times()[i]` gives it (datetime64[s] or the integer)."""
  value = _rows(column, i, i + 1).to_numpy(zero_copy_only=False)
  return value.astype("datetime64[s]")[0] if stamps else value[0]


def _covariate_problems(table: EventTable, name: str, prov: Provenance, limit: int | None,
                        chunk_events: int) -> list[Problem]:
  """Problems of one `cov_` column: its type, then null lists, list lengths and values, each
  check over every chunk of `chunk_events` events in turn."""
  events = table.events
  n = table.n_items
  where = prov.column(name)
  t = events.schema.field(name).type
  value_type = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else None
  if value_type is not None and pa.types.is_dictionary(value_type):
    value_type = value_type.value_type
  numeric = value_type is not None and pa.types.is_float64(value_type)
  categorical = value_type is not None and (pa.types.is_string(value_type)
                                            or pa.types.is_large_string(value_type))
  if not (numeric or categorical):
    return [Problem("covariate_type", prov.file, None, where, str(t),
                    "covariate columns are list<double> (numeric) or list<string> (categorical); "
                    "cast the column to one of them")]
  column = events.column(name)
  labels = np.asarray(table.catalog.labels, dtype=object)
  has_available = table.has_availability()
  what = ("the event's available items" if has_available else
          "the catalog's items (the table has no `available` column)")
  found = _Found(limit)
  entries = 0  # flat index (of the whole `available` lists) of the chunk's first entry
  for a in range(0, len(table), chunk_events):
    col = _rows(column, a, a + chunk_events)
    c = len(col)
    if col.null_count:
      null_rows = np.asarray(col.is_null().to_numpy(zero_copy_only=False))
      for i in found.first("null", null_rows):
        found.add("null", Problem("covariate_null", prov.file, prov.event_row(a + i), where, None,
                                  "missing covariate list; give one value per available item"))
      col = col.fill_null(pa.scalar([], col.type))
    else:
      null_rows = np.zeros(c, dtype=bool)
    offsets = np.asarray(col.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    if has_available:
      avail = _rows(events.column("available"), a, a + chunk_events)
      avail = avail.fill_null(pa.scalar([], avail.type)) if avail.null_count else avail
      avail_ids, avail_offsets = list_arrays(avail)
      expected = np.diff(avail_offsets)
    else:
      avail_ids = None
      avail_offsets = np.arange(c + 1, dtype=np.int64) * n
      expected = np.full(c, n, dtype=np.int64)
    wrong = (lengths != expected) & ~null_rows
    for i in found.first("length", wrong):
      found.add("length", Problem(
          "covariate_length", prov.file, prov.event_row(a + i), where, int(lengths[i]),
          f"{lengths[i]} covariate values for {expected[i]} items; element j belongs to "
          f"the j-th of {what}, so give exactly {expected[i]}"))

    flat = col.flatten()
    if pa.types.is_dictionary(flat.type):
      flat = flat.dictionary_decode()
    is_null = np.asarray(flat.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if numeric:
      x = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
      bad = is_null | ~np.isfinite(x)
    else:
      empty = np.asarray(pc.equal(pc.utf8_trim_whitespace(flat.fill_null("x")), "")
                         .to_numpy(zero_copy_only=False), dtype=bool)
      bad = is_null | empty
    for j in found.first("value", bad) if bad.any() else ():
      e = _event_at(offsets, j)
      pos = int(j - offsets[e])
      aligned = not wrong[e]
      entry = int(avail_offsets[e] + pos)
      row = int(prov.covariate_rows[entries + entry]) if aligned and prov.covariate_rows is not None \
          else prov.event_row(a + e)
      if aligned:
        item = int(avail_ids[entry]) if avail_ids is not None else pos
        whose = f" of item {labels[item]!r}" if 0 <= item < n else ""
      else:
        whose = f" at position {pos}"
      if numeric:
        value = None if is_null[j] else float(x[j])
        message = (f"missing covariate value{whose}" if is_null[j] else
                   f"covariate value{whose} is not finite (NaN or inf)")
        fix = "; numeric covariates need a finite number for every available item"
      else:
        value = None if is_null[j] else flat[int(j)].as_py()
        message = f"{'missing' if is_null[j] else 'empty'} covariate label{whose}"
        fix = "; categorical covariates need a non-empty label for every available item"
      found.add("value", Problem("covariate_value", prov.file, row, where, value, message + fix))
    entries += int(avail_offsets[-1])
  return found.take("null") + found.take("length") + found.take("value")


def raise_problems(problems: list[Problem], on_invalid: str) -> None:
  """Raise DataError for `problems` (first only, or all listed); no-op if none."""
  if not problems:
    return
  if on_invalid == "raise":
    err = DataError(f"{problems[0]}" + (f" [and {len(problems) - 1} more problems; read with "
                                        f"on_invalid='report' to list them]" if len(problems) > 1 else ""))
  else:
    lines = [f"  {p}" for p in problems[:_REPORT_LINES]]
    more = len(problems) - _REPORT_LINES
    if more > 0:
      lines.append(f"  ... and {more} more (all are in the error's .problems)")
    err = DataError(f"{len(problems)} problems:\n" + "\n".join(lines))
  err.problems = list(problems)
  raise err


def validate(table: EventTable, provenance: Provenance | None = None, *,
             k: int | None = None, on_invalid: str = "raise",
             problems: Sequence[Problem] = ()) -> EventTable:
  """Check `table`; return it unchanged or raise `luce.DataError`.

  Args:
    table: the table to check.
    provenance: where rows came from (file, lines, columns) for the messages.
    k: the game's fixed event size, if any.
    on_invalid: "raise" stops at the first problem; "report" lists every one
      (the error's `.problems` holds them all).
    problems: problems a reader already found (unparsable values, ties), reported
      together with these.
  """
  if on_invalid not in ("raise", "report"):  # "drop" needs a reader's rows: luce.data.read
    raise ConfigError(f"on_invalid={on_invalid!r}; valid values: raise, report.")
  # Every problem is counted (the checks are vectorised), so "and N more" is right.
  found = list(problems) + find_problems(table, provenance, k=k)
  raise_problems(found, on_invalid)
  return table
