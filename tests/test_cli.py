"""The console scripts as a new user meets them: --help lists each launcher's flags with
an example, and a user error is one line on stderr with exit status 2 (--traceback adds
the traceback)."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
# script -> (flags its --help must list, the launcher docstring's first words)
SCRIPTS = {
    "luce-train": (["--config", "--workdir", "--traceback"], "luce-train: train a model"),
    "luce-eval": (["--workdir", "--split"], "luce-eval:"),
    "luce-predict": (["--workdir", "--out", "--samples", "--draws"], "luce-predict:"),
    "luce-backtest": (["--config", "--workdir"], "luce-backtest:"),
    "luce-fit": (["--data", "--prior", "--available"], "luce-fit:"),
    "luce-eda": (["--data", "--out"], "luce-eda:"),
    "luce-bench": (["--bench", "--list"], "luce-bench:"),
}


def script(name: str, *args, cwd=REPO):
  path = BIN / name
  assert path.exists(), f"{path} is missing: install luce (pip install -e .) in this environment"
  return subprocess.run([str(path), *args], cwd=cwd, capture_output=True, text=True, timeout=240,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_lists_the_flags_and_an_example(name):
  proc = script(name, "--help")
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-2000:]
  wanted, first = SCRIPTS[name]
  assert first in out, out[:500]
  for flag in wanted:
    assert f"  {flag}" in out or f"--[no]{flag[2:]}" in out, (flag, out[-3000:])
  assert f"    {name} --" in out, "no example command line in --help"
  assert "Try --helpfull" not in out


def _one_line(proc, name, start):
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(f"{name}: {start}"), lines[0]
  return lines[0]


def test_config_typo_is_one_line_naming_the_field(tmp_path):
  proc = script("luce-train", "--config=configs/synthetic.py", f"--workdir={tmp_path / 'w'}",
                "--config.train.num_step=5")
  line = _one_line(proc, "luce-train", "bad flag: no such config field 'num_step'")
  assert 'Did you mean "num_steps"' in line
  shown = script("luce-train", "--config=configs/synthetic.py", f"--workdir={tmp_path / 'w'}",
                 "--config.train.num_step=5", "--traceback")
  assert shown.returncode == 2 and "Traceback" in shown.stderr


@pytest.mark.parametrize("name", ["luce-train", "luce-backtest"])
def test_missing_config_file_is_one_line(name, tmp_path):
  proc = script(name, "--config=configs/no_such_config.py", f"--workdir={tmp_path / 'w'}")
  line = _one_line(proc, name, "bad flag: cannot read the config")
  assert "no_such_config.py" in line


def test_bad_data_source_is_one_line(tmp_path):
  proc = script("luce-train", "--config=configs/synthetic.py", f"--workdir={tmp_path / 'w'}",
                "--config.data.source=draws:/no/such/file.csv")
  assert "file.csv" in _one_line(proc, "luce-train", "")


def test_workdir_that_cannot_be_created_is_one_line(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  proc = script("luce-train", "--config=configs/synthetic.py", f"--workdir={blocker / 'run'}",
                "--config.train.num_steps=2")
  line = _one_line(proc, "luce-train", "NotADirectoryError: Not a directory")
  assert str(blocker) in line


@pytest.mark.parametrize("name", ["luce-eval", "luce-predict"])
def test_eval_and_predict_of_a_folder_that_is_no_run(name, tmp_path):
  args = [f"--workdir={tmp_path}"] + ([f"--out={tmp_path / 'p.parquet'}"] if name == "luce-predict" else [])
  line = _one_line(script(name, *args), name, "ConfigError: --workdir=")
  assert "no config.json there" in line


def test_fit_and_eda_errors_are_one_line(tmp_path):
  _one_line(script("luce-fit", "--data=nosuchscheme:foo.csv"), "luce-fit", "ConfigError:")
  _one_line(script("luce-eda", "--data=draws:/no/such.csv", f"--out={tmp_path}"), "luce-eda", "")
