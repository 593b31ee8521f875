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
    "luce-tune": (["--config", "--workdir", "--study", "--storage", "--trials", "--population"],
                  "luce-tune:"),
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


def _file_size_limit(limit: int):
  """preexec_fn: files may not grow past `limit` bytes, and a write that would
  fails with EFBIG instead of killing the process: a full disk's failure mode
  for the files the run writes, without needing a small file system."""
  import resource
  import signal

  def apply():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return apply


@pytest.mark.parametrize("show", [False, True])
def test_full_disk_during_async_checkpointing_is_one_line(tmp_path, show):
  """orbax's background save threads, tensorstore's writers and TensorBoard's
  atexit flush all fail on the full disk; before, each printed its own traceback
  (about 490 lines) and the run exited 1."""
  args = [str(BIN / "luce-train"), "--config=configs/synthetic.py", f"--workdir={tmp_path / 'w'}",
          "--config.train.num_steps=400", "--config.train.checkpoint_every=50",
          "--config.train.progress_bar=False"] + (["--traceback"] if show else [])
  # with a persistent compilation cache on the same disk, JAX warns (two lines
  # each) for every cache entry it cannot write: those are held back too
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=240,
                        env=env, preexec_fn=_file_size_limit(8000))
  if show:
    # the background threads' tracebacks may still be printing after the one line
    assert proc.returncode == 2 and "Traceback" in proc.stderr, proc.stderr[-3000:]
    assert any(line.startswith("luce-train: OSError: File too large")
               for line in proc.stderr.splitlines()), proc.stderr[-3000:]
    return
  line = _one_line(proc, "luce-train", "OSError: File too large")
  assert "ulimit -f" in line


BACKGROUND_ONLY = '''
"""luce-fake: a launcher whose main thread succeeds while a writer thread hits a full disk."""
import errno, os, sys, threading
from luce.launchers._cli import launch

def main(argv):
  def writer():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/full/disk/events.out")
  thread = threading.Thread(target=writer)
  thread.start()
  thread.join()
  print("main finished")

if __name__ == "__main__":
  launch(main, __name__)
'''


def test_a_background_write_error_fails_the_run_even_if_main_succeeds(tmp_path):
  fake = tmp_path / "fake_launcher.py"
  fake.write_text(BACKGROUND_ONLY)
  proc = subprocess.run([sys.executable, str(fake)], capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert "main finished" in proc.stdout
  line = _one_line(proc, "fake_launcher", "OSError: No space left on device: /full/disk/events.out")
  assert line.endswith("(in a background write)"), line


CACHE_WARNING_ONLY = '''
"""luce-fake: a launcher that succeeds although JAX could not write a cache entry."""
import warnings
from luce.launchers._cli import launch

def main(argv):
  warnings.warn("Error writing persistent compilation cache entry for 'jit_step': "
                "OSError: [Errno 27] File too large")
  print("main finished")

if __name__ == "__main__":
  launch(main, __name__)
'''


def test_held_cache_warnings_still_print_when_nothing_explains_them(tmp_path):
  fake = tmp_path / "fake_launcher.py"
  fake.write_text(CACHE_WARNING_ONLY)
  proc = subprocess.run([sys.executable, str(fake)], capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0 and "main finished" in proc.stdout, proc.stderr[-2000:]
  assert "Error writing persistent compilation cache entry for 'jit_step'" in proc.stderr


def test_tensorstore_os_errors_count_as_user_errors():
  from luce.launchers import _cli
  wrapped = ValueError("Error writing local file \"/w/checkpoints/5/d/x\": "
                       "[RESOURCE_EXHAUSTED: No space left] [os_error_code='28']")
  assert _cli._is_user_error(wrapped) and _cli._kind(wrapped) == "OSError"
  assert _cli._describe(wrapped).startswith("No space left on device (the disk is full")
  assert not _cli._is_user_error(ValueError("shape mismatch"))
  try:
    try:
      raise OSError(28, "No space left on device")
    except OSError:
      raise RuntimeError("commit failed")  # noqa: B904 (implicit context, as orbax raises it)
  except RuntimeError as err:
    chained = err
  assert _cli._background_user_error(chained) and not _cli._is_user_error(chained)
  assert _cli._root_user_error(chained).errno == 28
