"""The feature store built by Ray tasks (`luce.data.build_store_distributed`) against the
single-process build (`luce.data.build_store`): every file byte for byte, on a synthetic
table (availability, numeric and categorical covariates, calendar) and on F1, chunk edges
inside every window and more chunks than workers, whatever order the tasks finish in; the
errors of bad arguments; the training path's `data.store_engine`.

One local Ray (2 CPUs) serves the whole module.
"""

import json
import math
import os
import pathlib
import shutil
import socket
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import luce.data
import luce.data._distributed as distributed
from luce.errors import ConfigError, DataError
from luce_test_utils import shared_data_dir

HERE = pathlib.Path(__file__).resolve().parent
_BUILD_SHARD = distributed._build_shard          # the real task, before any test patches it


@pytest.fixture(scope="module")
def ray_runtime():
  import ray
  # The workers import this module for the reordering test's task (tests/ on their path).
  path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
           runtime_env={"env_vars": {"PYTHONPATH": path}})
  yield ray
  ray.shutdown()


def covariate_table(m=400, n=10, k=3, seed=0):
  """Rankings of k of each event's available items, dated events, a numeric covariate and
  a categorical one (a level that first appears late)."""
  rng = np.random.default_rng(seed)
  counts = rng.integers(k + 1, n + 1, size=m)
  available = np.argsort(np.argsort(rng.random((m, n)), axis=1), axis=1) < counts[:, None]
  items = np.argsort(np.where(available, rng.random((m, n)), np.inf), axis=1)[:, :k].astype(np.int32)
  times = np.datetime64("2020-01-01") + np.cumsum(rng.integers(1, 5, size=m)).astype("timedelta64[D]")
  teams = np.array(["red", "blue", "green", "gold"], dtype=object)[rng.integers(0, 4, size=(m, n))]
  teams[m // 2:][rng.random((m - m // 2, n)) < 0.2] = "late"
  return luce.data.EventTable.from_arrays(
      items, catalog=n, times=times, kind="ranking", available=available,
      covariates={"grid": rng.normal(size=(m, n)) * 5, "team": teams})


def store_files(folder):
  """(store.json without its build time, {file name: bytes} of every other file)."""
  folder = pathlib.Path(folder)
  meta = json.loads((folder / "store.json").read_text())
  meta.pop("build_seconds")
  return meta, {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "store.json"}


def assert_same_store(local, ray_built):
  meta_a, files_a = store_files(local)
  meta_b, files_b = store_files(ray_built)
  assert meta_a == meta_b
  assert sorted(files_a) == sorted(files_b)
  for name in files_a:
    assert files_a[name] == files_b[name], f"{name} differs"


def build_both(table, tmp_path, config=None, **kwargs):
  local = luce.data.build_store(table, tmp_path / "local", config, say=print, **kwargs)
  ray_built = luce.data.build_store_distributed(table, tmp_path / "ray", config, say=print, **kwargs)
  assert not ray_built.reused and len(ray_built) == len(table)
  assert_same_store(local.folder, ray_built.folder)
  return local, ray_built


def test_synthetic_covariate_table_equals_the_single_process_build(ray_runtime, tmp_path):
  """Chunks of 37 events end inside the last-4 window, the rate-10/50/200 horizons and the
  group-history horizons 5 and 20; 11 chunks on 2 workers."""
  table = covariate_table()
  local, ray_built = build_both(table, tmp_path, dtype="float32", chunk_events=37)
  assert len(ray_built.meta["shards"]) == math.ceil(len(table) / 37) == 11
  names = ray_built.meta["item_names"]
  assert {"since_last", "rate_200", "cov_grid", "grp_team_rate_5", "grp_team_new"} <= set(names)
  assert "log_days_since_prev" in ray_built.meta["event_names"]
  # The store reads back the features of build_features (the reference of the chunked build).
  reference = luce.data.build_features(table)
  rows = np.arange(len(table))
  np.testing.assert_array_equal(ray_built.rows("item", rows).view(np.uint32),
                                reference.item.view(np.uint32))


def test_group_sums_before_each_chunk_equal_one_pass_over_the_events():
  """The state each task is given: the group history's running sums before the chunk's
  re-read span, against the sums of one call over every event before it."""
  table = covariate_table(m=300, seed=3)
  config = luce.data.FeatureConfig()
  plan = luce.data._store._plan_chunks(table, config, 23)
  given = distributed._group_sums(table, plan)
  assert len(given) == len(plan.starts) == 14
  for start, groups in zip(plan.starts, given):
    lo = plan.lo(start)
    if lo == 0:
      _, sums, counts = plan.groups["cov_team"]
    else:
      _, _, whole = luce.data._features._covariate_features(table.slice(0, lo), config, plan.groups,
                                                            carry_at=lo)
      _, sums, counts = whole["cov_team"]
    levels = groups["cov_team"][0]
    assert list(levels) == ["", "blue", "gold", "green", "late", "red"]
    np.testing.assert_array_equal(groups["cov_team"][1].view(np.uint64), sums.view(np.uint64))
    np.testing.assert_array_equal(groups["cov_team"][2], counts)


def test_float16_sets_with_chunks_of_one_event(ray_runtime, tmp_path):
  table = luce.data.read("synthetic:set?n_items=7&k=2&n_events=40&seed=4")
  _, ray_built = build_both(table, tmp_path, luce.data.FeatureConfig(horizons=(3, 9)), dtype="float16",
                            chunk_events=1)
  assert len(ray_built.meta["shards"]) == 40


def _slow_first(table, plan, index, *args):
  """The real task, chunk 0 held back until every other chunk is written."""
  if index == 0:
    time.sleep(1.5)
  return _BUILD_SHARD(table, plan, index, *args)


def test_tasks_finishing_out_of_order_give_the_same_store(ray_runtime, tmp_path, monkeypatch):
  table = covariate_table(m=300, seed=1)
  monkeypatch.setattr(distributed, "_build_shard", _slow_first)
  local, ray_built = build_both(table, tmp_path, chunk_events=50)
  written = {int(p.name[6:11]): p.stat().st_mtime_ns for p in ray_built.folder.glob("shard-*.item.npy")}
  assert len(written) == 6 and written[0] > max(written[i] for i in range(1, 6)), written


@pytest.mark.skipif(shared_data_dir() is None, reason="shared data (LUCE_SHARED_DATA) is absent")
def test_f1_equals_the_single_process_build(ray_runtime, tmp_path):
  """The real table: entrants only, numeric covariates, constructors' group history;
  chunks of 200 races end inside the rate-200 window, over 5 workers' worth of chunks."""
  table = luce.data.read("ergast:rankings/f1_1950_2019")
  _, ray_built = build_both(table, tmp_path, chunk_events=200)
  assert len(ray_built.meta["shards"]) > 4 and "grp_constructor_rate_20" in ray_built.meta["item_names"]


def test_a_store_either_build_wrote_is_reused_by_the_other(ray_runtime, tmp_path):
  table = luce.data.read("synthetic:ranking?n_items=6&k=2&n_events=60&seed=5")
  said = []
  luce.data.build_store(table, tmp_path / "s", chunk_events=25)
  assert luce.data.build_store_distributed(table, tmp_path / "s", chunk_events=25, say=said.append).reused
  config = luce.data.FeatureConfig(horizons=(5,))
  luce.data.build_store_distributed(table, tmp_path / "s", config, chunk_events=25, say=said.append)
  assert said and "feature_config changed" in said[0]
  assert luce.data.build_store(table, tmp_path / "s", config, chunk_events=25).reused


def test_a_feature_the_store_refuses_raises_the_same_error_from_a_worker(ray_runtime, tmp_path):
  table = covariate_table(m=60, seed=2)
  big = luce.data.EventTable.from_arrays(
      table.items_array(), catalog=table.n_items, kind="ranking", available=table.available_mask(),
      covariates={"grid": np.full((60, table.n_items), 1e6)})
  with pytest.raises(DataError, match="feature 'cov_grid' reaches beyond float16's range") as local:
    luce.data.build_store(big, tmp_path / "a", dtype="float16", chunk_events=20)
  with pytest.raises(DataError, match="feature 'cov_grid' reaches beyond float16's range") as remote:
    luce.data.build_store_distributed(big, tmp_path / "b", dtype="float16", chunk_events=20)
  assert str(remote.value).replace("/b ", "/a ") == str(local.value)
  assert not (tmp_path / "b" / "store.json").exists()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", r"address='127.0.0.1:1': no Ray cluster answers at 127.0.0.1:1"),
    ("ray://127.0.0.1:1", r"address='ray://127.0.0.1:1': no Ray cluster answers at 127.0.0.1:1"),
    ("head-node", r"address='head-node': not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'"),
    ("", r"address='' must be a Ray address"),
])
def test_a_bad_or_unreachable_address_is_named(tmp_path, address, message):
  table = luce.data.read("synthetic:ranking?n_items=6&k=2&n_events=30&seed=0")
  start = time.perf_counter()
  with pytest.raises(ConfigError, match=message):
    luce.data.build_store_distributed(table, tmp_path / "s", address=address)
  assert time.perf_counter() - start < 10 and not (tmp_path / "s").exists()


def test_bad_arguments_and_a_missing_ray_are_named(tmp_path, monkeypatch):
  table = luce.data.read("synthetic:ranking?n_items=6&k=2&n_events=30&seed=0")
  with pytest.raises(ConfigError, match=r"num_cpus=0 must be an int >= 1"):
    luce.data.build_store_distributed(table, tmp_path / "s", num_cpus=0)
  with pytest.raises(ConfigError, match=r"store dtype='int8'"):
    luce.data.build_store_distributed(table, tmp_path / "s", dtype="int8")
  with pytest.raises(ConfigError, match=r"chunk_events=0 must be >= 1"):
    luce.data.build_store_distributed(table, tmp_path / "s", chunk_events=0)
  # `import ray` failing, in a fresh process: hiding the module inside this one, where the
  # module's Ray runtime may be running, can bring down the process (a Ray thread imports).
  code = ("import sys; sys.modules['ray'] = None\n"
          "import luce.data\n"
          "from luce.errors import ConfigError\n"
          "t = luce.data.read('synthetic:ranking?n_items=6&k=2&n_events=30&seed=0')\n"
          "try:\n"
          f"  luce.data.build_store_distributed(t, {str(tmp_path / 's')!r})\n"
          "except ConfigError as e:\n"
          "  print(e)\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert re.search(r"needs Ray .*pip install 'luce\[distributed\]'", done.stdout), done.stdout


def test_importing_luce_data_leaves_ray_unimported():
  code = "import sys, luce.data; print('ray' in sys.modules, callable(luce.data.build_store_distributed))"
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split() == ["False", "True"]


def test_training_path_builds_the_store_on_ray_when_asked(ray_runtime, tmp_path, monkeypatch):
  import luce.train
  calls = []
  real = luce.data.build_store_distributed
  monkeypatch.setattr(luce.data, "build_store_distributed",
                      lambda *args, **kwargs: calls.append(kwargs["address"]) or real(*args, **kwargs))
  data = {"source": "synthetic:ranking?n_items=8&k=3&n_events=300&seed=0", "pipeline": "store",
          "chunk_events": 37, "features": {"calendar": False, "horizons": (10,)}}
  said = []
  for engine in ("local", "ray"):
    config = luce.train.checked_config({"data": {**data, "store_engine": engine}})
    prepared = luce.train.prepare(config, store_dir=tmp_path / engine, say=said.append)
    assert not prepared.store.reused and len(prepared.store.meta["shards"]) == 9
  assert calls == [None]                                 # the local store was not built by Ray
  assert_same_store(tmp_path / "local", tmp_path / "ray")


def test_store_engine_fields_are_checked():
  import luce.train
  assert luce.train.checked_config({}).data.store_engine == "local"
  with pytest.raises(ConfigError, match=r"data\.store_engine='spark'; valid: local, ray\."):
    luce.train.checked_config({"data": {"store_engine": "spark"}})
  with pytest.raises(ConfigError, match=r"data\.ray_address='auto' .* only with data\.store_engine='ray'"):
    luce.train.checked_config({"data": {"ray_address": "auto"}})
  assert luce.train.checked_config({"data": {"store_engine": "ray", "ray_address": "auto"}})
  from luce.train._config import flatten, incompatible_changes
  a = flatten(luce.train.checked_config({"data": {"pipeline": "store"}}))
  assert incompatible_changes(a, {**a, "data.store_engine": "ray", "data.ray_address": "auto"}) == []


def test_an_existing_cluster_by_address(tmp_path):
  """A head node started with `ray start --head` (token authentication, Ray's default), a
  driver in a fresh process that connects by HOST:PORT; the store equals the local build."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  temp = tempfile.mkdtemp(prefix="lr", dir="/tmp")          # short: Ray's socket paths live there
  ray_cli = pathlib.Path(sys.executable).parent / "ray"
  head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2",
                           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
                           "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    source, folder = "synthetic:ranking?n_items=8&k=3&n_events=200&seed=0", tmp_path / "cluster"
    code = ("import luce.data; table = luce.data.read(%r); "
            "luce.data.build_store_distributed(table, %r, chunk_events=30, address='127.0.0.1:%d')"
            % (source, str(folder), port))
    for _ in range(120):                                        # until the GCS listens
      with socket.socket() as probe:
        if head.poll() is not None or probe.connect_ex(("127.0.0.1", port)) == 0:
          break
      time.sleep(0.25)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "RAY_AUTH_MODE": "token"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Connected to Ray cluster" in done.stderr
    local = luce.data.build_store(luce.data.read(source), tmp_path / "local", chunk_events=30)
    assert_same_store(local.folder, folder)
  finally:
    head.terminate()                                            # drains and stops the head's processes
    try:
      head.wait(timeout=60)
    except subprocess.TimeoutExpired:
      head.kill()
    shutil.rmtree(temp, ignore_errors=True)


class _NoCluster:
  """A stand-in for the ray module whose `init` finds no cluster, as `ray.init("auto")` does."""

  @staticmethod
  def is_initialized():
    return False

  @staticmethod
  def init(**kwargs):
    raise ConnectionError("Could not find any running Ray instance.")


def test_a_cluster_ray_cannot_reach_is_named():
  with pytest.raises(ConfigError, match=r"address='auto': Ray could not start or connect \(Could not find"):
    distributed._connect(_NoCluster, "auto", None, print)
