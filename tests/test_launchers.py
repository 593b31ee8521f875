"""Smoke runs of luce-train, luce-eval and luce-predict on tiny generated data, and
their errors for bad configs and bad data paths."""

import json
import os
import pathlib
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import luce

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.data.source=synthetic:ranking?n_items=8&k=3&n_events=200", "--config.data.eval_k=3",
        "--config.model.hidden=8", "--config.model.heads=2", "--config.model.depth=1",
        "--config.train.batch_size=16", "--config.train.eval_every=5", "--config.train.checkpoint_every=5",
        "--config.train.progress_bar=False", "--config.baselines.names=('uniform','frequency')"]


def launch(module, *args, check=True):
  proc = subprocess.run([sys.executable, "-m", f"luce.launchers.{module}", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=240,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  output = proc.stdout + proc.stderr
  if check:
    assert proc.returncode == 0, output[-3000:]
  return proc.returncode, output


@pytest.mark.parametrize("kind,family", [("ranking", "pl"), ("set", "diffusion")])
def test_train_eval_predict_on_tiny_synthetic(tmp_path, kind, family):
  """Both families through the three launchers; the uniform baseline scores hits@3 of
  exactly k²/n = 9/8 in every one of them (ties counted in expectation)."""
  workdir = tmp_path / "run"
  tiny = [f"--config.data.source=synthetic:{kind}?n_items=8&k=3&n_events=200",
          f"--config.model.family={family}", *TINY[1:]]
  _, output = launch("train", "--config=configs/synthetic.py", f"--workdir={workdir}",
                     "--config.train.num_steps=5", *tiny)
  assert "validation (best step 5)" in output and "oracle" in output
  assert "compiled the train step in" in output
  valid = json.loads((workdir / "eval_valid.json").read_text())
  assert valid["family"] == family and valid["nll"] == "exact"
  assert valid["models"]["uniform"]["hits_at_k"] == 9 / 8

  _, output = launch("evaluate", f"--workdir={workdir}", "--split=test")
  result = json.loads((workdir / "eval_test.json").read_text())
  assert set(result["models"]) == {"model", "uniform", "frequency", "oracle"}
  assert all(r["nll_per_event"] > 0 for r in result["models"].values())
  assert set(result["models"]["model"]) == set(result["models"]["uniform"])
  assert result["models"]["uniform"]["hits_at_k"] == 9 / 8
  assert "eval_test.json" in output and "1.125" in output

  out = tmp_path / "pred.parquet"
  _, output = launch("predict", f"--workdir={workdir}", "--split=test", "--samples=4", "--draws=200",
                     f"--out={out}")
  assert "uniform 1.125" in output, output
  table = pq.read_table(out)
  assert table.num_rows == result["models"]["model"]["events"]
  assert table.schema.metadata[b"luce.family"] == family.encode()
  row = table.slice(0, 1).to_pylist()[0]
  assert len(row["inclusion_prob"]) == 8 and sum(row["inclusion_prob"]) == pytest.approx(3.0, abs=1e-4)
  assert len(row["top_k"]) == 3 and len(row["samples"]) == 4
  assert all(len(set(s)) == 3 for s in row["samples"])
  # Self-describing: catalog labels beside ids, and the run that made the file.
  meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
  labels = json.loads(meta["luce.catalog_labels"])
  assert len(labels) == 8 and row["top_k_labels"] == [labels[i] for i in row["top_k"]]
  assert meta["luce.version"] == luce.__version__ and meta["luce.checkpoint"].endswith("(step 5)")
  assert len(meta["luce.data_hash"]) >= 16
  assert json.loads(meta["luce.config"])["model"]["family"] == family
  # No samples and no draws: the message names --draws (the flag that must be >= 1). The
  # flags are checked the same way for either family: one launch covers it.
  if family != "pl":
    return
  code, output = launch("predict", f"--workdir={workdir}", "--samples=0", "--draws=0",
                        f"--out={tmp_path / 'none.parquet'}", check=False)
  assert code == 2 and "--draws=0 must be >= 1" in output and "--samples" not in output.split(
      "luce-predict: ")[-1], output[-2000:]


def test_config_typo_is_refused_with_a_suggestion(tmp_path):
  code, output = launch("train", "--config=configs/synthetic.py", f"--workdir={tmp_path}",
                        "--config.train.num_step=5", check=False)
  assert code != 0 and 'Did you mean "num_steps"' in output


def test_bad_data_path_and_bad_workdir(tmp_path):
  code, output = launch("train", "--config=configs/synthetic.py", f"--workdir={tmp_path}",
                        "--config.data.source=draws:no/such/draws.csv", check=False)
  assert code != 0 and "DataError" in output and "no such file" in output
  code, output = launch("evaluate", f"--workdir={tmp_path / 'nothing'}", check=False)
  assert code != 0 and "not a luce-train run" in output
