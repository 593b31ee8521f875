"""luce.diffusion through the one loop: `--config.model.family=diffusion` end to end on
sets and rankings, with the same result keys as the PL family."""

import json
import math

import jax
import numpy as np
import pytest

import luce.data
import luce.train
from luce import diffusion as D
from luce.configs import synthetic
from luce.errors import ConfigError


def _config(family: str):
  c = synthetic.get_config("set")
  c.data.source = "synthetic:set?n_items=12&k=3&n_events=300"
  c.data.eval_k = 3
  c.model.update(hidden=16, depth=1, embed_dim=4, family=family)
  c.train.update(batch_size=32, num_steps=12, log_every=6, eval_every=6, checkpoint_every=6,
                 progress_bar=False, async_checkpoints=False)
  c.baselines.names = ("uniform",)
  return c


def test_family_diffusion_trains_resumes_and_evaluates(tmp_path):
  c = _config("diffusion")
  result = luce.train.train_and_evaluate(c, tmp_path)
  assert result["family"] == "diffusion" and result["nll"] == "exact"
  valid = result["valid"]
  assert set(valid) == {"model", "uniform", "oracle"}
  # uniform through the set likelihood is log C(12, 3) on every event; hits@3 is k²/n
  assert abs(valid["uniform"]["nll_per_event"] - np.log(220)) < 1e-4
  assert valid["uniform"]["hits_at_k"] == 9 / 12
  assert np.isfinite(valid["model"]["nll_per_event"])
  assert valid["oracle"]["nll_per_event"] < valid["uniform"]["nll_per_event"]
  assert (tmp_path / "checkpoints").is_dir() and (tmp_path / "best").is_dir()
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {line["split"] for line in lines} == {"train", "valid"}
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))

  # The same result keys, row keys and files as the PL family.
  pl = luce.train.train_and_evaluate(_config("pl"), tmp_path / "pl")
  assert set(pl) == set(result)
  assert set(pl["valid"]) == set(valid)
  assert all(set(pl["valid"][name]) == set(valid[name]) for name in valid)
  assert sorted(p.name for p in (tmp_path / "pl").iterdir()) == sorted(
      p.name for p in tmp_path.iterdir() if p.name != "pl")

  # Run again: resumes at the last step and trains nothing more.
  again = luce.train.train_and_evaluate(c, tmp_path)
  assert again["step"] == 12 and again["compile_seconds"] is None
  assert again["valid"]["model"]["nll_per_event"] == valid["model"]["nll_per_event"]

  # luce-eval's path: load the run, evaluate the model and the references.
  run = luce.train.load_run(tmp_path)
  assert isinstance(run.family, D.DiffusionFamily)
  table = luce.train.evaluate_run(run, "valid")
  assert table["model"]["nll_per_event"] == pytest.approx(valid["model"]["nll_per_event"], abs=1e-6)
  assert set(table["model"]) == set(table["uniform"])

  # Samples per event are valid sets of that event's available items.
  arrays = run.prepared.arrays["valid"]
  sets = run.family.sample(run.params, arrays, jax.random.key(0), 4, 3)
  assert sets.shape == (len(arrays["items"]), 4, 3)
  flat = sets.reshape(-1, 3)
  assert D.validity_rate(flat, 12, 3, available=np.repeat(arrays["available"], 4, axis=0)) == 1.0

  # luce-predict's path: every column, from the diffusion sampler.
  out, hits = luce.train.predict(run, "valid", samples=2, draws=50, k=3, seed=0)
  assert out.num_rows == len(arrays["items"]) and 0.0 <= hits["model"] <= 3.0
  assert hits["uniform"] == 9 / 12
  inclusion = np.array(out.column("inclusion_prob").to_pylist())
  np.testing.assert_allclose(inclusion.sum(axis=1), 3.0, atol=1e-5)
  assert np.all(inclusion[~arrays["available"]] == 0)
  drawn = np.array(out.column("samples").to_pylist())
  assert drawn.shape == (len(arrays["items"]), 2, 3)
  assert D.validity_rate(drawn.reshape(-1, 3), 12, 3,
                         available=np.repeat(arrays["available"], 2, axis=0)) == 1.0
  with pytest.raises(ConfigError, match="sets of exactly k = 3"):
    luce.train.predict(run, "valid", samples=2, draws=50, k=2, seed=0)


def test_diffusion_trains_on_padded_rankings_and_bounds_them_above_the_exact_limit(tmp_path):
  """Rankings use the ordered variant. Lists of 13 > EXACT_MAX_K ranks, a third of them
  top-9 lists padded with -1: the model row is the Monte Carlo MD4 bound, said so."""
  rng = np.random.default_rng(0)
  m, n, k = 120, 16, 13
  theta = rng.normal(0, 1, n)
  items = np.full((m, k), -1, np.int32)
  lengths = np.where(np.arange(m) % 3 == 0, 9, k)
  for t in range(m):
    items[t, :lengths[t]] = np.argsort(-(theta + rng.gumbel(size=n)))[:lengths[t]]
  path = tmp_path / "ranked.parquet"
  luce.data.write(luce.data.EventTable.from_arrays(items, catalog=n, kind="ranking"), path)
  c = _config("diffusion")
  c.data.source = f"events:{path}"
  c.train.update(batch_size=16, num_steps=2, log_every=2, eval_every=2, checkpoint_every=2)
  result = luce.train.train_and_evaluate(c, tmp_path / "run")
  assert result["family"] == "diffusion" and result["nll"] == "bound"
  valid = result["valid"]
  # uniform over ordered lists: log n!/(n - L)! per event, L the event's own length
  run = luce.train.load_run(tmp_path / "run")
  arrays = run.prepared.arrays["valid"]
  ell = (arrays["items"] >= 0).sum(axis=1)
  want = np.mean([math.lgamma(n + 1) - math.lgamma(n - x + 1) for x in ell])
  assert set(ell) == {9, 13}
  assert abs(valid["uniform"]["nll_per_event"] - want) < 1e-3
  assert np.isfinite(valid["model"]["nll_per_event"]) and valid["model"]["nll_per_event"] > 0
  again = run.family.nll(run.params, arrays)                     # fixed keys: deterministic
  np.testing.assert_array_equal(again, run.family.nll(run.params, arrays))
  drawn = run.family.sample(run.params, arrays, jax.random.key(0), 2, 13)
  assert all(len(set(r.tolist())) == 13 for r in drawn.reshape(-1, 13))
  # The ordered denoiser has no transformer mixer: refused with the fix.
  c.model.mixer = "transformer"
  config = luce.train.checked_config(c)
  with pytest.raises(ConfigError, match="deepsets mixer only; set model.mixer='deepsets'"):
    luce.train.build_family(config, luce.train.prepare(config))


def test_denoiser_fields_are_settable_and_checked():
  c = luce.train.checked_config({"model": {"family": "diffusion", "mixer": "transformer",
                                           "denoiser_depth": 2}})
  assert c.model.mixer == "transformer" and c.model.denoiser_depth == 2
  with pytest.raises(ConfigError, match="model.mixer='mlp'; valid: deepsets, transformer"):
    luce.train.checked_config({"model": {"mixer": "mlp"}})
  with pytest.raises(ConfigError, match="model.family='gan'; valid: pl, diffusion"):
    luce.train.checked_config({"model": {"family": "gan"}})


def test_sets_above_the_exact_limit_report_the_bound_and_say_so(tmp_path):
  """k = 13 > EXACT_MAX_K: the model row is the MD4 upper bound, labelled as one."""
  c = _config("diffusion")
  c.data.source = "synthetic:set?n_items=16&k=13&n_events=120"
  c.data.eval_k = 13
  c.train.update(batch_size=16, num_steps=4, log_every=2, eval_every=2, checkpoint_every=2)
  result = luce.train.train_and_evaluate(c, tmp_path)
  assert result["nll"] == "bound"
  valid = result["valid"]
  # log C(16, 13) = log 560 for uniform; the exact PL set likelihood of the oracle is
  # below it, and the model's bound is a finite upper bound on its own NLL.
  assert abs(valid["uniform"]["nll_per_event"] - np.log(560)) < 1e-3
  assert np.isfinite(valid["model"]["nll_per_event"]) and valid["model"]["nll_per_event"] > 0
  saved = json.loads((tmp_path / "eval_valid.json").read_text())
  assert saved["nll"] == "bound"
  run = luce.train.load_run(tmp_path)
  table = luce.train.format_table(luce.train.evaluate_run(run, "valid"), "valid", 13, "set",
                                  run.family.nll_kind)
  assert "upper bound" in table
  # Deterministic: the bound's Monte Carlo keys are fixed.
  again = run.family.nll(run.params, run.prepared.arrays["valid"])
  np.testing.assert_array_equal(again, run.family.nll(run.params, run.prepared.arrays["valid"]))
