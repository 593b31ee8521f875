"""luce.diffusion on luce.train's pipeline: `--config.model.family=diffusion` end to end."""

import json

import jax
import numpy as np

import luce.train
from luce import diffusion as D
from luce.configs import synthetic


def test_family_diffusion_trains_resumes_and_evaluates(tmp_path):
  c = synthetic.get_config("set")
  c.data.synthetic.update(n_items=12, k=3, n_events=300)
  c.model.update(hidden=16, depth=1, embed_dim=4, family="diffusion")
  c.train.update(batch_size=32, num_steps=12, log_every=6, eval_every=6, checkpoint_every=6,
                 progress_bar=False, async_checkpoints=False)
  c.baselines.names = ("uniform",)
  result = luce.train.train_and_evaluate(c, tmp_path)
  valid = result["valid"]
  assert set(valid) == {"diffusion", "uniform", "oracle"}
  # uniform through the subset recursion is log C(12, 3) on every event
  assert abs(valid["uniform"]["nll_per_event"] - np.log(220)) < 1e-4
  assert np.isfinite(valid["diffusion"]["nll_per_event"])
  assert valid["oracle"]["nll_per_event"] < valid["uniform"]["nll_per_event"]
  assert (tmp_path / "checkpoints").is_dir() and (tmp_path / "best").is_dir()
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {line["split"] for line in lines} == {"train", "valid"}

  # Run again: resumes at the last step and trains nothing more.
  again = luce.train.train_and_evaluate(c, tmp_path)
  assert again["step"] == 12
  np.testing.assert_allclose(again["valid"]["diffusion"]["nll_per_event"],
                             valid["diffusion"]["nll_per_event"], rtol=1e-6)

  # luce-eval's path: load the run, evaluate the model and the references.
  run = luce.train.load_run(tmp_path)
  table = luce.train.evaluate_run(run, "valid")
  assert abs(table["model"]["nll_per_event"] - valid["diffusion"]["nll_per_event"]) < 1e-4
  assert {"hits_at_k", "ndcg_at_k"} <= set(table["model"])

  # Samples per event are valid sets of that event's available items.
  arrays = run.prepared.arrays["valid"]
  sets = D.sample_for_events(run.model, run.params, arrays, jax.random.key(0), 4)
  assert sets.shape == (len(arrays["items"]), 4, 3)
  flat = sets.reshape(-1, 3)
  assert D.validity_rate(flat, 12, 3, available=np.repeat(arrays["available"], 4, axis=0)) == 1.0

  # luce-predict's path: every column, from the diffusion sampler.
  import pytest
  from luce.errors import ConfigError
  out, hits = luce.train.predict(run, "valid", samples=2, draws=50, k=3, seed=0)
  assert out.num_rows == len(arrays["items"]) and 0.0 <= hits <= 3.0
  inclusion = np.array(out.column("inclusion_prob").to_pylist())
  np.testing.assert_allclose(inclusion.sum(axis=1), 3.0, atol=1e-5)
  assert np.all(inclusion[~arrays["available"]] == 0)
  drawn = np.array(out.column("samples").to_pylist())
  assert drawn.shape == (len(arrays["items"]), 2, 3)
  assert D.validity_rate(drawn.reshape(-1, 3), 12, 3,
                         available=np.repeat(arrays["available"], 2, axis=0)) == 1.0
  with pytest.raises(ConfigError, match="sets of exactly k = 3"):
    luce.train.predict(run, "valid", samples=2, draws=50, k=2, seed=0)
