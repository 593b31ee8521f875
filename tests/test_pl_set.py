"""Tests of luce.pl_set.pl_set_log_prob.

References are independent of the code under test and run in float64 numpy:
the sum over the k! orders of the set, inclusion-exclusion, closed forms, and
scipy's adaptive quadrature of the 1-D integral. Random inputs are fresh on
every run; the seed is in each assertion message (replay with
LUCE_TEST_SEED=<seed>).
"""

import doctest
import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import jax
import jax.numpy as jnp

from luce import pl_set
from luce.errors import InputError, ShapeError
from luce.pl_set import pl_set_log_prob
from luce.kernels.pl_set.xla import log_factors

METHODS = ("exact", "quadrature")
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def x64():
  """float64 for the duration of one test, then the previous setting back."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def f32_tol(log_p, k=0, log_r=0.0):
  """|error in log P| allowed in float32: 1e-5, or a few ulps of a large log P.

  For large sets add k ulps of log R: log P = sum_i (s_i - log R) + ..., so
  the rounding of log R to float32 moves log P k times as much.
  """
  return 1e-5 + 8 * EPS32 * np.abs(log_p) + k * EPS32 * np.abs(log_r)


# ---------------------------------------------------------------------------
# float64 references.


def _log_r(scores, items):
  """log of the total weight of the available items outside `items`."""
  rest = np.isfinite(scores)
  rest[list(items)] = False
  return np.logaddexp.reduce(scores[rest]) if rest.any() else -np.inf


def brute_log_prob(scores, items):
  """log P(S) as the log-sum over the k! orders of S, in float64."""
  scores = np.asarray(scores, np.float64)
  log_r = _log_r(scores, items)
  per_order = []
  for order in itertools.permutations(items):
    total = 0.0
    for j, item in enumerate(order):
      total += scores[item] - np.logaddexp.reduce(np.r_[log_r, scores[list(order[j:])]])
    per_order.append(total)
  return np.logaddexp.reduce(per_order) if per_order else 0.0


def incl_excl_prob(scores, items):
  """P(S) = sum_{B subset S} (-1)^|B| R / (R + w_B), float64, moderate scores."""
  w = np.exp(np.asarray(scores, np.float64))
  r = np.exp(_log_r(np.asarray(scores, np.float64), items))
  total = 0.0
  for size in range(len(items) + 1):
    for b in itertools.combinations(items, size):
      total += (-1) ** size * r / (r + w[list(b)].sum())
  return total


def scipy_log_prob(scores, items):
  """log P(S) by scipy's adaptive quadrature of int e^h(x) dx, x = log t."""
  scores = np.asarray(scores, np.float64)
  log_r = _log_r(scores, items)
  if log_r == -np.inf:
    return 0.0
  b = scores[list(items)] - log_r
  k = len(b)

  def h(x):
    y = np.add.outer(np.atleast_1d(x), b)
    big = np.log(-np.expm1(-np.exp(np.clip(y, -30, 30))))
    log_factor = np.where(y < -30, y, big)
    return np.atleast_1d(x) - np.exp(x) + log_factor.sum(-1)

  lo, hi = -45.0, math.log(k + 1) + 6.0
  grid = np.linspace(lo, hi, 20001)
  values = h(grid)
  top, peak = values.max(), grid[values.argmax()]
  breaks = np.clip(peak + np.array([-3, -1, -0.3, 0, 0.3, 1, 3]), lo + 1e-3, hi - 1e-3)
  integral, _ = scipy.integrate.quad(
      lambda x: math.exp(h(x)[0] - top), lo, hi, points=sorted(set(breaks)),
      limit=2000, epsabs=0.0, epsrel=1e-12)
  return top + math.log(integral)


def padded(sets, k):
  """int[len(sets), k] item lists padded with -1."""
  out = np.full((len(sets), k), -1, np.int32)
  for row, items in enumerate(sets):
    out[row, :len(items)] = items
  return out


# ---------------------------------------------------------------------------
# Agreement with the references.


def _all_small_events(rng):
  """Every subset of every size for n = 2..6, emulated on 6 items with `where`."""
  scores, where, sets, sizes = [], [], [], []
  for n in range(2, 7):
    s = np.full(6, 0.0)
    s[:n] = rng.normal(0.0, 2.0, n)
    w = np.arange(6) < n
    for k in range(1, n + 1):
      for items in itertools.combinations(range(n), k):
        items = tuple(rng.permutation(items))  # order inside a set is free
        scores.append(s), where.append(w), sets.append(items), sizes.append((n, k))
  return np.array(scores), np.array(where), sets, sizes


@pytest.mark.parametrize("method", METHODS)
def test_matches_brute_force_float64(x64, rng, seed, method):
  scores, where, sets, sizes = _all_small_events(rng)
  got = np.asarray(pl_set_log_prob(scores, padded(sets, 6), where=where, method=method))
  assert got.dtype == np.float64
  want = np.array([brute_log_prob(np.where(w, s, -np.inf), items)
                   for s, w, items in zip(scores, where, sets)])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=f"seed={seed}")

  for (n, k) in set(sizes):
    rows = [i for i, nk in enumerate(sizes) if nk == (n, k)]
    assert len(rows) == math.comb(n, k)
    total = np.exp(got[rows]).sum()
    assert abs(total - 1.0) < 1e-9, f"seed={seed} n={n} k={k}: sum of P(S) = {total}"

  for s, w, items, value in zip(scores, where, sets, got):
    if len(items) < w.sum():  # inclusion-exclusion needs R > 0
      ie = incl_excl_prob(np.where(w, s, -np.inf), items)
      assert abs(np.exp(value) - ie) <= 1e-10 + 1e-8 * ie, f"seed={seed} {items}"


@pytest.mark.parametrize("method", METHODS)
def test_matches_brute_force_float32(rng, seed, method):
  scores, where, sets, _ = _all_small_events(rng)
  got = np.asarray(pl_set_log_prob(
      scores.astype(np.float32), padded(sets, 6), where=where, method=method))
  assert got.dtype == np.float32
  want = np.array([brute_log_prob(np.where(w, s.astype(np.float32), -np.inf), items)
                   for s, w, items in zip(scores, where, sets)])
  np.testing.assert_array_less(np.abs(got - want), f32_tol(want), err_msg=f"seed={seed}")


def test_exact_and_quadrature_agree_float32(rng, seed):
  """Sets of 1..16 items (padded to 16 slots), spread +-20, masks, -inf scores."""
  num, n, k = 240, 40, 16
  scores = rng.uniform(-20, 20, (num, n)) + rng.uniform(-20, 20, (num, 1))
  sizes = np.r_[np.arange(1, k + 1), rng.integers(1, k + 1, num - k)]
  sets = [rng.permutation(n)[:m] for m in sizes]
  where = np.ones((num, n), bool)
  for row in range(num):
    outside = np.setdiff1d(np.arange(n), sets[row])
    if row % 3 == 1:    # unavailable through `where`
      where[row, rng.choice(outside, 10, replace=False)] = False
    elif row % 3 == 2:  # unavailable through -inf
      scores[row, rng.choice(outside, 10, replace=False)] = -np.inf
  # A few rows hold every available item (R = 0): log P = 0.
  for row in range(num - 3, num):
    where[row] = np.isin(np.arange(n), sets[row])
  # Equal scores, all available: P = 1 / C(n, m) for a set of m items.
  equal = [k - 1, k - 2]  # sets of 16 and 15 items
  scores[equal] = 1.5
  where[equal] = True
  scores = scores.astype(np.float32)
  subset = padded(sets, k)
  exact = np.asarray(pl_set_log_prob(scores, subset, where=where, method="exact"))
  quad = np.asarray(pl_set_log_prob(scores, subset, where=where, method="quadrature"))
  assert np.isfinite(exact).all() and np.isfinite(quad).all(), f"seed={seed}"
  np.testing.assert_array_less(np.abs(exact - quad), f32_tol(exact), err_msg=f"seed={seed}")
  assert (exact[-3:] == 0).all() and (quad[-3:] == 0).all(), f"seed={seed}"
  for row in equal:
    want = -math.log(math.comb(n, sizes[row]))
    assert abs(exact[row] - want) <= 1e-5 and abs(quad[row] - want) <= 1e-5, f"row {row}"

  # Both against float64 scipy quadrature on some of the rows.
  for row in range(0, num, 12):
    s = np.where(where[row], scores[row].astype(np.float64), -np.inf)
    want = scipy_log_prob(s, sets[row])
    for name, got in (("exact", exact[row]), ("quadrature", quad[row])):
      assert abs(got - want) <= f32_tol(want), (
          f"seed={seed} row={row} {name}: {got} vs float64 {want}")


def test_far_apart_scores():
  """Scores hundreds apart: every subset of [0, -200, 100, -300] and of +-1e4."""
  rows, where, sets, want = [], [], [], []
  for scores in ([0.0, -200.0, 100.0, -300.0], [0.0, -1e4, 1e4, -3e4, 3e4]):
    n = len(scores)
    for c in (c for k in range(1, n + 1) for c in itertools.combinations(range(n), k)):
      rows.append(np.pad(scores, (0, 5 - n))), where.append(np.arange(5) < n)
      sets.append(c), want.append(brute_log_prob(np.array(scores), c))
  want = np.array(want)
  for method in METHODS:
    got = np.asarray(pl_set_log_prob(
        np.array(rows, np.float32), padded(sets, 5), where=np.array(where), method=method))
    np.testing.assert_array_less(np.abs(got - want), f32_tol(want), err_msg=method)


@pytest.mark.parametrize("n,k", [(30, 11), (600, 300)])
def test_equal_scores_give_one_over_binomial(n, k):
  """With equal scores every k-set has probability 1 / C(n, k)."""
  want = -(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1))
  got = float(pl_set_log_prob(jnp.full(n, 3.0), np.arange(k)[::-1], method="quadrature"))
  assert abs(got - want) <= f32_tol(want, k, 3.0 + math.log(n - k)), f"{got} vs {want}"


def test_large_n_quadrature_matches_scipy(rng, seed):
  """n = 5000 items, k = 50: random, the weakest and the strongest items."""
  n, k = 5000, 50
  scores = (rng.normal(0.0, 3.0, n) + rng.uniform(-20, 20)).astype(np.float32)
  order = np.argsort(scores)
  sets = [rng.choice(n, k, replace=False), order[:k], order[-k:], order[n // 2:n // 2 + k]]
  got = np.asarray(pl_set_log_prob(scores, np.stack(sets), method="quadrature"))
  for items, value in zip(sets, got):
    want = scipy_log_prob(scores.astype(np.float64), items)
    tol = f32_tol(want, k, _log_r(scores.astype(np.float64), items))
    assert abs(value - want) <= tol, f"seed={seed}: {value} vs float64 {want}"


def test_many_weak_items_quadrature():
  """k = 200 items far below R: the integrand is t^k e^-t, only ~1/sqrt(k) wide
  in log t, which a coarse fixed grid gets wrong. P = k! prod a_i (1 + O(k a))."""
  k, n = 200, 260
  scores = np.zeros(n, np.float32)
  scores[:k] = -25.0
  log_r = math.log(n - k)
  want = math.lgamma(k + 1) + k * (-25.0 - log_r)  # relative O(k^2 a) ~ 1e-7
  got = float(pl_set_log_prob(scores, np.arange(k), method="quadrature"))
  assert abs(got - want) <= f32_tol(want, k, log_r), f"{got} vs {want}"


def test_log_factors_match_mpmath(x64):
  """L(y) = log(1 - exp(-e^y)) and M(y) = L(y) - y, to float64, for all y."""
  import mpmath
  mpmath.mp.dps = 40
  y = np.r_[np.linspace(-60.0, 8.0, 137), -20.0, -1e-12, 0.0, 1e-12, 6.0, 300.0, -800.0]
  m, l = (np.asarray(a) for a in log_factors(jnp.asarray(y)))
  for yi, mi, li in zip(y, m, l):
    true_l = float(mpmath.log(-mpmath.expm1(-mpmath.exp(yi))))
    true_m = float(mpmath.log(-mpmath.expm1(-mpmath.exp(yi))) - yi)
    # Both are summed with O(1) terms, so the absolute error is what counts;
    # M ~ -e^y / 2 for y << 0 must not be lost to cancellation against y.
    assert abs(li - true_l) <= 4e-16 * max(1.0, abs(true_l)), (yi, li, true_l)
    assert abs(mi - true_m) <= 4e-16 * max(1.0, abs(true_m)), (yi, mi, true_m)
  grad_l = jax.vmap(jax.grad(lambda v: log_factors(v)[1]))(jnp.asarray(y))
  assert np.isfinite(np.asarray(grad_l)).all()


# ---------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("method", METHODS)
def test_gradients_match_finite_differences(x64, rng, seed, method):
  num, n = 12, 7
  scores = rng.normal(0.0, 2.0, (num, n))
  sets = [rng.permutation(n)[:rng.integers(1, 5)] for _ in range(num)]
  subset = padded(sets, 4)
  where = np.ones((num, n), bool)
  where[0, np.setdiff1d(np.arange(n), sets[0])[:2]] = False
  scores[1, np.setdiff1d(np.arange(n), sets[1])[0]] = -np.inf

  def total(s):
    return jnp.sum(pl_set_log_prob(s, subset, where=where, method=method))

  grad = np.asarray(jax.grad(total)(scores))
  step = 1e-5
  fd = np.zeros_like(scores)
  for j in range(n):  # events are independent: perturb item j in all at once
    e = np.zeros_like(scores)
    e[:, j] = step
    up = np.asarray(pl_set_log_prob(scores + e, subset, where=where, method=method))
    down = np.asarray(pl_set_log_prob(scores - e, subset, where=where, method=method))
    fd[:, j] = (up - down) / (2 * step)
  fd = np.where(np.isfinite(scores), fd, 0.0)  # -inf - step is still -inf
  np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7, err_msg=f"seed={seed}")
  # Unavailable items are out of the race.
  assert grad[0][~where[0]].tolist() == [0.0, 0.0] and grad[1][np.isinf(scores[1])] == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_gradients_finite_on_edge_cases(method):
  inf = np.inf
  scores = np.array([
      [0.0, 1.0, 2.0, 3.0, 4.0],        # padded row: log P = 0
      [0.0, 1.0, 2.0, -inf, -inf],      # S is every available item: R = 0
      [0.0, 1.0, 2.0, 3.0, 4.0],        # R = 0 through `where`
      [0.0, -200.0, 100.0, -300.0, 5.0],
      [0.0, -inf, 2.0, 5.0, -1e4],
      [1e4, -1e4, 0.0, 3e4, -3e4],
  ], np.float32)
  subset = np.array([[-1, -1, -1], [0, 2, 1], [4, 3, -1], [1, 3, -1], [0, 2, -1], [1, 4, 2]])
  where = np.ones_like(scores, bool)
  where[2, :3] = False

  def log_p(s):
    value = pl_set_log_prob(s, subset, where=where, method=method)
    return jnp.sum(value), value

  (_, value), grad = jax.jit(jax.value_and_grad(log_p, has_aux=True))(scores)
  value, grad = np.asarray(value), np.asarray(grad)
  assert np.isfinite(value).all(), value
  assert (value[:3] == 0.0).all(), value
  assert np.isfinite(grad).all(), grad
  assert (grad[:3] == 0.0).all(), grad  # P = 1 for every nearby score
  assert grad[4, 1] == 0.0              # -inf item: out of the race
  # A set item's own score has gradient in (-1, 1): d log P / d s_i = 1 - ...
  # (up to float32 rounding of the node weights, which sum to 1 within ulps).
  assert 0.0 < grad[3, 1] <= 1.0 + 1e-6 and 0.0 < grad[3, 3] <= 1.0 + 1e-6, grad


def test_unavailable_set_item_under_jit_is_impossible():
  """Value checks are off under jit; such a set gets log P = -inf, no NaN."""
  scores = jnp.array([[0.0, -jnp.inf, 1.0, 2.0], [0.0, 0.0, 1.0, 2.0]])
  where = jnp.array([[True] * 4, [True, False, True, True]])
  subset = jnp.array([0, 1])
  for method in METHODS:
    f = lambda s, method=method: jnp.sum(pl_set_log_prob(s, subset, where=where, method=method))
    value, grad = jax.jit(jax.value_and_grad(f))(scores)
    assert float(value) == -np.inf
    assert np.isfinite(np.asarray(grad)).all()


# ---------------------------------------------------------------------------
# Transformations, dispatch, broadcasting, dtypes.


@pytest.mark.parametrize("method", METHODS)
def test_jit_and_vmap_match_eager(rng, seed, method):
  num, n, k = 8, 12, 5
  scores = rng.normal(0.0, 4.0, (num, n)).astype(np.float32)
  subset = padded([rng.permutation(n)[:rng.integers(0, k + 1)] for _ in range(num)], k)
  where = rng.random((num, n)) < 0.9
  where[np.arange(num)[:, None], np.maximum(subset, 0)] = True  # set items available
  eager = np.asarray(pl_set_log_prob(scores, subset, where=where, method=method))
  f = lambda s, S, w: pl_set_log_prob(s, S, where=w, method=method)
  jitted = np.asarray(jax.jit(f)(scores, subset, where))
  mapped = np.asarray(jax.vmap(f)(scores, subset, where))
  for other in (jitted, mapped):
    np.testing.assert_allclose(other, eager, rtol=1e-6, atol=1e-6, err_msg=f"seed={seed}")


def test_auto_picks_exact_up_to_10_then_quadrature(monkeypatch):
  picked = []

  def spy(scores, subset, where, method, impl, interpret):
    picked.append(method)
    return jnp.zeros(scores.shape[0])

  monkeypatch.setattr(pl_set, "_log_prob", spy)
  for k in (1, 10, 11, 40):
    pl_set_log_prob(np.zeros(50), np.arange(k))
  pl_set_log_prob(np.zeros(50), np.arange(12), method="exact")
  pl_set_log_prob(np.zeros(50), np.arange(3), method="quadrature")
  assert picked == ["exact", "exact", "quadrature", "quadrature", "exact", "quadrature"]


def test_leading_axes_broadcast(rng):
  scores = rng.normal(0.0, 2.0, 9).astype(np.float32)
  subset = np.array([[[0, 3], [4, -1]], [[8, 1], [2, 7]]])  # [2, 2, 2]
  where = np.ones((2, 1, 9), bool)
  where[1, 0, 5] = False
  got = pl_set_log_prob(scores, subset, where=where)
  assert got.shape == (2, 2)
  full = pl_set_log_prob(
      np.broadcast_to(scores, (2, 2, 9)), subset, where=np.broadcast_to(where, (2, 2, 9)))
  np.testing.assert_array_equal(got, full)
  # `where` False is the same as a -inf score.
  masked = np.where(np.broadcast_to(where, (2, 2, 9)), scores, -np.inf)
  np.testing.assert_allclose(got, pl_set_log_prob(masked, subset), rtol=1e-6)


def test_dtypes(x64):
  subset = np.array([0, 2])
  s = np.array([0.5, -1.0, 2.0, 0.25])
  assert pl_set_log_prob(s.astype(np.float64), subset).dtype == jnp.float64
  f32 = pl_set_log_prob(s.astype(np.float32), subset)
  assert f32.dtype == jnp.float32
  for low in (jnp.bfloat16, jnp.float16):
    got = pl_set_log_prob(jnp.asarray(s, low), subset)  # these values are exact in both
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, f32, rtol=1e-6)


def test_empty_sets():
  assert pl_set_log_prob(np.zeros(5), np.zeros(0, np.int32)).shape == ()
  assert float(pl_set_log_prob(np.zeros(5), np.zeros(0, np.int32))) == 0.0
  np.testing.assert_array_equal(pl_set_log_prob(np.zeros((3, 0)), -np.ones((3, 2), int)), 0.0)


def test_docstring_example():
  runner = doctest.DocTestRunner()
  for test in doctest.DocTestFinder().find(pl_set_log_prob, "pl_set_log_prob", globs={}):
    runner.run(test)
  assert runner.tries > 0 and runner.failures == 0


# ---------------------------------------------------------------------------
# Bad inputs.


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(scores=[0.0, np.nan, 1.0], subset=[0]), InputError, r"scores has NaN"),
    (dict(scores=[0.0, np.inf, 1.0], subset=[0]), InputError, r"scores\[1\] is \+inf"),
    (dict(scores=[0.0, 1.0, 2.0], subset=[0, 0]), InputError, r"subset.*twice"),
    (dict(scores=[0.0, 1.0, 2.0], subset=[0, 3]), InputError, r"subset\[1\] = 3"),
    (dict(scores=[0.0, 1.0, 2.0], subset=[0, -2]), InputError, r"subset\[1\]"),
    (dict(scores=[0.0, 1.0, 2.0], subset=[-1, 1]), InputError, r"subset\[0\] is -1"),
    (dict(scores=np.zeros((2, 3)), subset=np.zeros((3, 1), int)), ShapeError, r"subset"),
    (dict(scores=[0.0, 1.0], subset=[0], method="Exact"), InputError, r"method"),
    (dict(scores=[0.0, 1.0], subset=[0], method=None), InputError, r"method"),
    (dict(scores=[0.0, 1.0], subset=[0], where=[True]), ShapeError, r"where"),
    (dict(scores=[0.0, 1.0], subset=[0], where=[1, 1]), ShapeError, r"where.*bool"),
    (dict(scores=np.zeros((2, 2)), subset=[0], where=np.ones((3, 2), bool)), ShapeError,
     r"where"),
    (dict(scores=[0.0, 1.0, 2.0], subset=[[0], [2]], where=[True, True, False]),
     InputError, r"subset\[1, 0\] = 2 .*where\[2\] is False"),
    (dict(scores=[[0.0, 1.0, 2.0], [0.0, -np.inf, 2.0]], subset=[2, 1]),
     InputError, r"subset\[1\] = 1 .*scores\[1, 1\] is -inf"),
    (dict(scores=[0.0, 1.0], subset=[0.0]), ShapeError, r"subset"),
    (dict(scores=np.array([1 + 2j]), subset=[0]), ShapeError, r"scores"),
    (dict(scores=np.zeros(20), subset=np.arange(17), method="exact"), ShapeError,
     r"quadrature"),
])
def test_bad_inputs_raise(kwargs, error, match):
  with pytest.raises(error, match=match):
    pl_set_log_prob(**kwargs)


def test_value_checks_are_skipped_under_jit():
  """Documented: under jit a duplicate id is not caught (and not a crash)."""
  out = jax.jit(lambda s: pl_set_log_prob(s, jnp.array([0, 0])))(jnp.zeros(3))
  assert out.shape == ()
  with pytest.raises(InputError):
    pl_set_log_prob(jnp.zeros(3), jnp.array([0, 0]))
