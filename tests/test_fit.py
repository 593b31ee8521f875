"""fit_pl against autodiff, choix and known generating models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luce
from luce.errors import ConvergenceError, InputError, ShapeError
from luce.fit import _derivatives
from luce_test_utils import gumbel_top_k


def np_log_lik(theta, rankings, where=None, counts=None):
  """float64 log-likelihood straight from the definition."""
  total = 0.0
  for i, row in enumerate(rankings):
    race = np.ones(len(theta), bool) if where is None else where[i].copy()
    c = 1.0 if counts is None else counts[i]
    for item in row:
      if item < 0:
        break
      vals = theta[race]
      mx = vals.max()
      total += c * (theta[item] - mx - np.log(np.exp(vals - mx).sum()))
      race[item] = False
  return total


def sample_top_k(rng, theta, m, k, where=None):
  """Top-k lists of m events from static strengths theta."""
  return gumbel_top_k(rng, np.broadcast_to(theta, (m, len(theta))), k, where)


def top1_choices(rankings, n, where=None):
  """Decompose top-k lists into choice data for choix.ilsr_top1."""
  data = []
  for i, row in enumerate(rankings):
    race = set(range(n)) if where is None else set(np.flatnonzero(where[i]).tolist())
    for item in row:
      if item < 0:
        break
      race.discard(int(item))
      if not race:
        break
      data.append((int(item), sorted(race)))
  return data


@pytest.mark.parametrize("use_where", [False, True])
def test_derivatives_match_autodiff(rng, use_where):
  n, m, k = 9, 25, 6
  r = sample_top_k(rng, rng.normal(size=n), m, k)
  r[2, 4:] = -1
  r[7, 1:] = -1
  where = None
  if use_where:
    where = rng.random((m, n)) < 0.6
    rows, slots = np.nonzero(r >= 0)
    where[rows, r[rows, slots]] = True   # listed items are available
    where[0] = False
    where[0, r[0]] = True   # a complete row: lists every available item
  c = rng.random(m) + 0.5
  n_avail = np.full(m, n) if where is None else where.sum(1)
  complete = (r >= 0).sum(1) == n_avail

  def ll_ref(th):
    total = 0.0
    for i in range(m):
      race = jnp.ones(n, bool) if where is None else jnp.asarray(where[i])
      for item in r[i]:
        if item < 0:
          break
        total += c[i] * (th[item] - jax.nn.logsumexp(jnp.where(race, th, -jnp.inf)))
        race = race.at[item].set(False)
    return total

  with jax.enable_x64(True):
    th = jnp.asarray(rng.normal(size=n))
    ll, g, fisher = _derivatives(th, jnp.asarray(r), None if where is None else jnp.asarray(where),
                                 jnp.asarray(c), jnp.asarray(complete), n=n)
    assert float(ll) == pytest.approx(float(ll_ref(th)), rel=1e-12)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(ll_ref)(th)), atol=1e-10)
    np.testing.assert_allclose(np.asarray(fisher), -np.asarray(jax.hessian(ll_ref)(th)), atol=1e-10)


def test_top_k_matches_choix_ilsr_top1(rng):
  choix = pytest.importorskip("choix")
  n, m, k = 30, 1500, 3
  theta = rng.normal(size=n)
  r = sample_top_k(rng, theta, m, k)
  ours = luce.fit_pl(r, n, prior=0.0)
  theirs = choix.ilsr_top1(n, top1_choices(r, n), tol=1e-10)
  theirs = theirs - theirs.mean()
  assert np.corrcoef(ours.log_strengths, theirs)[0, 1] >= 0.999
  ll_ours = np_log_lik(ours.log_strengths, r)
  ll_theirs = np_log_lik(theirs, r)
  assert ours.log_likelihood == pytest.approx(ll_ours, rel=1e-10)
  assert ll_ours >= ll_theirs - 1e-9 * abs(ll_theirs)


def test_complete_rankings_of_choice_sets_match_choix_ilsr_rankings(rng):
  choix = pytest.importorskip("choix")
  n, m = 20, 400
  theta = rng.normal(size=n)
  where = rng.random((m, n)) < 0.4
  where[:, :2] = True
  r = sample_top_k(rng, theta, m, n, where=where)
  rows = [row[row >= 0] for row in r]
  r = np.stack([np.pad(x, (0, n - len(x)), constant_values=-1) for x in rows])
  ours = luce.fit_pl(r, n, where=luce.listed_items(r, n), prior=0.0)
  theirs = choix.ilsr_rankings(n, [x.tolist() for x in rows], tol=1e-10)
  theirs = theirs - theirs.mean()
  assert np.corrcoef(ours.log_strengths, theirs)[0, 1] >= 0.999
  listed = luce.listed_items(r, n)
  assert np_log_lik(ours.log_strengths, r, listed) >= np_log_lik(theirs, r, listed) - 1e-7


def test_recovers_generating_strengths_with_calibrated_stderr(rng):
  n, m, k = 40, 4000, 5
  theta = rng.normal(size=n)
  theta -= theta.mean()
  r = sample_top_k(rng, theta, m, k)
  fit = luce.fit_pl(r, n)
  assert np.corrcoef(fit.log_strengths, theta)[0, 1] > 0.98
  z = (fit.log_strengths - theta) / fit.stderr
  # z-scores of a calibrated fit are ~N(0, 1): their mean square is ~1.
  assert 0.5 < np.mean(z**2) < 1.7, np.mean(z**2)
  assert abs(fit.log_strengths.mean()) < 1e-10


def test_counts_equal_repeated_rows(rng):
  n = 8
  r = sample_top_k(rng, rng.normal(size=n), 50, 3)
  counts = rng.integers(1, 4, size=50)
  a = luce.fit_pl(r, n, counts=counts.astype(float))
  b = luce.fit_pl(np.repeat(r, counts, axis=0), n)
  np.testing.assert_allclose(a.log_strengths, b.log_strengths, atol=1e-8)
  assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=1e-10)


def test_unseen_and_undefeated_items_stay_finite_with_prior(rng):
  n = 6
  r = np.array([[0, 1, 2], [0, 2, 1], [0, 1, -1]], np.int32)  # 0 always wins; 3-5 never listed
  fit = luce.fit_pl(r, n, prior=0.1)
  assert np.all(np.isfinite(fit.log_strengths)) and np.all(np.isfinite(fit.stderr))
  assert fit.log_strengths[0] == fit.log_strengths.max()
  np.testing.assert_allclose(fit.log_strengths[3:], fit.log_strengths[3], atol=1e-8)
  with pytest.raises(ConvergenceError, match="use prior > 0"):
    luce.fit_pl(r, n, prior=0.0)


@pytest.mark.parametrize("rankings,kwargs,err,match", [
    ([[0, 0]], {}, InputError, r"rankings\[0\] lists item 0 twice"),
    ([[0, 5]], {}, InputError, r"rankings\[0, 1\] = 5 is not an item id"),
    ([0, 1], {}, ShapeError, r"rankings must be int\[m, k\]"),
    ([[0.0, 1.0]], {}, ShapeError, r"integer item ids"),
    ([[0, 1]], {"prior": -1.0}, InputError, r"prior must be"),
    ([[0, 1]], {"counts": [1.0, 2.0]}, ShapeError, r"counts must be float\[m=1\]"),
    ([[0, 1]], {"counts": [-1.0]}, InputError, r"counts\[0\] = -1.0"),
    ([[0, 1]], {"where": [[True, False, True]]}, InputError, r"rankings\[0, 1\] = 1 is marked unavailable"),
    ([[0, 1]], {"where": [[True, True]]}, ShapeError, r"where must be bool\[m=1, n=3\]"),
    ([[0, 1, 2, 0]], {}, ShapeError, r"lists 4 items per row"),
])
def test_bad_input_raises_named_error(rankings, kwargs, err, match):
  kwargs = {k: (np.asarray(v) if k in ("where", "counts") else v) for k, v in kwargs.items()}
  with pytest.raises(err, match=match):
    luce.fit_pl(np.asarray(rankings), 3, **kwargs)
