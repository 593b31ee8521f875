"""luce.train's time split by dates or steps (data.valid_from / data.test_from), its
fractions fallback, and the errors of each."""

import ml_collections
import numpy as np
import pytest

from luce.data import EventTable
from luce.errors import ConfigError
from luce.train._data import split_bounds


def table(dated: bool, m: int = 10):
  items = np.array([[i % 5, (i + 1) % 5] for i in range(m)])
  times = (np.datetime64("2020-01-01") + np.arange(m) * np.timedelta64(7, "D")) if dated else np.arange(m) * 3
  return EventTable.from_arrays(items, catalog=5, times=times, kind="set")


def data(valid_from="", test_from="", split=(0.8, 0.1, 0.1)):
  return ml_collections.ConfigDict(dict(valid_from=valid_from, test_from=test_from, split=split))


def test_dates_cut_at_the_first_event_on_or_after_them():
  t = table(True)   # weekly from 2020-01-01
  assert split_bounds(t, data("2020-02-01", "2020-02-26")) == (0, 5, 8, 10)
  assert split_bounds(t, data("2020-01-29", "2020-02-26")) == (0, 4, 8, 10)   # on an event: it is valid


def test_integer_steps_cut_undated_events():
  assert split_bounds(table(False), data("9", "20")) == (0, 3, 7, 10)   # times 0, 3, 6, ...


def test_fractions_when_no_cut_is_given():
  a, b, c, d = split_bounds(table(False), data())
  assert (a, d) == (0, 10) and 0 < b < c < d


@pytest.mark.parametrize("valid_from, test_from, match", [
    ("2020-02-01", "", "go together"),
    ("first of May", "2020-02-26", r"data.valid_from='first of May': write an ISO date"),
    ("2019-01-01", "2020-02-26", "each split needs at least one event"),
    ("2020-02-26", "2020-02-01", "each split needs at least one event"),
    ("2020-01-29", "2030-01-01", "each split needs at least one event"),
])
def test_bad_cuts_name_the_field(valid_from, test_from, match):
  with pytest.raises(ConfigError, match=match):
    split_bounds(table(True), data(valid_from, test_from))


def test_a_fraction_that_leaves_a_split_empty_is_an_error():
  with pytest.raises(ConfigError, match="leaves a split of the 3 events empty"):
    split_bounds(table(False, 3), data(split=(0.9, 0.05, 0.05)))
