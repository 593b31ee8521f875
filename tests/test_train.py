"""luce.train: the step, the one loop on data from a known model, checkpoints, errors,
determinism, kill/resume, 8 devices and 2 processes (the last three in subprocesses),
for both model families."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import luce.data
import luce.losses
import luce.train
from luce.errors import ConfigError, DataError

REPO = pathlib.Path(__file__).resolve().parents[1]


def synthetic_source(kind: str = "ranking", **options) -> str:
  """A `synthetic:` source string: 8 items, top-3, 400 events unless `options` say."""
  options = {"n_items": 8, "k": 3, "n_events": 400, **options}
  return f"synthetic:{kind}?" + "&".join(f"{k}={v}" for k, v in options.items())


def tiny_config(synthetic: dict | None = None, family: str = "pl", **overrides) -> dict:
  """A config small enough for a few seconds of CPU: 8 items, top-3 lists (sets for
  the diffusion family); `synthetic` gives options of the synthetic source."""
  kind = "set" if family == "diffusion" else "ranking"
  config = {
      "data": {"source": synthetic_source(kind, **(synthetic or {})),
               "features": {"calendar": False, "horizons": (10,)}, "eval_k": 3},
      "model": {"hidden": 16, "embed_dim": 4, "depth": 1, "heads": 2},
      "optimizer": {"warmup_steps": 2},
      "train": {"batch_size": 16, "num_steps": 20, "eval_every": 10, "checkpoint_every": 10,
                "log_every": 5, "progress_bar": False},
      "baselines": {"names": ("uniform", "frequency")},
  }
  config["model"]["family"] = family
  for name, value in overrides.items():
    *path, leaf = name.split(".")
    node = config
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  return config


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ---- the step --------------------------------------------------------------------------------

def _step_setup():
  config = luce.train.checked_config(tiny_config())
  prepared = luce.train.prepare(config)
  family = luce.train.build_family(config, prepared)
  optimizer = luce.train.make_optimizer(config)
  batch = {k: prepared.arrays["train"][k][:16] for k in luce.train.BATCH_KEYS}
  state = luce.train.init_state(family.model, optimizer, batch, jax.random.key(0))
  step = luce.train.make_train_step(family.model, optimizer, luce.losses.pl_loss("ranking"),
                                    donate=False)
  return prepared, state, step, batch


def test_step_lowers_loss_and_guards_nan():
  prepared, state, step, batch = _step_setup()
  key = jax.random.key(1)
  first = None
  for i in range(30):
    idx = luce.train.batch_indices(i, len(prepared.arrays["train"]["items"]), 16, 0)
    b = {k: prepared.arrays["train"][k][idx] for k in luce.train.BATCH_KEYS}
    state, metrics = step(state, b, key)
    first = float(metrics["loss"]) if first is None else first
  assert float(metrics["loss"]) < first
  assert int(state.step) == 30 and int(state.bad_step) == -1

  bad = dict(batch, item_features=np.full_like(batch["item_features"], np.nan))
  after, metrics = step(state, bad, key)
  assert float(metrics["finite"]) == 0.0
  assert int(after.bad_step) == 30 and int(after.bad_metric) == 1
  for a, b in zip(leaves(after.params), leaves(state.params)):
    np.testing.assert_array_equal(a, b)
  later, _ = step(after, batch, key)          # frozen from then on
  for a, b in zip(leaves(later.params), leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_nan_stops_the_loop_naming_step_and_metric(tmp_path):
  config = tiny_config(**{"optimizer.learning_rate": 1e30, "optimizer.clip_norm": 0.0,
                          "optimizer.warmup_steps": 0, "optimizer.schedule": "constant"})
  with pytest.raises(luce.train.NonFiniteError, match=r"step \d+: (loss|grad_norm) is not finite"):
    luce.train.train_and_evaluate(config, tmp_path)


# ---- the loop ----------------------------------------------------------------------------------

def test_learns_the_generating_model(tmp_path):
  """Held-out NLL within 3% of the generating model's, and below every baseline."""
  config = tiny_config(synthetic={"n_events": 3000, "n_items": 12, "k": 4},
                       **{"train.num_steps": 300, "train.batch_size": 64,
                          "train.eval_every": 100, "train.checkpoint_every": 100,
                          "model.hidden": 32, "baselines.names": ("uniform", "frequency", "static")})
  result = luce.train.train_and_evaluate(config, tmp_path)
  valid = result["valid"]
  model, oracle = valid["model"]["nll_per_event"], valid["oracle"]["nll_per_event"]
  assert model <= 1.03 * oracle, valid
  for name in ("uniform", "frequency", "static"):
    assert model < valid[name]["nll_per_event"], valid
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [l["loss"] for l in lines if l["split"] == "train"]
  assert train[-1] < train[0]
  assert {"valid", "train"} == {l["split"] for l in lines}
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  saved = json.loads((tmp_path / "eval_valid.json").read_text())
  assert saved["models"]["oracle"]["nll_per_event"] == pytest.approx(oracle)

  run = luce.train.load_run(tmp_path)
  test = luce.train.evaluate_run(run, "test")
  assert test["model"]["nll_per_event"] <= 1.03 * test["oracle"]["nll_per_event"]


def test_same_seed_same_parameters(tmp_path):
  a = luce.train.train_and_evaluate(tiny_config(), tmp_path / "a")
  b = luce.train.train_and_evaluate(tiny_config(), tmp_path / "b")
  for x, y in zip(leaves(a["final_params"]), leaves(b["final_params"])):
    np.testing.assert_array_equal(x, y)
  c = luce.train.train_and_evaluate(tiny_config(seed=1), tmp_path / "c")
  assert any(not np.array_equal(x, y) for x, y in zip(leaves(a["final_params"]), leaves(c["final_params"])))


def test_resume_refuses_other_data_or_config(tmp_path):
  luce.train.train_and_evaluate(tiny_config(), tmp_path)
  with pytest.raises(ConfigError, match=r"trained on data.source='synthetic:.*', but this config "
                                        r"reads .*seed=5': the source changed"):
    luce.train.train_and_evaluate(tiny_config(synthetic={"seed": 5}), tmp_path)
  with pytest.raises(ConfigError, match=r"train.num_steps: 20 -> 40 \(the cosine schedule decays "
                                        r"over num_steps, so a run cannot be extended"):
    luce.train.train_and_evaluate(tiny_config(**{"train.num_steps": 40}), tmp_path)
  with pytest.raises(ConfigError, match="model.hidden: 16 -> 32"):
    luce.train.train_and_evaluate(tiny_config(**{"model.hidden": 32}), tmp_path)
  # Watching differently is not a different run.
  done = luce.train.train_and_evaluate(tiny_config(**{"train.log_every": 2}), tmp_path)
  assert done["step"] == 20 and done["compile_seconds"] is None
  # Nor is reporting differently, or a backtest setting luce-train never reads.
  done = luce.train.train_and_evaluate(tiny_config(**{"data.eval_k": 2, "backtest.cost_bps": 3.0,
                                                      "backtest.first_steps": 7}), tmp_path)
  assert done["step"] == 20 and done["compile_seconds"] is None


def test_same_source_with_new_contents_says_the_data_changed(tmp_path):
  path = tmp_path / "events.parquet"
  luce.data.write(luce.data.read(synthetic_source()), path)
  config = tiny_config(**{"data.source": f"events:{path}"})
  luce.train.train_and_evaluate(config, tmp_path / "run")
  luce.data.write(luce.data.read(synthetic_source(seed=5)), path)
  with pytest.raises(ConfigError, match="now hashes to .*: the data changed"):
    luce.train.train_and_evaluate(config, tmp_path / "run")


def test_a_field_newer_than_the_checkpoint_is_compatible_at_its_default():
  from luce.train._config import flatten, incompatible_changes
  current = flatten(luce.train.base_config())
  saved = {k: v for k, v in current.items() if k != "model.entrants"}
  assert incompatible_changes(saved, current) == []
  assert incompatible_changes(saved, {**current, "model.entrants": False}) == [
      "model.entrants: None -> False"]


def test_early_stopping(tmp_path):
  config = tiny_config(**{"train.num_steps": 200, "train.patience": 1, "train.eval_every": 5,
                          "optimizer.learning_rate": 0.3, "optimizer.schedule": "constant"})
  result = luce.train.train_and_evaluate(config, tmp_path)
  assert result["step"] < 200


def test_bad_configs_and_paths(tmp_path):
  with pytest.raises(ConfigError, match="Did you mean 'train.num_steps'"):
    luce.train.checked_config({"train": {"num_step": 3}})
  with pytest.raises(ConfigError, match="model.encoder='lstm'; valid: mlp, transformer, itransformer"):
    luce.train.checked_config({"model": {"encoder": "lstm"}})
  with pytest.raises(ConfigError, match="multiple of model.heads"):
    luce.train.checked_config({"model": {"hidden": 10, "heads": 4}})
  with pytest.raises(DataError, match="no such file"):
    luce.train.train_and_evaluate(tiny_config(**{"data.source": "draws:/nowhere/draws.csv"}), tmp_path)
  with pytest.raises(ConfigError, match="unknown scheme"):
    luce.train.train_and_evaluate(tiny_config(**{"data.source": "csv:x.csv"}), tmp_path)
  with pytest.raises(ConfigError, match="go together"):
    luce.train.train_and_evaluate(tiny_config(**{"data.valid_from": "10"}), tmp_path)
  with pytest.raises(ConfigError, match="not a luce-train run"):
    luce.train.load_run(tmp_path / "empty")


def test_batches_are_epochs_of_permutations_whatever_the_window():
  """The one batch rule: consecutive slices of an endless run of permutations."""
  for n, size in ((10, 4), (3, 8), (16, 16)):
    stream = np.concatenate([luce.train.batch_indices(t, n, size, (7, 2)) for t in range(12)])
    assert len(stream) == 12 * size
    for epoch in range(len(stream) // n):
      assert sorted(stream[epoch * n:(epoch + 1) * n]) == list(range(n))
    again = luce.train.batch_indices(5, n, size, (7, 2))
    np.testing.assert_array_equal(again, stream[5 * size:6 * size])
  assert not np.array_equal(luce.train.batch_indices(0, 50, 8, 0), luce.train.batch_indices(0, 50, 8, 1))
  with pytest.raises(ConfigError, match="no training events"):
    luce.train.batch_indices(0, 0, 8, 0)


def test_set_events_train_with_the_set_likelihood(tmp_path):
  config = tiny_config(**{"data.source": synthetic_source("set"), "train.num_steps": 10})
  result = luce.train.train_and_evaluate(config, tmp_path)
  assert result["valid"]["model"]["nll_per_event"] < result["valid"]["uniform"]["nll_per_event"] + 0.5


# ---- subprocesses: kill/resume, 8 devices, 2 processes -----------------------------------------

CHILD = """
import json, sys, numpy as np, jax
import luce.train
config, workdir, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
slow = int(sys.argv[4]) if len(sys.argv) > 4 else 0
if slow:  # keep the run alive after its first checkpoint so the parent can kill it mid-run
  import time
  save = luce.train.Checkpoints.save
  def slow_save(self, manager, step, state, meta, *data_state):
    save(self, manager, step, state, meta, *data_state)
    if manager is self.latest:
      time.sleep(slow)
  luce.train.Checkpoints.save = slow_save
devices = None
if len(sys.argv) > 5 and sys.argv[5] == "one":
  devices = jax.devices()[:1]
result = luce.train.train_and_evaluate(config, workdir, devices=devices)
np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(result["final_params"])],
         nll=result["valid"]["model"]["nll_per_event"], step=result["step"])
"""


def run_child(config, workdir, out, *args, env=None, wait=True):
  cmd = [sys.executable, "-c", CHILD, json.dumps(config), str(workdir), str(out), *map(str, args)]
  full_env = dict(os.environ, **(env or {}))
  proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  output, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0, output[-3000:]
  return output


def load_out(path):
  with np.load(path) as z:
    return [z[f"arr_{i}"] for i in range(len(z.files) - 2)], float(z["nll"]), int(z["step"])


def finished_steps(directory: pathlib.Path) -> list[int]:
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


# The kill/resume and 8-device tests share one straight run per family: on 8 simulated
# host devices, trained on the first of them (a subprocess launch each).
EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}


def device_config(family):
  """"pl", "diffusion", or "pl-store": PL through the feature store and the Grain
  pipeline (bfloat16 features, one prefetching worker process)."""
  if family == "pl-store":
    return tiny_config(family="pl", **{"train.batch_size": 32, "data.pipeline": "store",
                                       "data.chunk_events": 150, "data.workers": 1})
  return tiny_config(family=family, **{"train.batch_size": 32})


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  """family -> (output, npz path) of the straight 20-step run on one of 8 devices."""
  runs = {}

  def get(family):
    if family not in runs:
      folder = tmp_path_factory.mktemp(f"one-{family}")
      output = run_child(device_config(family), folder / "one", folder / "one.npz", 0, "one",
                         env=EIGHT)
      runs[family] = output, folder / "one.npz"
    return runs[family]
  return get


@pytest.mark.parametrize("family", ["pl", "diffusion", "pl-store"])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, family, one_device_run):
  config = device_config(family)
  _, straight_npz = one_device_run(family)

  proc = run_child(config, tmp_path / "killed", tmp_path / "unused.npz", 30, "one", env=EIGHT,
                   wait=False)
  deadline = time.time() + 200
  while not finished_steps(tmp_path / "killed" / "checkpoints"):
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert max(finished_steps(tmp_path / "killed" / "checkpoints")) < 20

  output = run_child(config, tmp_path / "killed", tmp_path / "resumed.npz", 0, "one", env=EIGHT)
  assert "resumed from" in output
  if family == "pl-store":  # the killed run's store is reused; its Grain state was saved
    assert "features: reused (3 shards, item features bfloat16)" in output
    saved = max(finished_steps(tmp_path / "killed" / "checkpoints"))
    state = tmp_path / "killed" / "checkpoints" / str(saved) / "data" / "process_0-of-1.json"
    assert state.exists(), list(state.parent.parent.iterdir())
  straight, nll_a, step_a = load_out(straight_npz)
  resumed, nll_b, step_b = load_out(tmp_path / "resumed.npz")
  assert step_a == step_b == 20
  for a, b in zip(straight, resumed):
    np.testing.assert_array_equal(a, b)
  assert nll_a == nll_b


@pytest.mark.parametrize("family", ["pl", "diffusion"])
def test_eight_devices_match_one(tmp_path, family, one_device_run):
  config = device_config(family)
  output = run_child(config, tmp_path / "eight", tmp_path / "eight.npz", 0, "all", env=EIGHT)
  assert "(8 device(s), 1 process(es))" in output
  output, one_npz = one_device_run(family)
  assert "(1 device(s), 1 process(es))" in output
  eight, nll8, _ = load_out(tmp_path / "eight.npz")
  one, nll1, _ = load_out(one_npz)
  # The sums over the batch run in another order on 8 devices. Adam divides each update by
  # the gradient's running RMS, so a parameter whose gradient is near zero (the diffusion
  # denoiser's context bias) moves by rounding noise: about 2e-4 after 20 steps, on
  # parameters of size 0.5, while the validation NLL agrees to 1e-7.
  atol = 1e-3 if family == "diffusion" else 1e-5
  for a, b in zip(eight, one):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)
  assert nll8 == pytest.approx(nll1, rel=1e-5)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_write_one_checkpoint_and_both_resume(tmp_path):
  workdir = tmp_path / "run"
  base = {"optimizer.schedule": "constant", "train.batch_size": 16}

  def launch(num_steps):
    port = _free_port()
    config = tiny_config(**base, **{"train.num_steps": num_steps})
    procs = []
    for pid in range(2):
      cmd = [sys.executable, "-m", "luce.launchers.train", "--config=" + str(REPO / "configs/synthetic.py"),
             f"--workdir={workdir}", f"--coordinator_address=localhost:{port}", "--num_processes=2",
             f"--process_id={pid}"] + [f"--config.{k}={v!r}" if isinstance(v, tuple) else
                                       f"--config.{k}={v}" for k, v in _flat(config).items()]
      # Output to files, not pipes: a process blocked on a full pipe would stall the other
      # in a collective.
      log = open(tmp_path / f"process{pid}-{num_steps}.log", "w")
      procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, JAX_PLATFORMS="cpu")), log))
    outputs = []
    for p, log in procs:
      p.wait(timeout=240)
      log.close()
      outputs.append(pathlib.Path(log.name).read_text())
      assert p.returncode == 0, outputs[-1][-3000:]
    return outputs

  first = launch(10)
  assert "(2 device(s), 2 process(es))" in first[0]
  assert finished_steps(workdir / "checkpoints") == [10]
  second = launch(20)
  assert "resumed from" in second[0] and "step 10" in second[0]
  assert finished_steps(workdir / "checkpoints")[-1] == 20

  # The same 20 steps in one process give the same parameters.
  config = tiny_config(**base, **{"train.num_steps": 20})
  single = luce.train.train_and_evaluate(_as_synthetic_config(config), tmp_path / "single")
  run = luce.train.load_run(workdir, checkpoint="latest")
  for a, b in zip(leaves(run.params), leaves(single["final_params"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _flat(config, prefix=""):
  out = {}
  for k, v in config.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _as_synthetic_config(config):
  """The overrides laid over configs/synthetic.py, as the launcher does."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("synthetic_config", REPO / "configs/synthetic.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config()
  for name, value in _flat(config).items():
    *path, leaf = name.split(".")
    node = base
    for part in path:
      node = node[part]
    node[leaf] = value
  return base
