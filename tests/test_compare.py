"""luce-compare: variant parsing, and one table over paired walk-forward backtests."""

import json

import numpy as np
import pytest

import luce.eval
import luce.train
from luce.errors import ConfigError
from luce.eval import parse_variant


def test_parse_variant():
  assert parse_variant("s5:model.encoder=s5;model.depth=1") == (
      "s5", {"model.encoder": "s5", "model.depth": 1})
  assert parse_variant("ens:model.ensemble.members=('encoder=mlp','encoder=s5')") == (
      "ens", {"model.ensemble.members": ("encoder=mlp", "encoder=s5")})
  assert parse_variant("plain") == ("plain", {})
  for bad, match in (("a b:model.depth=1", "name before ':'"), (":model.depth=1", "name before"),
                     ("x:model.depth", "is not field=value")):
    with pytest.raises(ConfigError, match=match):
      parse_variant(bad)


def _config():
  c = luce.train.base_config()
  c.data.source = "synthetic:ranking?n_items=8&k=3&n_events=160"
  c.data.eval_k = 3
  c.model.update(hidden=8, depth=1, embed_dim=2)
  c.train.update(batch_size=16, progress_bar=False, async_checkpoints=False)
  c.backtest.update(start="120", retrain_every=20, first_steps=4, retrain_steps=2,
                    bootstrap_samples=100, calibration_samples=16, importance=False)
  c.baselines.names = ("uniform", "recency")
  return c


def test_compare_tabulates_paired_backtests(tmp_path):
  out = luce.eval.compare_models(_config(), ["mlp:model.encoder=mlp", "s5:model.encoder=s5"],
                                 tmp_path, progress=False, say=lambda *a: None)
  names = [r["name"] for r in out["rows"]]
  assert names == ["mlp", "s5", "uniform", "recency"] and out["events"] == 40
  assert out["best_baseline"] in ("uniform", "recency")
  for r in out["rows"][:2]:
    per_event = json.loads((tmp_path / r["name"] / "report" / "metrics.json").read_text())
    assert abs(per_event["models"]["model"]["nll"] - r["nll"]) < 1e-9
    best = per_event["models"][out["best_baseline"]]["nll"]
    assert abs(r["skill"] - (best - r["nll"])) < 1e-9
    assert r["ci_low"] <= r["nll"] <= r["ci_high"] and r["train_s"] > 0
  uniform = next(r for r in out["rows"] if r["name"] == "uniform")
  assert abs(uniform["nll"] - np.log(8 * 7 * 6)) < 1e-6
  path = luce.eval.write_compare(out, tmp_path)
  text = path.read_text()
  assert "| s5 |" in text and "recency (baseline)" in text
  assert (tmp_path / "compare.png").stat().st_size > 1000 and (tmp_path / "compare.html").exists()


def test_compare_refuses_unknown_fields_and_repeated_names(tmp_path):
  with pytest.raises(ConfigError, match="model.encodr"):
    luce.eval.compare_models(_config(), ["a:model.encodr=s5"], tmp_path, progress=False)
  with pytest.raises(ConfigError, match="must differ"):
    luce.eval.compare_models(_config(), ["a:model.depth=1", "a:model.depth=2"], tmp_path,
                             progress=False)
