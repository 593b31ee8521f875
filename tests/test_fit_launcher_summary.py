"""luce-fit's reading of availability and its PlackettLuce-style summary, on NASCAR 2002."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from luce_test_utils import shared_data_dir

NASCAR = "--data=rankings:rankings/nascar2002_orderings.csv?catalog=rankings/nascar2002_drivers.csv"

pytestmark = pytest.mark.skipif(shared_data_dir() is None,
                                reason="shared data (LUCE_SHARED_DATA) is absent")


def run_fit(*flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu", LUCE_SHARED_DATA=shared_data_dir() or "")
  proc = subprocess.run([sys.executable, "-m", "luce.launchers.fit", *flags],
                        capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout


def log_likelihood(stdout):
  return float(re.search(r"log-likelihood (-?[\d.]+) nats", stdout).group(1))


def test_race_data_default_to_entrants_only_and_the_summary_is_written(tmp_path):
  # No availability column, each race lists its 43 of 87 drivers: entrants-only.
  out = run_fit(NASCAR, "--prior=1e-4", "--top=3", f"--output={tmp_path / 'summary'}")
  assert "availability: listed (entrants-only" in out and "partial orderings" in out, out
  # PlackettLuce's entrants-only model: log L = −4191.1 (the MLE's limit; prior 1e-4).
  assert log_likelihood(out) == pytest.approx(-4191.1, abs=0.05)
  for name in ("estimate", "SE", "z", "p", "quasi-SE"):
    assert name in out
  with open(tmp_path / "summary" / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 87 and rows[0]["item"] == "PJ Jones"
  assert list(rows[0])[:7] == ["rank", "item", "log_strength", "stderr", "z", "p", "quasi_se"]
  est = np.array([float(r["log_strength"]) for r in rows])
  se = np.array([float(r["stderr"]) for r in rows])
  np.testing.assert_allclose([float(r["z"]) for r in rows], est / se, rtol=1e-9)
  assert abs(est.sum()) < 1e-8                       # sum-to-zero constraint
  assert all(float(r["quasi_se"]) > 0 for r in rows)
  doc = json.loads((tmp_path / "summary" / "summary.json").read_text())
  assert doc["available"] == "listed" and doc["n_items"] == 87 and len(doc["items"]) == 87
  assert doc["log_likelihood"] == pytest.approx(log_likelihood(out), abs=1e-3)
  assert doc["aic"] == pytest.approx(-2 * doc["log_likelihood"] + 2 * 86)


def test_table_reading_on_request_with_a_reference_driver(tmp_path):
  out = run_fit(NASCAR, "--available=table", "--ref=Mark Martin", "--top=87",
                f"--output={tmp_path / 'table.json'}")
  assert "availability: table" in out and "as --available says" in out, out
  # Every unlisted driver read as a loser of every race.
  assert log_likelihood(out) == pytest.approx(-4860.6, abs=0.05)
  assert "0 at Mark Martin" in out
  doc = json.loads((tmp_path / "table.json").read_text())
  martin = next(r for r in doc["items"] if r["item"] == "Mark Martin")
  assert martin["log_strength"] == 0.0 and martin["stderr"] == 0.0 and martin["z"] is None
  assert (tmp_path / "table.csv").exists()
