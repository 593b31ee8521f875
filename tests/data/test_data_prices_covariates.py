"""Covariates of `prices:` (issue 12): trailing volatility, momentum and short-term
reversal from the prices strictly before the day ranked.

The values are checked against pandas rolling computations and a loop written out
by hand; the no-look-ahead check changes the prices of day t and later and asks
that nothing known on days <= t moved, and a planted leak shows it has teeth.
"""

import os
import statistics
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from luce import data as ld
from luce.data import _readers
from luce.errors import ConfigError, DataError


def _prices(rng, days=90, assets=4):
  """float64[days, assets] positive random-walk prices."""
  steps = rng.normal(0.0005, 0.02, size=(days, assets))
  return 50.0 * np.exp(np.cumsum(steps, axis=0)) * rng.uniform(0.5, 2.0, size=assets)


def _write(path, prices, start="2021-01-01"):
  """A wide CSV (date, A0, A1, ...); NaN prices as empty cells. Returns the path."""
  dates = np.datetime64(start) + np.arange(len(prices))
  head = "date," + ",".join(f"A{j}" for j in range(prices.shape[1]))
  rows = [f"{d}," + ",".join("" if np.isnan(p) else repr(float(p)) for p in row)
          for d, row in zip(dates, prices)]
  path.write_text("\n".join([head, *rows]) + "\n")
  return path


def _pandas_covariates(frame: pd.DataFrame, vol=(), mom=(), rev=()) -> dict:
  """The covariates by pandas: row d from rows < d (the `.shift`s), NaN when incomplete."""
  r = frame.pct_change(fill_method=None)
  out = {}
  for w in vol:
    out[f"vol_{w}"] = r.rolling(w).std().shift(1)
  for w, s in mom:
    out[f"mom_{w}" + ("" if s == 5 else f"_{s}")] = frame.shift(s + 1) / frame.shift(w + 1) - 1
  for w in rev:
    out[f"rev_{w}"] = frame.shift(1) / frame.shift(w + 1) - 1
  return out


def _rows(table, frame):
  """Row of `frame` (price day) of each event of `table`."""
  return frame.index.get_indexer(pd.DatetimeIndex(table.times()))


# ---- values ------------------------------------------------------------------------

def test_values_match_pandas_rolling_and_a_hand_loop(tmp_path, rng):
  prices = _prices(rng, days=90, assets=4)
  path = _write(tmp_path / "p.csv", prices)
  t = ld.read(f"prices:{path}?covariates=vol:10,mom:20/3,rev:4")
  assert t.covariate_columns() == ["cov_vol_10", "cov_mom_20_3", "cov_rev_4"]
  frame = pd.read_csv(path, index_col=0, parse_dates=True)
  # The first event is the first day whose 20-day window is full: row 21 (rows 0..20 read).
  assert t.n_events == 90 - 1 - 20
  rows = _rows(t, frame)
  assert rows[0] == 21 and (np.diff(rows) == 1).all()
  assert t.metadata["warmup_days_dropped"] == "20"
  assert t.metadata["first_event"] == str(frame.index[21].date())
  want = _pandas_covariates(frame, vol=(10,), mom=((20, 3),), rev=(4,))
  for name, expected in want.items():
    got = t.covariates(name)
    assert got.shape == (t.n_events, 4) and np.isfinite(got).all(), name
    np.testing.assert_allclose(got, expected.to_numpy()[rows], rtol=1e-12, atol=1e-15,
                               err_msg=name)
  # Written out by hand for one asset on one day: only the prices of rows < d.
  d, a = int(rng.integers(21, 90)), int(rng.integers(4))
  e = d - 21
  p = prices[:d, a]  # what is known before day d
  back = [p[s] / p[s - 1] - 1 for s in range(d - 10, d)]
  assert t.covariates("vol_10")[e, a] == pytest.approx(statistics.stdev(back), rel=1e-10)
  assert t.covariates("mom_20_3")[e, a] == pytest.approx(p[d - 4] / p[d - 21] - 1, rel=1e-10)
  assert t.covariates("rev_4")[e, a] == pytest.approx(p[d - 1] / p[d - 5] - 1, rel=1e-10)
  # The outcome is still day d's return, not a covariate's.
  day_returns = prices[d] / prices[d - 1] - 1
  assert t.items_array()[e].tolist() == np.argsort(-day_returns, kind="stable").tolist()


def test_defaults_are_vol20_mom60_skip5_rev5(tmp_path, rng):
  prices = _prices(rng, days=100, assets=3)
  path = _write(tmp_path / "p.csv", prices)
  t = ld.read(f"prices:{path}")
  assert t.covariate_columns() == ["cov_vol_20", "cov_mom_60", "cov_rev_5"]
  assert t.metadata["covariate_windows"] == "vol:20,mom:60/5,rev:5"
  assert t.n_events == 100 - 1 - 60 and t.metadata["warmup_days_dropped"] == "60"
  frame = pd.read_csv(path, index_col=0, parse_dates=True)
  rows = _rows(t, frame)
  assert rows[0] == 61
  for name, expected in _pandas_covariates(frame, vol=(20,), mom=((60, 5),), rev=(5,)).items():
    np.testing.assert_allclose(t.covariates(name), expected.to_numpy()[rows], rtol=1e-12,
                               atol=1e-15, err_msg=name)
  # Bare names take the default windows; the same table.
  same = ld.read(f"prices:{path}?covariates=vol,mom,rev")
  assert same.content_hash == t.content_hash
  # mom:60/5 is the default skip: the same column name.
  assert ld.read(f"prices:{path}?covariates=mom:60/5").covariate_columns() == ["cov_mom_60"]


def test_no_covariates_keeps_every_day(tmp_path, rng):
  prices = _prices(rng, days=30, assets=3)
  path = _write(tmp_path / "p.csv", prices)
  t = ld.read(f"prices:{path}?covariates=")
  assert t.covariate_columns() == [] and t.n_events == 29
  assert "warmup_days_dropped" not in t.metadata
  # The windows set the start, and the rankings of the common days are the same.
  v = ld.read(f"prices:{path}?covariates=vol:5")
  assert v.n_events == 29 - 5
  np.testing.assert_array_equal(v.items_array(), t.items_array()[5:])
  np.testing.assert_array_equal(v.times(), t.times()[5:])
  # The old gap file (one day without a return for C) reads as before.
  gap = tmp_path / "g.csv"
  gap.write_text("date,A,B,C\n2020-01-01,10,20,\n2020-01-02,11,19,5\n2020-01-03,11,21,6\n")
  g = ld.read(f"prices:{gap}?covariates=")
  assert g.items_array().tolist() == [[0, 1, -1], [2, 1, 0]]


# ---- no look-ahead -------------------------------------------------------------------

def _moved_before(tmp_path, prices, t, rng, tag):
  """(column, event day) pairs of days <= t whose covariates change when the prices
  of days t and later change. Empty for a reader that looks only backwards."""
  later = prices.copy()
  later[t:] *= rng.uniform(0.5, 1.5, size=later[t:].shape)
  later[t] *= 3.0  # a large move on day t itself
  source = "?covariates=vol:10,mom:20/3,rev:4"
  a = ld.read(f"prices:{_write(tmp_path / f'{tag}_a.csv', prices)}{source}")
  b = ld.read(f"prices:{_write(tmp_path / f'{tag}_b.csv', later)}{source}")
  day_t = np.datetime64("2021-01-01") + t
  upto = a.times() <= day_t
  assert upto.sum() == (b.times() <= day_t).sum() > 0
  moved = []
  for name in a.covariate_columns():
    x, y = a.covariates(name)[upto], b.covariates(name)[upto]
    for e in np.flatnonzero(~(x == y).all(axis=1)):
      moved.append((name, str(a.times()[e])[:10]))
  # The check can see changes at all: day t's outcome (its return) did move.
  returns = [np.array(x.events.column("ctx_returns").to_pylist(), dtype=float)[upto]
             for x in (a, b)]
  assert not np.array_equal(*returns)
  return moved


@pytest.mark.parametrize("t", [21, 22, 40, 89])
def test_covariates_of_day_t_ignore_prices_of_day_t_and_later(tmp_path, rng, t):
  prices = _prices(rng, days=90, assets=5)
  assert _moved_before(tmp_path, prices, t, rng, "ok") == []
  # And the days after t did move (the perturbation reached the covariates).
  if t < 85:
    later = prices.copy()
    later[t:] *= 2.0 + rng.uniform(0, 1, size=later[t:].shape)
    a = ld.read(f"prices:{_write(tmp_path / 'x.csv', prices)}?covariates=vol:10")
    b = ld.read(f"prices:{_write(tmp_path / 'y.csv', later)}?covariates=vol:10")
    after = a.times() > np.datetime64("2021-01-01") + t
    assert not np.allclose(a.covariates("vol_10")[after], b.covariates("vol_10")[after])


def _leaky(kind):
  """A deliberately wrong `price_covariates`: `kind` reads day d's own price."""
  honest = _readers.price_covariates

  def leaky(prices, specs):
    out = honest(prices, specs)
    frame = pd.DataFrame(prices)
    for c in specs:
      if c.kind == kind == "vol":  # includes day d's return
        out[c.column] = frame.pct_change(fill_method=None).rolling(c.window).std().to_numpy()
      elif c.kind == kind == "rev":  # p_d / p_{d-W} - 1: ends on day d
        out[c.column] = (frame / frame.shift(c.window) - 1).to_numpy()
    return out
  return leaky


@pytest.mark.parametrize("kind", ["vol", "rev"])
def test_a_planted_leak_is_caught(tmp_path, rng, monkeypatch, kind):
  prices = _prices(rng, days=90, assets=5)
  t = int(rng.integers(25, 85))
  monkeypatch.setattr(_readers, "price_covariates", _leaky(kind))
  moved = _moved_before(tmp_path, prices, t, rng, "leak")
  day_t = str(np.datetime64("2021-01-01") + t)
  column = "cov_vol_10" if kind == "vol" else "cov_rev_4"
  # Exactly the leaky column, on day t itself (the only day <= t that reads day t).
  assert moved == [(column, day_t)]


# ---- gaps and late listings -----------------------------------------------------------

def test_an_asset_whose_window_reads_a_missing_price_sits_out(tmp_path, rng):
  prices = _prices(rng, days=60, assets=3)
  prices[30, 1] = np.nan  # a gap: asset A1 has no price on row 30
  prices[:25, 2] = np.nan  # a late listing: A2 starts on row 25
  path = _write(tmp_path / "p.csv", prices)
  with pytest.warns(UserWarning, match=r"pairs left out of the rankings.*'A2'"):
    t = ld.read(f"prices:{path}?covariates=vol:5,rev:3")
  frame = pd.read_csv(path, index_col=0, parse_dates=True)
  rows = _rows(t, frame)
  assert rows[0] == 6 and t.n_events == 60 - 6
  avail = t.available_mask()
  # A1: no return on rows 30, 31; vol:5 on row d reads rows d-6..d-1 -> out on 32..36.
  out_a1 = rows[~avail[:, 1]]
  assert out_a1.tolist() == list(range(30, 37))
  # A2: its first return is row 26; vol:5 needs rows d-6 >= 25, so it joins on row 31.
  assert rows[avail[:, 2]].min() == 31 and avail[rows >= 31, 2].all()
  # Never NaN where available, and equal to pandas there.
  want = _pandas_covariates(frame, vol=(5,), rev=(3,))
  for name, expected in want.items():
    got = t.covariates(name)
    assert np.isfinite(got[avail]).all() and np.isnan(got[~avail]).all()
    np.testing.assert_allclose(got[avail], expected.to_numpy()[rows][avail], rtol=1e-12)
  # Counted: A1 on rows 32..36 (5), A2 on rows 26..30 (5): pairs with a return but no window.
  assert t.metadata["covariate_excluded"] == "10"
  assert t.metadata["covariate_days_dropped"] == "0"
  ranked = t.inclusion_matrix()
  assert not (ranked & ~avail).any()


def test_a_day_left_with_no_asset_is_dropped(tmp_path, rng):
  prices = _prices(rng, days=30, assets=2)
  prices[10, 0] = np.nan  # A0: no returns on rows 10, 11
  prices[12, 1] = np.nan  # A1: no returns on rows 12, 13
  path = _write(tmp_path / "p.csv", prices)
  # rev:2 on row d reads rows d-1 and d-3: on row 13 A0 has a return but reads row 10,
  # and A1 has none, so the day has no asset left; on row 15 A1 reads row 12 and sits out.
  with pytest.warns(UserWarning, match=r"2 \(day, asset\) pairs.*1 days were left with no asset"):
    t = ld.read(f"prices:{path}?covariates=rev:2")
  rows = _rows(t, pd.read_csv(path, index_col=0, parse_dates=True))
  assert rows.tolist() == [d for d in range(3, 30) if d != 13]
  assert t.metadata["covariate_days_dropped"] == "1"
  assert t.metadata["covariate_excluded"] == "2"
  assert t.available_mask()[rows.tolist().index(15)].tolist() == [True, False]


# ---- options ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec, match", [
    ("beta:20", r"covariates='beta:20': unknown covariate 'beta'.*valid covariates: vol"),
    ("vol:0", r"covariates='vol:0': 'vol:0': the window must be a positive"),
    ("rev:-3", r"covariates='rev:-3'.*positive"),
    ("mom:-60", r"covariates='mom:-60'.*positive"),
    ("vol:1", r"covariates='vol:1'.*at least 2"),
    ("vol:x", r"covariates='vol:x'.*'x' is not an integer"),
    ("vol:20/2", r"only mom takes a skip"),
    ("mom:5", r"'mom:5': the skip must be 0 <= S < W = 5.*mom:5/4"),
    ("mom:20/20", r"the skip must be"),
    ("vol:20,vol", r"repeats column 'cov_vol_20'"),
])
def test_bad_covariate_options_raise_config_errors(spec, match):
  with pytest.raises(ConfigError, match=match):
    ld.read(f"prices:sp500?covariates={spec}")


def test_too_short_a_history_is_a_data_error(tmp_path, rng):
  path = _write(tmp_path / "p.csv", _prices(rng, days=40, assets=2))
  with pytest.raises(DataError, match=r"p.csv: 40 days of prices, but covariates="
                                      r"vol:20,mom:60/5,rev:5.*covariates= for none"):
    ld.read(f"prices:{path}")
  assert len(ld.read(f"prices:{path}?covariates=vol:20")) == 40 - 21


def test_covariates_survive_a_parquet_round_trip(tmp_path, rng):
  t = ld.read(f"prices:{_write(tmp_path / 'p.csv', _prices(rng, days=80))}")
  ld.write(t, tmp_path / "t.parquet")
  back = ld.read(f"events:{tmp_path / 't.parquet'}")
  assert back.content_hash == t.content_hash
  np.testing.assert_array_equal(back.covariates("mom_60"), t.covariates("mom_60"))


# ---- the real prices:sp500 ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sp500():
  pytest.importorskip("skfolio", reason="prices:sp500 is shipped inside skfolio")
  return ld.read("prices:sp500"), _readers.load_sp500_prices()


def test_sp500_covariates(sp500):
  t, frame = sp500
  assert frame.shape == (8313, 20)
  assert t.n_items == 20 and t.n_events == len(frame) - 1 - 60 == 8252
  assert t.covariate_columns() == ["cov_vol_20", "cov_mom_60", "cov_rev_5"]
  assert t.times()[0] == np.datetime64(frame.index[61], "s")
  assert t.metadata["covariate_excluded"] == "0"
  rows = _rows(t, frame)
  want = _pandas_covariates(frame, vol=(20,), mom=((60, 5),), rev=(5,))
  for name, expected in want.items():
    got = t.covariates(name)
    assert got.shape == (8252, 20) and not np.isnan(got).any(), name
    np.testing.assert_allclose(got, expected.to_numpy()[rows], rtol=1e-9, atol=1e-12,
                               err_msg=name)
  # Never negative; exactly 0 where a price stood still for the whole window (skfolio's
  # RRC is flat in 1990-92: 202 such days).
  assert (t.covariates("vol_20") >= 0).all()
  # The outcome of each day is that day's return, best first.
  returns = frame.to_numpy()[rows] / frame.to_numpy()[rows - 1] - 1
  assert (t.items_array()[:, 0] == returns.argmax(axis=1)).all()
  plain = ld.read("prices:sp500?covariates=")
  assert plain.n_events == len(frame) - 1 and plain.covariate_columns() == []
  np.testing.assert_array_equal(plain.items_array()[60:], t.items_array())


def test_sp500_long_window_computed_in_chunks(sp500):
  # vol:250 over 20 assets is computed in blocks of rows (bounded memory): same values.
  _, frame = sp500
  t = ld.read("prices:sp500?covariates=vol:250")
  assert t.n_events == len(frame) - 1 - 250
  want = frame.pct_change(fill_method=None).rolling(250).std().shift(1).to_numpy()
  np.testing.assert_allclose(t.covariates("vol_250"), want[_rows(t, frame)], rtol=1e-9,
                             atol=1e-12)


def test_sp500_content_hash_is_deterministic(sp500):
  t, _ = sp500
  assert ld.read("prices:sp500").content_hash == t.content_hash
  code = "from luce import data as ld; print(ld.read('prices:sp500').content_hash)"
  env = dict(os.environ, PYTHONHASHSEED="12345")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == t.content_hash
  assert ld.read("prices:sp500?covariates=vol:20").content_hash != t.content_hash
