"""Portfolio accounting against a hand-computed 3-day example with costs."""

import numpy as np
import pytest

import luce
from luce import eval as le

# 3 days, 3 assets; long the top 1.
SCORES = np.array([[3.0, 1.0, 0.0],    # day 0: hold asset 0
                   [3.0, 1.0, 0.0],    # day 1: keep asset 0
                   [0.0, 2.0, 1.0]])   # day 2: switch to asset 1
RETURNS = np.array([[0.10, 0.00, -0.05],
                    [-0.10, 0.05, 0.00],
                    [0.02, 0.04, 0.00]])
AVAIL = np.ones((3, 3), bool)


def test_three_day_long_top1_with_10bps():
  w = le.top_k_weights(SCORES, AVAIL, 1)
  out = le.run_weights(w, RETURNS, cost_bps=10.0)
  # day 0 buys the book (turnover 1, cost 0.001); day 1 holds asset 0 (its weight
  # drifts to 1.1/1.1 = 1: no trade); day 2 sells 0 and buys 1 (turnover 2, cost 0.002).
  np.testing.assert_allclose(out["turnover"], [1.0, 0.0, 2.0])
  np.testing.assert_allclose(out["costs"], [0.001, 0.0, 0.002])
  np.testing.assert_allclose(out["returns"], [0.099, -0.10, 0.038])
  s = le.portfolio_summary(out)
  # wealth 1.099, 0.9891, 1.0266858: drawdown 1 - 0.9891 / 1.099 = 0.1.
  assert s["total_return"] == pytest.approx(1.099 * 0.9 * 1.038 - 1)
  assert s["max_drawdown"] == pytest.approx(0.1)
  assert s["win_rate"] == pytest.approx(2 / 3)
  assert s["turnover"] == pytest.approx(1.0)
  r = np.array([0.099, -0.10, 0.038])
  assert s["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252))


def test_three_day_equal_weight_drift():
  out = le.run_weights(le.equal_weights(AVAIL), RETURNS, cost_bps=10.0)
  # day 1: the day-0 book (1/3 each) drifted to (1.1, 1.0, 0.95) / 3 / 1.016667.
  g0 = (0.10 + 0.0 - 0.05) / 3
  drift = np.array([1.1, 1.0, 0.95]) / 3 / (1 + g0)
  tau1 = np.abs(1 / 3 - drift).sum()
  assert out["turnover"][0] == pytest.approx(1.0)
  assert out["turnover"][1] == pytest.approx(tau1)
  assert out["returns"][1] == pytest.approx((-0.10 + 0.05) / 3 - 0.001 * tau1)


def test_long_short_weights_and_errors():
  w = le.top_k_weights(SCORES, AVAIL, 1, long_short=True)
  np.testing.assert_allclose(w[2], [-1.0, 1.0, 0.0])
  np.testing.assert_allclose(w.sum(axis=1), 0.0)
  with pytest.raises(luce.InputError, match="k=2"):
    le.top_k_weights(SCORES, AVAIL, 2, long_short=True)
  with pytest.raises(luce.ShapeError, match="weights"):
    le.run_weights(np.ones((2, 3)), RETURNS, cost_bps=1.0)
  with pytest.raises(luce.InputError, match="cost_bps"):
    le.run_weights(np.ones((3, 3)), RETURNS, cost_bps=-1.0)


def test_sharpe_difference_interval(rng):
  a = rng.normal(0.001, 0.01, size=1000)
  out = le.sharpe_difference(a, a, samples=200)
  assert out["mean"] == 0 and out["ci_low"] == 0 and out["ci_high"] == 0
  b = rng.normal(0.0, 0.01, size=1000)
  out = le.sharpe_difference(a + 0.003, b, samples=500)
  assert out["ci_low"] > 0


def test_extremes_by_hand():
  # 2 days, 4 assets, k = 1; chance = 1/4 per day.
  scores = np.array([[4., 3., 2., 1.], [1., 2., 3., 4.]])
  returns = np.array([[0.05, 0.0, 0.01, -0.02],     # model's pick (0) is the day's best
                      [0.01, 0.02, 0.0, -0.09]])   # model's pick (3) is the day's worst
  e = le.extremes(scores, returns, np.ones((2, 4), bool), k=1)
  assert e["days"] == 2 and e["chance"] == pytest.approx(0.25)
  assert e["top"]["mean"] == pytest.approx(0.5) and e["bottom"]["mean"] == pytest.approx(0.5)
  assert e["vol_corr"] is None and e["vol_days"] == 0   # no past days for the volatility
  # An asset without a return that day is neither picked nor a target.
  returns[0, 0] = np.nan
  e = le.extremes(scores, returns, np.ones((2, 4), bool), k=1)
  # Day 0 now picks asset 1 (best score among assets 1-3), while the best return
  # is asset 2's and the worst asset 3's: no hit at either end; chance 1/3.
  assert e["top"]["mean"] == pytest.approx(0.0) and e["bottom"]["mean"] == pytest.approx(0.5)
  assert e["chance"] == pytest.approx((1 / 3 + 1 / 4) / 2)

def test_extremes_tell_size_from_direction(rng):
  T, n, k, window = 400, 60, 5, 20
  vol = np.exp(rng.normal(size=n))                      # each asset's own volatility
  past = rng.normal(size=(window, n)) * vol
  returns = rng.normal(size=(T, n)) * vol
  avail = np.ones((T, n), bool)
  # Scores = volatility: both ends hit above chance, scores track trailing volatility.
  e = le.extremes(np.broadcast_to(vol, (T, n)), returns, avail, k=k, past_returns=past, window=window)
  assert e["top"]["mean"] > e["chance"] + 4 * e["top"]["se"]
  assert e["bottom"]["mean"] > e["chance"] + 4 * e["bottom"]["se"]
  assert e["vol_corr"] > 0.5 and e["vol_days"] == T
  assert "move a lot" in le.describe_extremes(e)
  # Scores = the day's own returns (a cheat): every pick among the best, none among the worst.
  e = le.extremes(returns, returns, avail, k=k, past_returns=past, window=window)
  assert e["top"]["mean"] == k and e["bottom"]["mean"] == 0
  assert "winners" in le.describe_extremes(e)
  # Scores = minus volatility: quiet assets, both ends below chance.
  e = le.extremes(np.broadcast_to(-vol, (T, n)), returns, avail, k=k, past_returns=past, window=window)
  assert e["top"]["mean"] < e["chance"] - 4 * e["top"]["se"] and e["vol_corr"] < -0.5
  assert "quiet assets" in le.describe_extremes(e)
  # Noise scores: neither end above chance (4 standard errors: a rare false alarm).
  e = le.extremes(rng.normal(size=(T, n)), returns, avail, k=k, past_returns=past, window=window)
  assert abs(e["top"]["mean"] - e["chance"]) < 4 * e["top"]["se"]
  assert abs(e["bottom"]["mean"] - e["chance"]) < 4 * e["bottom"]["se"]
  assert abs(e["vol_corr"]) < 0.1


def test_extremes_bad_input():
  s = np.zeros((3, 4))
  with pytest.raises(luce.InputError, match="k=3"):
    le.extremes(s, s, np.ones((3, 4), bool), k=3)
  with pytest.raises(luce.ShapeError, match="one shape"):
    le.extremes(s, s[:2], np.ones((3, 4), bool), k=1)
  with pytest.raises(luce.ShapeError, match="past_returns"):
    le.extremes(s, s, np.ones((3, 4), bool), k=1, past_returns=np.zeros((5, 3)))
  with pytest.raises(luce.InputError, match="window"):
    le.extremes(s, s, np.ones((3, 4), bool), k=1, window=1)


def test_tradable_uses_only_prices_before_the_day():
  past = np.array([[0.01, np.nan, 0.0]])
  r = np.array([[0.02, 0.01, -0.01],
                [0.01, 0.03, np.nan],       # asset 2 has no price on day 1 (delisted)
                [0.00, 0.01, np.nan]])
  np.testing.assert_array_equal(le.tradable_before(r, past),
                                [[True, False, True], [True, True, True], [True, True, False]])
  np.testing.assert_array_equal(le.tradable_before(r)[0], [False, False, False])


def test_portfolio_does_not_peek_at_the_days_own_prices():
  """Asset 2 is delisted on day 1: whoever held it at the close of day 0 still held it
  into day 1 (earning 0 there). Equal weight holds 1/3 of it that day; a backtest that
  read day 1's missing price would have dropped it in advance (1/2 on the others)."""
  past = np.zeros((1, 3))
  r = np.array([[0.02, 0.01, -0.01], [0.01, 0.03, np.nan], [0.00, 0.01, np.nan]])
  scores = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, -np.inf], [0.0, 1.0, -np.inf]])
  out = le.portfolio_backtest(scores, r, le.tradable_before(r, past), k=1, cost_bps=0.0,
                              long_short=False, samples=10)
  equal = out["series"]["equal_weight"]
  np.testing.assert_allclose(equal[:2], [(0.02 + 0.01 - 0.01) / 3, (0.01 + 0.03 + 0.0) / 3])
  # The top-1 pick of day 1 is the best *scored* tradable asset (asset 1), not the
  # delisted one, whose score the model could not give (-inf).
  np.testing.assert_allclose(out["series"]["long"][:2], [-0.01, 0.03])
