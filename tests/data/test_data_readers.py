"""Readers on the real shared files, and on small (malformed) files written here."""

import warnings

import numpy as np
import pandas as pd
import pytest

import luce
from luce import data as ld
from luce.errors import ConfigError, DataError


def _quiet_read(source, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    return ld.read(source, **kw)


# ---- real files --------------------------------------------------------------------

def test_powerball(shared):
  t = ld.read(f"draws:{shared}/draws/powerball.csv")
  assert (t.n_events, t.n_items, t.k, t.kind) == (1390, 69, 5, "set")
  raw = pd.read_csv(shared / "draws/powerball.csv")
  first = sorted(int(x) for x in raw.white_balls[0].split("|"))
  assert sorted(t.catalog.labels[i] for i in t.items_array()[0]) == [str(x) for x in first]
  assert t.times()[0] == np.datetime64("2015-10-07")
  assert t.events.column("ctx_red_ball")[0].as_py() == raw.red_ball[0]
  assert t.events.column("ctx_power_play")[0].as_py() == raw.power_play[0]
  assert np.all(np.diff(t.times().astype(np.int64)) > 0)


def test_megamillions_relative_path_uses_shared(shared):
  t = ld.read("draws:draws/megamillions.csv")
  assert (t.n_events, t.n_items, t.k) == (916, 70, 5)
  assert t.items_array().min() >= 0 and t.items_array().max() < 70


def test_nascar_rankings_with_catalog(shared):
  t = ld.read("rankings:rankings/nascar2002_orderings.csv?catalog=nascar2002_drivers.csv")
  assert (t.n_events, t.n_items, t.k_max, t.kind) == (36, 87, 43, "ranking")
  raw = pd.read_csv(shared / "rankings/nascar2002_orderings.csv")
  names = pd.read_csv(shared / "rankings/nascar2002_drivers.csv").set_index("id").driver
  winner = t.items_array()[0, 0]
  assert t.catalog.names[winner] == names[raw.pos1[0]]


def test_f1_ergast(shared):
  t = _quiet_read("ergast:rankings/f1_1950_2019")
  assert (t.n_events, t.n_items, t.kind) == (1018, 848, "ranking")
  results = pd.read_csv(shared / "rankings/f1_1950_2019/results.csv")
  assert t.lengths().sum() + int(t.metadata["duplicates_merged"]) == len(results)
  last = t.items_array()[-1]
  assert [t.catalog.names[i] for i in last[:2]] == ["Lewis Hamilton", "Max Verstappen"]
  mask = t.available_mask()
  assert (mask.sum(axis=1) == t.lengths()).all()  # every entrant is ranked by positionOrder
  c = _quiet_read("ergast:rankings/f1_1950_2019?classified=true")
  assert (c.lengths() <= c.available_mask().sum(axis=1)).all()
  assert c.lengths().sum() < t.lengths().sum()
  assert (c.available_mask() == mask).all()


def test_f1_strict_options_name_the_rows(shared):
  with pytest.raises(DataError, match=r"results.csv, row \d+, column 'driverId'.*twice"):
    _quiet_read("ergast:rankings/f1_1950_2019?duplicates=error")
  with pytest.raises(DataError, match=r"column 'positionOrder'.*share this rank"):
    _quiet_read("ergast:rankings/f1_1950_2019?ties=error")


def test_tour_de_france_long(shared):
  src = "long:rankings/tour_de_france_riders.csv?event=Year&item=Rider&rank=Rank"
  # Two riders named VICENTE TRUEBA rode 1930 (lines 833 and 844): a duplicate.
  with pytest.raises(DataError) as err:
    ld.read(src + "&ties=order", on_invalid="report")
  dups = [p for p in err.value.problems if p.check == "duplicate_item"]
  assert [(p.row, p.column, p.value) for p in dups] == [(844, "Rider", "VICENTE TRUEBA")]
  with pytest.raises(DataError, match="share this rank"):
    ld.read(src + "&duplicates=best")
  t = _quiet_read(src + "&duplicates=best&ties=order")
  assert t.n_events == 113 and t.kind == "ranking"
  assert t.catalog.names[t.items_array()[0, 0]] == "MAURICE GARIN"
  assert t.times()[0] == 1903


def test_sp500_prices():
  t = ld.read("prices:sp500?covariates=")
  prices = ld._readers.load_sp500_prices()
  assert t.n_items == 20 and t.n_events == len(prices) - 1
  returns = prices.iloc[1:].to_numpy() / prices.iloc[:-1].to_numpy() - 1
  assert t.items_array()[0, 0] == np.argmax(returns[0])
  ranked = returns[np.arange(len(returns))[:, None], t.items_array()]
  assert (np.diff(ranked, axis=1) <= 0).all()
  top = ld.read("prices:sp500?top=5&kind=set")
  assert top.k == 5 and top.kind == "set"


def test_sp500_prices_are_skfolios_own_frame():
  """luce reads skfolio's file without importing skfolio: the frame must be the one
  skfolio's loader returns, index dtype and all."""
  import pandas as pd
  from skfolio.datasets import load_sp500_dataset
  pd.testing.assert_frame_equal(ld._readers.load_sp500_prices(), load_sp500_dataset())


# ---- small files written here -----------------------------------------------------

def _write(tmp_path, name, text, newline="\n", bom=False):
  path = tmp_path / name
  data = text.replace("\n", newline).encode()
  path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
  return path


DRAWS = """Datum;Nr1;Nr2;Nr3;Bonus
03.01.2021;1;5;9;2
10.01.2021;2;6;10;3
17.01.2021;3;7;8;4
"""


def test_draws_semicolon_bom_crlf_wide_columns(tmp_path):
  path = _write(tmp_path, "keno.csv", DRAWS, newline="\r\n", bom=True)
  t = ld.read(f"draws:{path}")
  assert (t.n_events, t.k, t.n_items) == (3, 3, 10)
  assert t.items_array()[0].tolist() == [0, 4, 8]
  assert t.times()[1] == np.datetime64("2021-01-10")
  assert t.events.column("ctx_bonus").to_pylist() == [2, 3, 4]
  t2 = ld.read(f"draws:{path}?columns=Nr1-Nr3&delimiter=;&n=12&k=3")
  assert t2.n_items == 12


def test_draws_newest_first_is_reversed(tmp_path):
  text = "date,balls\n2021-01-17,3 7 8\n2021-01-10,2 6 10\n2021-01-03,1 5 9\n"
  t = ld.read(f"draws:{_write(tmp_path, 'd.csv', text)}")
  assert t.items_array()[0].tolist() == [0, 4, 8]
  assert "reversed" in t.metadata["order"]


@pytest.mark.parametrize("text, check, row, column, value", [
    ("date,balls\n1/1/2020,1|2|2\n1/2/2020,1|2|3\n", "duplicate_item", 2, "balls", "2"),
    ("date,balls\n1/1/2020,1|2|3\n1/2/2020,1|2|71\n", "unknown_item", 3, "balls", "71"),
    ("date,balls\n1/1/2020,1|2|3\n1/2/2020,1|2\n1/3/2020,4|5|6\n", "event_size", 3, "balls", 2),
    ("date,balls\n1/1/2020,1|2|3\n1/5/2020,1|2|4\n1/3/2020,4|5|6\n", "time_order", 4, "date",
     "2020-01-03T00:00:00"),
    ("date,balls\n1/1/2020,1|2|3\n,1|2|4\n", "null", 3, "date", None),
    ("date,balls\n1/1/2020,1|2|3\n1/2/2020,\n", "null", 3, "balls", None),
    ("date,balls\n1/1/2020,1|2|3\n1/2/2020,1|x|3\n", "parse", 3, "balls", "x"),
])
def test_draws_each_problem_is_named(tmp_path, text, check, row, column, value):
  path = _write(tmp_path, "bad.csv", text)
  with pytest.raises(DataError) as err:
    ld.read(f"draws:{path}?n=70&date_format=%m/%d/%Y")
  problem = err.value.problems[0]
  assert (problem.check, problem.row, problem.column, problem.value) == (check, row, column, value)
  assert "bad.csv" in str(err.value) and f"row {row}" in str(err.value)


def test_unknown_column_and_report_mode(tmp_path):
  text = "date,n1,n2,n3,extra,note\n2020-01-01,1,2,2,x,y\n2020-01-02,1,2,99,x,y\n"
  path = _write(tmp_path, "d.csv", text)
  with pytest.raises(DataError) as err:
    ld.read(f"draws:{path}?n=10&context=note", on_invalid="report")
  checks = sorted(p.check for p in err.value.problems)
  assert checks == ["duplicate_item", "unknown_column", "unknown_item"]
  assert "3 problems" in str(err.value)
  problems = ld.check(f"draws:{path}?n=10&context=note")
  assert len(problems) == 3
  with pytest.raises(DataError) as first:
    ld.read(f"draws:{path}?n=10&context=note")
  assert "more problems" in str(first.value)


def test_wrong_size_for_given_game(tmp_path):
  path = _write(tmp_path, "d.csv", "date,balls\n2020-01-01,1|2|3\n2020-01-02,4|5|6\n")
  with pytest.raises(DataError, match=r"row 2, column 'balls'.*lists 3 items, the game picks 5"):
    ld.read(f"draws:{path}?k=5")


def test_ambiguous_dates_need_a_format(tmp_path):
  path = _write(tmp_path, "d.csv", "date,balls\n01/02/2020,1|2|3\n02/03/2020,4|5|6\n")
  with pytest.raises(DataError, match="date_format"):
    ld.read(f"draws:{path}")
  t = ld.read(f"draws:{path}?date_format=%d/%m/%Y")
  assert t.times()[0] == np.datetime64("2020-02-01")


def test_source_errors_list_the_valid_choices(tmp_path):
  with pytest.raises(ConfigError, match="unknown scheme 'lotto'.*draws:PATH"):
    ld.read("lotto:x.csv")
  with pytest.raises(ConfigError, match="unknown option 'delim'.*delimiter"):
    ld.read("draws:x.csv?delim=;")
  with pytest.raises(ConfigError, match="no scheme"):
    ld.read("x.csv")
  with pytest.raises(DataError, match="no such file"):
    ld.read(f"draws:{tmp_path}/missing.csv")
  assert issubclass(ConfigError, luce.LuceError)


SOC = """# FILE NAME: test.soc
# DATA TYPE: soc
# NUMBER ALTERNATIVES: 3
# ALTERNATIVE NAME 1: Apple
# ALTERNATIVE NAME 2: Banana
# ALTERNATIVE NAME 3: Cherry
5: 1,2,3
2: 3,1,2
"""

TOC = SOC.replace("soc", "toc").replace("2: 3,1,2", "2: 3,{1,2}")


def test_preflib_soc_weights_and_expand(tmp_path):
  path = _write(tmp_path, "t.soc", SOC)
  t = ld.read(f"preflib:{path}")
  assert t.items_array().tolist() == [[0, 1, 2], [2, 0, 1]]
  assert t.weights().tolist() == [5.0, 2.0]
  assert t.catalog.names == ("Apple", "Banana", "Cherry")
  e = ld.read(f"preflib:{path}?counts=expand")
  assert e.n_events == 7 and (e.weights() == 1).all()


def test_preflib_legacy_format(tmp_path):
  text = "3\n1,Apple\n2,Banana\n3,Cherry\n7,7,2\n5,1,2,3\n2,3,1,2\n"
  t = ld.read(f"preflib:{_write(tmp_path, 'old.soc', text)}")
  assert t.items_array().tolist() == [[0, 1, 2], [2, 0, 1]]


def test_preflib_toc_ties(tmp_path):
  path = _write(tmp_path, "t.toc", TOC)
  with pytest.raises(DataError, match=r"t.toc, row 8, column 'order': tied items"):
    ld.read(f"preflib:{path}")
  assert ld.read(f"preflib:{path}?ties=order").items_array()[1].tolist() == [2, 0, 1]
  assert ld.read(f"preflib:{path}?ties=truncate").lengths().tolist() == [3, 1]


def test_prices_file_with_gaps(tmp_path):
  text = "date,A,B,C\n2020-01-01,10,20,\n2020-01-02,11,19,5\n2020-01-03,11,21,6\n"
  t = ld.read(f"prices:{_write(tmp_path, 'p.csv', text)}?covariates=")
  assert t.items_array().tolist() == [[0, 1, -1], [2, 1, 0]]
  assert t.available_mask().tolist() == [[True, True, False], [True, True, True]]
  bad = _write(tmp_path, "bad.csv", "date,A,B\n2020-01-01,10,x\n2020-01-02,-1,2\n")
  with pytest.raises(DataError) as err:
    ld.read(f"prices:{bad}?covariates=", on_invalid="report")
  found = [(p.check, p.row, p.column) for p in err.value.problems]
  assert found[:2] == [("parse", 2, "B"), ("parse", 3, "A")]
  assert found[2][0] == "event_size"  # so the day after has no asset with a return
