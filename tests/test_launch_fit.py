"""luce-fit end to end: a table on real data, a clear error on a bad source."""

import os
import subprocess
import sys

import pytest

from luce_test_utils import shared_data_dir


def run_fit(*flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "luce.launchers.fit", *flags],
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(shared_data_dir() is None, reason="shared data (LUCE_SHARED_DATA) is absent")
def test_fit_prints_strengths_of_nascar(tmp_path, monkeypatch):
  monkeypatch.setenv("LUCE_SHARED_DATA", shared_data_dir())
  out = tmp_path / "nascar.csv"
  proc = run_fit("--data=rankings:rankings/nascar2002_orderings.csv"
                 "?catalog=rankings/nascar2002_drivers.csv", "--available=listed",
                 "--top=5", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "36 events, 87 items" in proc.stdout
  # Hunter (2004) / PlackettLuce: PJ Jones and Scott Pruett, one race each, top the list.
  printed = proc.stdout.splitlines()
  header = next(i for i, line in enumerate(printed) if line.lstrip().startswith("rank"))
  assert "PJ Jones" in printed[header + 1], proc.stdout
  assert "availability: listed" in proc.stdout and "as --available says" in proc.stdout
  # --out is --output's alias: FILE.csv and FILE.json.
  lines = out.read_text().splitlines()
  assert lines[0].startswith("rank,item,log_strength,stderr") and len(lines) == 88
  assert out.with_suffix(".json").exists()


def test_fit_bad_source_is_a_clear_error():
  proc = run_fit("--data=nosuchscheme:foo.csv")
  assert proc.returncode == 2
  assert "luce-fit:" in proc.stderr and "nosuchscheme" in proc.stderr


def test_fit_mle_that_does_not_exist_is_a_clear_error(tmp_path):
  path = tmp_path / "r.csv"
  # Item 1 is always first: no MLE without a prior.
  path.write_text("race,pos1,pos2,pos3\n1,1,2,3\n2,1,3,2\n3,1,2,3\n")
  proc = run_fit(f"--data=rankings:{path}", "--prior=0")
  assert proc.returncode == 2, proc.stdout
  assert "use prior > 0" in proc.stderr
