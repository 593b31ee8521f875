"""pl_log_prob against float64 brute force, autodiff, finite differences, rax."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luce
from luce.errors import InputError, ShapeError

IMPLS = ["xla", "reference"] + (
    ["cpu"] if __import__("luce.kernels.pl_nll.cpu_ffi").kernels.pl_nll.cpu_ffi.available() else [])


# ---------------------------------------------------------------- references
def np_log_prob(s, ranking, where=None, weights=None):
  """float64 value and gradient of log P, straight from the definition."""
  s = np.asarray(s, np.float64)
  n = s.shape[0]
  avail = np.isfinite(s) if where is None else (np.asarray(where) & np.isfinite(s))
  race = avail.copy()
  lp, grad = 0.0, np.zeros(n)
  for j, item in enumerate(ranking):
    if item < 0:
      break
    w = 1.0 if weights is None else float(weights[j])
    vals = np.where(race, s, -np.inf)
    mx = vals.max()
    p = np.exp(vals - mx)
    denom = mx + math.log(p.sum())
    p /= p.sum()
    lp += w * (s[item] - denom)
    grad += -w * p
    grad[item] += w
    race[item] = False
  return lp, grad


def random_case(rng, n, k, *, pad=False, mask=False, spread=3.0):
  s = rng.normal(size=n) * spread
  where = None
  if mask:
    where = rng.random(n) < 0.7
    where[rng.integers(n)] = True
  avail = np.flatnonzero(where) if where is not None else np.arange(n)
  k = min(k, len(avail))
  r = rng.permutation(avail)[:k]
  if pad and k > 1:
    cut = rng.integers(1, k + 1)
    r = np.concatenate([r[:cut], -np.ones(k - cut, int)])
  return s, r, where


# ---------------------------------------------------------------- brute force
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_all_full_rankings_sum_to_one_and_match_product(rng, impl, n):
  s = rng.normal(size=n) * 2
  perms = np.array(list(itertools.permutations(range(n))), np.int32)
  lp = np.asarray(luce.pl_log_prob(jnp.asarray(s, jnp.float32), perms, impl=impl))
  truth = np.array([np_log_prob(s, p)[0] for p in perms])
  np.testing.assert_allclose(lp, truth, atol=2e-5, rtol=1e-5)
  assert abs(np.exp(lp.astype(np.float64)).sum() - 1.0) < 1e-5


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n,k", [(4, 1), (5, 2), (6, 3), (6, 5)])
def test_all_top_k_lists_sum_to_one(rng, impl, n, k):
  s = rng.normal(size=n) * 2
  lists = np.array(list(itertools.permutations(range(n), k)), np.int32)
  lp = np.asarray(luce.pl_log_prob(jnp.asarray(s, jnp.float32), lists, impl=impl))
  truth = np.array([np_log_prob(s, p)[0] for p in lists])
  np.testing.assert_allclose(lp, truth, atol=2e-5, rtol=1e-5)
  assert abs(np.exp(lp.astype(np.float64)).sum() - 1.0) < 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_extreme_scores_exact(impl):
  s = np.array([0.0, -200.0, 100.0, -300.0])
  perms = np.array(list(itertools.permutations(range(4))), np.int32)
  lp = np.asarray(luce.pl_log_prob(jnp.asarray(s, jnp.float32), perms, impl=impl))
  for p, got in zip(perms, lp):
    want, grad = np_log_prob(s, p)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6), p
    g = np.asarray(jax.grad(lambda x, p=p: luce.pl_log_prob(x, jnp.asarray(p), impl=impl))(
        jnp.asarray(s, jnp.float32)))
    # Stage denominators near 100-300 carry float32's absolute rounding
    # (ulp(100) = 7.6e-6) into the gradient's exponents.
    np.testing.assert_allclose(g, grad, rtol=2e-5, atol=1e-6, err_msg=str(p))


def test_mixed_batch_takes_exact_path_only_where_needed(rng):
  # Rows far outside float32's exp range next to ordinary rows: every row must
  # match float64, whichever path computed it.
  n, k = 40, 12
  s = rng.normal(size=(6, n))
  s[1] *= 500.0
  s[4, :5] = [-1e4, 3e3, -2e3, 0.0, 1e4]
  r = np.stack([rng.permutation(n)[:k] for _ in range(6)]).astype(np.int32)
  r[4] = np.concatenate([[0, 1, 2, 3, 4], 5 + rng.permutation(n - 5)[:k - 5]])
  lp = np.asarray(luce.pl_log_prob(jnp.asarray(s, jnp.float32), r))
  g = np.asarray(jax.grad(lambda x: luce.pl_log_prob(x, r).sum())(jnp.asarray(s, jnp.float32)))
  for b in range(6):
    want, grad = np_log_prob(s[b].astype(np.float32).astype(np.float64), r[b])
    assert lp[b] == pytest.approx(want, rel=2e-6, abs=2e-5), b
    # Exponents of size |s| carry float32's rounding ulp(|s|) ~ 1e-7·|s|.
    rtol = 2e-7 * np.abs(s[b]).max() + 1e-6
    np.testing.assert_allclose(g[b], grad, rtol=rtol, atol=2e-5, err_msg=f"row {b}")


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pad,mask,weighted", [
    (False, False, False), (True, False, False), (False, True, False),
    (True, True, True), (False, False, True)])
def test_values_and_gradients_match_float64(rng, impl, pad, mask, weighted):
  n, k, bsz = 23, 9, 16
  cases = [random_case(rng, n, k, pad=pad, mask=mask) for _ in range(bsz)]
  s = np.stack([c[0] for c in cases])
  r = np.stack([np.pad(c[1], (0, k - len(c[1])), constant_values=-1) for c in cases]).astype(np.int32)
  where = np.stack([c[2] for c in cases]) if mask else None
  w = rng.random((bsz, k)) * 2 if weighted else None
  fn = lambda x, w_: luce.pl_log_prob(
      x, r, where=None if where is None else jnp.asarray(where),
      weights=None if w_ is None else w_, impl=impl).sum()
  args = (jnp.asarray(s, jnp.float32), None if w is None else jnp.asarray(w, jnp.float32))
  lp = luce.pl_log_prob(args[0], r, where=None if where is None else jnp.asarray(where),
                        weights=args[1], impl=impl)
  if weighted:
    gs, gw = jax.grad(fn, argnums=(0, 1))(*args)
  else:
    gs = jax.grad(fn)(*args)
  for b in range(bsz):
    want, grad = np_log_prob(s[b], r[b], None if where is None else where[b],
                             None if w is None else w[b])
    assert float(lp[b]) == pytest.approx(want, rel=1e-5, abs=1e-5)
    if where is not None:
      grad = np.where(where[b], grad, 0.0)
    np.testing.assert_allclose(np.asarray(gs[b]), grad, atol=3e-5, err_msg=f"row {b}")
  if weighted:
    # ∂ log P / ∂ w_j is stage j's log-probability: check by finite differences.
    eps = 1e-3
    b, j = 0, 0
    if r[b, j] >= 0:
      wp, wm = w.copy(), w.copy()
      wp[b, j] += eps
      wm[b, j] -= eps
      fd = (np_log_prob(s[b], r[b], None if where is None else where[b], wp[b])[0]
            - np_log_prob(s[b], r[b], None if where is None else where[b], wm[b])[0]) / (2 * eps)
      assert float(gw[b, j]) == pytest.approx(fd, rel=1e-4, abs=1e-4)


def test_numpy_reference_gradient_matches_finite_differences(rng):
  # The float64 reference above is itself checked, so the tests built on it can fail.
  s = rng.normal(size=8)
  r = rng.permutation(8)[:5]
  _, grad = np_log_prob(s, r)
  eps = 1e-6
  fd = np.array([(np_log_prob(s + eps * e, r)[0] - np_log_prob(s - eps * e, r)[0]) / (2 * eps)
                 for e in np.eye(8)])
  np.testing.assert_allclose(grad, fd, atol=1e-7)


def test_xla_gradient_matches_autodiff_of_reference(rng):
  n, k, bsz = 300, 120, 8
  s = jnp.asarray(rng.normal(size=(bsz, n)) * 4, jnp.float32)
  r = jnp.asarray(np.stack([rng.permutation(n)[:k] for _ in range(bsz)]), jnp.int32)
  cot = jnp.asarray(rng.normal(size=bsz), jnp.float32)
  g1 = jax.grad(lambda x: (luce.pl_log_prob(x, r, impl="xla") * cot).sum())(s)
  g2 = jax.grad(lambda x: (luce.pl_log_prob(x, r, impl="reference") * cot).sum())(s)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-5, atol=3e-5)


# ---------------------------------------------------------------- semantics
def test_where_equals_dropping_items(rng):
  n = 12
  s = rng.normal(size=n)
  where = rng.random(n) < 0.6
  where[:3] = True
  keep = np.flatnonzero(where)
  sub_rank = rng.permutation(len(keep))[:4]
  full_rank = keep[sub_rank]
  a = luce.pl_log_prob(jnp.asarray(s, jnp.float32), full_rank, where=jnp.asarray(where))
  b = luce.pl_log_prob(jnp.asarray(s[keep], jnp.float32), sub_rank)
  c = luce.pl_log_prob(jnp.asarray(np.where(where, s, -np.inf), jnp.float32), full_rank)
  assert float(a) == pytest.approx(float(b), abs=1e-6)
  assert float(c) == pytest.approx(float(b), abs=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_picking_unavailable_item_is_minus_inf_with_finite_gradient(impl):
  s = jnp.array([0.0, -jnp.inf, 1.0])
  r = jnp.array([0, 1])
  assert float(luce.pl_log_prob(s, r, impl=impl)) == -np.inf
  if impl == "xla":
    g = jax.grad(lambda x: luce.pl_log_prob(x, r, impl=impl))(s)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("impl", IMPLS)
def test_all_padding_row_is_zero_with_zero_gradient(impl):
  s = jnp.array([[0.3, -1.0, 2.0], [0.0, 0.0, 0.0]])
  r = jnp.array([[-1, -1], [2, -1]])
  lp = luce.pl_log_prob(s, r, impl=impl)
  assert float(lp[0]) == 0.0
  g = jax.grad(lambda x: luce.pl_log_prob(x, r, impl=impl).sum())(s)
  assert np.all(np.asarray(g[0]) == 0.0)
  assert np.all(np.isfinite(np.asarray(g)))


def test_agrees_with_rax_listmle(rng):
  rax = pytest.importorskip("rax")
  bsz, n = 32, 50
  s = jnp.asarray(rng.normal(size=(bsz, n)) * 3, jnp.float32)
  order = np.stack([rng.permutation(n) for _ in range(bsz)]).astype(np.int32)
  labels = np.empty((bsz, n), np.float32)
  np.put_along_axis(labels, order, -np.arange(n, dtype=np.float32)[None, :], axis=1)
  theirs = rax.listmle_loss(s, jnp.asarray(labels), reduce_fn=None)
  ours = -luce.pl_log_prob(s, order)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-4)
  g_theirs = jax.grad(lambda x: rax.listmle_loss(x, jnp.asarray(labels), reduce_fn=jnp.sum))(s)
  g_ours = jax.grad(lambda x: -luce.pl_log_prob(x, order).sum())(s)
  np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_theirs), rtol=1e-5, atol=1e-5)


def test_jit_vmap_and_batch_axes(rng):
  s = jnp.asarray(rng.normal(size=(3, 4, 10)), jnp.float32)
  r = jnp.asarray(np.stack([[rng.permutation(10)[:6] for _ in range(4)] for _ in range(3)]), jnp.int32)
  eager = luce.pl_log_prob(s, r)
  assert eager.shape == (3, 4)
  np.testing.assert_allclose(jax.jit(luce.pl_log_prob)(s, r), eager, rtol=1e-6)
  vm = jax.vmap(jax.vmap(luce.pl_log_prob))(s, r)
  np.testing.assert_allclose(vm, eager, rtol=1e-6, atol=1e-6)
  # One score vector shared by many lists broadcasts.
  shared = luce.pl_log_prob(s[0, 0], r[0])
  np.testing.assert_allclose(shared, luce.pl_log_prob(jnp.broadcast_to(s[0, 0], (4, 10)), r[0]),
                             rtol=1e-6)


def test_bfloat16_accumulates_in_float32(rng):
  n = 2000
  s32 = jnp.asarray(rng.normal(size=(4, n)), jnp.float32)
  s16 = s32.astype(jnp.bfloat16)
  r = jnp.asarray(np.stack([rng.permutation(n) for _ in range(4)]), jnp.int32)
  lp16 = luce.pl_log_prob(s16, r)
  assert lp16.dtype == jnp.float32
  # Same inputs as float32 (the bf16 values, upcast): float32 accumulation
  # gives the float32 answer, not a bf16-rounded one.
  ref = luce.pl_log_prob(s16.astype(jnp.float32), r)
  np.testing.assert_allclose(np.asarray(lp16), np.asarray(ref), rtol=1e-6)
  g = jax.grad(lambda x: luce.pl_log_prob(x, r).sum())(s16)
  assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g)))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("scores,ranking,kwargs,err,match", [
    ([0.0, 1.0, 2.0], [0, 0], {}, InputError, r"ranking\[\] lists item 0 twice"),
    ([[0.0, 1.0, 2.0]] * 2, [[0, 1], [2, 2]], {}, InputError, r"ranking\[1\] lists item 2 twice"),
    ([0.0, 1.0, 2.0], [0, 3], {}, InputError, r"ranking\[1\] = 3 is not an item id"),
    ([0.0, 1.0, 2.0], [0, -2], {}, InputError, r"ranking\[1\] = -2"),
    ([0.0, 1.0, 2.0], [-1, 1], {}, InputError, r"only pad the end"),
    ([0.0, 1.0], [0, 1, -1], {}, ShapeError, r"k must be at most n"),
    ([0.0, np.nan, 2.0], [0, 1], {}, InputError, r"scores has NaN at index \(1,\)"),
    ([[0.0, 1.0, 2.0]] * 2, [[0, 1]] * 3, {}, ShapeError, r"do not broadcast"),
    ([0.0, 1.0, 2.0], [0.0, 1.0], {}, ShapeError, r"ranking must hold integer item ids"),
    ([0.0, 1.0, 2.0], [0, 1], {"where": [True, True]}, ShapeError, r"where must have shape"),
    ([0.0, 1.0, 2.0], [0, 1], {"where": [1, 1, 1]}, ShapeError, r"where must be a bool array"),
    ([0.0, 1.0, 2.0], [0, 1], {"weights": [1.0, -1.0]}, InputError, r"weights\[1\] = -1.0"),
    ([0.0, 1.0, 2.0], [0, 1], {"weights": [1.0, 1.0, 1.0]}, ShapeError, r"weights"),
    ([0.0, 1.0, 2.0], [0, 1], {"impl": "cuda"}, InputError, r"impl='cuda' is not one of"),
])
def test_bad_input_raises_named_error(scores, ranking, kwargs, err, match):
  kwargs = {k: (np.asarray(v) if k in ("where", "weights") else v) for k, v in kwargs.items()}
  with pytest.raises(err, match=match):
    luce.pl_log_prob(np.asarray(scores), np.asarray(ranking), **kwargs)


def test_errors_are_luce_errors():
  with pytest.raises(luce.LuceError):
    luce.pl_log_prob(np.zeros(3), np.array([1, 1]))


def test_checked_raises_inside_jit():
  f = jax.jit(luce.checked(luce.pl_log_prob))
  s = jnp.array([0.0, 1.0, 2.0])
  err, lp = f(s, jnp.array([2, 0, 1]))
  assert err.get() is None
  assert float(lp) == pytest.approx(float(luce.pl_log_prob(s, jnp.array([2, 0, 1]))))
  err, _ = f(s, jnp.array([2, 2, 1]))
  assert "lists an item twice" in err.get()
  err, _ = f(s, jnp.array([2, 5, 1]))
  assert "holds 5, not an item id" in err.get()
  err, _ = f(s, jnp.array([-1, 0, 1]))
  assert "-1 before an item" in err.get()
  err, _ = f(jnp.array([0.0, jnp.nan, 1.0]), jnp.array([0, 1, 2]))
  assert "scores has NaN at flat index 1" in err.get()
  err, _ = jax.jit(luce.checked(lambda x, r, w: luce.pl_log_prob(x, r, weights=w)))(
      s, jnp.array([0, 1, 2]), jnp.array([1.0, -2.0, 1.0]))
  assert "weights at flat index 1 is -2.0" in err.get()
  with pytest.raises(Exception, match="lists an item twice"):
    f(s, jnp.array([1, 1, 0]))[0].throw()
