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

