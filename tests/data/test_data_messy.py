"""Readers on messy real-world files: a blank line (after a BOM) before the header, a row
missing its trailing columns, picks that are numbers but not item labels, a stray pick
that would widen the game, a range that changes over time, month-name dates."""

import re
import gc
import warnings

import numpy as np
import pytest

import luce.data
from luce.errors import DataError


def _write(tmp_path, name, text, bom=False):
  path = tmp_path / name
  path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
  return path


def test_blank_lines_before_the_header_after_a_bom(tmp_path):
  path = _write(tmp_path, "d.csv", "\n\nDate,Numbers\n2020-01-01,1|2|3\n2020-01-08,4|5|6\n"
                                   "2020-01-15,1|3|5\n", bom=True)
  table = luce.data.read(f"draws:{path}")
  assert len(table) == 3 and table.n_items == 6
  # Line numbers count the skipped lines: line 6 is the third event.
  bad = _write(tmp_path, "e.csv", "\n\nDate,Numbers\n2020-01-01,1|2|3\n2020-01-08,4|5|6\n"
                                  "2020-01-15,1|3|3\n", bom=True)
  with pytest.raises(DataError, match=r"row 6"):
    luce.data.read(f"draws:{bad}")


def test_a_row_missing_trailing_columns_is_an_error(tmp_path):
  path = _write(tmp_path, "r.csv", "race,pos1,pos2,pos3\n1,1,2,3\n2,3,1\n3,2,3,1\n")
  with pytest.raises(DataError, match=r"r.csv, line 3: 3 of the header's 4 fields \(missing: "
                                      r"'pos3'\)"):
    luce.data.read(f"rankings:{path}")
  # An empty trailing cell is a deliberate blank: a shorter ranking.
  ok = _write(tmp_path, "ok.csv", "race,pos1,pos2,pos3\n1,1,2,3\n2,3,1,\n3,2,3,1\n")
  assert len(luce.data.read(f"rankings:{ok}")) == 3


@pytest.mark.parametrize("pick", ["-1", "1.5", "+2"])
def test_a_pick_that_is_not_a_positive_integer_says_so(tmp_path, pick):
  path = _write(tmp_path, "d.csv", f"Date,Numbers\n2020-01-01,1|2|3\n2020-01-08,4|{pick}|6\n"
                                   f"2020-01-15,1|3|5\n")
  with pytest.raises(DataError, match=rf"d.csv, line 3, column 'Numbers': pick "
                                      rf"{re.escape(repr(pick))} is not a positive integer"):
    luce.data.read(f"draws:{path}")


def _draws(rows):
  return "Date,Numbers\n" + "".join(f"2020-{1 + i // 28:02d}-{1 + i % 28:02d},{'|'.join(map(str, r))}\n"
                                    for i, r in enumerate(rows))


def test_a_stray_pick_far_above_the_rest_is_named(tmp_path, rng):
  rows = [sorted(rng.choice(np.arange(1, 11), 3, replace=False)) for _ in range(40)]
  rows[17] = [2, 5, 90]
  path = _write(tmp_path, "d.csv", _draws(rows))
  with pytest.raises(DataError, match=r"line 19, column 'Numbers': pick 90 lies far above every "
                                      r"other pick \(the next largest is 10; labels 11..89 never"):
    luce.data.read(f"draws:{path}")
  # Saying the game's size accepts it.
  assert luce.data.read(f"draws:{path}?n=90").n_items == 90


def test_a_range_that_grows_over_time_is_reported(tmp_path, rng):
  rows = [sorted(rng.choice(np.arange(1, 11 if i < 20 else 16), 3, replace=False)) for i in range(60)]
  path = _write(tmp_path, "d.csv", _draws(rows))
  table = luce.data.read(f"draws:{path}")
  assert table.n_items == 15
  first = next(i for i, r in enumerate(rows) if max(r) > max(max(x) for x in rows[:15]))
  note = table.metadata["range_changed"]
  assert f"first appear on line {first + 2}" in note and "range may have changed" in note


def test_month_name_dates_are_detected(tmp_path):
  path = _write(tmp_path, "d.csv", 'Date,Numbers\n"June 12, 1982",1|2|3\n"June 19, 1982",4|5|6\n'
                                   '"July 3, 1982",1|3|5\n')
  times = luce.data.read(f"draws:{path}").times()
  assert str(times[0])[:10] == "1982-06-12" and str(times[2])[:10] == "1982-07-03"


def test_reading_leaves_no_file_open(tmp_path):
  path = _write(tmp_path, "d.csv", "Date,Numbers\n2020-01-01,1|2|3\n2020-01-08,4|5|6\n")
  # A file left open warns when it is collected, inside a destructor, where an
  # "error" filter cannot raise: record the warnings instead.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ResourceWarning)
    luce.data.read(f"draws:{path}")
    gc.collect()
  assert not [w for w in caught if issubclass(w.category, ResourceWarning)], \
      [str(w.message) for w in caught]


BAD3 = ("Date,Numbers\n2020-01-01,1|2|x\n2020-01-08,4|5|6\n2020-01-15,1|y|5\n2020-01-22,1|3|5\n"
        "2020-01-29,1|1|5\n")


@pytest.mark.parametrize("option", ["drop_invalid=true", "on_invalid=drop"])
def test_drop_invalid_drops_and_reports_every_bad_row(tmp_path, option):
  path = _write(tmp_path, "d.csv", BAD3)
  with pytest.warns(UserWarning, match=r"dropped 3 of 5 events with problems"):
    table = luce.data.read(f"draws:{path}?{option}")
  assert len(table) == 2
  dropped = table.metadata["dropped"].splitlines()
  assert [line.split(",")[1].strip() for line in dropped] == ["row 2", "row 4", "row 6"]
  assert "not an integer item label (value: 'x')" in dropped[0]
  assert "item listed twice" in dropped[2]


def test_drop_invalid_on_a_long_file_drops_the_whole_event(tmp_path):
  path = _write(tmp_path, "l.csv", "race,date,driver,rank\n1,2020-01-01,a,1\n1,2020-01-01,b,2\n"
                                   "2,2020-01-08,a,1\n2,2020-01-08,b,x\n3,2020-01-15,b,1\n"
                                   "3,2020-01-15,a,2\n")
  src = f"long:{path}?event=race&item=driver&rank=rank&time=date&drop_invalid=true"
  with pytest.warns(UserWarning, match="dropped 1 of 3 events"):
    table = luce.data.read(src)
  assert len(table) == 2 and "row 5, column 'rank'" in table.metadata["dropped"]


def test_the_count_of_more_problems_is_right(tmp_path):
  """Two bad events, no parse problem: the first is named and the other counted."""
  path = _write(tmp_path, "d.csv", "Date,Numbers\n2020-01-01,1|2|3\n2020-01-08,4|4|6\n"
                                   "2020-01-15,1|3|5\n2020-01-22,1|1|5\n")
  with pytest.raises(DataError, match=r"row 3, .* \[and 1 more problems;") as info:
    luce.data.read(f"draws:{path}")
  assert [p.row for p in info.value.problems] == [3, 5]


def test_time_from_year_and_week_columns(tmp_path):
  path = _write(tmp_path, "yw.csv", "Year,Week,Numbers\n2020,1,1|2|3\n2020,2,4|5|6\n2020,53,1|3|5\n"
                                    "2021,1,2|4|6\n")
  table = luce.data.read(f"draws:{path}?time=Year+Week")
  assert [str(t)[:10] for t in table.times()] == ["2020-01-01", "2020-01-08", "2020-12-30",
                                                  "2021-01-01"]
  assert not any(c.startswith("ctx_") for c in table.events.column_names)   # Year, Week used
  ymd = _write(tmp_path, "ymd.csv", "Year,Month,Day,Numbers\n2020,2,29,1|2|3\n2020,3,1,4|5|6\n")
  assert str(luce.data.read(f"draws:{ymd}?time=Year+Month+Day").times()[0])[:10] == "2020-02-29"
  bad = _write(tmp_path, "bad.csv", "Year,Week,Numbers\n2020,1,1|2|3\n2020,54,4|5|6\n")
  with pytest.raises(DataError, match=r"bad.csv, line 3, columns Year\+Week: .*\(week 54 is not"):
    luce.data.read(f"draws:{bad}?time=Year+Week")
  with pytest.raises(DataError, match="'Wk', which are not columns"):
    luce.data.read(f"draws:{bad}?time=Year+Wk")
