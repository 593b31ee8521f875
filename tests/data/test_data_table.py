"""Event tables: round trip, content hash, Parquet failures, dense views."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from luce import data as ld
from luce.errors import DataError


def _table(rng, m=50, n=12, k=4):
  items = np.argsort(rng.random((m, n)), axis=1)[:, :k]
  return ld.EventTable.from_arrays(items, catalog=n, kind="ranking",
                                   times=np.datetime64("2020-01-01") + np.arange(m),
                                   context={"bonus": rng.integers(0, 5, m)})


def test_round_trip_is_lossless(tmp_path, rng):
  t = _table(rng)
  path = tmp_path / "t.parquet"
  digest = ld.write(t, path)
  back = ld.read(f"events:{path}")
  assert back.events.equals(t.events)
  assert back.catalog == t.catalog and digest == back.content_hash == t.content_hash
  assert back.metadata["source"] == f"events:{path}"


def test_hash_ignores_chunking_but_not_values(rng):
  t = _table(rng)
  chunked = pa.concat_tables([t.events.slice(0, 20), t.events.slice(20)])
  assert ld.content_hash(chunked, t.catalog) == t.content_hash
  items = t.items_array().copy()
  items[3, 0], items[3, 1] = items[3, 1], items[3, 0]   # swap two places of one ranking
  other = ld.EventTable.from_arrays(items, catalog=t.catalog, kind="ranking", times=t.times(),
                                    context={"bonus": t.events.column("ctx_bonus").to_numpy()})
  assert other.content_hash != t.content_hash


def test_hash_covers_fixed_size_list_context(rng):
  # Price tables keep each day's returns as a fixed-size list column.
  t = _table(rng, m=6)
  returns = pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=6 * 3)), 3)
  events = t.events.append_column("ctx_returns", returns)
  digest = ld.content_hash(events, t.catalog)
  chunked = pa.concat_tables([events.slice(0, 2), events.slice(2)])
  assert ld.content_hash(chunked, t.catalog) == digest
  changed = np.asarray(returns.flatten()).copy()
  changed[7] += 1e-9
  other = events.set_column(events.column_names.index("ctx_returns"), "ctx_returns",
                            pa.FixedSizeListArray.from_arrays(pa.array(changed), 3))
  assert ld.content_hash(other, t.catalog) != digest


def test_hash_mismatch_is_caught(tmp_path, rng):
  t = _table(rng)
  path = tmp_path / "t.parquet"
  ld.write(t, path)
  raw = pq.read_table(path)
  bonus = raw.column("ctx_bonus").to_numpy().copy()
  bonus[7] += 1
  changed = raw.set_column(raw.column_names.index("ctx_bonus"), "ctx_bonus", pa.array(bonus))
  pq.write_table(changed.replace_schema_metadata(raw.schema.metadata), path)
  with pytest.raises(DataError, match="content hash mismatch"):
    ld.read(f"events:{path}")
  assert len(ld.read(f"events:{path}?verify_hash=false")) == 50


def test_truncated_and_foreign_parquet(tmp_path, rng):
  path = tmp_path / "t.parquet"
  ld.write(_table(rng), path)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError, match=r"t.parquet: not a readable Parquet file.*truncated"):
    ld.read(f"events:{path}")
  foreign = tmp_path / "f.parquet"
  pq.write_table(pa.table({"x": [1, 2]}), foreign)
  with pytest.raises(DataError, match="no luce metadata"):
    ld.read(f"events:{foreign}")


def test_schema_version_is_checked(tmp_path, rng):
  path = tmp_path / "t.parquet"
  ld.write(_table(rng), path)
  raw = pq.read_table(path)
  meta = dict(raw.schema.metadata)
  meta[b"luce.schema_version"] = b"99"
  pq.write_table(raw.replace_schema_metadata(meta), path)
  with pytest.raises(DataError, match="schema version 99"):
    ld.read(f"events:{path}")


def test_invalid_parquet_rows_are_named(tmp_path, rng):
  t = _table(rng)
  items = t.items_array().copy()
  items[5, 2] = items[5, 0]
  bad = ld.EventTable(t.events.set_column(t.events.column_names.index("items"), "items",
                                          ld._table.list_column(items)), t.catalog)
  bad = ld.EventTable(bad.events.append_column("oops", pa.array(np.zeros(50))), t.catalog)
  path = tmp_path / "bad.parquet"
  ld.write(bad, path)
  with pytest.raises(DataError) as err:
    ld.read(f"events:{path}", on_invalid="report")
  found = {(p.check, p.row, p.column) for p in err.value.problems}
  assert found == {("unknown_column", None, "oops")}  # columns are checked before rows
  ld.write(ld.EventTable(bad.events.drop_columns(["oops"]), t.catalog), path)
  with pytest.raises(DataError, match=r"bad.parquet, row 5, column 'items'.*twice"):
    ld.read(f"events:{path}")


def test_dense_views_ragged_with_availability():
  items = np.array([[2, 0, -1], [1, 2, 3]])
  avail = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
  t = ld.EventTable.from_arrays(items, catalog=4, kind="ranking", available=avail)
  assert t.items_array().tolist() == items.tolist()
  assert t.lengths().tolist() == [2, 3] and t.k is None and t.k_max == 3
  assert (t.available_mask() == avail).all()
  assert t.inclusion_matrix().tolist() == [[1, 0, 1, 0], [0, 1, 1, 1]]
  with pytest.raises(DataError, match=r"row 0, column 'items'.*not in the event's `available`"):
    ld.EventTable.from_arrays(np.array([[3, 0]]), catalog=4, available=avail[:1])
