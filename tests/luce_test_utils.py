"""Helpers the test modules import (`from luce_test_utils import ...`).

They live here, not in conftest.py: tests/ and tests/data/ each have a
conftest.py, and a plain `from conftest import` gets whichever one Python
imported first.
"""

import os


def shared_data_dir():
  """The shared data folder, or None when it is absent."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.environ.get("LUCE_SHARED_DATA", os.path.join(here, "..", "shared", "data"))
  return path if os.path.isdir(path) else None


def pallas_modes():
  """The `interpret=` values a Pallas kernel test runs under: the HLO
  interpreter, the TPU and GPU simulators, and compiled (False) when the
  default backend is an accelerator."""
  import jax
  modes = [True, "tpu", "gpu"]
  if jax.default_backend() in ("gpu", "tpu"):
    modes.append(False)
  return modes
