"""The Grain input pipeline over the feature store (data.pipeline = "store"): its batches
against the in-memory arrays, determinism from the seed, resuming from a saved state,
worker processes, per-process shares, and the config fields that choose it. Kill/resume
through it is in tests/test_train.py."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import luce.data
import luce.train
from luce.errors import ConfigError, DataError
from luce_test_utils import shared_data_dir
from test_train import tiny_config


def store_rows(tmp_path, n_events=300, chunk=64, dtype="float32"):
  table = luce.data.read(f"synthetic:ranking?n_items=9&k=3&n_events={n_events}&seed=2")
  store = luce.data.build_store(table, tmp_path / "store", dtype=dtype, chunk_events=chunk)
  return table, luce.data.FeatureRows(store)


def take(stream, count):
  return [stream.next() for _ in range(count)]


def test_epochs_are_permutations_and_the_seed_decides(tmp_path):
  _, rows_of = store_rows(tmp_path)
  dataset = luce.data.store_dataset(rows_of, range(96), 8, seed=3)
  batches = take(luce.data.StoreBatches(dataset), 14)            # 1 epoch and 2 batches
  index = np.concatenate([b["index"] for b, _ in batches])
  assert sorted(index[:96]) == list(range(96))
  assert not np.array_equal(index[:96], np.arange(96))            # shuffled
  assert not np.array_equal(index[:16], index[96:112])            # a fresh permutation per epoch
  again = take(luce.data.StoreBatches(dataset), 14)
  for (a, _), (b, _) in zip(batches, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = take(luce.data.StoreBatches(luce.data.store_dataset(rows_of, range(96), 8, seed=4)), 1)
  assert not np.array_equal(other[0][0]["index"], batches[0][0]["index"])


def test_a_restored_state_continues_the_stream(tmp_path):
  _, rows_of = store_rows(tmp_path)
  dataset = luce.data.store_dataset(rows_of, range(96), 8, seed=0)
  batches = take(luce.data.StoreBatches(dataset), 20)
  resumed = luce.data.StoreBatches(dataset)
  resumed.restore(batches[13][1])                                 # the state after batch 13
  for (expected, _), (got, _) in zip(batches[14:], take(resumed, 6)):
    np.testing.assert_array_equal(expected["index"], got["index"])
    np.testing.assert_array_equal(expected["item_features"], got["item_features"])


def test_worker_processes_give_the_same_batches(tmp_path):
  _, rows_of = store_rows(tmp_path)
  inline = take(luce.data.StoreBatches(luce.data.store_dataset(rows_of, range(96), 8, seed=0)), 8)
  stream = luce.data.StoreBatches(luce.data.store_dataset(rows_of, range(96), 8, seed=0, workers=2))
  try:
    with_workers = take(stream, 8)
  finally:
    stream.close()
  for (a, _), (b, _) in zip(inline, with_workers):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_two_processes_read_disjoint_shares_of_the_events(tmp_path):
  """Process 0 and 1 of 2 each read their own contiguous share (shard files past the
  boundary one are never opened by the other); the union is every training event."""
  _, rows_of = store_rows(tmp_path, n_events=300, chunk=25)
  train = range(97)                                            # odd: shares of 49 and 48
  seen, shards = [], []
  for process in range(2):
    share = luce.data.process_rows(train, process, 2)
    dataset = luce.data.store_dataset(rows_of, train, 7, seed=0, process_index=process,
                                      process_count=2)
    steps = -(-len(share) // 7)
    index = np.concatenate([b["index"] for b, _ in take(luce.data.StoreBatches(dataset), steps)])
    epoch = index[:len(share)]
    assert sorted(epoch) == list(share)
    seen.append(set(epoch.tolist()))
    shards.append(set(rows_of.store.shard_of(epoch).tolist()))
  assert seen[0] & seen[1] == set()
  assert seen[0] | seen[1] == set(train)
  assert len(seen[0]) == 49 and len(seen[1]) == 48
  assert len(shards[0] & shards[1]) <= 1 and shards[0] | shards[1] == {0, 1, 2, 3}
  assert [luce.data.process_rows(range(10, 20), p, 3) for p in range(3)] == [
      range(10, 14), range(14, 17), range(17, 20)]
  with pytest.raises(ConfigError, match=r"process_index=2 must be in \[0, process_count=2\)"):
    luce.data.process_rows(train, 2, 2)
  with pytest.raises(DataError, match="process 2 of 3 has no training events"):
    luce.data.store_dataset(rows_of, range(2), 1, seed=0, process_index=2, process_count=3)


def _compare_with_memory(config, tmp_path, rows):
  memory = luce.train.prepare(luce.train.checked_config(config))
  stored = luce.train.prepare(luce.train.checked_config(
      {**config, "data": {**config["data"], "pipeline": "store", "store_dtype": "float32",
                          "chunk_events": 37}}), store_dir=tmp_path / "features", say=lambda m: None)
  assert stored.item_names == memory.item_names and stored.bounds == memory.bounds
  assert stored.max_available == luce.models.max_available(memory.arrays["all"])
  batch = stored.rows_of(rows)
  covariate = np.array([name.startswith("cov_") for name in memory.item_names])
  for key in luce.train.BATCH_KEYS:
    expected = memory.arrays["all"][key][rows]
    if key == "item_features":
      np.testing.assert_array_equal(batch[key][..., ~covariate], expected[..., ~covariate])
      # Training-window means summed chunk by chunk: equal to rounding.
      np.testing.assert_allclose(batch[key][..., covariate], expected[..., covariate], rtol=1e-6,
                                 atol=1e-6)
    else:
      np.testing.assert_array_equal(batch[key], expected)
    np.testing.assert_array_equal(stored.arrays["valid"][key][:], memory.arrays["valid"][key]) \
        if key != "item_features" else None
  return memory, stored


def test_store_batches_equal_the_in_memory_arrays(tmp_path):
  config = tiny_config()
  rows = np.random.default_rng(0).permutation(400)[:50]
  memory, stored = _compare_with_memory(config, tmp_path, rows)
  entrants = luce.models.gather_entrants(memory.arrays["all"], rows, memory.max_available)
  from_store = luce.models.gather_entrants(stored.arrays["all"], rows, stored.max_available)
  for key in entrants:
    np.testing.assert_array_equal(entrants[key], from_store[key])


@pytest.mark.skipif(shared_data_dir() is None, reason="shared data (LUCE_SHARED_DATA) is absent")
def test_store_batches_equal_the_in_memory_arrays_on_f1(tmp_path):
  """Covariates (standardised with training-window statistics), entrants, group history."""
  config = tiny_config(**{"data.source": "ergast:rankings/f1_1950_2019?from_year=2010",
                          "data.features": {"calendar": True}})
  memory, _ = _compare_with_memory(config, tmp_path, np.random.default_rng(1).permutation(190)[:60])
  assert {"cov_grid", "covz_grid", "grp_constructor_rate_5"} <= set(memory.item_names)


def test_pipeline_config_fields_are_checked():
  base = luce.train.checked_config({})
  assert base.data.pipeline == "memory" and base.data.store_dtype == "bfloat16"
  for field, value, message in [
      ("pipeline", "disk", "data.pipeline='disk'; valid: memory, store."),
      ("store_dtype", "int8", "data.store_dtype='int8'; valid: float32, float16, bfloat16."),
      ("chunk_events", 0, "data.chunk_events=0 must be >= 1."),
      ("workers", -1, "data.workers=-1 must be >= 0")]:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
      luce.train.checked_config({"data": {field: value}})
  with pytest.raises(ConfigError, match="needs data.store_dir"):
    luce.train.prepare(luce.train.checked_config(tiny_config(**{"data.pipeline": "store"})))
  from luce.train._config import flatten, incompatible_changes
  a = flatten(luce.train.checked_config({"data": {"pipeline": "store"}}))
  moved = {**a, "data.store_dir": "/elsewhere", "data.chunk_events": 7}
  assert incompatible_changes(a, moved) == []
  assert incompatible_changes(a, {**a, "data.store_dtype": "float16"}) == [
      "data.store_dtype: 'bfloat16' -> 'float16'"]


_TWO_PROCESS_READER = r'''
import json, sys
import jax
import numpy as np
import luce.data
port, pid, store_dir, out = sys.argv[1:5]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=int(pid), initialization_timeout=60)
store = luce.data.FeatureStore(store_dir)
rows_of = luce.data.FeatureRows(store)
train = range(97)
# as luce-train makes its stream: this process's index and count come from jax.distributed
stream = luce.data.StoreBatches(luce.data.store_dataset(
    rows_of, train, 8 // jax.process_count(), seed=0, process_index=jax.process_index(),
    process_count=jax.process_count()))
share = luce.data.process_rows(train, jax.process_index(), jax.process_count())
index = np.concatenate([stream.next()[0]["index"] for _ in range(-(-len(share) // 4))])
epoch = index[:len(share)].tolist()
with open(out, "w") as f:
  json.dump({"process": jax.process_index(), "count": jax.process_count(), "rows": epoch,
             "shards": sorted(set(store.shard_of(np.asarray(epoch)).tolist()))}, f)
jax.distributed.shutdown()
'''


def test_two_real_processes_read_disjoint_shares(tmp_path):
  """Two processes joined by jax.distributed (the multi-host setup luce-train runs
  under) each read their own share of one store: disjoint, and together every event."""
  table = luce.data.read("synthetic:ranking?n_items=9&k=3&n_events=300&seed=2")
  luce.data.build_store(table, tmp_path / "store", dtype="float32", chunk_events=25)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_READER, str(port), str(p),
                             str(tmp_path / "store"), str(tmp_path / f"p{p}.json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for p in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-3000:]
  got = [json.loads((tmp_path / f"p{p}.json").read_text()) for p in range(2)]
  assert [g["process"] for g in got] == [0, 1] and {g["count"] for g in got} == {2}
  a, b = set(got[0]["rows"]), set(got[1]["rows"])
  assert len(a) == 49 and len(b) == 48 and not a & b and a | b == set(range(97))
  assert len(set(got[0]["shards"]) & set(got[1]["shards"])) <= 1
