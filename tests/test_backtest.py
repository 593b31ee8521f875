"""Walk-forward backtest: no look-ahead (the leak test), folds, resume, reports, launcher."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import luce
import luce.data
import luce.train
from luce import eval as le
from luce.data import synthetic_pl

TINY = {
    "data": {"eval_k": 3, "features": {"last": 2, "horizons": (5,), "calendar": False, "static": False}},
    "model": {"hidden": 8, "embed_dim": 4, "depth": 1},
    "train": {"batch_size": 16, "progress_bar": False},
    "backtest": {"start": "60", "retrain_every": 20, "first_steps": 6, "retrain_steps": 3,
                 "bootstrap_samples": 200, "calibration_samples": 32},
}


def _config(source, **backtest):
  c = {k: dict(v) for k, v in TINY.items()}
  c["data"]["source"] = source
  c["backtest"].update(backtest)
  return c


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
  table = synthetic_pl(n_items=8, k=3, n_events=110, seed=3).table
  path = tmp_path_factory.mktemp("data") / "events.parquet"
  luce.data.write(table, path)
  return table, path


def test_no_lookahead(table_path, tmp_path):
  """Rewrite every event from t on: no prediction of events 0..t may change
  (t sits inside a fold), while later folds do see the change."""
  table, path = table_path
  t = 70
  future = tmp_path / "future.parquet"
  luce.data.write(luce.data.perturb_from(table, t, seed=1), future)
  a = le.walk_forward(_config(f"events:{path}"), tmp_path / "a", progress=False, say=lambda *x: None)
  b = le.walk_forward(_config(f"events:{future}"), tmp_path / "b", progress=False, say=lambda *x: None)
  assert a.start == 60 and [f[1:] for f in a.folds] == [(60, 80), (80, 100), (100, 110)]
  upto = t - a.start + 1
  for name in a.scores:
    np.testing.assert_array_equal(a.scores[name][:upto], b.scores[name][:upto], err_msg=name)
  # The test has teeth: the refit after t (fold 2) learned from the rewritten events.
  assert not np.array_equal(a.scores["model"][40:], b.scores["model"][40:])
  assert not np.array_equal(a.scores["frequency"][20:], b.scores["frequency"][20:])


def test_rolling_window_and_bad_config(table_path, tmp_path):
  _, path = table_path
  folds = le.plan_folds(110, 60, 20, "rolling", 30)
  assert folds == [(30, 60, 80), (50, 80, 100), (70, 100, 110)]
  with pytest.raises(luce.ConfigError, match="window_events"):
    le.plan_folds(110, 60, 20, "rolling", 0)
  with pytest.raises(luce.ConfigError, match="backtest.window"):
    le.plan_folds(110, 60, 20, "sliding", 0)
  with pytest.raises(luce.ConfigError, match="at least one"):
    le.walk_forward(_config(f"events:{path}", start="500"), tmp_path, progress=False)
  with pytest.raises(luce.ConfigError, match="ISO date"):
    le.walk_forward(_config(f"events:{path}", start="soon"), tmp_path, progress=False)
  with pytest.raises(luce.ConfigError, match="first_steps"):
    le.walk_forward(_config(f"events:{path}", first_steps=0), tmp_path, progress=False)


def test_resume_gives_the_same_predictions(table_path, tmp_path, monkeypatch):
  _, path = table_path
  quiet = dict(progress=False, say=lambda *x: None)
  config = _config(f"events:{path}")
  config["train"] = {**config["train"], "checkpoint_every": 2}
  from luce.models import PLFamily
  real, counted = PLFamily.nll, []

  def counting(*args, **kwargs):
    counted.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(PLFamily, "nll", counting)
  full = le.walk_forward(config, tmp_path / "full", **quiet)
  per_fold = len(counted) // 3  # the fold's NLL, then one per permuted feature group
  # Interrupt the run while it predicts fold 2, then run it again: it resumes after fold 1.
  calls = []

  def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == per_fold + 1:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  work = tmp_path / "resumed"
  monkeypatch.setattr(PLFamily, "nll", failing)
  with pytest.raises(KeyboardInterrupt):
    le.walk_forward(config, work, **quiet)
  monkeypatch.setattr(PLFamily, "nll", real)
  with np.load(work / "backtest" / "progress.npz") as z:
    assert int(z["folds_done"]) == 1
  said = []
  again = le.walk_forward(config, work, progress=False, say=said.append)
  assert any("(1 of 3 folds predicted" in line for line in said), said
  np.testing.assert_array_equal(full.scores["model"], again.scores["model"])
  np.testing.assert_array_equal(full.nll["model"], again.nll["model"])

  # Killed mid-fold (after the checkpoint of step 4 of fold 0's 6): it resumes from step 4.
  from luce.train import Checkpoints
  save = Checkpoints.save

  def dying(self, manager, step, state, meta, *rest):
    save(self, manager, step, state, meta, *rest)
    if step == 4:
      raise KeyboardInterrupt

  work = tmp_path / "mid-fold"
  monkeypatch.setattr(Checkpoints, "save", dying)
  with pytest.raises(KeyboardInterrupt):
    le.walk_forward(config, work, **quiet)
  monkeypatch.setattr(Checkpoints, "save", save)
  said = []
  again = le.walk_forward(config, work, progress=False, say=said.append)
  assert any("resumed at step 4 (0 of 3 folds predicted" in line for line in said), said
  np.testing.assert_array_equal(full.scores["model"], again.scores["model"])
  np.testing.assert_array_equal(full.inclusion["model"], again.inclusion["model"])
  assert full.importance and set(full.importance) == set(again.importance)
  for group in full.importance:
    np.testing.assert_array_equal(full.importance[group], again.importance[group])

  # Report-only settings may change on a resume; what the folds compute may not.
  again = le.walk_forward(_config(f"events:{path}", cost_bps=3.0, bootstrap_samples=50),
                          tmp_path / "full", **quiet)
  np.testing.assert_array_equal(full.scores["model"], again.scores["model"])
  with pytest.raises(luce.ConfigError, match="another config"):
    le.walk_forward(_config(f"events:{path}", retrain_steps=4), work, **quiet)


def _prices_csv(path, rng, days=140, assets=6):
  prices = 100 * np.cumprod(1 + rng.normal(0.0005, 0.01, size=(days, assets)), axis=0)
  dates = np.datetime64("2020-01-01") + np.arange(days)
  lines = ["date," + ",".join(f"A{j}" for j in range(assets))]
  lines += [f"{d}," + ",".join(f"{p:.4f}" for p in row) for d, row in zip(dates, prices)]
  path.write_text("\n".join(lines) + "\n")


def test_launcher_writes_the_report(tmp_path, rng):
  csv = tmp_path / "prices.csv"
  _prices_csv(csv, rng)
  work = tmp_path / "run"
  args = [sys.executable, "-m", "luce.launchers.backtest", "--config=configs/sp500.py",
          f"--workdir={work}", f"--config.data.source=prices:{csv}?covariates=vol:10,mom:20/2,rev:3",
          "--config.data.features.horizons=(5,)", "--config.train.batch_size=16",
          "--config.model.hidden=8", "--config.backtest.start=2020-03-01",
          "--config.backtest.retrain_every=40", "--config.backtest.first_steps=5",
          "--config.backtest.retrain_steps=2", "--config.backtest.portfolio_k=2",
          "--config.backtest.bootstrap_samples=100", "--config.backtest.calibration_samples=16"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "report:" in done.stdout and "Sharpe" in done.stdout
  report = work / "report"
  for name in ("report.md", "report.html", "metrics.json", "nll_over_time.png", "calibration.png",
               "hits.png", "cumulative_returns.png", "importance.png"):
    assert (report / name).stat().st_size > 0, name
  metrics = json.loads((report / "metrics.json").read_text())
  assert metrics["nll"] == "exact"
  # The header says what reproduces the run.
  run = metrics["run"]
  assert run["luce_version"] and run["seed"] == 0 and len(run["data_hash"]) >= 16
  assert "--config=configs/sp500.py" in run["command"] and run["config"]["backtest"]["retrain_every"] == 40
  assert f"data hash {run['data_hash'][:16]}" in (report / "report.md").read_text()
  # Ranking 6 assets, k = 5: a constant scorer's expected hits@5 is k²/n = 25/6, in the
  # JSON, the Markdown report and the terminal table.
  assert metrics["models"]["uniform"]["hits"] == pytest.approx(25 / 6, abs=1e-6)
  assert "| uniform | " in (report / "report.md").read_text()
  # Permutation importance of each feature group, with its interval, in the JSON and the report.
  importance = metrics["importance"]
  assert {"recent results (last L events)", "calendar", "covariate vol_10", "covariate mom_20_2",
          "covariate rev_3"} <= set(importance)
  for v in importance.values():
    assert v["ci_low"] <= v["mean"] <= v["ci_high"]
  assert "Permutation importance" in (report / "report.md").read_text()
  assert "4.167" in (report / "report.md").read_text() and "4.167" in done.stdout
  for baseline in ("uniform", "frequency", "recency", "static"):
    s = metrics["skill"][baseline]
    assert s["ci_low"] <= s["mean"] <= s["ci_high"] and 0 <= s["p_value"] <= 1
  p = metrics["portfolio"]
  assert {"sharpe", "max_drawdown", "turnover"} <= set(p) and "sharpe" in p["equal_weight"]
  assert p["sharpe_diff"]["ci_low"] <= p["sharpe_diff"]["mean"] <= p["sharpe_diff"]["ci_high"]
  assert "Verdict" in (report / "report.md").read_text()


def test_diffusion_family_walks_forward_and_resumes(table_path, tmp_path):
  table = synthetic_pl(n_items=8, k=3, n_events=110, kind="set", seed=4).table
  path = tmp_path / "sets.parquet"
  luce.data.write(table, path)
  config = _config(f"events:{path}")
  config["model"] = {**config["model"], "family": "diffusion"}
  quiet = dict(progress=False, say=lambda *x: None)
  wf = le.walk_forward(config, tmp_path / "run", **quiet)
  nll, inclusion = wf.nll["model"], wf.inclusion["model"]
  assert nll.shape == (50,) and np.all(np.isfinite(nll)) and np.all(nll > 0)
  # Inclusion probabilities from whole sets of 3 distinct available items.
  np.testing.assert_allclose(inclusion.sum(axis=1), 3.0, atol=1e-5)
  assert np.all(inclusion[~wf.available] == 0)
  # The model's NLL is its own exact one: recompute the last fold from its checkpoint.
  c = luce.train.checked_config(config)
  prepared = luce.train.prepare(c)
  family = luce.train.build_family(c, prepared)
  assert family.name == "diffusion" and family.nll_kind == "exact"
  arrays = prepared.arrays["all"]
  trainer = luce.train.Trainer(c, family, arrays, mesh=luce.train.make_mesh(1))
  state = trainer.init_state(jax.random.key(0))
  ckpt = luce.train.Checkpoints(tmp_path / "run" / "backtest", c, best=False)
  last = ckpt.latest.latest_step()
  assert last == 6 + 2 * 3  # first_steps + 2 refits of retrain_steps
  state, _ = ckpt.restore(ckpt.latest, last, state, c, prepared.data_hash)
  ckpt.close()
  events = {key: arrays[key][100:110] for key in luce.train.BATCH_KEYS}
  want = family.nll(luce.train.host_copy(state.params), events)
  np.testing.assert_allclose(nll[40:], want, rtol=1e-5)
  result = le.score_backtest(wf)
  assert result["family"] == "diffusion"
  assert result["models"]["model"]["nll"] == pytest.approx(float(nll.mean()), rel=1e-6)
  assert set(result["skill"]) == {"uniform", "frequency", "recency", "static"}
  assert result["models"]["uniform"]["hits"] == pytest.approx(9 / 8, abs=1e-6)  # k²/n on sets
  # Running again resumes after the last fold and changes nothing.
  again = le.walk_forward(config, tmp_path / "run", **quiet)
  np.testing.assert_array_equal(again.nll["model"], nll)
  # Rankings walk forward too, by the ordered variant: its exact NLL over the 3 ranks,
  # inclusion in the top eval_k = 3 from its own sampled rankings.
  ranked = _config(f"events:{table_path[1]}")
  ranked["model"] = {**ranked["model"], "family": "diffusion"}
  wf = le.walk_forward(ranked, tmp_path / "ranked", **quiet)
  assert wf.kind == "ranking" and wf.nll_kind == "exact"
  nll = wf.nll["model"]
  assert nll.shape == (50,) and np.all(np.isfinite(nll)) and np.all(nll > 0)
  np.testing.assert_allclose(wf.inclusion["model"].sum(axis=1), 3.0, atol=1e-5)
  assert np.all(wf.inclusion["model"][~wf.available] == 0)
  result = le.score_backtest(wf)
  assert result["family"] == "diffusion" and result["nll"] == "exact"
  assert result["models"]["model"]["nll"] == pytest.approx(float(nll.mean()), rel=1e-6)


def test_feature_groups_cover_every_column_once():
  names = ("in_last_1", "in_last_2", "rank_last_1", "rate_10", "since_last", "cov_grid",
           "covz_grid", "cov_pit_lane", "covz_pit_lane", "grp_constructor_rate_5",
           "grp_constructor_rate_20", "grp_constructor_new", "group=British")
  groups = le.feature_groups(names, 3)
  assert groups["recent results (last L events)"] == ("item_features", [0, 1, 2])
  assert groups["pick rates and recency"] == ("item_features", [3, 4])
  assert groups["covariate grid"] == ("item_features", [5, 6])
  assert groups["covariate pit_lane"] == ("item_features", [7, 8])
  assert groups["group history of constructor"] == ("item_features", [9, 10, 11])
  assert groups["catalog attributes"] == ("item_features", [12])
  assert groups["calendar"] == ("event_features", [0, 1, 2])
  columns = sorted(j for where, cols in groups.values() if where == "item_features" for j in cols)
  assert columns == list(range(len(names)))


def test_covariate_and_rating_baselines_walk_forward(tmp_path, rng):
  """A table with a grid covariate: conditional logit, grid order and openskill are
  refit / updated on the same windows and reported with their skill intervals."""
  m, n = 120, 8
  theta = rng.normal(0, 1, n)
  available = rng.random((m, n)) < 0.9
  available[:, :4] = True
  available[100:, 7] = True
  items = np.full((m, 4), -1, np.int32)
  grid = np.full((m, n), np.nan)
  team = np.full((m, n), None, dtype=object)
  for t in range(m):
    entrants = np.flatnonzero(available[t])
    grid[t, entrants] = rng.permutation(len(entrants)) + 1.0
    # Item 7 moves to a new team at event 100: one predicted entry of an unseen level.
    team[t, entrants] = ["new" if i == 7 and t >= 100 else f"t{i % 3}" for i in entrants]
    s = theta[entrants] - 0.5 * grid[t, entrants] + rng.gumbel(size=len(entrants))
    items[t] = entrants[np.argsort(-s)][:4]
  table = luce.data.EventTable.from_arrays(items, catalog=n, kind="ranking", available=available,
                                           covariates={"grid": grid, "team": team})
  path = tmp_path / "grid.parquet"
  luce.data.write(table, path)
  config = _config(f"events:{path}")
  config["baselines"] = {"names": ("uniform", "recency", "conditional_logit", "grid", "openskill")}
  wf = le.walk_forward(config, tmp_path / "run", progress=False, say=lambda *x: None)
  assert set(wf.scores) == {"model", "uniform", "recency", "conditional_logit", "grid", "openskill"}
  result = le.score_backtest(wf)
  assert set(result["skill"]) == {"uniform", "recency", "conditional_logit", "grid", "openskill"}
  models = result["models"]
  # The generating model is grid order plus item effects: both covariate baselines beat uniform.
  assert models["grid"]["nll"] < models["uniform"]["nll"]
  assert models["conditional_logit"]["nll"] < models["uniform"]["nll"]
  assert "covariate grid" in result["importance"] and "group history of team" in result["importance"]
  assert result["unseen_levels"]["team"] == {"entries": 1, "events": 1}
  # Without the covariate the covariate baselines are refused, naming it.
  plain = _config(f"events:{_plain_table(tmp_path)}")
  plain["baselines"] = {"names": ("uniform", "grid")}
  with pytest.raises(luce.ConfigError, match="grid"):
    le.walk_forward(plain, tmp_path / "plain", progress=False, say=lambda *x: None)


def _plain_table(tmp_path):
  path = tmp_path / "plain.parquet"
  luce.data.write(synthetic_pl(n_items=8, k=3, n_events=110, seed=5).table, path)
  return path


def test_hit_distribution_keeps_expected_hits():
  """A constant scorer's expected hits (k²/n each event) are not rounded to 0: the
  bars put 0.362 of the mass at 1 hit and keep the mean."""
  from luce.eval._report import hit_distribution
  freq = hit_distribution(np.full(10, 0.362), 5)
  np.testing.assert_allclose(freq, [0.638, 0.362, 0, 0, 0, 0])
  hits = np.array([0, 1, 1, 2.5, 3])
  freq = hit_distribution(hits, 3)
  np.testing.assert_allclose(freq, [0.2, 0.4, 0.1, 0.3])
  assert (freq * np.arange(4)).sum() == pytest.approx(hits.mean())


def test_every_phase_reports_progress(table_path, tmp_path, capsys):
  """The baseline refits are not a silent phase: one line per baseline with its time."""
  _, path = table_path
  said = []
  le.walk_forward(_config(f"events:{path}"), tmp_path, progress=True, say=said.append)
  lines = [s for s in said if s.startswith("baseline ")]
  names = TINY.get("baselines", {}).get("names") or luce.train.base_config().baselines.names
  assert [line.split(":")[0] for line in lines] == [f"baseline {name}" for name in names], said
  assert all(line.rstrip().endswith("s") for line in lines)
