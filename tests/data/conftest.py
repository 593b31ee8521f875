"""Fixtures of the data tests: the shared data folder (or a skip saying why)
and the real tables read from it once per session."""

import warnings

import pytest

from luce import data as ld
from luce.data import shared_data_dir


@pytest.fixture(scope="session")
def shared():
  path = shared_data_dir()
  if path is None:
    pytest.skip("shared data folder absent: set LUCE_SHARED_DATA (default ../shared/data)")
  return path


@pytest.fixture(scope="session")
def powerball(shared):
  return ld.read("draws:draws/powerball.csv")


@pytest.fixture(scope="session")
def f1(shared):
  # The Ergast defaults (duplicates=best, ties=order) warn about what they fixed.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    return ld.read("ergast:rankings/f1_1950_2019?classified=true")
