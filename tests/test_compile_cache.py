"""luce.train.use_compilation_cache: where JAX's persistent compilation cache goes, and
that a launcher run writes it."""

import os
import pathlib
import subprocess
import sys

import pytest

from luce.errors import ConfigError
import jax

from luce.train import CompilationCacheWarning, base_config, checked_config, use_compilation_cache

REPO = pathlib.Path(__file__).resolve().parents[1]

OPTIONS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture
def clean(monkeypatch, tmp_path):
  """A home of its own, no cache variables, and JAX's cache options restored after
  (nothing is compiled while they are changed, so JAX's cache object never sees them)."""
  for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
               "LUCE_CACHE_DIR", "XDG_CACHE_HOME"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  saved = {name: getattr(jax.config, name) for name in OPTIONS}
  yield tmp_path
  for name, value in saved.items():
    jax.config.update(name, value)


def with_dir(folder, min_secs=0.0):
  c = base_config()
  c.compile_cache.dir, c.compile_cache.min_compile_secs = folder, min_secs
  return c


def test_default_is_under_the_home_cache(clean):
  folder = use_compilation_cache()
  assert folder == str(clean / "home" / ".cache" / "luce" / "jax") and os.path.isdir(folder)
  assert jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir == folder
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0


def test_luce_cache_dir_and_then_the_jax_variable_take_precedence(clean, monkeypatch):
  monkeypatch.setenv("LUCE_CACHE_DIR", str(clean / "lc"))
  assert use_compilation_cache(with_dir("default")) == str(clean / "lc" / "jax")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(clean / "env"))
  assert use_compilation_cache(with_dir("default")) == str(clean / "env")
  assert use_compilation_cache(with_dir(str(clean / "mine"), 2.5)) == str(clean / "mine")
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5


def test_empty_turns_it_off_even_when_the_environment_sets_one(clean, monkeypatch):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(clean / "env"))
  assert use_compilation_cache(with_dir("")) is None
  assert not jax.config.jax_enable_compilation_cache


def test_an_unwritable_folder_warns_and_compiles_without_it(clean):
  blocker = clean / "a_file"
  blocker.write_text("not a folder")
  with pytest.warns(CompilationCacheWarning, match="a_file/cache cannot be used"):
    assert use_compilation_cache(with_dir(str(blocker / "cache"))) is None
  assert not jax.config.jax_enable_compilation_cache


def test_bad_values_are_config_errors():
  c = base_config()
  c.compile_cache.min_compile_secs = -1.0
  with pytest.raises(ConfigError, match="compile_cache.min_compile_secs=-1.0"):
    checked_config(c)


def entries(folder):
  return [p for p in pathlib.Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_luce_train_fills_the_configured_cache(tmp_path):
  """The real thing: a launcher writes its compiled steps to the configured folder."""
  cache = tmp_path / "cache"
  proc = subprocess.run(
      [str(pathlib.Path(sys.executable).parent / "luce-train"), "--config=configs/synthetic.py",
       f"--workdir={tmp_path / 'w'}", "--config.train.num_steps=2", "--config.train.progress_bar=False",
       f"--config.compile_cache.dir={cache}"],
      cwd=REPO, capture_output=True, text=True, timeout=240, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(entries(cache)) >= 3, sorted(p.name for p in entries(cache))
