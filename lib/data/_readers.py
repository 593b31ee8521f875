"""Readers from common real formats to event tables (not yet validated).

Each reader takes a resolved path and the source's options and returns a
`Loaded`: the table, where its rows came from, the game's k and the problems
found while parsing. `luce.data.read` validates it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa

from luce.data import _csvtext as ct
from luce.data._source import choice, flag, integer
from luce.data._table import CONTEXT_PREFIX, COVARIATE_PREFIX, Catalog, EventTable
from luce.data._validate import Problem, Provenance
from luce.errors import ConfigError, DataError

BAD_ID = -(2**31)  # an id that failed to parse; reported once, as a parse problem


@dataclasses.dataclass
class Loaded:
  table: EventTable
  provenance: Provenance
  k: int | None
  problems: list[Problem]


def _time_array(times: np.ndarray) -> pa.Array:
  if np.issubdtype(times.dtype, np.datetime64):
    return pa.array(times.astype("datetime64[s]"), pa.timestamp("s"))
  return pa.array(times.astype(np.int64), pa.int64())


def _ranked_lists(values: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
  return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values.astype(np.int32)))


def _tied_lists(flags: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
  """The `tied` column (ties=keep): True where an item is tied with the one before it."""
  return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                  pa.array(np.asarray(flags, dtype=bool), pa.bool_()))


# The tie policies of the ranking readers: keep the ties (a `tied` column), report them,
# break them by file order, or rank only the items before the first tie.
TIE_POLICIES = ("error", "keep", "order", "truncate")


def _time_order(times: np.ndarray) -> tuple[np.ndarray, str | None]:
  """Row order in time: files newest-first are reversed (said in the metadata)."""
  m = len(times)
  if m > 1 and np.all(times[1:] < times[:-1]):
    return np.arange(m)[::-1], "reversed: the file lists the newest event first"
  return np.arange(m), None


# ---- draws: one event per row ----------------------------------------------------

_TIME_NAMES = ("date", "draw_date", "drawdate", "draw date", "datum", "time", "day")
_INDEX_NAMES = ("race", "draw", "draw_number", "round", "event", "id", "index", "nr")


def read_rows(path: pathlib.Path, opts: dict, *, default_kind: str) -> Loaded:
  """One event per row: lottery draws (`draws:`) or wide rankings (`rankings:`).

  The picks are one packed column (`6|28|31|52|53`, separator `sep` detected)
  or several columns (`columns=Nr1-Nr20`; detected as a numbered run such as
  pos1..pos43). The time is a date column (format detected) or an integer
  column; other integer columns are bonus balls, other columns context; all are
  kept as `ctx_<name>`. The game (k of n, lowest label `first`) is inferred from
  the data when not given, then checked on every row.

  A row is one whole event, so these files have no per-item columns and carry
  no per-item covariates (`cov_*`); write one (event, item, rank, covariates)
  row per line and read it with `long:PATH?covariates=COL,...` instead.
  """
  name = path.name
  frame, delimiter = ct.read_text_table(path, opts.get("delimiter"))
  columns = list(frame.columns)
  lines = ct.line_numbers(frame)
  kind = choice(opts.get("kind", default_kind), "kind", ("set", "ranking"))
  problems: list[Problem] = []

  # Time column.
  time_col = opts.get("time") or opts.get("date")
  time_parts: list[str] = []
  if time_col is not None and "+" in time_col and time_col not in columns:
    # ?time=Year+Week (or Year+Month, Year+Month+Day): a date built from several columns.
    time_parts = [c.strip() for c in time_col.split("+")]
    missing = [c for c in time_parts if c not in columns]
    if missing:
      raise DataError(f"{name}: time={time_col!r} names {', '.join(map(repr, missing))}, which are "
                      f"not columns; the columns are {', '.join(map(repr, columns))}.")
    frame = frame.copy()
    frame[time_col] = _combined_dates(frame, time_parts, name, ct.line_numbers(frame))
    columns = list(frame.columns)
  if time_col is not None and time_col not in columns:
    raise DataError(f"{name}: time column {time_col!r} is not a column; the columns are "
                    f"{', '.join(map(repr, columns))}.")
  if time_col is None:
    lowered = {c.lower(): c for c in columns}
    time_col = next((lowered[t] for t in _TIME_NAMES + _INDEX_NAMES if t in lowered), None)
  if time_col is None:
    raise DataError(f"{name}: no date or time column found among {columns}; pass ?date=COLUMN "
                    f"(dates) or ?time=COLUMN (integer steps).")

  # Pick columns.
  rest = [c for c in columns if c != time_col and c not in time_parts]
  packed_re = re.compile(r"^\s*\d+(\s*[^\d\s]\s*\d+|\s+\d+)+\s*$")
  if "columns" in opts:
    pick_cols = ct.column_spec(opts["columns"], columns, name, "columns")
  else:
    # A packed column: most cells look like '6|28|31' (the others are reported below).
    packed = [c for c in rest if frame[c].notna().any() and
              frame[c].dropna().map(lambda v: bool(packed_re.match(v))).mean() >= 0.5]
    if len(packed) > 1:
      raise DataError(f"{name}: several columns hold lists of numbers ({packed}); pass "
                      f"?columns=NAME for the picks.")
    pick_cols = packed or ct.numbered_run(rest)
    if not pick_cols:
      raise DataError(f"{name}: cannot tell which columns hold the picks (no packed column like "
                      f"'1|2|3' and no numbered run like n1..n5 among {rest}); pass ?columns=...")
  if len(pick_cols) == 1:
    col = pick_cols[0]
    cells = frame[col]
    sep = opts.get("sep")
    if sep is None:
      marks = "".join(cells.dropna().str.replace(r"[\w\s]", "", regex=True))
      chars = set(marks)
      if len(chars) > 1:
        _report_bad_pick(name, col, cells, lines, max(sorted(chars), key=marks.count))
        raise DataError(f"{name}: column {col!r} mixes separators {sorted(chars)}; pass ?sep=...")
      sep = chars.pop() if chars else None  # None: whitespace
    split = [[] if v is None else [x for x in (re.split(r"\s+", v.strip()) if sep is None else
                                                 [s.strip() for s in v.split(sep)])]
             for v in cells]
    lengths = np.array([len(s) for s in split], dtype=np.int64)
    flat = np.array([x for s in split for x in s], dtype=object)
    value_columns: str | list[str] = col
    for i in np.flatnonzero(lengths == 0):
      problems.append(Problem("null", name, int(lines[i]), col, None, "missing picks"))
  else:
    cells = frame[pick_cols].to_numpy(dtype=object)
    present = cells != None  # noqa: E711 (elementwise)
    # Trailing blanks shorten an event; a blank before a pick is a missing value.
    lengths = np.where(present.any(axis=1), cells.shape[1] - np.argmax(present[:, ::-1], axis=1), 0)
    keep = np.arange(cells.shape[1])[None, :] < lengths[:, None]
    flat = cells[keep]
    lengths = lengths.astype(np.int64)
    value_columns = pick_cols
    sep = None
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  event_of = np.repeat(np.arange(len(lengths)), lengths)
  labels, ok = ct.parse_ints(flat)
  for j in np.flatnonzero(~ok):
    pos = j - offsets[event_of[j]]
    col = value_columns if isinstance(value_columns, str) else value_columns[pos]
    check = "null" if flat[j] is None else "parse"
    problems.append(Problem(check, name, int(lines[event_of[j]]), col, flat[j],
                            "missing pick" if flat[j] is None else "not an integer item label"))

  # Items: a catalog file, or numbered labels first..first+n-1.
  metadata = {}
  if "catalog" in opts:
    catalog = read_catalog_file(opts["catalog"], path)
    ids = np.where(ok, catalog.ids(labels.astype(str)), BAD_ID).astype(np.int64)
    ids = np.where(ok & (ids < 0), len(catalog), ids)  # unknown labels: reported by validation
  else:
    good = labels[ok]
    first = integer(opts["first"], "first") if "first" in opts else \
        (0 if good.size and good.min() == 0 else 1)
    if "n" not in opts and default_kind == "set":  # a game's balls, not a ranking's item ids
      _check_label_range(name, labels, ok, offsets, event_of, lines, value_columns, metadata)
    n_seen = int(good.max()) - first + 1 if good.size else 0
    n = integer(opts["n"], "n") if "n" in opts else n_seen
    metadata["n"] = f"{n}" + ("" if "n" in opts else " (inferred)")
    catalog = Catalog.numbered(n, first)
    ids = np.where(ok, labels - first, BAD_ID)
    # Ids below 0 or above n-1 are labels outside the game: validation names them.
    ids = np.where(ok & (ids < 0), n, ids)
  if "k" in opts:
    k = integer(opts["k"], "k")
  elif kind == "set" and len(lengths):
    k = int(np.bincount(lengths).argmax())
    metadata["k_inferred"] = str(k)
  else:
    k = None

  # Times and order.
  times, time_problems = ct.parse_times(frame[time_col].to_numpy(dtype=object), name=name,
                                        column=time_col, rows=lines,
                                        date_format=opts.get("date_format"))
  problems += time_problems
  order, note = _time_order(times)
  if note:
    metadata["order"] = note

  # The other columns are kept as context: bonus balls as integers, the rest as text.
  used = {time_col, *time_parts, *pick_cols}
  if "series" in opts:
    used.add(ct.column_spec(opts["series"], columns, name, "series")[0])
  bonus = ct.column_spec(opts["bonus"], columns, name, "bonus") if "bonus" in opts else None
  context = ct.column_spec(opts["context"], columns, name, "context") if "context" in opts else None
  ctx: dict[str, pa.Array] = {}
  for c in columns:
    if c in used:
      continue
    is_bonus = (c in bonus) if bonus is not None else (context is None and ct.is_int_column(frame[c]))
    if is_bonus:
      ints, ok_c = ct.parse_ints(frame[c].to_numpy(dtype=object))
      for i in np.flatnonzero(~ok_c & frame[c].notna().to_numpy()):
        problems.append(Problem("parse", name, int(lines[i]), c, frame[c].iloc[i],
                                "bonus ball is not an integer"))
      ctx[CONTEXT_PREFIX + ct.sanitize(c)] = pa.array(ints[order], mask=~ok_c[order])
    elif context is None or c in context:
      ctx[CONTEXT_PREFIX + ct.sanitize(c)] = pa.array(frame[c].to_numpy(dtype=object)[order], pa.string())
    else:
      problems.append(Problem("unknown_column", name, 1, c, c,
                              f"column is neither the time ({time_col!r}), the picks, a bonus "
                              f"column nor a context column; name it in ?context= or ?bonus="))

  # Reorder events in time.
  lengths_o = lengths[order]
  offsets_o = np.concatenate([[0], np.cumsum(lengths_o)])
  take = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in order]) if len(order) \
      else np.zeros(0, np.int64)
  ids_o = ids[take]
  m = len(order)
  cols = {
      "event_id": pa.array(np.arange(m, dtype=np.int64)),
      "time": _time_array(times[order]),
  }
  if "series" in opts:
    cols["series"] = pa.array(frame[opts["series"]].to_numpy(dtype=object)[order], pa.string())
  cols["items"] = _ranked_lists(ids_o, offsets_o)
  cols["kind"] = pa.array([kind] * m, pa.string())
  cols.update(ctx)
  metadata.update({"reader": "draws" if default_kind == "set" else "rankings",
                   "delimiter": delimiter, "picks": ",".join(pick_cols)})
  if sep is not None:
    metadata["sep"] = sep
  if k is not None:
    metadata["k"] = str(k)
  table = EventTable(pa.table(cols), catalog, metadata)
  prov = Provenance(file=name, event_rows=lines[order], value_rows=None,
                    value_columns=value_columns, value_labels=flat[take],
                    columns={"time": time_col})
  return Loaded(table, prov, k, problems)


def _check_label_range(name, labels, ok, offsets, event_of, lines, value_columns, metadata) -> None:
  """The game's size is inferred from the largest label: refuse one that lies far above
  every other (a typo would widen the game), and note a range that grows over time.

  Far above: the labels right below it never appear, a run of at least
  max(5, 10% of its value). A range that changes: labels that first appear
  after the first quarter of the events (noted in the table's metadata).
  """
  good = labels[ok]
  distinct = np.unique(good)
  if len(distinct) < 2:
    return
  top, below = int(distinct[-1]), int(distinct[-2])
  gap = top - below - 1
  if gap >= max(5, 0.1 * top):
    j = int(np.flatnonzero(ok & (labels == top))[0])
    e = int(event_of[j])
    col = value_columns if isinstance(value_columns, str) else value_columns[j - offsets[e]]
    raise DataError(f"{name}, line {int(lines[e])}, column {col!r}: pick {top} lies far above every "
                    f"other pick (the next largest is {below}; labels {below + 1}..{top - 1} never "
                    f"appear), so it would widen the game to {top} items: a typo? Pass ?n=N with "
                    f"the game's size if it really has {top} or more items.")
  events = len(offsets) - 1
  early = ok & (event_of < max(events // 4, 1))
  if events >= 8 and early.any():
    start = int(labels[early].max()) + 1
    if start <= top:
      later = ok & (labels >= start)
      e = int(event_of[np.flatnonzero(later)[0]])
      metadata["range_changed"] = (f"labels {start}..{top} first appear on line {int(lines[e])} "
                                   f"(none in the first quarter of the file): the game's range "
                                   f"may have changed; pass ?n= to fix it")


def _combined_dates(frame, parts: list[str], name: str, lines) -> list:
  """ISO dates from (year, week) columns (week w is day 7 (w - 1) of the year, so weeks
  1..53 order and never collide), (year, month) (the 1st) or (year, month, day)."""
  import datetime
  kinds = [c.lower() for c in parts]
  if len(parts) == 2 and "week" in kinds[1]:
    shape = "week"
  elif len(parts) in (2, 3) and "month" in kinds[1] or len(parts) == 3:
    shape = "date"
  else:
    raise DataError(f"{name}: time={'+'.join(parts)}: give Year+Week, Year+Month or "
                    f"Year+Month+Day columns (the second column's name says week or month).")
  out = []
  for i in range(len(frame)):
    cells = [frame[c].iloc[i] for c in parts]
    if any(v is None for v in cells):
      out.append(None)
      continue
    try:
      values = [int(str(v).strip()) for v in cells]
      if shape == "week":
        year, week = values
        if not 1 <= week <= 53:
          raise ValueError(f"week {week} is not in 1..53")
        day = datetime.date(year, 1, 1) + datetime.timedelta(days=7 * (week - 1))
      else:
        day = datetime.date(values[0], values[1], values[2] if len(values) == 3 else 1)
    except (ValueError, OverflowError) as e:
      raise DataError(f"{name}, line {int(lines[i])}, columns {'+'.join(parts)}: {cells} is not a "
                      f"{'year and week' if shape == 'week' else 'date'} ({e}).") from None
    out.append(day.isoformat())
  return out


def _report_bad_pick(name: str, col: str, cells, lines, sep: str) -> None:
  """With `sep` the most frequent mark of a packed column: a DataError at the
  first pick that is a number but not a positive integer (-1, 1.5), which
  would otherwise read as a second separator."""
  number = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
  for i, cell in enumerate(cells):
    if cell is None:
      continue
    for token in (t.strip() for t in str(cell).split(sep)):
      if token and not token.isdigit() and number.match(token):
        raise DataError(f"{name}, line {int(lines[i])}, column {col!r}: pick {token!r} is not a "
                        f"positive integer item label (cell {cell!r}).")


def read_catalog_file(spec: str, beside: pathlib.Path) -> Catalog:
  """A catalog from a CSV whose first column is the label and second the name."""
  from luce.data._source import resolve_path
  path = pathlib.Path(spec)
  if not path.is_absolute() and (beside.parent / path).exists():
    path = beside.parent / path
  else:
    path = resolve_path(spec, f"catalog={spec}")
  frame, _ = ct.read_text_table(path)
  if frame.shape[1] < 1:
    raise DataError(f"{path.name}: a catalog needs a label column (and a name column).")
  labels = frame.iloc[:, 0].to_numpy(dtype=object)
  if any(v is None for v in labels):
    i = next(i for i, v in enumerate(labels) if v is None)
    raise DataError(f"{path.name}, row {i + 2}, column {frame.columns[0]!r}: missing label.")
  names = frame.iloc[:, 1].to_numpy(dtype=object) if frame.shape[1] > 1 else labels
  return Catalog.from_labels([str(x).strip() for x in labels],
                             [str(x) if x is not None else str(l) for x, l in zip(names, labels)])


# ---- baskets: one basket (a set of item labels) per line ---------------------------

def read_baskets(path: pathlib.Path, opts: dict) -> Loaded:
  """One basket per line, its item labels separated by a delimiter (the market-basket
  layout, e.g. `milk,bread,eggs`): no header and no time column.

  Events are sets in file order (time = the line's 0-based position among the
  baskets, integer steps); baskets may hold any number of items. No file says
  what a shopper could have picked, so every catalog item is available in
  every basket (no `available` column). The catalog is every label seen, in
  order of first appearance; `catalog=FILE` gives it instead (then an unknown
  label is a problem). Options: delimiter= (default: the most frequent of
  , ; | tab in the file, else a space), header=true (skip a first line),
  duplicates=error|once (an item twice in one basket). Blank lines are not
  baskets; they are counted in the metadata.
  """
  name = path.name
  try:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
  except OSError as e:
    raise DataError(f"{name}: cannot read ({e}).") from e
  lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
  if lines and lines[-1] == "":
    lines = lines[:-1]
  start = 1 if flag(opts.get("header", "false"), "header") else 0
  delimiter = opts.get("delimiter")
  if delimiter is not None:
    delimiter = {"tab": "\t", "\\t": "\t", "space": " "}.get(delimiter, delimiter)
  else:
    body = "\n".join(lines[start:])
    counts = {d: body.count(d) for d in (",", ";", "|", "\t")}
    delimiter = max(counts, key=counts.get) if max(counts.values()) else " "
  duplicates = choice(opts.get("duplicates", "error"), "duplicates", ("error", "once"))
  problems: list[Problem] = []
  baskets, basket_lines, blank = [], [], 0
  for i in range(start, len(lines)):
    raw = lines[i]
    if not raw.strip():
      blank += 1
      continue
    cells = raw.split() if delimiter == " " else raw.split(delimiter)
    items = [c.strip() for c in cells]
    if any(not c for c in items):
      problems.append(Problem("null", name, i + 1, None, raw, "empty item label in the basket "
                              "(two delimiters in a row, or one at an end)"))
      items = [c for c in items if c]
    seen, kept = set(), []
    for c in items:
      if c in seen:
        if duplicates == "error":
          problems.append(Problem("duplicate_item", name, i + 1, None, c,
                                  "item twice in one basket; read with ?duplicates=once to keep "
                                  "it once"))
        continue
      seen.add(c)
      kept.append(c)
    baskets.append(kept)
    basket_lines.append(i + 1)
  if not baskets:
    raise DataError(f"{name}: no baskets (every line is blank).")
  if "catalog" in opts:
    catalog = read_catalog_file(opts["catalog"], path)
  else:
    order = dict.fromkeys(label for basket in baskets for label in basket)
    catalog = Catalog.from_labels(list(order))
  flat = np.array([label for basket in baskets for label in basket], dtype=object)
  ids = np.asarray(catalog.ids(flat.astype(str)), np.int64) if len(flat) else np.zeros(0, np.int64)
  ids = np.where(ids < 0, len(catalog), ids)   # unknown labels: named by validation
  lengths = np.array([len(b) for b in baskets], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  m = len(baskets)
  cols = {"event_id": pa.array(np.arange(m, dtype=np.int64)),
          "time": pa.array(np.arange(m, dtype=np.int64)),
          "items": _ranked_lists(ids, offsets),
          "kind": pa.array(["set"] * m, pa.string())}
  metadata = {"reader": "baskets", "delimiter": delimiter, "available": "every catalog item",
              "time": "the basket's position in the file"}
  if blank:
    metadata["blank_lines"] = str(blank)
  table = EventTable(pa.table(cols), catalog, metadata)
  rows = np.asarray(basket_lines, np.int64)
  prov = Provenance(file=name, event_rows=rows, value_rows=np.repeat(rows, lengths),
                    value_columns="basket", value_labels=flat)
  return Loaded(table, prov, None, problems)


# ---- long: one (event, item, rank) per row ---------------------------------------

def group_rankings(*, name: str, event_order: np.ndarray, item_ids: np.ndarray,
                   item_labels: np.ndarray, rank: np.ndarray, ranked: np.ndarray,
                   lines: np.ndarray, item_column: str, rank_column: str, ties: str,
                   duplicates: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                             np.ndarray, list[Problem], dict, np.ndarray,
                                             np.ndarray]:
  """Group result rows into per-event rankings, vectorised.

  Args:
    event_order: int64[r] the event each row belongs to, 0..m-1 in time order.
    item_ids: int64[r] catalog ids; rank: float64[r] (lower is better);
    ranked: bool[r] rows that take part in the ranking (others are entrants
      that were not ranked: available, not listed).
    lines: int64[r] file lines; ties: error|keep|order|truncate; duplicates: error|best.

  Returns (items, offsets, available, available_offsets, value_rows, problems,
  notes, available_rows, tied): items best-first per event; available = all
  entrants per event; available_rows int64[len(available)] the input row (index
  into the argument arrays) of each entrant, for its per-item covariates; tied
  bool[len(items)] True where an item shares its rank with the one before it
  (items of equal rank keep their file order).
  """
  problems: list[Problem] = []
  notes: dict[str, str] = {}
  sort_rank = np.where(ranked, rank, np.inf)
  order = np.lexsort((lines, sort_rank, event_order))
  ev, it, rk, rd, ln = (event_order[order], item_ids[order], rank[order], ranked[order], lines[order])
  lab = item_labels[order]
  src = order
  # The same item twice in one event: keep its best row or report it.
  key = ev * (int(item_ids.max(initial=0)) + 2) + it
  first_seen = np.zeros(len(key), dtype=bool)
  _, first_idx = np.unique(key, return_index=True)
  first_seen[first_idx] = True
  dup = ~first_seen
  if dup.any():
    if duplicates == "error":
      for j in np.flatnonzero(dup):
        problems.append(Problem("duplicate_item", name, int(ln[j]), item_column, lab[j],
                                "item appears twice in one event; read with ?duplicates=best "
                                "to keep its best result"))
    else:
      notes["duplicates_merged"] = str(int(dup.sum()))
      notes["duplicates_merged_lines"] = ",".join(map(str, ln[dup][:50]))
      warnings.warn(f"{name}: {int(dup.sum())} rows repeat an item within an event (e.g. line "
                    f"{int(ln[dup][0])}); kept the best result of each (duplicates=best).",
                    stacklevel=3)
    # Reported or merged, the repeats leave the lists (validation would name them again).
    keep = ~dup
    ev, it, rk, rd, ln, lab = ev[keep], it[keep], rk[keep], rd[keep], ln[keep], lab[keep]
    src = src[keep]
  # Ties: equal ranks of neighbours in the same event.
  tie = np.zeros(len(ev), dtype=bool)
  tie[1:] = (ev[1:] == ev[:-1]) & rd[1:] & rd[:-1] & (rk[1:] == rk[:-1])
  if tie.any():
    if ties == "error":
      for j in np.flatnonzero(tie):
        problems.append(Problem("tie", name, int(ln[j]), rank_column, float(rk[j]),
                                "two items share this rank; choose a tie policy: ?ties=keep "
                                "(keep the tie: EventTable.tied_array()), ?ties=order (file "
                                "order) or ?ties=truncate (rank only the items before the first "
                                "tie)"))
    elif ties == "truncate":
      # Unrank everything from the first tied pair of each event on.
      tied_start = tie.copy()
      tied_start[np.flatnonzero(tie) - 1] = True
      m = int(event_order.max(initial=-1)) + 1
      first_tie = np.full(m, np.iinfo(np.int64).max)
      np.minimum.at(first_tie, ev[tied_start], np.flatnonzero(tied_start))
      rd = rd & (np.arange(len(ev)) < first_tie[ev])
      notes["ties_truncated_events"] = str(int((first_tie < np.iinfo(np.int64).max).sum()))
    elif ties == "keep":
      notes["tied_positions"] = str(int(tie.sum()))
    else:
      notes["ties_broken_by_file_order"] = str(int(tie.sum()))
      warnings.warn(f"{name}: {int(tie.sum())} items share a rank with the item before them "
                    f"(e.g. line {int(ln[tie][0])}); ranked them in file order (ties=order).",
                    stacklevel=3)
  m = int(event_order.max(initial=-1)) + 1
  counts_all = np.bincount(ev, minlength=m)
  avail_offsets = np.concatenate([[0], np.cumsum(counts_all)])
  counts_ranked = np.bincount(ev[rd], minlength=m)
  offsets = np.concatenate([[0], np.cumsum(counts_ranked)])
  return it[rd], offsets, it, avail_offsets, ln[rd], problems, notes, src, tie[rd]


def read_long(path: pathlib.Path, opts: dict) -> Loaded:
  """One row per (event, item): results tables such as the Tour de France's.

  Options: event= (column naming the event, required), item= (required), rank=
  (lower is better; default the file order), time= (default the event column;
  integers or dates), series=, name= (item names), ties=error|keep|order|truncate
  (items of equal rank: reported; kept as ties in a `tied` column, see
  `EventTable.tied_array()`; broken by file order; or the list cut before the
  first), duplicates=error|best, unranked=error|available (rows with no rank).

  Per-item covariates: `covariates=COL,...` stores each named column as
  `cov_COL` (name lower-cased, [a-z0-9_]), one value per entrant in the order of
  the event's `available` list: numeric (list<double>) when every value parses
  as a number, else categorical (list<string>, a warning says which line made a
  mostly numeric column categorical); `categorical=COL,...` forces categorical.
  A missing value, NaN/inf or an empty label is a problem naming the line and
  the column.
  """
  name = path.name
  frame, delimiter = ct.read_text_table(path, opts.get("delimiter"))
  columns = list(frame.columns)
  for required in ("event", "item"):
    if required not in opts:
      raise ConfigError(f"long:{path}: pass ?{required}=COLUMN; the columns are "
                        f"{', '.join(columns)}.")
  event_col = ct.column_spec(opts["event"], columns, name, "event")[0]
  item_col = ct.column_spec(opts["item"], columns, name, "item")[0]
  rank_col = ct.column_spec(opts["rank"], columns, name, "rank")[0] if "rank" in opts else None
  time_col = ct.column_spec(opts["time"], columns, name, "time")[0] if "time" in opts else event_col
  name_col = ct.column_spec(opts["name"], columns, name, "name")[0] if "name" in opts else item_col
  ties = choice(opts.get("ties", "error"), "ties", TIE_POLICIES)
  duplicates = choice(opts.get("duplicates", "error"), "duplicates", ("error", "best"))
  unranked = choice(opts.get("unranked", "error"), "unranked", ("error", "available"))
  kind = choice(opts.get("kind", "ranking"), "kind", ("ranking", "set"))
  cov_cols = ct.column_spec(opts["covariates"], columns, name, "covariates") \
      if opts.get("covariates") else []
  forced = ct.column_spec(opts["categorical"], columns, name, "categorical") \
      if opts.get("categorical") else []
  stray = [c for c in forced if c not in cov_cols]
  if stray:
    raise ConfigError(f"long:{path}: categorical= names {', '.join(map(repr, stray))}, which "
                      f"covariates= does not; list every covariate in ?covariates=COL,... and "
                      f"the categorical ones again in ?categorical=.")
  lines = ct.line_numbers(frame)
  problems: list[Problem] = []

  items = frame[item_col].to_numpy(dtype=object)
  for i in np.flatnonzero(pd.isna(items)):
    problems.append(Problem("null", name, int(lines[i]), item_col, None, "missing item"))
  events = frame[event_col].to_numpy(dtype=object)
  for i in np.flatnonzero(pd.isna(events)):
    problems.append(Problem("null", name, int(lines[i]), event_col, None, "missing event"))
  good = ~pd.isna(items) & ~pd.isna(events)
  labels = np.array([str(x).strip() for x in items], dtype=object)
  codes, uniques = pd.factorize(pd.Series(labels[good]))
  names_by_label = dict(zip(labels[good], frame[name_col].to_numpy(dtype=object)[good]))
  catalog = Catalog.from_labels(list(uniques), [names_by_label[u] or u for u in uniques])
  item_ids = np.full(len(frame), 0, dtype=np.int64)
  item_ids[good] = codes

  if rank_col is not None:
    rank_values, rank_ok = ct.parse_ints(frame[rank_col].to_numpy(dtype=object))
    rank = np.where(rank_ok, rank_values, np.nan).astype(np.float64)
    for i in np.flatnonzero(~rank_ok & frame[rank_col].notna().to_numpy()):
      problems.append(Problem("parse", name, int(lines[i]), rank_col, frame[rank_col].iloc[i],
                              "rank is not an integer"))
    missing = frame[rank_col].isna().to_numpy()
    if unranked == "error":
      for i in np.flatnonzero(missing & good):
        problems.append(Problem("null", name, int(lines[i]), rank_col, None,
                                "missing rank; read with ?unranked=available to treat the "
                                "item as an entrant that was not ranked"))
    ranked = rank_ok
  else:
    rank = np.arange(len(frame), dtype=np.float64)
    ranked = np.ones(len(frame), dtype=bool)

  # Events in time order.
  ev_key = pd.Series(events[good]).astype(str)
  time_cells = frame[time_col].to_numpy(dtype=object)[good]
  ev_codes, ev_uniques = pd.factorize(ev_key)
  first_row = np.zeros(len(ev_uniques), dtype=np.int64)
  first_row[ev_codes[::-1]] = np.arange(len(ev_codes))[::-1]
  times, time_problems = ct.parse_times(time_cells[first_row], name=name, column=time_col,
                                        rows=lines[good][first_row],
                                        date_format=opts.get("date_format"))
  problems += time_problems
  # Rows of one event must agree on its time.
  per_row_time = pd.Series(time_cells).astype(str).to_numpy()
  disagree = per_row_time != per_row_time[first_row][ev_codes]
  for j in np.flatnonzero(disagree):
    problems.append(Problem("time_order", name, int(lines[good][j]), time_col, time_cells[j],
                            "rows of one event give different times"))
  order_events = np.lexsort((first_row, times.astype(np.int64) if times.dtype.kind == "M" else times))
  rank_of_event = np.empty_like(order_events)
  rank_of_event[order_events] = np.arange(len(order_events))

  values, offsets, avail, avail_offsets, value_rows, group_problems, notes, avail_src, tied = group_rankings(
      name=name, event_order=rank_of_event[ev_codes], item_ids=item_ids[good],
      item_labels=labels[good], rank=rank[good], ranked=ranked[good] | (unranked == "error"),
      lines=lines[good], item_column=item_col, rank_column=rank_col or "(row order)",
      ties=ties, duplicates=duplicates)
  problems += group_problems
  m = len(order_events)
  cols = {
      "event_id": pa.array(np.arange(m, dtype=np.int64)),
      "time": _time_array(times[order_events]),
  }
  if "series" in opts:
    s = frame[ct.column_spec(opts["series"], columns, name, "series")[0]].to_numpy(dtype=object)
    cols["series"] = pa.array(s[good][first_row][order_events], pa.string())
  cols["items"] = _ranked_lists(values, offsets)
  if ties == "keep":
    cols["tied"] = _tied_lists(tied, offsets)
  cols["kind"] = pa.array([kind] * m, pa.string())
  # A set file whose every row is picked says nothing of what else could have been
  # picked: each event's rows would be all it could pick (likelihood 1, NLL 0). Then
  # every catalog item is available, and the table has no `available` column.
  no_availability = kind == "set" and np.array_equal(np.diff(offsets), np.diff(avail_offsets))
  if no_availability and cov_cols:
    raise ConfigError(f"{name}: covariates on sets need the items that could have been picked: "
                      f"add a row for each such item with an empty {rank_col or 'rank'} and read "
                      f"with ?unranked=available, or drop ?covariates=.")
  if not no_availability:
    cols["available"] = _ranked_lists(avail, avail_offsets)
  cols[CONTEXT_PREFIX + "event"] = pa.array(ev_uniques.to_numpy(dtype=object)[order_events], pa.string())
  entry_rows = np.flatnonzero(good)[avail_src]  # frame row of each entrant, as in `available`
  cov, cov_names, kinds = _text_covariates(frame, cov_cols, forced, entry_rows, avail_offsets,
                                           name=name, lines=lines)
  cols.update(cov)
  metadata = {"reader": "long", "delimiter": delimiter, "ties": ties, "duplicates": duplicates,
              **notes}
  if no_availability:
    metadata["available"] = "every catalog item (the file lists only each event's picks)"
  if kinds:
    metadata["covariates"] = ",".join(f"{c}={k}" for c, k in kinds.items())
  table = EventTable(pa.table(cols), catalog, metadata)
  event_rows = lines[good][first_row][order_events]
  prov = Provenance(file=name, event_rows=event_rows, value_rows=value_rows,
                    value_columns=item_col, value_labels=np.asarray(catalog.labels, dtype=object)[values],
                    columns={"time": time_col, **cov_names}, covariate_rows=lines[entry_rows])
  return Loaded(table, prov, None, problems)


def _text_covariates(frame: pd.DataFrame, cov_cols: list[str], forced: list[str],
                     entry_rows: np.ndarray, avail_offsets: np.ndarray, *, name: str,
                     lines: np.ndarray) -> tuple[dict, dict, dict]:
  """`cov_` columns from text columns, one value per entrant (frame rows `entry_rows`).

  Returns (table column -> list array, table column -> file column, table
  column -> "numeric" | "categorical"). Missing values stay null: validation
  names them by line and column.
  """
  out, names, kinds = {}, {}, {}
  offsets = pa.array(np.asarray(avail_offsets, dtype=np.int64).astype(np.int32))
  for c in cov_cols:
    key = COVARIATE_PREFIX + ct.sanitize(c)
    if key in out:
      raise ConfigError(f"{name}: covariates {names[key]!r} and {c!r} both become column "
                        f"{key!r}; rename one of them in the file.")
    cells = frame[c].to_numpy(dtype=object)[entry_rows]
    present = np.array([v is not None for v in cells], dtype=bool)
    text = pd.Series(cells, dtype=object).where(present, None)
    number = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    parses = ~np.isnan(number) | ~present | text.str.strip().str.lower().isin(["nan", "+nan", "-nan"])
    numeric = c not in forced and present.any() and bool(parses.all())
    if numeric:
      flat = pa.array(number, pa.float64(), mask=~present)
    else:
      if c not in forced and present.any() and parses[present].mean() >= 0.5:
        j = int(np.flatnonzero(~parses)[0])
        warnings.warn(f"{name}: covariate column {c!r} is read as categorical because line "
                      f"{int(lines[entry_rows[j]])} holds {cells[j]!r}, not a number; fix the "
                      f"value, or name the column in ?categorical= to say it is categorical.",
                      stacklevel=3)
      flat = pa.array([None if v is None else str(v).strip() for v in cells], pa.string())
    out[key] = pa.ListArray.from_arrays(offsets, flat)
    names[key] = c
    kinds[key] = "numeric" if numeric else "categorical"
  return out, names, kinds


# ---- Ergast: results.csv + races.csv + drivers.csv --------------------------------

def read_ergast(path: pathlib.Path, opts: dict) -> Loaded:
  """Formula 1 (Ergast f1db_csv): one ranking per race in `positionOrder`.

  Items are all drivers of drivers.csv (label driverId, name "forename surname",
  group nationality); each race's `available` list holds its entrants.
  `classified=true` ranks only the classified finishers (`position` not null);
  the others stay available but unranked. `duplicates=best` (the default) keeps
  a driver's best result where the data credits one driver twice in a race
  (shared drives in the 1950s); `duplicates=error` reports them. Two drivers
  credited with one position (a shared car) are ranked in file order
  (`ties=order`, the default) or reported (`ties=error`).

  Per-item covariates, one value per entrant in the order of the race's
  `available` list (`covariates=grid,constructor`, the default when
  results.csv has the columns; `covariates=` for none):

  - `grid` gives `cov_grid` (float64, the starting grid slot, 1 = pole) and
    `cov_pit_lane` (float64, 1.0 for a pit-lane start, else 0.0). Ergast writes
    grid 0 for a pit-lane start; it is encoded as `cov_pit_lane = 1` and
    `cov_grid = (number of entrants of the race) + 1`, behind the last slot.
    (In the early years grid 0 also marks entrants without a known grid slot,
    non-qualifiers and non-starters; they are encoded the same way.) A grid
    that is missing, negative or not an integer is a problem naming
    results.csv, the line and column `grid`.
  - `constructor` gives `cov_constructor` (string, the constructorId label).

  A covariate asked for whose column results.csv lacks is a DataError.
  """
  if not path.is_dir():
    raise DataError(f"ergast:{path}: expected a folder with results.csv, races.csv, drivers.csv.")
  files = {f: path / f"{f}.csv" for f in ("results", "races", "drivers")}
  missing = [str(p) for p in files.values() if not p.exists()]
  if missing:
    raise DataError(f"ergast:{path}: missing {', '.join(missing)}.")
  classified = flag(opts.get("classified", "false"), "classified")
  duplicates = choice(opts.get("duplicates", "best"), "duplicates", ("error", "best"))
  ties = choice(opts.get("ties", "order"), "ties", TIE_POLICIES)
  results, _ = ct.read_text_table(files["results"])
  wanted = _ergast_covariates(opts.get("covariates"), list(results.columns))
  races, _ = ct.read_text_table(files["races"])
  drivers, _ = ct.read_text_table(files["drivers"])
  for frame, fname, needed in ((results, "results.csv", ("raceId", "driverId", "positionOrder", "position")),
                               (races, "races.csv", ("raceId", "year", "round", "date", "name")),
                               (drivers, "drivers.csv", ("driverId", "forename", "surname"))):
    absent = [c for c in needed if c not in frame.columns]
    if absent:
      raise DataError(f"{fname}: missing columns {absent}; Ergast files have {list(frame.columns)}.")
  problems: list[Problem] = []
  catalog = Catalog.from_labels(
      drivers["driverId"].tolist(),
      (drivers["forename"].fillna("") + " " + drivers["surname"].fillna("")).str.strip().tolist(),
      drivers["nationality"].fillna("").tolist() if "nationality" in drivers else None)

  race_lines = ct.line_numbers(races)
  race_times, tp = ct.parse_times(races["date"].to_numpy(dtype=object), name="races.csv",
                                  column="date", rows=race_lines, date_format="%Y-%m-%d")
  problems += tp
  race_round, _ = ct.parse_ints(races["round"].to_numpy(dtype=object))
  race_year, _ = ct.parse_ints(races["year"].to_numpy(dtype=object))
  race_ids = races["raceId"].to_numpy(dtype=object).astype(str)
  lo = integer(opts.get("from_year", "0"), "from_year")
  hi = integer(opts.get("to_year", "9999"), "to_year")
  lines = ct.line_numbers(results)
  res_race = results["raceId"].to_numpy(dtype=object).astype(str)
  race_index = pd.Index(race_ids).get_indexer(res_race)
  for i in np.flatnonzero(race_index < 0):
    problems.append(Problem("unknown_item", "results.csv", int(lines[i]), "raceId", res_race[i],
                            "race is not in races.csv"))
  in_years = race_index >= 0
  in_years[in_years] = (race_year[race_index[in_years]] >= lo) & (race_year[race_index[in_years]] <= hi)
  races_used = np.unique(race_index[in_years])
  order_races = races_used[np.lexsort((race_round[races_used], race_times[races_used].astype(np.int64)))]
  event_of_race = np.full(len(races), -1, dtype=np.int64)
  event_of_race[order_races] = np.arange(len(order_races))

  driver_labels = results["driverId"].to_numpy(dtype=object)
  ids = catalog.ids([str(x) for x in driver_labels]).astype(np.int64)
  for i in np.flatnonzero((ids < 0) & in_years):
    problems.append(Problem("unknown_item", "results.csv", int(lines[i]), "driverId",
                            driver_labels[i], "driver is not in drivers.csv"))
  rank_values, rank_ok = ct.parse_ints(results["positionOrder"].to_numpy(dtype=object))
  for i in np.flatnonzero(~rank_ok & in_years):
    problems.append(Problem("null" if results["positionOrder"].iloc[i] is None else "parse",
                            "results.csv", int(lines[i]), "positionOrder",
                            results["positionOrder"].iloc[i], "positionOrder is not an integer"))
  ranked = rank_ok.copy()
  if classified:
    ranked &= results["position"].notna().to_numpy()
  use = in_years & (ids >= 0)
  values, offsets, avail, avail_offsets, value_rows, gp, notes, avail_src, tied = group_rankings(
      name="results.csv", event_order=event_of_race[race_index[use]], item_ids=ids[use],
      item_labels=driver_labels[use], rank=rank_values[use].astype(np.float64), ranked=ranked[use],
      lines=lines[use], item_column="driverId", rank_column="positionOrder", ties=ties,
      duplicates=duplicates)
  problems += gp
  m = len(order_races)
  cols = {
      "event_id": pa.array(race_ids[order_races].astype(np.int64)),
      "time": _time_array(race_times[order_races]),
      "series": pa.array(race_year[order_races].astype(np.int64)),
      "items": _ranked_lists(values, offsets),
      "kind": pa.array(["ranking"] * m, pa.string()),
      "available": _ranked_lists(avail, avail_offsets),
      **({"tied": _tied_lists(tied, offsets)} if ties == "keep" else {}),
      CONTEXT_PREFIX + "round": pa.array(race_round[order_races].astype(np.int64)),
      CONTEXT_PREFIX + "race": pa.array(races["name"].to_numpy(dtype=object)[order_races], pa.string()),
  }
  entry_rows = np.flatnonzero(use)[avail_src]  # results.csv row of each entrant, as in `available`
  cov, cov_names, cov_notes, cov_problems = _ergast_covariate_columns(
      results, wanted, entry_rows, avail_offsets, lines)
  cols.update(cov)
  problems += cov_problems
  metadata = {"reader": "ergast", "classified": str(classified).lower(), "duplicates": duplicates,
              "ties": ties,
              **notes, **cov_notes}
  table = EventTable(pa.table(cols), catalog, metadata)
  prov = Provenance(file="results.csv", event_rows=race_lines[order_races], value_rows=value_rows,
                    value_columns="driverId",
                    value_labels=np.asarray(catalog.labels, dtype=object)[values],
                    columns={"time": "races.csv:date", "series": "races.csv:year", **cov_names},
                    covariate_rows=lines[entry_rows])
  return Loaded(table, prov, None, problems)


# Ergast covariate name -> the results.csv column it reads.
ERGAST_COVARIATES = {"grid": "grid", "constructor": "constructorId"}


def _ergast_covariates(spec: str | None, columns: list[str]) -> list[str]:
  """The covariates to read: `spec` checked, or every one whose column exists."""
  if spec is None:
    return [k for k, c in ERGAST_COVARIATES.items() if c in columns]
  wanted = [x.strip() for x in spec.split(",") if x.strip()]
  unknown = [x for x in wanted if x not in ERGAST_COVARIATES]
  if unknown:
    raise ConfigError(f"ergast: covariates={spec!r}: unknown {', '.join(map(repr, unknown))}; "
                      f"valid covariates: {', '.join(ERGAST_COVARIATES)} (or covariates= for "
                      f"none).")
  for x in wanted:
    if ERGAST_COVARIATES[x] not in columns:
      raise DataError(f"results.csv: covariate {x!r} needs column {ERGAST_COVARIATES[x]!r}, "
                      f"which the file lacks (its columns: {', '.join(columns)}); drop {x!r} "
                      f"from ?covariates= or use a results.csv that has the column.")
  return list(dict.fromkeys(wanted))


def _ergast_covariate_columns(results: pd.DataFrame, wanted: list[str], entry_rows: np.ndarray,
                              avail_offsets: np.ndarray, lines: np.ndarray
                              ) -> tuple[dict, dict, dict, list[Problem]]:
  """(columns, table column -> file column, metadata notes, problems) of the
  Ergast covariates, one value per entrant (results rows `entry_rows`)."""
  out, names, notes, problems = {}, {}, {}, []
  offsets = pa.array(np.asarray(avail_offsets, dtype=np.int64).astype(np.int32))
  entry_lines = lines[entry_rows]
  if "grid" in wanted:
    cells = results["grid"].to_numpy(dtype=object)[entry_rows]
    grid, ok = ct.parse_ints(cells)
    for j in np.flatnonzero(~ok):
      missing = cells[j] is None
      problems.append(Problem("null" if missing else "parse", "results.csv", int(entry_lines[j]),
                              "grid", cells[j],
                              "missing grid position (Ergast writes 0 for a pit-lane start)"
                              if missing else "grid position is not an integer"))
    negative = ok & (grid < 0)
    for j in np.flatnonzero(negative):
      problems.append(Problem("parse", "results.csv", int(entry_lines[j]), "grid", cells[j],
                              "grid position is negative; slots are 1, 2, ... and 0 is a "
                              "pit-lane start"))
    ok &= ~negative
    entrants = np.repeat(np.diff(avail_offsets), np.diff(avail_offsets))
    pit = ok & (grid == 0)
    slot = np.where(pit, entrants + 1, grid).astype(np.float64)
    out[COVARIATE_PREFIX + "grid"] = pa.ListArray.from_arrays(
        offsets, pa.array(np.where(ok, slot, np.nan), pa.float64()))
    out[COVARIATE_PREFIX + "pit_lane"] = pa.ListArray.from_arrays(
        offsets, pa.array(np.where(ok, pit.astype(np.float64), np.nan), pa.float64()))
    names[COVARIATE_PREFIX + "grid"] = names[COVARIATE_PREFIX + "pit_lane"] = "grid"
    notes["pit_lane_starts"] = str(int(pit.sum()))
  if "constructor" in wanted:
    cells = results["constructorId"].to_numpy(dtype=object)[entry_rows]
    labels = [None if v is None else str(v).strip() for v in cells]
    for j in np.flatnonzero([v is None or v == "" for v in labels]):
      problems.append(Problem("null", "results.csv", int(entry_lines[j]), "constructorId",
                              cells[j], "missing constructorId"))
    out[COVARIATE_PREFIX + "constructor"] = pa.ListArray.from_arrays(
        offsets, pa.array(labels, pa.string()))
    names[COVARIATE_PREFIX + "constructor"] = "constructorId"
  notes["covariates"] = ",".join(c[len(COVARIATE_PREFIX):] for c in out)
  return out, names, notes, problems


# ---- PrefLib .soc / .soi / .toc / .toi -------------------------------------------

_PREFLIB_ORDER = re.compile(r"^\s*(\d+)\s*:\s*(.*)$")


def read_preflib(path: pathlib.Path, opts: dict) -> Loaded:
  """PrefLib orders, one event per distinct order (counts as weights) or per voter.

  Both the current format (`# ALTERNATIVE NAME i: ...` headers, `count: a,b,c`
  lines) and the legacy one (n, n names, a totals line, `count,a,b,c`) are read.
  Orders with ties (`{2,3}`, in .toc/.toi files) are an error unless
  `ties=keep` (kept: a `tied` column marks each item tied with the one before
  it, see `EventTable.tied_array()`), `ties=order` (ties broken by the listed
  order) or `ties=truncate` (rank only the items before the first tie). `counts=weight` (default) keeps one event per
  distinct order with a `weight` column; `counts=expand` repeats it.
  """
  name = path.name
  counts_mode = choice(opts.get("counts", "weight"), "counts", ("weight", "expand"))
  ties = choice(opts.get("ties", "error"), "ties", TIE_POLICIES)
  try:
    text = path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{name}: cannot read ({e}).") from e
  lines = text.split("\n")
  names: dict[int, str] = {}
  n = None
  body: list[tuple[int, int, str]] = []  # (line, count, order text)
  problems: list[Problem] = []
  legacy = not lines[0].startswith("#")
  if legacy:
    try:
      n = int(lines[0].strip())
      for i in range(1, n + 1):
        idx, _, label = lines[i].partition(",")
        names[int(idx)] = label.strip()
      start = n + 2  # skip the totals line
    except (ValueError, IndexError):
      raise DataError(f"{name}: neither a PrefLib header (# lines) nor a legacy header (n, then "
                      f"n 'i,name' lines) at line 1.") from None
    for ln in range(start, len(lines)):
      line = lines[ln].strip()
      if not line:
        continue
      count, _, order = line.partition(",")
      body.append((ln + 1, count, order))
  else:
    for ln, raw in enumerate(lines):
      line = raw.strip()
      if not line:
        continue
      if line.startswith("#"):
        m = re.match(r"#\s*NUMBER ALTERNATIVES:\s*(\d+)", line)
        if m:
          n = int(m.group(1))
        m = re.match(r"#\s*ALTERNATIVE NAME (\d+):\s*(.*)", line)
        if m:
          names[int(m.group(1))] = m.group(2).strip()
        continue
      m = _PREFLIB_ORDER.match(line)
      if not m:
        problems.append(Problem("parse", name, ln + 1, "order", line,
                                "expected 'count: a,b,c'"))
        continue
      body.append((ln + 1, m.group(1), m.group(2)))
  if n is None:
    raise DataError(f"{name}: no '# NUMBER ALTERNATIVES: n' line.")
  catalog = Catalog.from_labels(range(1, n + 1), [names.get(i, str(i)) for i in range(1, n + 1)])
  event_items: list[list[int]] = []
  event_tied: list[list[bool]] = []
  event_lines, weights, labels, n_ties = [], [], [], 0
  for ln, count_text, order in body:
    try:
      count = int(count_text)
    except ValueError:
      problems.append(Problem("parse", name, ln, "count", count_text, "count is not an integer"))
      continue
    # Tokens: plain ids, or {a,b} groups of tied ids.
    groups = re.findall(r"\{([^}]*)\}|([^,{}\s]+)", order)
    ids: list[int] = []
    flags: list[bool] = []
    raw_labels: list[str] = []
    for tied, single in groups:
      members = [t.strip() for t in tied.split(",") if t.strip()] if tied else [single]
      if len(members) > 1:
        n_ties += 1
        if ties == "error":
          problems.append(Problem("tie", name, ln, "order", "{" + tied + "}",
                                  "tied items; choose ?ties=keep, ?ties=order or "
                                  "?ties=truncate"))
        elif ties == "truncate":
          break
      for j, t in enumerate(members):
        flags.append(j > 0)
        try:
          ids.append(int(t) - 1)
        except ValueError:
          problems.append(Problem("parse", name, ln, "order", t, "not an alternative number"))
          ids.append(BAD_ID)
        raw_labels.append(t)
    if not ids:
      continue
    repeat = count if counts_mode == "expand" else 1
    for _ in range(repeat):
      event_items.append(ids)
      event_tied.append(flags)
      event_lines.append(ln)
      labels.extend(raw_labels)
      weights.append(1.0 if counts_mode == "expand" else float(count))
  m = len(event_items)
  lengths = np.array([len(x) for x in event_items], dtype=np.int64)
  values = np.array([i for x in event_items for i in x], dtype=np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  ids = np.where((values != BAD_ID) & ((values < 0) | (values >= n)), n, values)
  cols = {
      "event_id": pa.array(np.arange(m, dtype=np.int64)),
      "time": pa.array(np.arange(m, dtype=np.int64)),
      "items": _ranked_lists(ids, offsets),
      "kind": pa.array(["ranking"] * m, pa.string()),
  }
  if ties == "keep":
    cols["tied"] = _tied_lists(np.array([f for x in event_tied for f in x], dtype=bool), offsets)
  if counts_mode == "weight":
    cols["weight"] = pa.array(weights, pa.float64())
  metadata = {"reader": "preflib", "counts": counts_mode, "ties": ties,
              "tied_groups": str(n_ties), "voters": str(int(sum(weights)))}
  table = EventTable(pa.table(cols), catalog, metadata)
  prov = Provenance(file=name, event_rows=np.array(event_lines, dtype=np.int64),
                    value_columns="order", value_labels=np.array(labels, dtype=object))
  return Loaded(table, prov, None, problems)


# ---- prices: a wide table, one column per asset -----------------------------------

def load_sp500_prices() -> pd.DataFrame:
  """Daily prices of 20 S&P 500 stocks, 1990-2022, shipped inside skfolio.

  Read from skfolio's data file directly, as `skfolio.datasets.load_sp500_dataset`
  reads it (the same frame; tested), without importing skfolio: that import takes
  ~2.6 s (it loads cvxpy and scikit-learn), the file 0.02 s.
  """
  import gzip
  import importlib.util
  import os
  spec = importlib.util.find_spec("skfolio")
  if spec is None or not spec.submodule_search_locations:
    raise DataError("prices:sp500 needs skfolio (pip install skfolio).")
  path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data",
                      "sp500_dataset.csv.gz")
  if not os.path.exists(path):   # a skfolio that moved its data: its own loader
    from skfolio.datasets import load_sp500_dataset
    return load_sp500_dataset()
  with gzip.open(path, mode="rt", encoding="utf-8") as f:
    frame = pd.read_csv(f, sep=",", index_col=0)
  frame.index = pd.to_datetime(frame.index, format="%Y-%m-%d")
  return frame


# Price covariate name -> (what it is, default window W in days).
PRICE_COVARIATES = {"vol": ("trailing volatility", 20), "mom": ("momentum", 60),
                    "rev": ("short-term reversal", 5)}
MOMENTUM_SKIP = 5  # mom:W skips the most recent 5 days unless written mom:W/S
DEFAULT_PRICE_COVARIATES = "vol:20,mom:60,rev:5"


@dataclasses.dataclass(frozen=True)
class PriceCovariate:
  """One covariate of `prices:`: `kind` (vol, mom, rev), window W, skip S (mom only)."""
  kind: str
  window: int
  skip: int = 0

  @property
  def column(self) -> str:
    """`cov_vol_20`, `cov_mom_60` (`cov_mom_60_S` for a skip S other than 5), `cov_rev_5`."""
    extra = f"_{self.skip}" if self.kind == "mom" and self.skip != MOMENTUM_SKIP else ""
    return f"{COVARIATE_PREFIX}{self.kind}_{self.window}{extra}"

  def __str__(self) -> str:
    return f"{self.kind}:{self.window}" + (f"/{self.skip}" if self.kind == "mom" else "")


def price_covariate_specs(spec: str | None) -> list[PriceCovariate]:
  """Parse `covariates=vol:20,mom:60,rev:5` (None: that default; "": none).

  Each entry is NAME, NAME:W or, for momentum, mom:W/S (skip S, default 5); a
  bare NAME takes its default window. Unknown names, windows that are not
  positive integers (vol needs W >= 2: a standard deviation of one return is
  undefined), a skip outside 0 <= S < W and repeated columns raise ConfigError.
  """
  text = DEFAULT_PRICE_COVARIATES if spec is None else spec
  option = f"prices: covariates={text!r}"
  usage = (f"write NAME:WINDOW entries separated by commas, e.g. "
           f"covariates={DEFAULT_PRICE_COVARIATES} (mom:W/S skips the last S days; "
           f"covariates= for none)")

  def whole(value: str, what: str, token: str) -> int:
    try:
      return int(value.strip())
    except ValueError:
      raise ConfigError(f"{option}: {token!r}: the {what} {value.strip()!r} is not an integer; "
                        f"{usage}.") from None

  out: list[PriceCovariate] = []
  for token in (t.strip() for t in text.split(",")):
    if not token:
      continue
    kind, _, rest = token.partition(":")
    kind = kind.strip().lower()
    if kind not in PRICE_COVARIATES:
      valid = ", ".join(f"{k} ({what}, default {w})" for k, (what, w) in PRICE_COVARIATES.items())
      raise ConfigError(f"{option}: unknown covariate {kind!r} in {token!r}; valid covariates: "
                        f"{valid}; {usage}.")
    window_text, slash, skip_text = rest.partition("/")
    if slash and kind != "mom":
      raise ConfigError(f"{option}: {token!r}: only mom takes a skip (mom:W/S); {usage}.")
    window = whole(window_text, "window", token) if window_text.strip() \
        else PRICE_COVARIATES[kind][1]
    if window <= 0:
      raise ConfigError(f"{option}: {token!r}: the window must be a positive number of days; "
                        f"{usage}.")
    if kind == "vol" and window < 2:
      raise ConfigError(f"{option}: {token!r}: volatility needs a window of at least 2 days "
                        f"(the standard deviation of one return is undefined).")
    skip = 0
    if kind == "mom":
      skip = whole(skip_text, "skip", token) if slash else MOMENTUM_SKIP
      if not 0 <= skip < window:
        raise ConfigError(f"{option}: {token!r}: the skip must be 0 <= S < W = {window} "
                          f"(momentum is the return over days [t-W, t-S)); write "
                          f"mom:{window}/{min(max(skip, 0), window - 1)} or a longer window.")
    cov = PriceCovariate(kind, window, skip)
    if any(c.column == cov.column for c in out):
      raise ConfigError(f"{option}: {token!r} repeats column {cov.column!r}; name each "
                        f"covariate once.")
    out.append(cov)
  return out


def price_covariates(prices: np.ndarray, specs: list[PriceCovariate]) -> dict[str, np.ndarray]:
  """Leak-free covariates of each price day, from the prices of earlier days only.

  Args:
    prices: float64[D, n] prices of days 0..D-1 (NaN where missing), in time order.
    specs: the covariates (`price_covariate_specs`).

  Returns:
    column -> float64[D, n]: row d holds the covariates of the event of day d,
    which ranks the returns r_d = p_d / p_{d-1} - 1. With r_s the return of
    day s:

    - vol:W  `std(r_{d-W}, ..., r_{d-1})` (ddof=1; reads p_{d-W-1} .. p_{d-1});
    - mom:W/S  `p_{d-1-S} / p_{d-1-W} - 1`, the cumulative return of days
      d-W .. d-S-1 (the W days before d less the last S);
    - rev:W  `p_{d-1} / p_{d-1-W} - 1`, the cumulative return of days d-W .. d-1.

    Row d reads prices of days < d only. It is NaN where a price it reads is
    missing, in particular in rows d <= W (the window is not full yet).
  """
  prices = np.asarray(prices, dtype=np.float64)
  d_all, n = prices.shape
  returns = np.full((d_all, n), np.nan)
  returns[1:] = prices[1:] / prices[:-1] - 1.0
  out = {}
  for c in specs:
    w = c.window
    values = np.full((d_all, n), np.nan)
    if c.kind == "vol":
      if d_all > w:
        # windows[k] = returns[k : k + w], the window of day d = k + w.
        windows = np.lib.stride_tricks.sliding_window_view(returns[:-1], w, axis=0)
        step = max(1, (1 << 22) // max(1, n * w))  # bound the temporary to ~32 MB
        for s in range(0, len(windows), step):
          values[w + s:w + s + step] = windows[s:s + step].std(axis=-1, ddof=1)
    else:
      skip = c.skip if c.kind == "mom" else 0
      if d_all > w + 1:
        values[w + 1:] = prices[w - skip:d_all - 1 - skip] / prices[:d_all - 1 - w] - 1.0
    out[c.column] = values
  return out


def read_prices(path: pathlib.Path | None, opts: dict) -> Loaded:
  """Wide prices -> one event per day ranking the assets by that day's return.

  Return of day t: p_t / p_{t-1} - 1. An asset with a missing price on day t or
  t-1 is not available that day (the `available` column). `top=k` keeps the best
  k (a top-k ranking, or a set with kind=set). Equal returns keep the column
  order. Each event keeps all returns as `ctx_returns` (float64[n_assets], NaN
  where missing) for portfolio backtests.

  Per-item covariates from the prices strictly before the day ranked
  (`price_covariates` gives the formulas), one value per available asset:
  `covariates=vol:20,mom:60,rev:5` is the default and gives `cov_vol_20`
  (volatility of the 20 daily returns before the day), `cov_mom_60` (the return
  over days [t-60, t-5): momentum skipping the last week, `mom:W/S` for another
  skip S, column `cov_mom_W_S`) and `cov_rev_5` (the return of the last 5
  days, short-term reversal); a bare name takes its default window,
  `covariates=` gives none.

  Early days: the first day has no return, and a covariate of window W needs
  the W returns (W + 1 prices) before the day, so the table starts on the
  first day whose windows are all full: price row max(W) + 1, counting from 0
  (row 1 with covariates=, row 61 by default, so 60 events fewer). The days
  left out are said in the metadata (`warmup_days_dropped`, `first_event`);
  the first event thus depends on the windows asked for (keeping it fixed
  would mean dropping days from tables that need none, or capping the
  windows). Later, an asset whose windows read a missing price (a gap, a late
  listing) is left out of that day's available assets and ranking rather than
  given a NaN covariate (a warning and the metadata's `covariate_excluded` count
  them; a day left with no asset is dropped, `covariate_days_dropped`). A file
  too short for the windows is a DataError.

  The default windows are the usual equity-factor ones on daily data: a month
  of volatility, about three months of momentum less the last week (the
  "12-1" momentum, skipping the short-term reversal, at a daily horizon) and a
  week of reversal.
  """
  specs = price_covariate_specs(opts.get("covariates"))
  if path is None:
    frame = load_sp500_prices()
    name = "skfolio sp500"
    prices = frame.to_numpy(dtype=np.float64)
    assets = [str(c) for c in frame.columns]
    dates = frame.index.to_numpy().astype("datetime64[s]")
    problems: list[Problem] = []
    lines = np.arange(len(frame), dtype=np.int64) + 2
    date_col = "Date"
  else:
    name = path.name
    table, _ = ct.read_text_table(path, opts.get("delimiter"))
    lines = ct.line_numbers(table)
    date_col = opts.get("date") or table.columns[0]
    if date_col not in table.columns:
      raise DataError(f"{name}: date column {date_col!r} is not a column.")
    dates, problems = ct.parse_times(table[date_col].to_numpy(dtype=object), name=name,
                                     column=date_col, rows=lines, date_format=opts.get("date_format"))
    assets = [c for c in table.columns if c != date_col]
    cells = table[assets]
    prices = cells.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(prices) & cells.notna().to_numpy()
    for i, j in zip(*np.nonzero(bad)):
      problems.append(Problem("parse", name, int(lines[i]), assets[j], cells.iat[i, j],
                              "price is not a number"))
  nonpos = prices <= 0
  for i, j in zip(*np.nonzero(nonpos)):
    problems.append(Problem("parse", name, int(lines[i]), assets[j], float(prices[i, j]),
                            "price must be positive"))
  prices = np.where(nonpos, np.nan, prices)
  order, note = _time_order(dates)
  prices, dates, lines = prices[order], dates[order], lines[order]
  n_assets = len(assets)
  kind = choice(opts.get("kind", "ranking"), "kind", ("ranking", "set"))
  top = integer(opts["top"], "top") if "top" in opts else None
  if kind == "set" and top is None:
    raise ConfigError(f"prices:{name}: kind=set needs top=K (the set of the K best assets).")
  if top is not None and not 1 <= top <= n_assets:
    raise ConfigError(f"prices:{name}: top={top}; there are {n_assets} assets.")

  # Day d of the file is an event for d >= first: the first day whose windows are all full.
  first = 1 + max((c.window for c in specs), default=0)
  if specs and len(prices) <= first:
    windows = ",".join(map(str, specs))
    raise DataError(f"prices:{name}: {len(prices)} days of prices, but covariates={windows} "
                    f"read the {first} prices before a day (the largest window's {first - 1} "
                    f"returns), so the first event would be day {first + 1} of the file; give "
                    f"a longer price history, shorter windows, or covariates= for none.")
  returns = prices[1:] / prices[:-1] - 1.0  # returns[d - 1]: the return of day d
  avail = np.isfinite(returns)
  cov_days = {col: v[1:] for col, v in price_covariates(prices, specs).items()}
  known = np.ones_like(avail)
  for v in cov_days.values():
    known &= np.isfinite(v)
  day = np.arange(1, len(prices))
  keep_day = day >= first
  excluded = avail & ~known & keep_day[:, None]
  avail &= known
  emptied = keep_day & ~avail.any(axis=1) & excluded.any(axis=1)
  metadata = {}
  if specs:
    if excluded.any():
      i, j = (int(x[0]) for x in np.nonzero(excluded))
      warnings.warn(f"prices:{name}: {int(excluded.sum())} (day, asset) pairs left out of the "
                    f"rankings because a price their covariate windows read is missing (e.g. "
                    f"{assets[j]!r} on line {int(lines[i + 1])}, {dates[i + 1]}); "
                    f"{int(emptied.sum())} days were left with no asset and dropped.",
                    stacklevel=3)
    keep_day &= ~emptied
    metadata.update({
        "covariates": ",".join(c.column[len(COVARIATE_PREFIX):] for c in specs),
        "covariate_windows": ",".join(map(str, specs)),
        "warmup_days_dropped": str(first - 1),
        "covariate_excluded": str(int(excluded.sum())),
        "covariate_days_dropped": str(int(emptied.sum())),
    })
  returns, avail, day = returns[keep_day], avail[keep_day], day[keep_day]
  if specs and len(day):
    start = dates[day[0]]
    metadata["first_event"] = str(start.astype("datetime64[D]") if start.dtype.kind == "M" else start)
  # Best first; missing returns sort last and are cut by the per-day count.
  ranking = np.argsort(np.where(avail, -returns, np.inf), axis=1, kind="stable")
  lengths = avail.sum(axis=1)
  if top is not None:
    lengths = np.minimum(lengths, top)
  keep = np.arange(n_assets)[None, :] < lengths[:, None]
  values = ranking[keep]
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  rows_, cols_ = np.nonzero(avail)
  avail_offsets = np.concatenate([[0], np.cumsum(avail.sum(axis=1))])
  m = len(returns)
  ret_flat = pa.array(returns.reshape(-1), pa.float64(), from_pandas=True)
  cols = {
      "event_id": pa.array(np.arange(m, dtype=np.int64)),
      "time": _time_array(dates[day]),
      "items": _ranked_lists(values, offsets),
      "kind": pa.array([kind] * m, pa.string()),
      "available": _ranked_lists(cols_, avail_offsets),
      CONTEXT_PREFIX + "returns": pa.FixedSizeListArray.from_arrays(ret_flat, n_assets),
  }
  cov_offsets = pa.array(avail_offsets.astype(np.int32))
  for col, v in cov_days.items():
    cols[col] = pa.ListArray.from_arrays(cov_offsets, pa.array(v[keep_day][avail], pa.float64()))
  metadata = {"reader": "prices", "assets": ",".join(assets), "top": str(top or n_assets),
              **metadata}
  if note:
    metadata["order"] = note
  catalog = Catalog.from_labels(assets)
  table = EventTable(pa.table(cols), catalog, metadata)
  prov = Provenance(file=name, event_rows=lines[day], value_columns=assets,
                    columns={"time": date_col})
  return Loaded(table, prov, top if kind == "set" else None, problems)
