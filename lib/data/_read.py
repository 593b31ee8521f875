"""`luce.data.read(source)`: the one entry from a source string to a valid table."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from luce.data import _readers
from luce.data._source import choice, flag, parse_source, resolve_path
from luce.data._synthetic import read_synthetic
from luce.data._table import EventTable, read_parquet
from luce.data._validate import ON_INVALID, Problem, Provenance, find_problems, raise_problems


def _load(source: str) -> tuple[_readers.Loaded, str]:
  src = parse_source(source)
  on_invalid = choice(src.options.pop("on_invalid", "raise"), "on_invalid", ON_INVALID)
  if flag(src.options.pop("drop_invalid", "false"), "drop_invalid"):
    on_invalid = "drop"  # ?drop_invalid=true spells ?on_invalid=drop
  opts = src.options
  if src.scheme == "synthetic":
    loaded = read_synthetic(src.path, opts, source)
  elif src.scheme == "prices" and src.path.strip().lower() == "sp500":
    loaded = _readers.read_prices(None, opts)
  else:
    path = resolve_path(src.path, source)
    if src.scheme == "draws":
      loaded = _readers.read_rows(path, opts, default_kind="set")
    elif src.scheme == "rankings":
      loaded = _readers.read_rows(path, opts, default_kind="ranking")
    elif src.scheme == "long":
      loaded = _readers.read_long(path, opts)
    elif src.scheme == "baskets":
      loaded = _readers.read_baskets(path, opts)
    elif src.scheme == "ergast":
      loaded = _readers.read_ergast(path, opts)
    elif src.scheme == "preflib":
      loaded = _readers.read_preflib(path, opts)
    elif src.scheme == "prices":
      loaded = _readers.read_prices(path, opts)
    else:  # events
      table = read_parquet(path, verify_hash=flag(opts.get("verify_hash", "true"), "verify_hash"))
      k = int(table.metadata["k"]) if "k" in table.metadata else None
      loaded = _readers.Loaded(table, Provenance(file=path.name), k, [])
  meta = dict(loaded.table.metadata)
  meta["source"] = source
  loaded.table = EventTable(loaded.table.events, loaded.table.catalog, meta)
  return loaded, on_invalid


def _combined(parsed: list[Problem], found: list[Problem]) -> list[Problem]:
  """The reader's problems, then validation's, less the covariate problems of a cell
  the reader already named (a grid of "abc" is stored as NaN: one problem, not two)."""
  if not parsed:
    return found
  seen = {(p.file, p.row, p.column) for p in parsed}
  return parsed + [p for p in found
                   if not (p.check.startswith("covariate") and (p.file, p.row, p.column) in seen)]


def check(source: str) -> list[Problem]:
  """Every problem of `source` (empty when it is valid); raises only when the
  source cannot be parsed at all (unknown scheme, unreadable file)."""
  loaded, _ = _load(source)
  return _combined(loaded.problems, find_problems(loaded.table, loaded.provenance, k=loaded.k))


def read(source: str, *, on_invalid: str | None = None) -> EventTable:
  """Read and validate an event table from a source string.

  Args:
    source: `scheme:PATH?key=value&...`, one of
      `draws:PATH` (one draw per row), `rankings:PATH` (one ranking per row),
      `long:PATH` (one (event, item, rank) per row), `ergast:DIR`,
      `preflib:PATH`, `prices:sp500` or `prices:PATH`, `events:PATH.parquet`,
      `synthetic:KIND` (events drawn from a known PL model, see
      `luce.data.synthetic_pl`; KIND is `ranking`, the default, or `set`;
      options `n_items=20&k=5&n_events=4000&item_spread=1.0&momentum=1.0&
      rank_momentum=1.0&seed=0`, each optional with that default; the
      generating scores are the table's `ctx_oracle_scores`, read them with
      `luce.data.oracle_scores`).
      Per-item covariates (`cov_*` columns: what is known of each available
      item before the event, see `luce.data.EventTable.covariates`):
      `ergast:` adds `cov_grid`, `cov_pit_lane` and `cov_constructor`
      (`?covariates=grid,constructor`, the default when results.csv has those
      columns; `?covariates=` for none); `long:` takes `?covariates=COL,...`
      (each becomes `cov_COL`: numeric when every value is a number, else
      categorical) and `?categorical=COL,...` (forced categorical);
      `prices:` derives `cov_vol_20`, `cov_mom_60` and `cov_rev_5` from the
      prices strictly before each day (`?covariates=vol:20,mom:60,rev:5`, the
      default; `mom:W/S` skips the last S days, 5 by default; `?covariates=`
      for none) and starts on the first day whose windows are full (60 days
      later than with `?covariates=` by default; the metadata's
      `warmup_days_dropped` and `first_event` say so).
      `rankings:` and `draws:` hold one event per row with no per-item
      columns, so they take no covariates.
      A relative PATH not found here is looked up in $LUCE_SHARED_DATA.
    on_invalid: "raise" (default) raises `luce.DataError` at the first problem
      (saying how many more there are); "report" raises one listing every
      problem; "drop" drops every event with a problem, warns with each dropped
      row and its reason and keeps the list in `metadata["dropped"]` (a problem
      of no single event still raises). Overrides `?on_invalid=` (and
      `?drop_invalid=true`, which means on_invalid=drop).

  Returns:
    A validated EventTable (`metadata["source"]` is `source`).

  >>> t = read("draws:draws/powerball.csv")            # doctest: +SKIP
  >>> t.n_items, t.k, t.kind                           # doctest: +SKIP
  (69, 5, 'set')
  >>> t = read("synthetic:set?n_items=12&k=3&n_events=500&seed=1")
  >>> t.n_items, t.k, t.kind, len(t)
  (12, 3, 'set', 500)
  """
  loaded, source_on_invalid = _load(source)
  on_invalid = choice(on_invalid or source_on_invalid, "on_invalid", ON_INVALID)
  # Every problem is counted (the checks are vectorised), so "and N more" is right.
  problems = _combined(loaded.problems, find_problems(loaded.table, loaded.provenance, k=loaded.k))
  if on_invalid == "drop" and problems:
    return _drop_invalid(loaded, problems)
  raise_problems(problems, on_invalid)
  return loaded.table


def _event_of_line(table: EventTable, prov: Provenance) -> dict:
  """File line (or table row) -> index of the event it belongs to: each event's own
  line and, for files of one item per line, the line of each of its values."""
  m = len(table)
  out = {}
  pairs = [(np.arange(m) if prov.event_rows is None else np.asarray(prov.event_rows), np.arange(m))]
  for rows, column in ((prov.value_rows, "items"), (prov.covariate_rows, "available")):
    if rows is not None and column in table.events.column_names:
      offsets = table.events.column(column).combine_chunks().offsets.to_numpy()
      pairs.append((np.asarray(rows), np.repeat(np.arange(m), np.diff(offsets))))
  for rows, events in pairs:
    if len(rows) == len(events):
      out.update(zip(rows.tolist(), events.tolist()))
  return out


def _drop_invalid(loaded, problems: list[Problem]) -> EventTable:
  """The table without the events that have problems; each dropped row and why is
  warned and kept in `metadata["dropped"]`. A problem of no one event (the file,
  a column) still raises, as does anything left after the drop."""
  table, prov = loaded.table, loaded.provenance
  m = len(table)
  event_of_line = _event_of_line(table, prov)
  unplaced = [p for p in problems if p.row not in event_of_line]
  if unplaced:
    raise_problems(unplaced, "report")
  bad = np.zeros(m, bool)
  bad[[event_of_line[p.row] for p in problems]] = True
  keep = np.flatnonzero(~bad)
  if not len(keep):
    raise_problems(problems, "report")
  lines = [str(p) for p in sorted(problems, key=lambda p: (p.row, p.check))]
  meta = dict(table.metadata)
  meta["dropped"] = "\n".join(lines)
  kept = EventTable(table.events.take(pa.array(keep)), table.catalog, meta)
  left = find_problems(kept, Provenance(file=prov.file), k=loaded.k)
  raise_problems(left, "report")
  warnings.warn(f"{prov.file}: dropped {int(bad.sum())} of {m} events with problems "
                f"(on_invalid=drop; every one is in the table's metadata['dropped']): "
                + "; ".join(lines[:5]) + (f"; ... and {len(lines) - 5} more" if len(lines) > 5 else ""),
                stacklevel=3)
  return kept
