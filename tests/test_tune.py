"""luce.tune and luce-tune: search spaces are checked against the schema, trials are
real runs in a shared Optuna study (two processes split it, none twice), a killed
tuner resumes, and the best trial comes back as a flag file luce-train runs."""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from luce.errors import ConfigError
from luce.train import base_config, checked_config
from luce.tune import parse_space

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
TINY = ["--config=configs/synthetic.py",
        "--config.data.source=synthetic:ranking?n_items=8&k=3&n_events=300&seed=1",
        "--config.model.hidden=8", "--config.model.depth=1",
        "--config.data.eval_k=3", "--config.train.batch_size=32", "--config.train.eval_every=10",
        "--config.train.checkpoint_every=10", "--config.baselines.names=('uniform',)"]


@pytest.mark.parametrize("entry, words", [
    ("optimizer.learning_rat=loguniform(1e-4, 1e-2)", ["optimizer.learning_rat", "no such config field",
                                                        "Did you mean 'optimizer.learning_rate'"]),
    ("model.dropout=uniform(0.5, 0.5)", ["model.dropout", "is empty"]),
    ("model.dropout=uniform(0.4, 0.1)", ["model.dropout", "is empty"]),
    ("optimizer.learning_rate=loguniform(0, 1e-2)", ["optimizer.learning_rate", "low > 0"]),
    ("optimizer.weight_decay=loguniform(-1e-3, 1e-2)", ["optimizer.weight_decay", "low > 0"]),
    ("model.hidden=categorical(32, 'wide')", ["model.hidden", "'wide' is a str", "holds a int"]),
    ("model.encoder=categorical(mlp, 3)", ["model.encoder", "3 is a int", "holds a str"]),
    ("model.entrants=categorical(1, 0)", ["model.entrants", "holds a bool"]),
    ("model.hidden=uniform(16, 64)", ["model.hidden", "use int(...)"]),
    ("model.encoder=uniform(0, 1)", ["model.encoder", "use categorical"]),
    ("model.hidden=int(16, 64, 10)", ["model.hidden", "multiple of the step"]),
    ("model.hidden=int(16.5, 64)", ["model.hidden", "must be integers"]),
    ("model.dropout=normal(0, 1)", ["model.dropout", "unknown distribution 'normal'"]),
    ("model.dropout uniform(0, 1)", ["field=distribution(args)"]),
    ("data.split=categorical(1, 2)", ["data.split", "list field"]),
    ("tune.sampler=categorical(tpe, random)", ["tune.sampler", "cannot be searched"]),
])
def test_bad_search_spaces_name_the_field(entry, words):
  with pytest.raises(ConfigError) as err:
    parse_space((entry,))
  for word in words:
    assert word in str(err.value), str(err.value)
  # the same error from a config that declares the space
  config = base_config()
  config.tune.space = (entry,)
  with pytest.raises(ConfigError, match="tune.space"):
    checked_config(config)


def test_good_spaces_parse_to_their_distributions():
  params = parse_space("optimizer.learning_rate=loguniform(1e-4, 1e-2); model.hidden=int(16, 64, 16);"
                       "model.encoder=categorical(mlp, 'transformer'); model.dropout=uniform(0, 0.5);"
                       "train.batch_size=logint(8, 64)")
  kinds = {p.field: p.kind for p in params}
  assert kinds == {"optimizer.learning_rate": "loguniform", "model.hidden": "int",
                   "model.encoder": "categorical", "model.dropout": "uniform",
                   "train.batch_size": "logint"}
  by = {p.field: p for p in params}
  assert by["model.encoder"].choices == ("mlp", "transformer")
  assert by["model.hidden"].grid(3) == [16, 32, 48, 64]
  assert by["optimizer.learning_rate"].grid(3) == pytest.approx([1e-4, 1e-3, 1e-2])
  assert by["model.dropout"].distribution().low == 0.0
  with pytest.raises(ConfigError, match="given twice"):
    parse_space(("model.dropout=uniform(0, 0.5)", "model.dropout=uniform(0, 0.2)"))
  with pytest.raises(ConfigError, match="population training"):
    parse_space(("model.hidden=int(16, 64)",), population=True)


def test_every_shipped_config_declares_a_space_holding_its_own_values():
  from luce.configs import f1, nascar, powerball, sp500, synthetic
  from luce.tune._study import defaults_of
  for module in (f1, nascar, powerball, sp500, synthetic):
    config = checked_config(module.get_config())
    params = parse_space(config.tune.space)
    assert params, module.__name__
    assert defaults_of(config, params) is not None, module.__name__


def tune_cli(workdir, *args, wait=True):
  cmd = [str(BIN / "luce-tune"), *TINY, f"--workdir={workdir}", *args]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc


def _study(workdir, name="luce"):
  import optuna
  return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'study.db'}")


def test_two_processes_share_one_sqlite_study(tmp_path):
  """Two luce-tune processes with --trials=2 each on one study: 4 complete trials,
  each number, folder and parameter set once."""
  import optuna
  procs = [tune_cli(tmp_path, "--trials=2", "--config.train.num_steps=10", "--pruner=none",
                    "--sampler=random", wait=False) for _ in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out[-2000:] + err[-4000:]
  study = _study(tmp_path)
  trials = study.get_trials()
  complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
  assert len(trials) == len(complete) == 4, [(t.number, t.state) for t in trials]
  assert sorted(t.number for t in complete) == list(range(4))
  assert len({t.user_attrs["workdir"] for t in complete}) == 4
  assert len({tuple(sorted(t.params.items())) for t in complete}) == 4, "a parameter set ran twice"
  assert len({t.user_attrs["pid"] for t in complete}) == 2
  for t in complete:  # each trial is a real run with its own checkpoints and metrics
    folder = pathlib.Path(t.user_attrs["workdir"])
    assert (folder / "checkpoints").is_dir() and (folder / "best").is_dir()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["optimizer"]["learning_rate"] == pytest.approx(t.params["optimizer.learning_rate"])
    assert json.loads((folder / "eval_valid.json").read_text())["models"]["model"]["nll_per_event"] \
        == pytest.approx(t.value)
  assert [t for t in complete if t.number == 0][0].user_attrs.get("default") is True
  with open(tmp_path / "trials.csv") as f:
    assert len(list(csv.DictReader(f))) == 4


def test_best_flags_retrain_to_the_best_trial(tmp_path):
  tune_cli(tmp_path, "--trials=2", "--config.train.num_steps=10", "--sampler=random")
  study = _study(tmp_path)
  flagfile = tmp_path / "best.flags"
  text = flagfile.read_text()
  assert f"--config.optimizer.learning_rate={study.best_params['optimizer.learning_rate']!r}" in text
  report = (tmp_path / "report" / "report.md").read_text()
  assert "| trial | state | value |" in report and "config default" in report
  assert (tmp_path / "report" / "history.png").stat().st_size > 1000
  # the held-out check: best and default trials scored on the test split no trial saw
  summary = json.loads((tmp_path / "tune.json").read_text())
  held = summary["held_out"]
  assert held["default_trial"] == 0 and held["best_trial"] == study.best_trial.number
  assert held["skill"]["mean"] == pytest.approx(held["default_test_nll"] - held["best_test_nll"], abs=1e-9)
  assert "Held out (the test split, which no trial saw)" in report
  proc = subprocess.run([str(BIN / "luce-train"), *TINY, "--config.train.num_steps=10",
                         f"--flagfile={flagfile}", f"--workdir={tmp_path / 'retrain'}",
                         "--config.train.progress_bar=False"],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "retrain" / "eval_valid.json").read_text())
  assert result["models"]["model"]["nll_per_event"] == pytest.approx(study.best_value, rel=1e-6)


def test_killed_tuner_resumes_and_reruns_the_dead_trial_from_its_folder(tmp_path):
  """SIGKILL mid-trial: the restarted tuner fails the dead trial (never counts it
  complete), reruns its parameters in its folder from the last checkpoint, and the
  rerun ends with the value an uninterrupted trial gets."""
  import optuna
  # The kill comes at the checkpoint of step 20, before the first evaluation (step 30)
  # has even compiled: trial 0 cannot finish first.
  slow = ["--config.train.num_steps=60", "--config.train.eval_every=30",
          "--config.train.checkpoint_every=10", "--config.train.log_every=10", "--pruner=none",
          "--sampler=random"]
  proc = tune_cli(tmp_path / "a", "--trials=2", *slow, wait=False)
  checkpoints = tmp_path / "a" / "trials" / "0000" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline:
    if checkpoints.is_dir() and any(p.name.isdigit() and int(p.name) >= 20 for p in checkpoints.iterdir()):
      break
    if proc.poll() is not None:
      pytest.fail("the tuner ended before it could be killed: " + proc.stderr.read()[-3000:])
    time.sleep(0.05)
  else:
    pytest.fail("no checkpoint of trial 0 appeared")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  study = _study(tmp_path / "a")
  assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING]

  resumed = tune_cli(tmp_path / "a", "--trials=3", "--max_trials=2", *slow)
  assert "their process died" in resumed.stdout
  trials = _study(tmp_path / "a").get_trials()
  states = [t.state for t in trials]
  assert states.count(optuna.trial.TrialState.COMPLETE) == 2, states
  assert trials[0].state == optuna.trial.TrialState.FAIL
  rerun = [t for t in trials if t.user_attrs.get("retry_of") == 0]
  assert len(rerun) == 1 and rerun[0].state == optuna.trial.TrialState.COMPLETE
  assert rerun[0].params == trials[0].params
  assert rerun[0].user_attrs["workdir"].endswith("trials/0000")
  lines = (tmp_path / "a" / "trials" / "0000" / "metrics.jsonl").read_text().splitlines()
  assert min(json.loads(line)["step"] for line in lines) < 20  # written before the kill

  fresh = tune_cli(tmp_path / "b", "--trials=1", *slow)
  assert fresh.returncode == 0
  assert rerun[0].value == pytest.approx(_study(tmp_path / "b").get_trials()[0].value, rel=1e-6)


def _tiny_config(**tune):
  config = base_config()
  config.data.source = "synthetic:ranking?n_items=8&k=3&n_events=200&seed=3"
  config.data.eval_k = 3
  config.model.update(hidden=8, depth=1)
  config.train.update(batch_size=32, num_steps=10, eval_every=10, checkpoint_every=10,
                      progress_bar=False)
  config.baselines.names = ("uniform",)
  config.tune.update(**tune)
  return config


def test_grid_sampler_visits_every_point_once(tmp_path):
  import optuna
  from luce.tune import tune
  config = _tiny_config(space=("optimizer.learning_rate=loguniform(1e-3, 1e-2)",
                               "model.hidden=categorical(8, 16)"),
                        sampler="grid", grid_points=2, pruner="none")
  result = tune(config, tmp_path, trials=5, progress=False, say=lambda *a: None)
  done = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
  points = {(round(t.params["optimizer.learning_rate"], 6), t.params["model.hidden"]) for t in done}
  assert points == {(0.001, 8), (0.001, 16), (0.01, 8), (0.01, 16)}  # the 5th ask: grid exhausted
  assert len(done) == 4


def test_hyperband_prunes_on_the_reported_evaluations(tmp_path):
  import optuna
  from luce.tune import tune
  config = _tiny_config(space=("optimizer.learning_rate=loguniform(1e-5, 3e-2)",),
                        sampler="random", pruner="hyperband")
  config.train.update(num_steps=30, eval_every=10)
  result = tune(config, tmp_path, trials=3, progress=False, say=lambda *a: None)
  trials = result.study.get_trials()
  assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
             for t in trials)
  for t in trials:  # every evaluation of the loop reached the pruner
    assert set(t.intermediate_values) <= {10, 20, 30} and 10 in t.intermediate_values


def test_walk_forward_objective_predicts_the_validation_events_only(tmp_path):
  from luce.train import prepare
  from luce.tune import tune
  from luce.tune._study import walk_forward_window
  config = _tiny_config(space=("optimizer.learning_rate=loguniform(1e-3, 1e-2)",),
                        sampler="random", pruner="none", objective="walk_forward")
  config.backtest.update(retrain_every=20, first_steps=20, retrain_steps=5, importance=False,
                         bootstrap_samples=100, calibration_samples=8)
  window = walk_forward_window(checked_config(config))
  prepared = prepare(checked_config(config))
  times = prepared.table.times()
  assert window == {"backtest.start": str(times[prepared.split_range("valid").start]),
                    "data.test_until": str(times[prepared.split_range("test").start])}
  result = tune(config, tmp_path, trials=2, progress=False, say=lambda *a: None)
  values = [t.value for t in result.study.get_trials()]
  assert len(values) == 2 and all(v is not None and v > 0 for v in values)
  assert (tmp_path / "trials" / "0000" / "backtest" / "progress.npz").exists()
  assert result.held_out is None  # the walk-forward already scores held-out events
