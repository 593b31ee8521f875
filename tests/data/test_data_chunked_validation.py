"""Validation and hashing in chunks give exactly what they gave on the whole table.

`golden_validation.json` holds every problem (check, file, row, column, value,
message), the raised messages and the content hash of each case below, written
by the whole-table code before validation and hashing went to chunks
(`python tests/data/test_data_chunked_validation.py` rewrites it: only do so for a
deliberate change of messages or hashes). The cases put their errors on the
edges of chunks of 1, 2, 3 and 5 events.
"""

import json
import pathlib
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from luce import data as ld
from luce.data import _table, _validate
from luce.errors import DataError

GOLDEN = pathlib.Path(__file__).with_name("golden_validation.json")
CHUNKS = (1, 2, 3, 5, 1 << 20)


def _lists(rows):
  return pa.array(rows, pa.list_(pa.int32()))


def _events(items, *, times=None, kind="set", **extra):
  m = len(items)
  columns = {"event_id": pa.array(np.arange(m) * 10 + 7, pa.int64()),
             "time": pa.array(np.arange(m, dtype=np.int64) if times is None else times),
             "items": _lists(items),
             "kind": pa.array([kind] * m if isinstance(kind, str) else kind, pa.string())}
  columns.update(extra)
  return pa.table(columns)


def _chunked(table: pa.Table, sizes) -> pa.Table:
  """`table` as Arrow chunks of the given row counts (the validation must not care)."""
  batches, start = [], 0
  for size in sizes:
    batches.append(table.slice(start, size))
    start += size
  batches.append(table.slice(start))
  return pa.concat_tables(batches)


def _cases():
  """name -> (EventTable, Provenance or None, k, limit)."""
  cat = ld.Catalog.numbered(6)
  cases = {}
  # Duplicates on chunk edges: first and last item of an event, a triple, long and empty events.
  items = [[0, 0, 1], [1, 2], [3, 4, 3], [5, 5], [], [2, 2, 2], [0, 1, 2, 3, 4, 5, 5], [1], [4, 1, 4]]
  cases["duplicates"] = (ld.EventTable(_events(items), cat, {}), None, None, None)
  cases["duplicates_limit"] = (ld.EventTable(_events(items), cat, {}), None, None, 2)
  cases["duplicates_chunked_arrow"] = (ld.EventTable(_chunked(_events(items), (2, 3, 1)), cat, {}),
                                       None, None, None)
  # Ids outside the catalog (two outside ids in one event are also a duplicate after clipping).
  items = [[0, 6], [-1, 2], [3, 9, 7], [1, 2], [5, -3, -4]]
  cases["unknown"] = (ld.EventTable(_events(items), cat, {}), None, None, None)
  # Nulls: an event id, a whole item list, items inside lists, kinds (null and unknown).
  m = 6
  table = pa.table({
      "event_id": pa.array([1, None, 3, 4, 5, 6], pa.int64()),
      "time": pa.array(np.arange(m, dtype=np.int64)),
      "items": _lists([[0, 1], None, [2, None], [None, None, 3], [4, 5], [None]]),
      "kind": pa.array(["set", "ranking", None, "sets", "set", "set"], pa.string()),
  })
  cases["nulls"] = (ld.EventTable(table, cat, {}), None, None, None)
  # Event sizes: the game's k from the metadata and empty events.
  items = [[0, 1], [2], [], [3, 4], [5, 0, 1], []]
  cases["sizes"] = (ld.EventTable(_events(items), cat, {"k": "2"}), None, None, None)
  cases["sizes_k"] = (ld.EventTable(_events(items), cat, {}), None, 3, None)
  # Times: equal and decreasing steps on chunk edges; timestamps; series.
  items = [[0], [1], [2], [3], [4], [5], [0], [1], [2], [3], [4]]
  steps = np.array([0, 1, 1, 3, 2, 5, 6, 6, 4, 9, 10], dtype=np.int64)
  cases["time_steps"] = (ld.EventTable(_events(items, times=steps), cat, {}), None, None, None)
  days = (np.datetime64("2001-01-01") + steps.astype("timedelta64[D]")).astype("datetime64[s]")
  stamps = pa.array(days, pa.timestamp("s"))
  cases["time_stamps"] = (ld.EventTable(_events(items, times=stamps), cat, {}), None, None, None)
  hours = np.datetime64("2001-01-01T00:00:00") + (steps * 3600).astype("timedelta64[s]")
  stamps_ms = pa.array(hours, pa.timestamp("ms"))
  cases["time_stamps_ms"] = (ld.EventTable(_events(items, times=stamps_ms), cat, {}), None, None, 3)
  series = pa.array(["a", "b", "a", "b", "c", "a", "c", "b", "a", "c", "b"])
  steps_s = np.array([0, 0, 1, 0, 2, 1, 2, 3, 5, 1, 9], dtype=np.int64)
  cases["time_series"] = (ld.EventTable(_events(items, times=steps_s, series=series), cat, {}),
                          None, None, None)
  series_int = pa.array([2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2], pa.int64())
  cases["time_series_int"] = (ld.EventTable(_events(items, times=steps, series=series_int), cat, {}),
                              None, None, None)
  # Weights: zero, negative, NaN.
  items = [[0], [1], [2], [3], [4]]
  weights = pa.array([1.0, 0.0, -2.0, float("nan"), 3.0])
  cases["weights"] = (ld.EventTable(_events(items, weight=weights), cat, {}), None, None, None)
  # Availability on chunk edges, on a catalog wide enough to need several masks.
  wide = ld.Catalog.numbered(40)
  items = [[0, 1], [5, 39], [2, 3], [10, 11], [38], [7, 8]]
  avail = [[0, 1, 2], [5, 6], [1, 2, 3], [10, 11, 12], [0], [7]]
  cases["available"] = (ld.EventTable(_events(items, available=_lists(avail)), wide, {}),
                        None, None, None)
  items_bad = [[0, 1], [5, 41], [2, 3], [10, 11], [38], [7, 8]]
  cases["available_and_unknown"] = (ld.EventTable(_events(items_bad, available=_lists(avail)), wide, {}),
                                    None, None, None)
  # Provenance of a text file: lines of events and values, labels, a wide file's columns.
  items = [[0, 0, 1], [2, 9], [3, 4, 4], [5, 1, 2]]
  prov = _validate.Provenance(file="draws.csv", event_rows=np.array([2, 3, 5, 8]),
                              value_rows=np.arange(100, 112), value_columns=("b1", "b2"),
                              value_labels=np.array([f"L{j}" for j in range(12)], dtype=object),
                              columns={"time": "date"})
  times = np.array([0, 1, 1, 2], dtype=np.int64)
  cases["provenance"] = (ld.EventTable(_events(items, times=times), cat, {}), prov, 3, None)
  # Covariates: numeric and categorical, with and without `available`, wrong lengths, nulls.
  avail = [[0, 1, 2], [3, 4], [0, 5], [1, 2, 3], [4, 5]]
  items = [[0], [3], [5], [2], [4]]
  grid = pa.array([[1.0, float("nan"), 3.0], [1.0, 2.0], None, [float("inf"), 1.0, None],
                   [2.0, 1.0, 0.5]], pa.list_(pa.float64()))
  team = pa.array([["x", "", "y"], ["a", None], ["q", " "], ["a", "b"], None], pa.list_(pa.string()))
  prov = _validate.Provenance(file="results.csv", covariate_rows=np.arange(200, 212),
                              columns={"cov_grid": "grid"})
  cases["covariates_available"] = (
      ld.EventTable(_events(items, available=_lists(avail), cov_grid=grid, cov_team=team), cat, {}),
      prov, None, None)
  cases["covariates_available_plain"] = (
      ld.EventTable(_events(items, available=_lists(avail), cov_grid=grid, cov_team=team), cat, {}),
      None, None, None)
  three = ld.Catalog.numbered(3)
  items = [[0], [1], [2], [0], [1]]
  rate = pa.array([[1.0, 2.0, 3.0], [1.0, float("-inf"), 3.0], [1.0, 2.0], [None, 2.0, 3.0],
                   [0.0, 0.0, float("nan")]], pa.list_(pa.float64()))
  label = pa.array([["a", "b", "c"], ["a", "", "c"], ["a", "b", "c"], ["a", "b"], [None, "b", "c"]],
                   pa.list_(pa.string()))
  cases["covariates_catalog"] = (ld.EventTable(_events(items, cov_rate=rate, cov_label=label), three, {}),
                                 None, None, None)
  dict_label = pa.array([["a", "b", "c"], ["", "b", "c"], ["a", "b", "c"], ["a", "b", "c"],
                         ["a", "b", "c"]], pa.list_(pa.dictionary(pa.int32(), pa.string())))
  cases["covariates_dictionary"] = (ld.EventTable(_events(items, cov_label=dict_label), three, {}),
                                    None, None, 1)
  # Columns and types (checked before any row).
  cases["unknown_column"] = (ld.EventTable(_events([[0], [1]], extra_col=pa.array([1, 2])), cat, {}),
                             None, None, None)
  cases["bad_cov_type"] = (ld.EventTable(_events([[0], [1]], cov_x=pa.array([1, 2])), cat, {}),
                           None, None, None)
  cases["items_type"] = (ld.EventTable(pa.table({"event_id": [0], "time": [0], "items": ["0"],
                                                 "kind": ["set"]}), cat, {}), None, None, None)
  # A valid table of mixed lengths, chunked in Arrow too.
  rng = np.random.default_rng(3)
  items = [list(rng.permutation(6)[:rng.integers(1, 6)]) for _ in range(23)]
  cases["valid"] = (ld.EventTable(_chunked(_events(items, kind="ranking"), (4, 1, 9)), cat, {}),
                    None, None, None)
  return cases


def _problems(case, chunk_events=None):
  table, prov, k, limit = case
  kwargs = {} if chunk_events is None else {"chunk_events": chunk_events}
  return [[p.check, p.file, p.row, p.column, repr(p.value), p.message]
          for p in _validate.find_problems(table, prov, k=k, limit=limit, **kwargs)]


def _raised(case):
  table, prov, k, _ = case
  out = {}
  for on_invalid in ("raise", "report"):
    try:
      _validate.validate(table, prov, k=k, on_invalid=on_invalid)
      out[on_invalid] = None
    except DataError as e:
      out[on_invalid] = str(e)
  return out


def _record():
  out = {}
  for name, case in _cases().items():
    table = case[0]
    out[name] = {"problems": _problems(case), "raised": _raised(case),
                 "hash": _table.content_hash(table.events, table.catalog)}
  return out


@pytest.fixture(scope="module")
def golden():
  return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(_cases()))
def test_problems_equal_the_whole_table_code_in_any_chunk_size(golden, name):
  case = _cases()[name]
  for chunk in CHUNKS:
    assert _problems(case, chunk) == golden[name]["problems"], (name, chunk)
  assert _raised(case) == golden[name]["raised"]


@pytest.mark.parametrize("name", sorted(_cases()))
def test_content_hash_equals_the_whole_table_code(golden, name):
  table = _cases()[name][0]
  assert _table.content_hash(table.events, table.catalog) == golden[name]["hash"]
  for piece in (1, 2, 3, 7):
    assert _table.content_hash(table.events, table.catalog, piece=piece) == golden[name]["hash"], piece


def test_read_of_a_bad_parquet_names_the_same_rows(tmp_path, golden):
  # `luce.data.read` of a file says what validation said of the table.
  for name in ("duplicates", "time_stamps", "covariates_available_plain"):
    table = _cases()[name][0]
    path = tmp_path / f"{name}.parquet"
    ld.write(table, path)
    for on_invalid in ("raise", "report"):
      with pytest.raises(DataError) as e:
        ld.read(f"events:{path}", on_invalid=on_invalid)
      expected = golden[name]["raised"][on_invalid].replace("<table>", f"{name}.parquet")
      assert str(e.value) == expected


def test_unreadable_parquet_keeps_arrows_message(tmp_path):
  # Files are read a row group at a time; one that cannot be opened says what it said before.
  path = tmp_path / "t.parquet"
  ld.write(_cases()["valid"][0], path)
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(DataError) as e:
    ld.read(f"events:{path}")
  assert str(e.value) == (
      f"{path}: not a readable Parquet file (ArrowInvalid: Could not open Parquet input source "
      f"'{path}': Parquet magic bytes not found in footer. Either the file is corrupted or this is "
      f"not a parquet file.). Is it truncated? Rewrite it with luce.data.write.")


def test_read_row_groups_equals_read_table(tmp_path):
  path = tmp_path / "t.parquet"
  table = _cases()["valid"][0]
  pq.write_table(table.events, path, row_group_size=5)
  assert pq.ParquetFile(path).num_row_groups == 5
  assert _table._read_row_groups(str(path)).equals(pq.read_table(path), check_metadata=True)


def test_chunk_events_must_be_positive():
  table = _cases()["valid"][0]
  with pytest.raises(ValueError, match="chunk_events"):
    _validate.find_problems(table, chunk_events=0)


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit("usage: python tests/data/test_data_chunked_validation.py --write  (rewrites the golden file)")
  GOLDEN.write_text(json.dumps(_record(), indent=1, sort_keys=True) + "\n")
