"""JAX's persistent compilation cache for the launchers (config section `compile_cache`).

A launcher compiles the same train, evaluation and sampling steps every time it
starts; with the cache on, a second run of the same config reads them from disk
instead (benchmarks/RESULTS.md, "Compilation cache"). `use_compilation_cache`
points JAX at the folder before the first compile:

- `dir="default"`: $JAX_COMPILATION_CACHE_DIR when the environment sets it (JAX
  reads it itself; so CI's per-run cache wins), else $LUCE_CACHE_DIR/jax, else
  $XDG_CACHE_HOME/luce/jax, else ~/.cache/luce/jax;
- a path: that folder (created if missing);
- `""`: off, whatever the environment says.

A folder that cannot be created or written is not an error: the run goes on
without the cache and warns once (`CompilationCacheWarning`). Entries are keyed
by JAX on the computation, its shapes, the jaxlib version and the device, so a
stale entry is never read for a changed program.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import jax


class CompilationCacheWarning(UserWarning):
  """The compilation cache folder cannot be used; the run compiles as usual."""


def default_cache_dir() -> str:
  """The folder `dir="default"` stands for when $JAX_COMPILATION_CACHE_DIR is unset."""
  if os.environ.get("LUCE_CACHE_DIR"):
    return os.path.join(os.environ["LUCE_CACHE_DIR"], "jax")
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "luce", "jax")


def _writable(folder: str) -> str | None:
  """None if `folder` can be created and written, else why not."""
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".luce-write-test-"):
      pass
  except OSError as err:
    return f"{type(err).__name__}: {err.strerror or err}"
  return None


def use_compilation_cache(config=None) -> str | None:
  """Turn JAX's persistent compilation cache on (or off) as `config.compile_cache` says.

  Args:
    config: a luce config (its `compile_cache` section is read) or None for the
      defaults (`dir="default"`, `min_compile_secs=0`).

  Returns:
    The cache folder in use, or None when the cache is off.
  """
  from luce.train._config import base_config, checked_config
  section = (checked_config(config) if config is not None else base_config()).compile_cache
  folder, min_secs = section.dir, float(section.min_compile_secs)
  if folder == "":
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  if folder == "default":
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir()
  folder = os.path.abspath(os.path.expanduser(folder))
  why = _writable(folder)
  if why is not None:
    warnings.warn(f"luce: the compilation cache {folder} cannot be used ({why}); compiling without "
                  "it. Set compile_cache.dir to a writable folder, or '' to turn it off.",
                  CompilationCacheWarning, stacklevel=2)
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", folder)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_secs)
  return folder
