"""Population training (luce.tune.train_population): each vmapped member is the run
luce-train makes with its config, and its workdir is a run luce-eval loads."""

import json

import jax
import numpy as np
import pytest

from luce.errors import ConfigError
from luce.train import checked_config, load_run, train_and_evaluate
from luce.tune import apply_params, train_population


def tiny(**train):
  return {"data": {"source": "synthetic:ranking?n_items=10&k=3&n_events=500&seed=2", "eval_k": 3},
          "model": {"hidden": 16, "depth": 2, "dropout": 0.1},
          "train": {"batch_size": 32, "num_steps": 40, "eval_every": 20, "checkpoint_every": 20,
                    "log_every": 10, "progress_bar": False, **train},
          "baselines": {"names": ("uniform",)}}


MEMBERS = [
    {"optimizer.learning_rate": 3e-3, "optimizer.weight_decay": 1e-4, "model.dropout": 0.0, "seed": 0},
    {"optimizer.learning_rate": 1e-2, "optimizer.weight_decay": 1e-2, "model.dropout": 0.3, "seed": 1},
    {"optimizer.learning_rate": 5e-4, "optimizer.weight_decay": 0.0, "model.dropout": 0.15, "seed": 7},
]


def _sequential(member, workdir):
  return train_and_evaluate(apply_params(checked_config(tiny()), member), workdir)


def test_each_member_equals_its_sequential_run(tmp_path):
  results = train_population(tiny(), MEMBERS, [tmp_path / f"m{i}" for i in range(3)])
  for i, member in enumerate(MEMBERS):
    alone = _sequential(member, tmp_path / f"s{i}")
    got = results[i]
    assert got["status"] == "complete" and got["best_step"] == alone["best_step"]
    assert got["valid"]["model"]["nll_per_event"] == pytest.approx(
        alone["valid"]["model"]["nll_per_event"], rel=1e-5, abs=1e-5)
    run = load_run(tmp_path / f"m{i}", checkpoint="latest")
    assert run.step == 40
    flat_pop = jax.tree.leaves(run.params)
    flat_seq = jax.tree.leaves(alone["final_params"])
    for a, b in zip(flat_pop, flat_seq):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    # its metrics are its own
    lines = [json.loads(x) for x in (tmp_path / f"m{i}" / "metrics.jsonl").read_text().splitlines()]
    seq_lines = [json.loads(x) for x in (tmp_path / f"s{i}" / "metrics.jsonl").read_text().splitlines()]
    pop_valid = [x for x in lines if x.get("split") == "valid"]
    seq_valid = [x for x in seq_lines if x.get("split") == "valid"]
    assert [x["step"] for x in pop_valid] == [x["step"] for x in seq_valid] == [20, 40]
  # members really differ
  values = [r["valid"]["model"]["nll_per_event"] for r in results]
  assert len(set(np.round(values, 6))) == 3


def test_population_resumes_where_an_uninterrupted_one_ends(tmp_path):
  """Killed at step 20 (after its step-10 checkpoint), rerun: ends bit-equal to a run
  that was never interrupted."""
  config = tiny(checkpoint_every=10)
  whole = train_population(config, MEMBERS[:2], [tmp_path / f"w{i}" for i in range(2)])

  class Killed(Exception):
    pass

  def kill(member, step, scores):
    if step == 20:
      raise Killed
    return False

  with pytest.raises(Killed):
    train_population(config, MEMBERS[:2], [tmp_path / f"r{i}" for i in range(2)], on_eval=kill)
  said = []
  again = train_population(config, MEMBERS[:2], [tmp_path / f"r{i}" for i in range(2)],
                           say=said.append)
  assert "resumed the population at step 10" in said
  for x, y in zip(whole, again):
    assert x["valid"]["model"]["nll_per_event"] == y["valid"]["model"]["nll_per_event"]
    assert x["best_step"] == y["best_step"]


def test_population_refuses_fields_it_cannot_vary(tmp_path):
  with pytest.raises(ConfigError, match="may differ only in"):
    train_population(tiny(), [{"model.hidden": 8}, {"model.hidden": 16}], [tmp_path / "a", tmp_path / "b"])
  with pytest.raises(ConfigError, match="one workdir per member"):
    train_population(tiny(), MEMBERS, [tmp_path / "a"])
  with pytest.raises(ConfigError, match="model.encoder='mlp'"):
    config = tiny()
    config["model"]["encoder"] = "transformer"
    train_population(config, MEMBERS[:2], [tmp_path / "a", tmp_path / "b"])
