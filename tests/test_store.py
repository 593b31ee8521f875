"""luce.data's feature store: chunked building equals build_features bit for bit, the
shards read back by rows, bfloat16/float16 storage, reuse and rebuild by data hash and
feature config."""

import json

import numpy as np
import pytest

import luce.data
from luce.errors import ConfigError, DataError
from luce_test_utils import shared_data_dir


def concatenated(table, config, chunk, threads=1):
  parts = list(luce.data.feature_chunks(table, config, chunk_events=chunk, threads=threads))
  assert [p[0] for p in parts] == list(range(0, len(table), chunk))
  item = np.concatenate([p[2].item for p in parts])
  event = np.concatenate([p[2].event for p in parts])
  available = np.concatenate([p[2].available for p in parts])
  return parts[0][2], item, event, available


def assert_bitwise_equal(table, config, chunk, threads=1):
  reference = luce.data.build_features(table, config)
  first, item, event, available = concatenated(table, config, chunk, threads)
  assert first.item_names == reference.item_names and first.event_names == reference.event_names
  assert item.dtype == reference.item.dtype and item.shape == reference.item.shape
  np.testing.assert_array_equal(item.view(np.uint8), reference.item.view(np.uint8))
  np.testing.assert_array_equal(event.view(np.uint8), reference.event.view(np.uint8))
  np.testing.assert_array_equal(available, reference.available)
  np.testing.assert_array_equal(first.static, reference.static)


# Chunks of 1 and 7 put every boundary inside the last-4 window and the rate-10/50/200
# horizons; 333 falls inside rate_200 only; 5000 is one chunk for the whole table.
@pytest.mark.parametrize("chunk", [1, 7, 333, 5000])
def test_chunks_equal_build_features_on_synthetic_rankings(chunk):
  table = luce.data.read("synthetic:ranking?n_items=12&k=4&n_events=700&seed=3")
  assert_bitwise_equal(table, luce.data.FeatureConfig(), chunk)


def test_chunks_equal_build_features_float16_and_sets():
  table = luce.data.read("synthetic:set?n_items=10&k=3&n_events=500&seed=1")
  assert_bitwise_equal(table, luce.data.FeatureConfig(dtype="float16", horizons=(3, 90)), 64)
  assert_bitwise_equal(table, luce.data.FeatureConfig(), 45, threads=3)   # chunks built at once


@pytest.mark.skipif(shared_data_dir() is None, reason="shared data (LUCE_SHARED_DATA) is absent")
def test_chunks_equal_build_features_on_f1_with_covariates():
  """The real table: numeric covariates, a categorical one with group history over 5
  and 20 races (chunks of 13 and 50 races end inside both windows), entrants only."""
  table = luce.data.read("ergast:rankings/f1_1950_2019")
  assert {"cov_grid", "cov_constructor"} <= set(table.covariate_columns())
  for chunk in (13, 50):
    assert_bitwise_equal(table, luce.data.FeatureConfig(), chunk)


def test_a_table_shorter_than_the_lag_window():
  table = luce.data.read("synthetic:ranking?n_items=6&k=2&n_events=3&seed=0")
  assert_bitwise_equal(table, luce.data.FeatureConfig(last=5), 2)


def test_bfloat16_bits_match_ml_dtypes():
  ml_dtypes = pytest.importorskip("ml_dtypes")
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(size=5000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 5000),
                      np.float32([0, -0.0, 1, 1 + 2**-8, 1 + 3 * 2**-8, 3.4e38, -1e-40])])
  bits = luce.data.to_bfloat16_bits(x)
  np.testing.assert_array_equal(bits, x.astype(ml_dtypes.bfloat16).view(np.uint16))
  np.testing.assert_array_equal(luce.data.from_bfloat16_bits(bits),
                                x.astype(ml_dtypes.bfloat16).astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_store_reads_back_the_features_by_rows(tmp_path, dtype):
  table = luce.data.read("synthetic:ranking?n_items=9&k=3&n_events=300&seed=2")
  reference = luce.data.build_features(table)
  messages = []
  store = luce.data.build_store(table, tmp_path / "s", dtype=dtype, chunk_events=64,
                                say=messages.append)
  assert len(store) == 300 and len(store.meta["shards"]) == 5 and not messages
  rows = np.random.default_rng(0).permutation(300)[:77]
  rows = np.concatenate([rows, np.arange(60, 70), [299, 0]])       # runs across a shard edge
  item = store.rows("item", rows)
  expected = reference.item[rows]
  if dtype == "float16":
    expected = expected.astype(np.float16).astype(np.float32)
  elif dtype == "bfloat16":
    expected = luce.data.from_bfloat16_bits(luce.data.to_bfloat16_bits(expected))
  assert item.dtype == np.float32
  np.testing.assert_array_equal(item, expected)
  np.testing.assert_array_equal(store.rows("event", rows), reference.event[rows])
  np.testing.assert_array_equal(store.rows("available", rows), reference.available[rows])
  np.testing.assert_array_equal(store.rows("items", rows), table.items_array()[rows])
  np.testing.assert_array_equal(store.rows("lengths", rows), table.lengths()[rows])
  np.testing.assert_array_equal(store.rows("weights", rows), table.weights()[rows])
  assert store.meta["item_names"] == list(reference.item_names)
  assert store.meta["max_available"] == 9
  with pytest.raises(DataError, match="event row 300 is outside the store's 300 events"):
    store.rows("item", [300])


def test_store_is_reused_or_rebuilt_saying_why(tmp_path):
  table = luce.data.read("synthetic:ranking?n_items=9&k=3&n_events=200&seed=2")
  folder = tmp_path / "s"
  luce.data.build_store(table, folder, chunk_events=50)
  built = json.loads((folder / "store.json").read_text())
  assert built["data_hash"] == table.content_hash
  assert built["feature_config"]["horizons"] == [10, 50, 200]
  said = []
  luce.data.build_store(table, folder, chunk_events=50, say=said.append)
  assert said == [] and json.loads((folder / "store.json").read_text()) == built   # reused
  luce.data.build_store(table, folder, luce.data.FeatureConfig(horizons=(5,)), chunk_events=50,
                        say=said.append)
  assert said == [f"feature store {folder}: feature_config changed since it was built; rebuilding it"]
  other = luce.data.read("synthetic:ranking?n_items=9&k=3&n_events=200&seed=4")
  store = luce.data.build_store(other, folder, luce.data.FeatureConfig(horizons=(5,)),
                                chunk_events=80, say=said.append)
  assert said[-1].endswith("data_hash changed since it was built; rebuilding it")
  assert len(list(folder.glob("shard-*.item.npy"))) == 3 == len(store.meta["shards"])
  np.testing.assert_array_equal(store.rows("items", np.arange(200)), other.items_array())
  luce.data.build_store(other, folder, luce.data.FeatureConfig(horizons=(5,)), dtype="float16",
                        say=said.append)
  assert said[-1].endswith("dtype changed since it was built; rebuilding it")


def test_store_errors_name_the_problem(tmp_path):
  table = luce.data.read("synthetic:ranking?n_items=6&k=2&n_events=50&seed=0")
  with pytest.raises(ConfigError, match="store dtype='int8'; valid: float32, float16, bfloat16"):
    luce.data.build_store(table, tmp_path / "a", dtype="int8")
  with pytest.raises(ConfigError, match="chunk_events=0 must be >= 1"):
    luce.data.build_store(table, tmp_path / "a", chunk_events=0)
  with pytest.raises(DataError, match="no feature store there"):
    luce.data.FeatureStore(tmp_path / "nowhere")
  catalog = luce.data.Catalog.numbered(6)
  catalog = luce.data.Catalog(catalog.labels, catalog.names, features={"price": np.full(6, 1e6)})
  big = luce.data.EventTable(table.events, catalog, dict(table.metadata))
  luce.data.build_store(big, tmp_path / "b", dtype="float16")      # static features stay float32
  store = luce.data.build_store(table, tmp_path / "c", chunk_events=20)
  (tmp_path / "c" / store.meta["shards"][1]["files"]["item"]).write_bytes(b"")
  with pytest.raises(DataError, match=r"shard-00001.item.npy: not a readable .npy file"):
    luce.data.FeatureStore(tmp_path / "c")
