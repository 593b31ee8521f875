"""Shared test fixtures.

Random inputs are fresh on every run (the standards ask for it); the seed is
part of each fixture's repr and printed on failure, so a failing case can be
replayed with LUCE_TEST_SEED=<seed>.
"""

import os

import numpy as np
import pytest




@pytest.fixture
def seed(request):
  env = os.environ.get("LUCE_TEST_SEED")
  value = int(env) if env else int(np.random.SeedSequence().entropy % (2**31))
  request.node.user_properties.append(("seed", value))
  return value


@pytest.fixture
def rng(seed):
  return np.random.default_rng(seed)


def pytest_runtest_makereport(item, call):
  if call.when == "call" and call.excinfo is not None:
    for name, value in item.user_properties:
      if name == "seed":
        item.add_report_section("call", "seed", f"replay with LUCE_TEST_SEED={value}")


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
