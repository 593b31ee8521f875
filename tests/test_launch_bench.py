"""luce-bench: lists the suite, refuses unknown names, passes arguments on and
returns the benchmark's exit status."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def bench(*args):
  proc = subprocess.run([sys.executable, "-m", "luce.launchers.bench", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=240,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  return proc.returncode, proc.stdout + proc.stderr


def test_list_names_every_benchmark_module():
  code, output = bench("--list")
  assert code == 0, output
  on_disk = {p.stem for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_")}
  listed = {line.split()[0] for line in output.strip().splitlines()}
  assert listed == on_disk and "pl_log_prob" in listed


def test_unknown_and_missing_names_are_refused():
  code, output = bench("--bench=pl_log_prob,no_such_bench")
  assert code != 0 and "ConfigError" in output and "no_such_bench" in output
  code, output = bench()
  assert code != 0 and "--bench=NAME" in output


def test_arguments_after_the_separator_reach_the_benchmark():
  code, output = bench("--bench=topk_sample", "--", "--help")
  assert code == 0 and "usage: topk_sample.py" in output and "exit 0" in output
  code, output = bench("--bench=topk_sample", "--", "--no-such-option")
  assert code != 0 and "exit 2" in output
