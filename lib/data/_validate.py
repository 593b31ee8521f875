"""Validation of event tables: every problem named by file, row, column and value.

`find_problems` returns every problem; `validate` raises `luce.DataError` at the
first one (`on_invalid="raise"`) or with all of them listed
(`on_invalid="report"`). The checks are vectorised over the flat item lists, so a
million events validate in about a second.
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


def _first(mask: np.ndarray, limit: int | None) -> np.ndarray:
  idx = np.flatnonzero(mask)
  return idx if limit is None else idx[:limit]


def find_problems(table: EventTable, provenance: Provenance | None = None, *,
                  k: int | None = None, limit: int | None = None) -> list[Problem]:
  """Every problem of `table` (at most `limit` per check), in check order.

  Checks: unknown columns, missing columns, nulls, kinds, event size (when the
  game fixes `k`, else metadata's `k`), ids outside the catalog, duplicate items
  in an event, items not available, time not increasing within a series,
  non-positive weights, covariates (`cov_*`: type list<double> or list<string>,
  one value per available item, numbers finite and not null, labels not null
  or empty).
  """
  prov = provenance or Provenance(file=table.metadata.get("source", "<table>"))
  events = table.events
  n = table.n_items
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
  col = events.column("items")
  if isinstance(col, pa.ChunkedArray):
    col = col.combine_chunks()
  if col.null_count:
    col = col.fill_null(pa.scalar([], col.type))
  values, offsets = list_arrays(col)
  lengths = np.diff(offsets)
  event_of = np.repeat(np.arange(len(lengths)), lengths)
  pos_of = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
  flat = col.flatten()
  if flat.null_count:
    mask = np.asarray(flat.is_null().to_numpy(zero_copy_only=False))
    for j in _first(mask, limit):
      add(Problem("null", prov.file, prov.value_row(j, event_of[j]),
                  prov.value_column(pos_of[j]), None, "missing item"))
    values = np.asarray(flat.fill_null(-(2**31)).to_numpy())
  else:
    values = np.asarray(values)

  kinds = events.column("kind").fill_null("")
  bad_kind = np.asarray(pc.invert(pc.is_in(kinds, pa.array(KINDS))).to_numpy(zero_copy_only=False))
  for i in _first(bad_kind, limit):
    add(Problem("kind", prov.file, prov.event_row(i), "kind", kinds[int(i)].as_py(),
                f"kind must be one of {KINDS}"))

  # Sizes.
  if k is None and "k" in table.metadata:
    k = int(table.metadata["k"])
  if k is not None:
    for i in _first(lengths != k, limit):
      add(Problem("event_size", prov.file, prov.event_row(i), prov.value_column(0),
                  int(lengths[i]), f"event lists {lengths[i]} items, the game picks {k}"))
  for i in _first(lengths == 0, limit):
    add(Problem("event_size", prov.file, prov.event_row(i), prov.value_column(0), 0,
                "event lists no items"))

  # Ids.
  label = (lambda j: prov.value_labels[j]) if prov.value_labels is not None else (lambda j: int(values[j]))
  outside = ((values < 0) | (values >= n)) & (values != -(2**31))
  for j in _first(outside, limit):
    add(Problem("unknown_item", prov.file, prov.value_row(j, event_of[j]),
                prov.value_column(pos_of[j]), label(j),
                f"item is not in the catalog of {n} items (ids 0..{n - 1})"))

  # Duplicates within an event: sort (event, id) pairs and compare neighbours.
  if len(values):
    key = event_of.astype(np.int64) * (n + 2) + np.clip(values, -1, n)
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    for d in _first(same, limit):
      j = order[d + 1]
      e = event_of[j]
      add(Problem("duplicate_item", prov.file, prov.value_row(j, e), prov.value_column(pos_of[j]),
                  label(j), f"item listed twice in one event (event_id "
                  f"{events.column('event_id')[int(e)].as_py()}); an item can be picked once"))

  # Availability: every listed item must be available.
  if "available" in events.column_names and not outside.any():
    avail_values, avail_offsets = list_arrays(events.column("available"))
    mask = np.zeros((len(lengths), n + 1), dtype=bool)
    mask[np.repeat(np.arange(len(lengths)), np.diff(avail_offsets)), np.clip(avail_values, 0, n)] = True
    missing = ~mask[event_of, np.clip(values, 0, n)]
    for j in _first(missing, limit):
      add(Problem("not_available", prov.file, prov.value_row(j, event_of[j]),
                  prov.value_column(pos_of[j]), label(j),
                  "item is ranked but not in the event's `available` list"))

  # Time: strictly increasing within each series, non-decreasing overall.
  if events.column("time").null_count == 0:
    t = events.column("time").cast(pa.int64()).to_numpy() if pa.types.is_timestamp(time_type) \
        else events.column("time").to_numpy()
    if "series" in events.column_names and events.column("series").null_count == 0:
      s = events.column("series").combine_chunks()
      s_codes = np.asarray(s.dictionary_encode().indices.to_numpy(zero_copy_only=False))
      order = np.lexsort((np.arange(len(t)), s_codes))
      same_series = s_codes[order][1:] == s_codes[order][:-1]
      bad = same_series & (t[order][1:] <= t[order][:-1])
      bad_rows = np.sort(order[1:][bad])
      decreasing = np.flatnonzero(t[1:] < t[:-1]) + 1
      bad_rows = np.union1d(bad_rows, decreasing)
    else:
      bad_rows = np.flatnonzero(t[1:] <= t[:-1]) + 1
    time_values = table.times() if pa.types.is_timestamp(time_type) else t
    for i in bad_rows if limit is None else bad_rows[:limit]:
      add(Problem("time_order", prov.file, prov.event_row(i), prov.column("time"),
                  str(time_values[i]), f"time is not after the previous event's "
                  f"{time_values[i - 1] if i > 0 else ''} (times must increase within a series)"))

  if "weight" in events.column_names and events.column("weight").null_count == 0:
    w = events.column("weight").to_numpy()
    for i in _first(~(w > 0), limit):
      add(Problem("weight", prov.file, prov.event_row(i), "weight", float(w[i]),
                  "weights must be positive"))

  for name in table.covariate_columns():
    _covariate_problems(table, name, prov, limit, add)
  return problems


def _covariate_problems(table: EventTable, name: str, prov: Provenance, limit: int | None,
                        add) -> None:
  """Problems of one `cov_` column: its type, list lengths and values."""
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
    add(Problem("covariate_type", prov.file, None, where, str(t),
                "covariate columns are list<double> (numeric) or list<string> (categorical); "
                "cast the column to one of them"))
    return
  col = events.column(name)
  if isinstance(col, pa.ChunkedArray):
    col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
  m = len(col)
  if col.null_count:
    null_rows = np.asarray(col.is_null().to_numpy(zero_copy_only=False))
    for i in _first(null_rows, limit):
      add(Problem("covariate_null", prov.file, prov.event_row(i), where, None,
                  "missing covariate list; give one value per available item"))
    col = col.fill_null(pa.scalar([], col.type))
  else:
    null_rows = np.zeros(m, dtype=bool)
  offsets = np.asarray(col.offsets, dtype=np.int64)
  offsets = offsets - offsets[0]
  lengths = np.diff(offsets)
  if table.has_availability():
    avail = events.column("available")
    if isinstance(avail, pa.ChunkedArray):
      avail = avail.combine_chunks() if avail.num_chunks != 1 else avail.chunk(0)
    avail = avail.fill_null(pa.scalar([], avail.type)) if avail.null_count else avail
    avail_ids, avail_offsets = list_arrays(avail)
    expected = np.diff(avail_offsets)
    what = "the event's available items"
  else:
    avail_ids = None
    avail_offsets = np.arange(m + 1, dtype=np.int64) * n
    expected = np.full(m, n, dtype=np.int64)
    what = "the catalog's items (the table has no `available` column)"
  wrong = (lengths != expected) & ~null_rows
  for i in _first(wrong, limit):
    add(Problem("covariate_length", prov.file, prov.event_row(i), where, int(lengths[i]),
                f"{lengths[i]} covariate values for {expected[i]} items; element j belongs to "
                f"the j-th of {what}, so give exactly {expected[i]}"))

  flat = col.flatten()
  if pa.types.is_dictionary(flat.type):
    flat = flat.dictionary_decode()
  if numeric:
    x = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
    is_null = np.asarray(flat.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    bad = is_null | ~np.isfinite(x)
  else:
    is_null = np.asarray(flat.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    empty = np.asarray(pc.equal(pc.utf8_trim_whitespace(flat.fill_null("x")), "")
                       .to_numpy(zero_copy_only=False), dtype=bool)
    bad = is_null | empty
  if not bad.any():
    return
  event_of = np.repeat(np.arange(m), lengths)
  pos_of = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)
  labels = np.asarray(table.catalog.labels, dtype=object)
  for j in _first(bad, limit):
    e, pos = int(event_of[j]), int(pos_of[j])
    aligned = not wrong[e]
    entry = int(avail_offsets[e] + pos)
    row = int(prov.covariate_rows[entry]) if aligned and prov.covariate_rows is not None \
        else prov.event_row(e)
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
      value = None if is_null[j] else flat[j].as_py()
      message = f"{'missing' if is_null[j] else 'empty'} covariate label{whose}"
      fix = "; categorical covariates need a non-empty label for every available item"
    add(Problem("covariate_value", prov.file, row, where, value, message + fix))


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
