"""Block bootstrap and Diebold-Mariano: false alarms without signal, detection with it."""

import numpy as np
import pytest
from scipy import stats

import luce
from luce import eval as le


def _ar1(rng, shape, phi=0.3):
  e = rng.normal(size=shape)
  x = np.empty(shape)
  x[..., 0] = e[..., 0]
  for t in range(1, shape[-1]):
    x[..., t] = phi * x[..., t - 1] + e[..., t]
  return x


def test_no_signal_is_rarely_significant(rng):
  # 1000 independent series of autocorrelated noise around 0, tested at once.
  # Measured size at this length: 6.7% (2000 series), a little over the
  # nominal 5% as Diebold-Mariano is with autocorrelation. The bounds sit
  # 3.5 standard errors above that, so a chance failure is rare, while a test
  # whose size had doubled would fail.
  d = _ar1(rng, (1000, 300))
  out = le.compare(d, samples=1000, seed=1)
  assert out["significant"][:100].sum() <= 20   # "most of 100 seeds": far fewer than half
  assert out["significant"].mean() <= 0.095, out["significant"].mean()
  assert (out["p_value"] < 0.05).mean() <= 0.095
  covered = (out["ci_low"] <= 0) & (0 <= out["ci_high"])
  assert covered.mean() >= 0.88


def test_planted_signal_is_significant(rng):
  d = _ar1(rng, (100, 300)) + 0.5
  out = le.compare(d, samples=1000, seed=2)
  assert out["significant"].mean() >= 0.95
  assert np.all(out["mean"] > 0)
  one = le.compare(d[0], samples=1000)
  assert one["significant"] is True and one["ci_low"] > 0
  assert le.verdict("the model", "uniform", one).startswith("the model has significant skill")
  worse = le.compare(-d[0], samples=1000)
  assert "significantly worse" in le.verdict("the model", "uniform", worse)
  none = le.compare(d[0] - d[0].mean(), samples=1000)
  assert "no significant difference" in le.verdict("the model", "uniform", none)


def test_bootstrap_means_match_direct_resampling(rng):
  d = rng.normal(size=23)
  block, samples, seed = 4, 50, 3
  means = le.block_bootstrap_means(d, block=block, samples=samples, seed=seed)
  starts = np.random.default_rng(seed).integers(0, 23, size=(samples, 6))
  idx = ((starts[:, :, None] + np.arange(block)) % 23).reshape(samples, -1)[:, :23]
  np.testing.assert_allclose(means, d[idx].mean(axis=1), rtol=1e-12)


def test_diebold_mariano_lag0_is_a_t_test(rng):
  d = rng.normal(0.1, 1.0, size=200)
  dm = le.diebold_mariano(d, lag=0)
  # With lag 0 the 1/n variance and the HLN factor sqrt((n-1)/n) give exactly the one-sample t statistic and its p-value.
  t = stats.ttest_1samp(d, 0.0)
  assert float(dm["statistic"]) == pytest.approx(t.statistic, rel=1e-10)
  assert float(dm["p_value"]) == pytest.approx(t.pvalue, rel=1e-8)


def test_bad_inputs():
  with pytest.raises(luce.InputError, match="not finite"):
    le.compare(np.array([0.1, np.nan, 0.2]))
  with pytest.raises(luce.InputError, match="at least 2"):
    le.compare(np.array([0.1]))
  with pytest.raises(luce.InputError, match="block"):
    le.compare(np.zeros(10), block=20)
  with pytest.raises(luce.InputError, match="level"):
    le.compare(np.zeros(10), level=5)
