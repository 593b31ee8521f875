"""Per-item covariates (`cov_*` columns): the data model, validation, hashing and
the readers that fill them (`ergast:`, `long:`)."""

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from luce import data as ld
from luce.errors import ConfigError, DataError

# ---- the data model --------------------------------------------------------------


def _small(**kw):
  """3 events over 4 items; event 1 lacks item 3, event 2 lacks items 0 and 1."""
  available = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
  items = np.array([[2, 0], [1, 2], [3, 2]])
  grid = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 1.0, 2.0, 99.0], [99.0, 99.0, 2.0, 1.0]])
  team = np.array([["a", "b", "a", "c"], ["b", "b", "c", None], [None, None, "a", "a"]],
                  dtype=object)
  return ld.EventTable.from_arrays(items, catalog=4, kind="ranking", available=available,
                                   covariates={"grid": grid, "team": team}, **kw)


def _events(table, **columns):
  events = table.events
  for name, value in columns.items():
    events = events.set_column(events.column_names.index(name), name, value)
  return events


def test_from_arrays_stores_values_at_available_items():
  t = _small()
  assert t.covariate_columns() == ["cov_grid", "cov_team"]
  assert t.events.schema.field("cov_grid").type == pa.list_(pa.float64())
  assert t.events.schema.field("cov_team").type == pa.list_(pa.string())
  # Element j belongs to the j-th available item: 99s (unavailable items) are dropped.
  assert t.events.column("cov_grid").to_pylist() == [[1, 2, 3, 4], [3, 1, 2], [2, 1]]
  assert t.events.column("cov_team").to_pylist() == [["a", "b", "a", "c"], ["b", "b", "c"],
                                                     ["a", "a"]]


def test_covariates_scatter_to_the_item_axis():
  # Built by hand: the available lists are out of item order, so a scatter that
  # ignored them (or assumed sorted ids) would put values on the wrong items.
  events = pa.table({
      "event_id": pa.array([0, 1], pa.int64()),
      "time": pa.array([0, 1], pa.int64()),
      "items": pa.array([[2, 0], [3]], pa.list_(pa.int32())),
      "kind": pa.array(["ranking", "ranking"]),
      "available": pa.array([[2, 0], [3, 1, 2]], pa.list_(pa.int32())),
      "cov_grid": pa.array([[5.0, 7.0], [1.0, 2.0, 3.0]], pa.list_(pa.float64())),
      "cov_team": pa.array([["x", "y"], ["p", "q", "r"]], pa.list_(pa.string())),
  })
  t = ld.validate(ld.EventTable(events, ld.Catalog.numbered(4)))
  grid = t.covariates("grid")
  assert grid.dtype == np.float64 and grid.shape == (2, 4)
  np.testing.assert_array_equal(grid, [[7.0, np.nan, 5.0, np.nan], [np.nan, 2.0, 3.0, 1.0]])
  team = t.covariates("cov_team")  # the full column name works too
  assert team.dtype == object
  assert team.tolist() == [["y", None, "x", None], [None, "q", "r", "p"]]
  with pytest.raises(DataError, match="no covariate column 'cov_speed'.*cov_grid, cov_team"):
    t.covariates("speed")


def test_covariates_without_available_column_are_per_catalog_item():
  grid = np.arange(6, dtype=np.float64).reshape(2, 3)
  t = ld.EventTable.from_arrays(np.array([[0, 1], [2, 0]]), catalog=3, kind="ranking",
                                covariates={"grid": grid})
  assert t.events.column("cov_grid").to_pylist() == [[0, 1, 2], [3, 4, 5]]
  np.testing.assert_array_equal(t.covariates("grid"), grid)
  with pytest.raises(DataError, match=r"row 1, column 'cov_grid'.*2 covariate values for 3 items"):
    ld.validate(ld.EventTable(_events(t, cov_grid=pa.array([[0.0, 1, 2], [3.0, 4]],
                                                          pa.list_(pa.float64()))), t.catalog))


def test_round_trip_through_parquet(tmp_path):
  t = _small()
  path = tmp_path / "t.parquet"
  digest = ld.write(t, path)
  back = ld.read_parquet(path)
  assert back.events.equals(t.events)
  assert back.content_hash == digest == t.content_hash
  np.testing.assert_array_equal(back.covariates("grid"), t.covariates("grid"))
  assert back.covariates("team").tolist() == t.covariates("team").tolist()
  assert ld.read(f"events:{path}").covariate_columns() == ["cov_grid", "cov_team"]


def test_hash_changes_with_one_covariate_value():
  t = _small()
  grid = t.events.column("cov_grid").to_pylist()
  grid[1][2] = 2.5
  moved = _events(t, cov_grid=pa.array(grid, pa.list_(pa.float64())))
  assert ld.content_hash(moved, t.catalog) != t.content_hash
  team = t.events.column("cov_team").to_pylist()
  team[2][0] = "b"
  relabelled = _events(t, cov_team=pa.array(team, pa.list_(pa.string())))
  assert ld.content_hash(relabelled, t.catalog) != t.content_hash
  # Chunking still does not matter.
  chunked = pa.concat_tables([t.events.slice(0, 1), t.events.slice(1)])
  assert ld.content_hash(chunked, t.catalog) == t.content_hash


@pytest.mark.parametrize("column, lists, check, row, value, message", [
    ("cov_grid", [[1, 2, 3, 4], [3, float("nan"), 2], [2, 1]], "covariate_value", 1,
     float("nan"), "covariate value of item '2' is not finite"),
    ("cov_grid", [[1, 2, 3, 4], [3, 1, 2], [float("inf"), 1]], "covariate_value", 2, float("inf"),
     "not finite"),
    ("cov_grid", [[1, 2, 3, 4], [3, None, 2], [2, 1]], "covariate_value", 1, None,
     "missing covariate value of item '2'"),
    ("cov_grid", [[1, 2, 3, 4], [3, 1], [2, 1]], "covariate_length", 1, 2,
     "2 covariate values for 3 items"),
    ("cov_team", [["a", "b", "a", "c"], ["b", None, "c"], ["a", "a"]], "covariate_value", 1, None,
     "missing covariate label of item '2'"),
    ("cov_team", [["a", "b", "a", "c"], ["b", "b", "c"], ["a", " "]], "covariate_value", 2, " ",
     "empty covariate label of item '4'"),
    ("cov_team", [["a", "b", "a", "c"], None, ["a", "a"]], "covariate_null", 1, None,
     "missing covariate list"),
])
def test_validation_names_each_bad_covariate(column, lists, check, row, value, message):
  t = _small()
  kind = pa.float64() if column == "cov_grid" else pa.string()
  bad = ld.EventTable(_events(t, **{column: pa.array(lists, pa.list_(kind))}), t.catalog)
  problems = ld.find_problems(bad)
  assert [(p.check, p.row, p.column) for p in problems] == [(check, row, column)]
  p = problems[0]
  assert p.value == value or (isinstance(value, float) and np.isnan(value) and np.isnan(p.value))
  assert message in p.message
  with pytest.raises(DataError, match=f"row {row}, column '{column}'"):
    ld.validate(bad)


def test_validation_rejects_other_covariate_types():
  t = _small()
  bad = ld.EventTable(_events(t, cov_grid=pa.array([[1, 2, 3, 4], [3, 1, 2], [2, 1]],
                                                   pa.list_(pa.int64()))), t.catalog)
  with pytest.raises(DataError, match="column 'cov_grid'.*list<double>.*list<string>"):
    ld.validate(bad)
  with pytest.raises(DataError, match="column 'cov_grid'.*list<double>"):
    ld.validate(ld.EventTable(_events(t, cov_grid=pa.array([1.0, 2.0, 3.0])), t.catalog))


def test_wrong_length_in_a_parquet_file_names_file_row_and_column(tmp_path):
  t = _small()
  bad = ld.EventTable(_events(t, cov_grid=pa.array([[1, 2, 3, 4], [3, 1, 2], [2, 1, 7]],
                                                   pa.list_(pa.float64()))), t.catalog)
  path = tmp_path / "bad.parquet"
  ld.write(bad, path)
  with pytest.raises(DataError, match=r"bad.parquet, row 2, column 'cov_grid'.*3 covariate "
                                      r"values for 2 items"):
    ld.read(f"events:{path}")


# ---- ergast: on the real data ------------------------------------------------------

def _quiet_read(source, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    return ld.read(source, **kw)


def _results(shared):
  return pd.read_csv(shared / "rankings/f1_1950_2019/results.csv", dtype=str,
                     keep_default_na=False)


def test_f1_known_race(shared):
  t = _quiet_read("ergast:rankings/f1_1950_2019")
  assert t.covariate_columns() == ["cov_grid", "cov_pit_lane", "cov_constructor"]
  results = _results(shared)
  race = results[results.raceId == "18"]   # 2008 Australian Grand Prix, the first rows
  row = int(np.flatnonzero(t.events.column("event_id").to_numpy() == 18)[0])
  grid, team = t.covariates("grid")[row], t.covariates("constructor")[row]
  hamilton, heidfeld = t.catalog.index["1"], t.catalog.index["2"]
  # results.csv lines 2 and 3: Hamilton (McLaren, constructorId 1) from pole,
  # Heidfeld (BMW Sauber, constructorId 2) from 5th.
  assert (grid[hamilton], team[hamilton]) == (1.0, "1")
  assert (grid[heidfeld], team[heidfeld]) == (5.0, "2")
  for driver, item in (("1", hamilton), ("2", heidfeld)):
    line = race[race.driverId == driver].iloc[0]
    assert grid[item] == float(line.grid) and team[item] == line.constructorId
  # Every entrant, and only the entrants, has a value.
  mask = t.available_mask()
  for name in t.covariate_columns():
    values = t.covariates(name)
    present = ~np.isnan(values) if values.dtype == np.float64 else values != None  # noqa: E711
    assert (present == mask).all()


def test_f1_pit_lane_starts_are_encoded_as_documented(shared):
  t = _quiet_read("ergast:rankings/f1_1950_2019?from_year=1996")
  results = _results(shared)
  grid, pit, team = t.covariates("grid"), t.covariates("pit_lane"), t.covariates("constructor")
  mask = t.available_mask()
  entrants = mask.sum(axis=1)
  # Every race from 1996 on has a grid value for every entrant.
  assert len(t) == 437 and (np.isfinite(grid) == mask).all()
  rows = {int(e): i for i, e in enumerate(t.events.column("event_id").to_numpy())}
  used = results[results.raceId.astype(int).isin(rows)]
  assert len(used) == mask.sum()   # one row per (race, driver) in these years
  r = used.raceId.astype(int).map(rows).to_numpy()
  a = np.array([t.catalog.index[d] for d in used.driverId])
  g = used.grid.astype(int).to_numpy()
  starts = g == 0
  assert int(starts.sum()) == int(t.metadata["pit_lane_starts"]) == 41
  np.testing.assert_array_equal(pit[r, a], starts.astype(float))
  np.testing.assert_array_equal(grid[r, a], np.where(starts, entrants[r] + 1, g))
  assert (team[r, a] == used.constructorId.to_numpy()).all()
  # A pit-lane starter is behind every grid slot of its race.
  assert (grid[r[starts], a[starts]] > np.nanmax(np.where(pit == 0, grid, np.nan), axis=1)[r[starts]]).all()


def test_f1_covariates_option(shared):
  t = _quiet_read("ergast:rankings/f1_1950_2019?from_year=2019&covariates=constructor")
  assert t.covariate_columns() == ["cov_constructor"]
  t = _quiet_read("ergast:rankings/f1_1950_2019?from_year=2019&covariates=")
  assert t.covariate_columns() == []


# ---- ergast: tiny folders written here -----------------------------------------------

# The headers of the real Ergast files (test_tiny_headers_match_the_real_files checks them).
RESULTS_HEADER = ("resultId,raceId,driverId,constructorId,number,grid,position,positionText,"
                  "positionOrder,points,laps,time,milliseconds,fastestLap,rank,fastestLapTime,"
                  "fastestLapSpeed,statusId")
RACES = """raceId,year,round,circuitId,name,date,time,url
1,2009,1,1,"Australian Grand Prix","2009-03-29","06:00:00","http://x"
2,2009,2,2,"Malaysian Grand Prix","2009-04-05","09:00:00","http://x"
"""
DRIVERS = """driverId,driverRef,number,code,forename,surname,dob,nationality,driver_url
1,"hamilton",44,"HAM","Lewis","Hamilton","1985-01-07","British","http://x"
2,"heidfeld",\\N,"HEI","Nick","Heidfeld","1977-05-10","German","http://x"
3,"rosberg",6,"ROS","Nico","Rosberg","1985-06-27","German","http://x"
"""


def _result(result_id, race, driver, constructor, grid, order):
  return (f'{result_id},{race},{driver},{constructor},1,{grid},{order},"{order}",{order},0,58,'
          f'\\N,\\N,\\N,\\N,\\N,\\N,1')


GOOD = [_result(1, 1, 1, 1, 2, 1), _result(2, 1, 2, 2, 0, 2), _result(3, 1, 3, 3, 1, 3),
        _result(4, 2, 3, 3, 1, 1), _result(5, 2, 1, 1, 2, 2)]


def _ergast(tmp_path, rows, header=RESULTS_HEADER, drop=None):
  folder = tmp_path / "f1"
  folder.mkdir(exist_ok=True)
  lines = [header] + list(rows)
  if drop is not None:  # drop a column from the header and every row
    cols = header.split(",")
    i = cols.index(drop)
    lines = [",".join(c for j, c in enumerate(line.split(",")) if j != i) for line in lines]
  (folder / "results.csv").write_text("\n".join(lines) + "\n")
  (folder / "races.csv").write_text(RACES)
  (folder / "drivers.csv").write_text(DRIVERS)
  return folder


def test_tiny_headers_match_the_real_files(shared):
  folder = shared / "rankings/f1_1950_2019"
  assert (folder / "results.csv").read_text().split("\n", 1)[0] == RESULTS_HEADER
  assert (folder / "races.csv").read_text().split("\n", 1)[0] == RACES.split("\n", 1)[0]
  assert (folder / "drivers.csv").read_text().split("\n", 1)[0] == DRIVERS.split("\n", 1)[0]


def test_tiny_ergast_pit_lane_and_alignment(tmp_path):
  t = ld.read(f"ergast:{_ergast(tmp_path, GOOD)}")
  assert t.metadata["pit_lane_starts"] == "1"
  # Race 1: three entrants, Heidfeld (driver 2) from the pit lane -> slot 3 + 1.
  np.testing.assert_array_equal(t.covariates("grid"), [[2.0, 4.0, 1.0], [2.0, np.nan, 1.0]])
  np.testing.assert_array_equal(t.covariates("pit_lane"), [[0.0, 1.0, 0.0], [0.0, np.nan, 0.0]])
  assert t.covariates("constructor").tolist() == [["1", "2", "3"], ["1", None, "3"]]
  # The lists follow `available`: race 2 lists driver 3 (item 2) first.
  assert t.events.column("available")[1].as_py() == [2, 0]
  assert t.events.column("cov_grid")[1].as_py() == [1.0, 2.0]


@pytest.mark.parametrize("grid, check, value, message", [
    ("abc", "parse", "abc", "not an integer"),
    ("2.5", "parse", "2.5", "not an integer"),
    ("\\N", "null", None, "missing grid position"),
    ("NaN", "null", None, "missing grid position"),
    ("-1", "parse", "-1", "negative"),
])
def test_tiny_ergast_bad_grid_is_named(tmp_path, grid, check, value, message):
  rows = list(GOOD)
  rows[3] = _result(4, 2, 3, 3, grid, 1)   # line 5 of results.csv
  source = f"ergast:{_ergast(tmp_path, rows)}"
  with pytest.raises(DataError, match=rf"results.csv, row 5, column 'grid': .*{message}") as err:
    ld.read(source)
  assert [(p.check, p.file, p.row, p.column, p.value) for p in err.value.problems] == \
      [(check, "results.csv", 5, "grid", value)]
  # Reported once, not again by validation for cov_grid and cov_pit_lane.
  assert len(ld.check(source)) == 1


def test_tiny_ergast_report_lists_every_problem(tmp_path):
  rows = list(GOOD)
  rows[0] = _result(1, 1, 1, 1, "abc", 1)     # line 2
  rows[2] = _result(3, 1, 3, "\\N", 1, 3)     # line 4
  rows[4] = _result(5, 2, 1, 1, "\\N", 2)     # line 6
  source = f"ergast:{_ergast(tmp_path, rows)}"
  with pytest.raises(DataError) as err:
    ld.read(source + "?on_invalid=report")
  found = sorted((p.row, p.column) for p in err.value.problems)
  assert found == [(2, "grid"), (4, "constructorId"), (6, "grid")]
  assert "3 problems" in str(err.value)
  with pytest.raises(DataError) as err:
    ld.read(source, on_invalid="report")
  assert len(err.value.problems) == 3
  with pytest.raises(DataError, match=r"row 2, column 'grid'.*and 2 more problems"):
    ld.read(source)


def test_tiny_ergast_missing_columns(tmp_path):
  folder = _ergast(tmp_path, GOOD, drop="grid")
  # Not asked for: simply absent.
  t = ld.read(f"ergast:{folder}")
  assert t.covariate_columns() == ["cov_constructor"]
  with pytest.raises(DataError, match=r"results.csv: covariate 'grid' needs column 'grid'"):
    ld.read(f"ergast:{folder}?covariates=grid")
  with pytest.raises(DataError, match=r"results.csv: covariate 'constructor' needs column "
                                      r"'constructorId'"):
    ld.read(f"ergast:{_ergast(tmp_path, GOOD, drop='constructorId')}?covariates=grid,constructor")


def test_tiny_ergast_covariate_names(tmp_path):
  folder = _ergast(tmp_path, GOOD)
  with pytest.raises(ConfigError, match=r"unknown 'team'; valid covariates: grid, constructor"):
    ld.read(f"ergast:{folder}?covariates=grid,team")
  assert ld.read(f"ergast:{folder}?covariates=").covariate_columns() == []
  assert ld.read(f"ergast:{folder}?covariates=grid").covariate_columns() == \
      ["cov_grid", "cov_pit_lane"]


# ---- long: one (event, item, rank) per line ------------------------------------------

LONG = """race,driver,rank,grid,team
1,A,1,2,red
1,B,2,1,blue
1,C,3,3,red
2,B,1,1,blue
2,C,2,2,red
"""


def _long(tmp_path, text, name="results.csv"):
  path = tmp_path / name
  path.write_text(text)
  return f"long:{path}?event=race&item=driver&rank=rank"


def test_long_covariates_numeric_and_categorical(tmp_path):
  t = ld.read(_long(tmp_path, LONG) + "&covariates=grid,team")
  assert t.covariate_columns() == ["cov_grid", "cov_team"]
  assert t.events.schema.field("cov_grid").type == pa.list_(pa.float64())
  assert t.events.schema.field("cov_team").type == pa.list_(pa.string())
  assert t.metadata["covariates"] == "cov_grid=numeric,cov_team=categorical"
  a, b, c = (t.catalog.index[x] for x in "ABC")
  grid, team = t.covariates("grid"), t.covariates("team")
  assert (grid[0, a], grid[0, b], grid[0, c]) == (2.0, 1.0, 3.0)
  assert np.isnan(grid[1, a]) and (grid[1, b], grid[1, c]) == (1.0, 2.0)
  assert team[1].tolist() == [None, "blue", "red"]
  forced = ld.read(_long(tmp_path, LONG) + "&covariates=grid,team&categorical=grid")
  assert forced.events.schema.field("cov_grid").type == pa.list_(pa.string())
  assert forced.covariates("grid")[0, a] == "2"


def test_long_covariates_follow_available_order(tmp_path):
  # Rows out of rank order: the list follows `available` (best first), not the file.
  text = "race,driver,rank,grid\n1,C,3,30\n1,A,1,10\n1,B,2,20\n"
  t = ld.read(_long(tmp_path, text) + "&covariates=grid")
  labels = [t.catalog.labels[i] for i in t.events.column("available")[0].as_py()]
  assert labels == ["A", "B", "C"]
  assert t.events.column("cov_grid")[0].as_py() == [10.0, 20.0, 30.0]


def test_long_mostly_numeric_column_with_text_warns(tmp_path):
  text = LONG.replace("2,C,2,2,red", "2,C,2,abc,red")
  with pytest.warns(UserWarning, match=r"'grid' is read as categorical because line 6 holds 'abc'"):
    t = ld.read(_long(tmp_path, text) + "&covariates=grid")
  assert t.events.schema.field("cov_grid").type == pa.list_(pa.string())


@pytest.mark.parametrize("cell, row, value, message", [
    ("inf", 3, float("inf"), "covariate value of item .B. is not finite"),
    ("NaN", 3, None, "missing covariate value of item 'B'"),
    ("", 3, None, "missing covariate value of item 'B'"),
])
def test_long_bad_numeric_covariate_is_named(tmp_path, cell, row, value, message):
  text = LONG.replace("1,B,2,1,blue", f"1,B,2,{cell},blue")
  with pytest.raises(DataError, match=rf"results.csv, row {row}, column 'grid': {message}") as err:
    ld.read(_long(tmp_path, text) + "&covariates=grid")
  assert [(p.row, p.column, p.value) for p in err.value.problems] == [(row, "grid", value)]


def test_long_report_lists_every_covariate_problem(tmp_path):
  text = LONG.replace("1,B,2,1,blue", "1,B,2,inf,blue").replace("2,C,2,2,red", "2,C,2,,")
  with pytest.raises(DataError) as err:
    ld.read(_long(tmp_path, text) + "&covariates=grid,team", on_invalid="report")
  assert sorted((p.row, p.column) for p in err.value.problems) == \
      [(3, "grid"), (6, "grid"), (6, "team")]


def test_long_covariate_option_errors(tmp_path):
  source = _long(tmp_path, LONG)
  with pytest.raises(DataError, match=r"results.csv: covariates= names 'speed', which are not "
                                      r"columns"):
    ld.read(source + "&covariates=grid,speed")
  with pytest.raises(ConfigError, match=r"categorical= names 'team', which covariates= does not"):
    ld.read(source + "&covariates=grid&categorical=team")


def test_rankings_and_draws_say_covariates_need_long(tmp_path):
  with pytest.raises(ConfigError, match=r"unknown option 'covariates' for rankings:.*long:"):
    ld.read(f"rankings:{tmp_path}/r.csv?covariates=grid")
  with pytest.raises(ConfigError, match=r"unknown option 'categorical' for draws:.*long:"):
    ld.read(f"draws:{tmp_path}/d.csv?categorical=team")
  assert {"covariates", "categorical"} <= set(ld.SCHEMES["long"][1])
  assert "covariates" in ld.SCHEMES["ergast"][1]
