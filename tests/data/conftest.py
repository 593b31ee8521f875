"""Fixtures of the data tests: the shared data folder, or a skip saying why."""

import pytest

from luce.data import shared_data_dir


@pytest.fixture(scope="session")
def shared():
  path = shared_data_dir()
  if path is None:
    pytest.skip("shared data folder absent: set LUCE_SHARED_DATA (default ../shared/data)")
  return path
