"""fit_cl against autodiff, brute force, fit_pl and known generating models."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luce
from luce import fit as fit_module
from luce.errors import ConvergenceError, InputError, ShapeError
from luce.fit import _cl_blocks, _cl_derivatives, _cl_layout
from luce_test_utils import gumbel_top_k


sample = gumbel_top_k


def random_where(rng, m, n, size):
  """bool[m, n] with exactly `size` available items per event."""
  keys = rng.random((m, n))
  return keys <= np.sort(keys, axis=1)[:, size - 1:size]


def np_log_lik(scores, rankings, where=None, counts=None):
  """float64 log-likelihood of per-event scores straight from the PL product."""
  total = 0.0
  for t, row in enumerate(rankings):
    race = np.ones(scores.shape[1], bool) if where is None else where[t].copy()
    c = 1.0 if counts is None else counts[t]
    for item in row:
      if item < 0:
        break
      v = scores[t, race]
      total += c * (scores[t, item] - v.max() - np.log(np.exp(v - v.max()).sum()))
      race[item] = False
  return total


def derivatives(theta, beta, r, x, where, c, with_theta=True):
  where = np.ones(x.shape[:2], bool) if where is None else where
  idx, xc, lengths = _cl_layout(r, where, x)
  blocks = _cl_blocks(idx, xc, lengths, c)
  return _cl_derivatives(theta, beta, *(jnp.asarray(b) for b in blocks), n=x.shape[1],
                         k=int(lengths.max()), with_theta=with_theta)


@pytest.mark.parametrize("use_where", [False, True])
@pytest.mark.parametrize("with_theta", [False, True])
def test_derivatives_match_autodiff(rng, use_where, with_theta):
  n, m, k, p = 7, 10, 4, 2
  x = rng.normal(size=(m, n, p))
  where = None
  if use_where:
    where = rng.random((m, n)) < 0.6
    where[:, :3] = True
    where[0] = False
    where[0, :3] = True      # a complete row: lists every available item
  r = sample(rng, rng.normal(size=(m, n)), k, where)
  r[2, 2:] = -1
  r[5, 1:] = -1
  c = rng.random(m) + 0.5
  mask = np.ones((m, n), bool) if where is None else where

  def ll_ref(th, b):
    s = jnp.einsum("tip,p->ti", x, b) + (th[None] if with_theta else 0.0)
    total = 0.0
    for t in range(m):
      race = jnp.asarray(mask[t])
      for item in r[t]:
        if item < 0:
          break
        total += c[t] * (s[t, item] - jax.nn.logsumexp(jnp.where(race, s[t], -jnp.inf)))
        race = race.at[item].set(False)
    return total

  with jax.enable_x64(True):
    th, b = jnp.asarray(rng.normal(size=n)), jnp.asarray(rng.normal(size=p))
    ll, g_t, g_b, f_tt, f_tb, f_bb = derivatives(th, b, r, x, where, c, with_theta)
    assert float(ll) == pytest.approx(float(ll_ref(th, b)), rel=1e-12)
    grad = jax.grad(ll_ref, argnums=(0, 1))(th, b)
    hess = jax.hessian(ll_ref, argnums=(0, 1))(th, b)
    np.testing.assert_allclose(np.asarray(g_b), np.asarray(grad[1]), atol=1e-10)
    np.testing.assert_allclose(np.asarray(f_bb), -np.asarray(hess[1][1]), atol=1e-10)
    if with_theta:
      np.testing.assert_allclose(np.asarray(g_t), np.asarray(grad[0]), atol=1e-10)
      np.testing.assert_allclose(np.asarray(f_tt), -np.asarray(hess[0][0]), atol=1e-10)
      np.testing.assert_allclose(np.asarray(f_tb), -np.asarray(hess[0][1]), atol=1e-10)
    else:
      assert g_t.shape == (0,) and f_tt.shape == (0, 0)


def test_derivatives_stay_exact_for_widely_spread_scores(rng):
  # One item far ahead: the later stages' partition functions are ~e^-40 of the
  # first's. Probabilities come from per-stage log-partitions, so nothing cancels.
  n, m, k = 6, 10, 6
  x = rng.normal(size=(m, n, 1))
  th = np.array([40.0, 0.0, -1.0, 1.0, 0.5, -0.5])
  r = sample(rng, th[None] + x[..., 0], k)
  with jax.enable_x64(True):
    def ll_ref(t, b):   # complete rankings: stage j's race is the items listed from j on
      s = jnp.take_along_axis(t[None] + x[..., 0] * b[0], jnp.asarray(r), axis=1)
      return jnp.sum(s - jnp.flip(jax.lax.cumlogsumexp(jnp.flip(s, 1), axis=1), 1))
    b = jnp.asarray([0.3])
    out = derivatives(jnp.asarray(th), b, r, x, None, np.ones(m))
    hess = jax.hessian(ll_ref, argnums=(0, 1))(jnp.asarray(th), b)
    np.testing.assert_allclose(np.asarray(out[3]), -np.asarray(hess[0][0]), atol=1e-12)
    np.testing.assert_allclose(np.asarray(out[5]), -np.asarray(hess[1][1]), atol=1e-12)


def test_log_likelihood_is_the_pl_product_and_normalised(rng):
  # Every possible top-2 list of each event: their probabilities sum to 1, and
  # the fitted log-likelihood equals the hand-written PL product.
  n, m, k, p = 5, 40, 2, 2
  where = random_where(rng, m, n, 4)
  x = rng.normal(size=(m, n, p))
  r = sample(rng, x @ np.array([1.0, -0.5]) + rng.normal(size=n), k, where)
  fit = luce.fit_cl(r, x, n, where=where)
  assert fit.log_likelihood == pytest.approx(np_log_lik(fit.scores(x), r, where), rel=1e-12)
  with jax.enable_x64(True):
    th, b = jnp.asarray(rng.normal(size=n)), jnp.asarray(rng.normal(size=p))
    for t in range(3):
      items = np.flatnonzero(where[t])
      lists = np.array(list(itertools.permutations(items, k)), np.int32)
      rep = len(lists)
      lls = [float(derivatives(th, b, lists[i:i + 1], x[t:t + 1], where[t:t + 1], np.ones(1))[0])
             for i in range(rep)]
      assert np.sum(np.exp(lls)) == pytest.approx(1.0, rel=1e-12)
      by_hand = [np_log_lik(np.asarray(th)[None] + x[t:t + 1] @ np.asarray(b), lists[i:i + 1],
                            where[t:t + 1]) for i in range(rep)]
      np.testing.assert_allclose(lls, by_hand, rtol=1e-12)


def test_recovers_a_known_slope_with_calibrated_stderr():
  # item_effects=False, one covariate, data from the generating model:
  # z = (beta_hat - beta) / stderr is ~N(0, 1) over seeds.
  n, m, k, beta = 30, 400, 3, 0.8
  z = []
  for seed in range(24):
    rng = np.random.default_rng(seed)
    where = random_where(rng, m, n, 10)
    x = rng.normal(size=(m, n, 1))
    r = sample(rng, beta * x[..., 0], k, where)
    fit = luce.fit_cl(r, x, n, where=where, item_effects=False)
    assert abs(fit.beta[0] - beta) < 4 * fit.beta_stderr[0]
    z.append((fit.beta[0] - beta) / fit.beta_stderr[0])
    assert np.all(fit.log_strengths == 0) and np.all(fit.stderr == 0)
    assert fit.covariance.shape == (n + 1, n + 1) and np.all(fit.covariance[:n] == 0)
  z = np.asarray(z)
  # 24 draws: mean z² of a calibrated fit lies in [0.4, 1.9] with probability > 0.99.
  assert 0.4 < np.mean(z ** 2) < 1.9, z
  assert abs(np.mean(z)) < 3 / np.sqrt(len(z)), z


def test_recovers_item_effects_and_slopes(rng):
  n, m, k = 20, 3000, 4
  theta = rng.normal(size=n)
  theta -= theta.mean()
  beta = np.array([0.7, -0.4])
  where = random_where(rng, m, n, 12)
  x = rng.normal(size=(m, n, 2))
  r = sample(rng, theta + x @ beta, k, where)
  fit = luce.fit_cl(r, x, n, where=where)
  assert np.all(np.abs(fit.beta - beta) < 4 * fit.beta_stderr), (fit.beta, fit.beta_stderr)
  assert np.corrcoef(fit.log_strengths, theta)[0, 1] > 0.97
  zt = (fit.log_strengths - theta) / fit.stderr
  assert 0.25 < np.mean(zt ** 2) < 2.4   # chi²(20)/20 leaves this with p < 0.001
  assert abs(fit.log_strengths.mean()) < 1e-10
  np.testing.assert_allclose(np.sqrt(np.diag(fit.covariance)), np.r_[fit.stderr, fit.beta_stderr])
  np.testing.assert_allclose(fit.covariance, fit.covariance.T, atol=1e-14)


@pytest.mark.parametrize("use_where", [False, True])
def test_zero_covariates_equal_fit_pl(rng, use_where):
  n, m, k = 10, 300, 4
  where = random_where(rng, m, n, 7) if use_where else None
  r = sample(rng, np.broadcast_to(rng.normal(size=n), (m, n)), k, where)
  ref = luce.fit_pl(r, n, where=where, prior=0.05)
  for p in (0, 2):
    fit = luce.fit_cl(r, np.zeros((m, n, p)), n, where=where, prior=0.05)
    np.testing.assert_allclose(fit.log_strengths, ref.log_strengths, atol=1e-9)
    np.testing.assert_allclose(fit.stderr, ref.stderr, rtol=1e-7)
    assert fit.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-12)
    # Zero covariates carry no information: slope 0, not identified.
    assert fit.unidentified == tuple(range(p))
    np.testing.assert_array_equal(fit.beta, np.zeros(p))
    assert np.all(np.isinf(fit.beta_stderr))


def test_nothing_identified_leaves_the_uniform_model():
  r = np.array([[0, 1], [1, 2]])
  fit = luce.fit_cl(r, np.zeros((2, 3, 1)), 3, item_effects=False)
  assert fit.beta[0] == 0 and np.isinf(fit.beta_stderr[0]) and fit.unidentified == (0,)
  assert fit.log_likelihood == pytest.approx(-2 * np.log(3 * 2))
  empty = luce.fit_cl(np.full((2, 2), -1), np.ones((2, 3, 1)), 3)   # no listed items at all
  assert empty.log_likelihood == 0 and np.all(empty.log_strengths == 0)


def test_collinear_and_event_constant_covariates_are_unidentified(rng):
  n, m, k = 12, 600, 3
  where = random_where(rng, m, n, 8)
  x1 = rng.normal(size=(m, n))
  per_event = rng.normal(size=(m, 1))
  x = np.stack([x1, 2 * x1 + per_event, np.broadcast_to(per_event, (m, n)), rng.normal(size=(m, n))],
               axis=-1)
  r = sample(rng, 0.5 * x1 - 0.3 * x[..., 3], k, where)
  fit = luce.fit_cl(r, x, n, where=where, item_effects=False)
  assert fit.unidentified == (0, 1, 2)
  assert np.all(np.isinf(fit.beta_stderr[:3])) and np.isfinite(fit.beta_stderr[3])
  assert fit.beta[2] == 0.0
  # The identified combination x1·(β0 + 2β1) is the generating one.
  alone = luce.fit_cl(r, x[..., [0, 3]], n, where=where, item_effects=False)
  assert fit.beta[0] + 2 * fit.beta[1] == pytest.approx(alone.beta[0], rel=1e-8)
  assert fit.beta[3] == pytest.approx(alone.beta[1], rel=1e-8)
  assert fit.log_likelihood == pytest.approx(alone.log_likelihood, rel=1e-12)


def test_counts_equal_repeated_rows(rng):
  n, m = 8, 60
  x = rng.normal(size=(m, n, 1))
  r = sample(rng, x[..., 0] + rng.normal(size=n), 3)
  counts = rng.integers(1, 4, size=m)
  a = luce.fit_cl(r, x, n, counts=counts.astype(float))
  b = luce.fit_cl(np.repeat(r, counts, axis=0), np.repeat(x, counts, axis=0), n)
  np.testing.assert_allclose(a.beta, b.beta, atol=1e-9)
  np.testing.assert_allclose(a.log_strengths, b.log_strengths, atol=1e-9)
  assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=1e-10)


def test_blocks_of_events_give_the_same_fit(rng, monkeypatch):
  n, m, k = 9, 50, 3
  where = random_where(rng, m, n, 6)
  x = rng.normal(size=(m, n, 2))
  r = sample(rng, x @ np.array([0.5, 1.0]), k, where)
  one = luce.fit_cl(r, x, n, where=where)
  monkeypatch.setattr(fit_module, "_CL_BLOCK", 6 * 6 * 7)   # 7 events per block, 8 blocks
  many = luce.fit_cl(r, x, n, where=where)
  np.testing.assert_allclose(many.beta, one.beta, atol=1e-12)
  np.testing.assert_allclose(many.covariance, one.covariance, atol=1e-12)


def test_scores_and_unavailable_covariates(rng):
  n, m = 6, 80
  where = random_where(rng, m, n, 4)
  where[0, np.flatnonzero(where[0])[-1]] = False   # an event with fewer items: padding slots
  x = rng.normal(size=(m, n, 2))
  r = sample(rng, x @ np.array([1.0, 0.0]), 2, where)
  fit = luce.fit_cl(r, x, n, where=where)
  noisy = np.where(where[..., None], x, np.nan)   # covariates of unavailable items are ignored
  again = luce.fit_cl(r, noisy, n, where=where)
  np.testing.assert_array_equal(again.beta, fit.beta)
  np.testing.assert_array_equal(again.log_strengths, fit.log_strengths)
  s = fit.scores(x)
  np.testing.assert_allclose(s, fit.log_strengths + x @ fit.beta)
  assert s.dtype == np.float64 and s.shape == (m, n)
  with pytest.raises(ShapeError, match=r"covariates must be float\[m, n=6, p=2\]"):
    fit.scores(x[..., :1])


def test_separable_direction_gets_a_slope_prior_or_raises(rng):
  # The item with the higher covariate always wins: the MLE of β is at +∞.
  n, m = 10, 40
  where = random_where(rng, m, n, 5)
  x = rng.normal(size=(m, n, 2))
  r = sample(rng, 1e6 * x[..., 0], 3, where)
  fit = luce.fit_cl(r, x, n, where=where, item_effects=False)
  assert fit.beta_prior == fit.prior == 0.01
  d = fit.separating_direction
  assert d is not None and d[0] == pytest.approx(1.0) and abs(d[1]) < 1
  # d separates: every listed item scores highest along d among those left.
  for t in range(m):
    race = where[t].copy()
    for item in r[t]:
      assert x[t, item] @ d >= np.max(x[t, race] @ d) - 1e-9
      race[item] = False
  assert np.isfinite(fit.beta).all() and fit.beta[0] > 3
  with pytest.raises(ConvergenceError, match=r"separable along the covariate direction \+1·covariates\[\.\.\., 0\]"):
    luce.fit_cl(r, x, n, where=where, item_effects=False, beta_prior=0.0)
  fixed = luce.fit_cl(r, x, n, where=where, item_effects=False, beta_prior=0.5)
  assert fixed.beta_prior == 0.5 and fixed.separating_direction is None
  # Data that are not separable keep β unpenalised.
  r2 = sample(rng, x[..., 0], 3, where)
  plain = luce.fit_cl(r2, x, n, where=where, item_effects=False)
  assert plain.beta_prior == 0.0 and plain.separating_direction is None


def test_prior_zero_needs_an_identified_and_unseparable_model(rng):
  n, m = 6, 200
  x = rng.normal(size=(m, n, 1))
  r = sample(rng, x[..., 0] + rng.normal(size=n), n)
  fit = luce.fit_cl(r, x, n, prior=0.0)
  assert fit.beta_prior == 0.0 and np.isfinite(fit.beta_stderr).all()
  # Item 0 always first: θ_0 → ∞ without a prior.
  r0 = sample(rng, x[..., 0] + np.r_[1e6, np.zeros(n - 1)], n)
  with pytest.raises(ConvergenceError, match="with prior=0 the maximum-likelihood estimate does not exist"):
    luce.fit_cl(r0, x, n, prior=0.0)
  # A covariate constant per item is collinear with the item effects.
  per_item = np.broadcast_to(rng.normal(size=(1, n, 1)), (m, n, 1))
  with pytest.raises(ConvergenceError, match="singular"):
    luce.fit_cl(r, per_item, n, prior=0.0)
  assert np.isfinite(luce.fit_cl(r, per_item, n, prior=1.0).beta_stderr).all()


def test_non_convergence_names_the_reason(rng):
  n, m = 6, 50
  x = rng.normal(size=(m, n, 1))
  r = sample(rng, 2 * x[..., 0], 3)
  with pytest.raises(ConvergenceError, match="max_iter = 1 Newton iterations were not enough"):
    luce.fit_cl(r, x, n, max_iter=1)


def test_f1_sized_fit_runs(rng):
  # 240 events of ~22 entrants out of 848 items, top-22, p = 4 (as the F1 data).
  n, m, k, p = 848, 240, 22, 4
  where = np.zeros((m, n), bool)
  for t in range(m):
    where[t, rng.choice(n, rng.integers(20, 25), replace=False)] = True
  x = rng.normal(size=(m, n, p)) * where[..., None]
  r = sample(rng, rng.normal(size=n) * 0.5 + x @ np.array([1.0, -0.5, 0.3, 0.0]), k, where)
  fit = luce.fit_cl(r, x, n, where=where)
  assert fit.iterations < 30 and np.isfinite(fit.beta_stderr).all()
  assert fit.beta[0] > 0.8 and fit.beta[1] < -0.3


X3 = np.zeros((1, 3, 1))


@pytest.mark.parametrize("covariates,kwargs,err,match", [
    (np.zeros((1, 3)), {}, ShapeError, r"covariates must be float\[m=1, n=3, p\]"),
    (np.zeros((2, 3, 1)), {}, ShapeError, r"covariates must be float\[m=1, n=3, p\]"),
    (np.zeros((1, 4, 1)), {}, ShapeError, r"got shape \[1, 4, 1\]"),
    (np.full((1, 3, 1), "a"), {}, ShapeError, r"covariates must be a float array"),
    (np.array([[[0.0], [np.nan], [0.0]]]), {}, InputError,
     r"covariates\[0, 1, 0\] = nan at an available item"),
    (np.array([[[0.0], [np.inf], [0.0]]]), {}, InputError, r"covariates\[0, 1, 0\] = inf"),
    (np.zeros((1, 3, 0)), {"item_effects": False}, InputError, r"p = 0 columns and item_effects=False"),
    (X3, {"beta_prior": -1.0}, InputError, r"beta_prior must be None or a finite number"),
    (X3, {"prior": np.nan}, InputError, r"prior must be"),
    (X3, {"where": np.array([[True, False, True]])}, InputError,
     r"rankings\[0, 1\] = 1 is marked unavailable"),
    (X3, {"counts": np.array([1.0, 2.0])}, ShapeError, r"counts must be float\[m=1\]"),
])
def test_bad_input_raises_named_error(covariates, kwargs, err, match):
  with pytest.raises(err, match=match):
    luce.fit_cl(np.array([[0, 1]]), covariates, 3, **kwargs)


def test_bad_rankings_raise_named_error():
  with pytest.raises(InputError, match=r"rankings\[0\] lists item 0 twice"):
    luce.fit_cl(np.array([[0, 0]]), X3, 3)
  with pytest.raises(ShapeError, match=r"rankings must be int\[m, k\]"):
    luce.fit_cl(np.array([0, 1]), X3, 3)
  # NaN at an unavailable item is fine.
  x = np.array([[[0.0], [np.nan], [1.0]], [[1.0], [0.5], [0.0]]])
  where = np.array([[True, False, True], [True, True, True]])
  fit = luce.fit_cl(np.array([[2, 0], [0, 1]]), x, 3, where=where)
  assert np.isfinite(fit.beta).all()
