"""The Davidson-Luce tie model (luce.ties) against an independent float64
implementation that enumerates the subsets of each stage explicitly."""

import itertools

import numpy as np
import pytest
from scipy import optimize, stats
import jax
import jax.numpy as jnp

import luce
from luce.errors import InputError, ShapeError


# ---- the independent implementation ---------------------------------------------------------

def blocks_of(row, tied):
  """[[items of block 1], ...] from one padded row and its tie flags."""
  out = []
  for item, t in zip(row, tied):
    if item < 0:
      break
    if t:
      out[-1].append(int(item))
    else:
      out.append([int(item)])
  return out


def stage_design(blocks, available, max_tie_order):
  """Per stage: (x_chosen float[n], d_chosen, X float[T, n], sizes int[T]) where
  the T rows of X are 1_T/|T| for every subset T of the remaining items with
  |T| ≤ D (itertools), so log Z = logsumexp(X θ + λ_sizes)."""
  n = len(available)
  left = [i for i in range(n) if available[i]]
  out = []
  for b in blocks:
    rows, sizes = [], []
    for d in range(1, min(max_tie_order, len(left)) + 1):
      for sub in itertools.combinations(left, d):
        x = np.zeros(n)
        x[list(sub)] = 1.0 / d
        rows.append(x)
        sizes.append(d)
    chosen = np.zeros(n)
    chosen[b] = 1.0 / len(b)
    out.append((chosen, len(b), np.array(rows), np.array(sizes)))
    left = [i for i in left if i not in b]
  return out


def brute_log_prob(theta, log_tie, design):
  """Log-probability and its gradient in (θ, λ) from `stage_design`."""
  lam = np.concatenate([[0.0], log_tie])
  n = len(theta)
  lp, grad = 0.0, np.zeros(n + len(log_tie))
  for chosen, d, x, sizes in design:
    a = x @ theta + lam[sizes - 1]
    top = a.max()
    p = np.exp(a - top)
    z = p.sum()
    p /= z
    lp += chosen @ theta + lam[d - 1] - top - np.log(z)
    grad[:n] += chosen - p @ x
    if d > 1:
      grad[n + d - 2] += 1.0
    for dd in range(2, len(lam) + 1):
      grad[n + dd - 2] -= p[sizes == dd].sum()
  return lp, grad


def ordered_partitions(items, max_block):
  """Every ranking with ties of `items` (ordered set partitions), blocks ≤ max_block."""
  if not items:
    yield []
    return
  for d in range(1, min(max_block, len(items)) + 1):
    for first in itertools.combinations(items, d):
      rest = [i for i in items if i not in first]
      for tail in ordered_partitions(rest, max_block):
        yield [list(first)] + tail


def as_arrays(rankings_blocks, k):
  r = np.full((len(rankings_blocks), k), -1, np.int64)
  t = np.zeros((len(rankings_blocks), k), bool)
  for i, blocks in enumerate(rankings_blocks):
    pos = 0
    for b in blocks:
      for j, item in enumerate(b):
        r[i, pos] = item
        t[i, pos] = j > 0
        pos += 1
  return r, t


def _x64():
  return jax.enable_x64(True)


# ---- the log-probability --------------------------------------------------------------------

def test_log_prob_matches_enumeration_with_padding_and_availability():
  rng = np.random.default_rng(0)
  n, big_d = 6, 3
  theta = rng.normal(size=n)
  log_tie = np.array([0.4, -0.7])
  rankings = np.array([[2, 0, 4, 1, -1, -1], [5, 3, 1, 0, 2, 4], [1, 2, 3, -1, -1, -1],
                       [0, -1, -1, -1, -1, -1], [-1] * 6])
  tied = np.array([[0, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 1], [0, 0, 1, 0, 0, 0],
                   [0] * 6, [0] * 6], bool)
  where = np.ones((5, n), bool)
  where[0, 3] = where[2, 5] = where[3, 4] = False
  want = {}
  with _x64():
    for name, w in (("all", None), ("where", where)):
      got = luce.pl_tie_log_prob(jnp.asarray(theta), rankings, jnp.asarray(tied),
                                 jnp.asarray(log_tie), where=None if w is None else jnp.asarray(w))
      assert got.dtype == jnp.float64
      avail = np.ones((5, n), bool) if w is None else w
      want[name] = [brute_log_prob(theta, log_tie, stage_design(blocks_of(r, t), a, big_d))[0]
                    for r, t, a in zip(rankings, tied, avail)]
      np.testing.assert_allclose(np.asarray(got), want[name], rtol=1e-12, atol=1e-12)
  # float32 (x64 off).
  got32 = luce.pl_tie_log_prob(jnp.asarray(theta, jnp.float32), rankings, jnp.asarray(tied),
                               jnp.asarray(log_tie, jnp.float32))
  assert got32.dtype == jnp.float32 and got32.shape == (5,)
  np.testing.assert_allclose(np.asarray(got32), want["all"], rtol=1e-5)
  assert float(got32[-1]) == 0.0


def test_log_prob_float32_agrees_and_gradients_are_finite():
  rng = np.random.default_rng(1)
  n = 6
  theta = rng.normal(size=n)
  log_tie = np.array([-0.3])
  rankings = np.array([[3, 1, 0, 2, 5, 4]])
  tied = np.array([[0, 1, 0, 0, 1, 0]], bool)
  want = brute_log_prob(theta, log_tie, stage_design(blocks_of(rankings[0], tied[0]),
                                                    np.ones(n, bool), 2))
  got = luce.pl_tie_log_prob(jnp.asarray(theta, jnp.float32), rankings, jnp.asarray(tied),
                             jnp.asarray(log_tie, jnp.float32))
  np.testing.assert_allclose(float(got[0]), want[0], rtol=1e-5)
  g = jax.grad(lambda th, lt: luce.pl_tie_log_prob(th, rankings, jnp.asarray(tied), lt)[0],
               argnums=(0, 1))(jnp.asarray(theta, jnp.float32), jnp.asarray(log_tie, jnp.float32))
  np.testing.assert_allclose(np.concatenate([np.asarray(g[0]), np.asarray(g[1])]), want[1],
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("max_block", [4, 2])
def test_probabilities_of_every_tied_ordering_sum_to_one(max_block):
  # D = n = 4: every ordered set partition (75 of them) has positive probability; with
  # D = 2 only those whose blocks have at most 2 items.
  n = 4
  parts = list(ordered_partitions(list(range(n)), max_block))
  assert len(parts) == (75 if max_block == 4 else 66)
  rankings, tied = as_arrays(parts, n)
  theta = jnp.asarray([0.3, -1.0, 0.8, 0.1])
  log_tie = jnp.asarray([-0.5, 0.2, -1.5][:max_block - 1])
  with _x64():
    lp = luce.pl_tie_log_prob(theta.astype(jnp.float64), rankings, jnp.asarray(tied),
                              log_tie.astype(jnp.float64))
    assert abs(float(jnp.sum(jnp.exp(lp))) - 1.0) < 1e-12


def test_top_k_prefixes_sum_to_one():
  # The first two stages of 5 items (D = 2): every possible prefix of two blocks.
  n = 5
  prefixes = [p[:2] for p in ordered_partitions(list(range(n)), 2)]
  prefixes = [list(map(list, x)) for x in {tuple(map(tuple, p)) for p in prefixes}]
  rankings, tied = as_arrays(prefixes, 4)
  with _x64():
    lp = luce.pl_tie_log_prob(jnp.linspace(-1.0, 1.0, n), rankings, jnp.asarray(tied),
                              jnp.asarray([-0.4]))
    assert abs(float(jnp.sum(jnp.exp(lp))) - 1.0) < 1e-12


# ---- the fit against scipy on the enumerated likelihood ------------------------------------

def brute_fit(rows, tied, n, big_d, *, avail=None, counts=None, prior=0.01):
  designs = [stage_design(blocks_of(r, t), np.ones(n, bool) if avail is None else a, big_d)
             for r, t, a in zip(rows, tied, avail if avail is not None else [None] * len(rows))]
  c = np.ones(len(rows)) if counts is None else counts

  def neg(x):
    val, grad = 0.0, np.zeros_like(x)
    for ci, des in zip(c, designs):
      v, g = brute_log_prob(x[:n], x[n:], des)
      val += ci * v
      grad += ci * g
    val -= 0.5 * prior * x[:n] @ x[:n]
    grad[:n] -= prior * x[:n]
    return -val, -grad

  res = optimize.minimize(neg, np.zeros(n + big_d - 1), jac=True, method="BFGS",
                          options={"gtol": 1e-11, "maxiter": 2000})
  x = res.x
  # The observed information by central differences of the exact gradient.
  h = np.zeros((len(x), len(x)))
  for i in range(len(x)):
    e = np.zeros(len(x))
    e[i] = 1e-5
    h[:, i] = (neg(x + e)[1] - neg(x - e)[1]) / 2e-5
  return x, -res.fun, 0.5 * (h + h.T)


@pytest.fixture(scope="module")
def sampled():
  """120 top-3 lists with ties of 5 items drawn from the model (D = 3)."""
  theta = np.array([0.5, -0.3, 1.0, -1.2, 0.0])
  log_tie = np.array([-0.6, -1.5])
  r, t = luce.sample_pl_tied(jax.random.key(3), jnp.asarray(theta, jnp.float32),
                             jnp.asarray(log_tie, jnp.float32), 120, k=3)
  r, t = np.asarray(r).astype(np.int64), np.asarray(t)
  keep = ((r >= 0) & ~t).sum(axis=1) >= 2
  return r[keep], t[keep]


@pytest.mark.parametrize("availability", ["top-k", "listed"])
def test_fit_equals_brute_force_maximum(sampled, availability):
  r, t = sampled
  n, big_d = 5, 3
  assert t.any(axis=1).mean() > 0.2 and (((r >= 0) & ~t).sum(axis=1) >= 2).all()
  counts = 1.0 + (np.arange(len(r)) % 3)
  avail = luce.listed_items(r, n) if availability == "listed" else None
  fit = luce.fit_pl_tied(r, n, tied=t, max_tie_order=big_d, where=avail, counts=counts)
  x, obj, info = brute_fit(r, t, n, big_d, avail=avail, counts=counts)
  theta = x[:n] - x[:n].mean()
  np.testing.assert_allclose(fit.log_strengths, theta, atol=1e-5)
  np.testing.assert_allclose(fit.log_tie, x[n:], atol=1e-5)
  assert abs(fit.log_posterior - obj) < 1e-8
  ll = obj + 0.5 * 0.01 * x[:n] @ x[:n]
  assert abs(fit.log_likelihood - ll) < 1e-6
  # Standard errors: the inverse information (prior included), θ centred.
  cov = np.linalg.inv(info)
  tmat = np.eye(n + big_d - 1)
  tmat[:n, :n] -= 1.0 / n
  cov = tmat @ cov @ tmat.T
  np.testing.assert_allclose(fit.stderr, np.sqrt(np.diag(cov))[:n], rtol=1e-4)
  np.testing.assert_allclose(fit.log_tie_stderr, np.sqrt(np.diag(cov))[n:], rtol=1e-4)
  assert fit.max_tie_order == 3 and fit.log_tie.shape == (2,)


def test_fit_with_max_tie_order_one_is_fit_pl(sampled):
  r, t = sampled
  plain = r[~t.any(axis=1)]
  a = luce.fit_pl_tied(plain, 5, tied=np.zeros(plain.shape, bool))
  b = luce.fit_pl(plain, 5)
  assert a.max_tie_order == 1 and a.log_tie.shape == (0,)
  np.testing.assert_allclose(a.log_strengths, b.log_strengths, atol=1e-8)
  np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-6)
  assert abs(a.log_likelihood - b.log_likelihood) < 1e-6


# ---- sampling -------------------------------------------------------------------------------

def test_sampler_chi_square_full_rankings():
  n, big_d = 4, 2
  theta = np.array([0.6, -0.4, 0.2, -1.0])
  log_tie = np.array([-0.3])
  parts = list(ordered_partitions(list(range(n)), big_d))
  prob = np.exp([brute_log_prob(theta, log_tie, stage_design(p, np.ones(n, bool), big_d))[0]
                 for p in parts])
  assert abs(prob.sum() - 1) < 1e-12
  m = 10_000
  r, t = luce.sample_pl_tied(jax.random.key(0), jnp.asarray(theta, jnp.float32),
                             jnp.asarray(log_tie, jnp.float32), m)
  r, t = np.asarray(r), np.asarray(t)
  assert r.shape == (m, n) and (np.sort(r, axis=1) == np.arange(n)).all()
  key = {tuple(tuple(sorted(b)) for b in p): i for i, p in enumerate(parts)}
  idx = np.array([key[tuple(tuple(sorted(b)) for b in blocks_of(a, b))] for a, b in zip(r, t)])
  observed = np.bincount(idx, minlength=len(parts))
  chi2 = ((observed - m * prob) ** 2 / (m * prob)).sum()
  assert stats.chi2.sf(chi2, len(parts) - 1) > 1e-3


def test_sampler_top_k_matches_log_prob():
  # Top-2 lists of 5 items with D = 3: the last block may pass k; the sampled
  # lists' frequencies match exp(pl_tie_log_prob) of each distinct list.
  big_d = 3
  theta = jnp.asarray([0.4, -0.2, 0.9, -1.1, 0.0], jnp.float32)
  log_tie = jnp.asarray([-0.5, -1.0], jnp.float32)
  m = 10_000
  r, t = luce.sample_pl_tied(jax.random.key(7), theta, log_tie, m, k=2)
  r, t = np.asarray(r), np.asarray(t)
  assert r.shape == (m, 4)
  uniq, inv, observed = np.unique(np.concatenate([r, t], axis=1), axis=0, return_inverse=True,
                                  return_counts=True)
  with _x64():
    prob = np.exp(np.asarray(luce.pl_tie_log_prob(theta.astype(jnp.float64), uniq[:, :4],
                                                  jnp.asarray(uniq[:, 4:].astype(bool)),
                                                  log_tie.astype(jnp.float64))))
  # Every possible list: first block ≥ 2 items, or a single then a block of ≤ 3.
  assert prob.sum() > 0.999
  chi2 = ((observed - m * prob) ** 2 / (m * prob)).sum()
  assert stats.chi2.sf(chi2, len(uniq) - 1) > 1e-3
  assert big_d == 3


# ---- bad inputs -----------------------------------------------------------------------------

def test_named_errors():
  r = np.array([[0, 1, 2, -1], [2, 0, 1, 3]])
  ok = np.array([[0, 1, 0, 0], [0, 0, 1, 0]], bool)
  th = jnp.zeros(4)
  with pytest.raises(InputError, match=r"tied\[1, 0\] is True: the first item"):
    luce.fit_pl_tied(r, 4, tied=ok | np.array([[0, 0, 0, 0], [1, 0, 0, 0]], bool))
  with pytest.raises(InputError, match=r"tied\[0, 3\] is True but rankings\[0, 3\] is -1"):
    luce.fit_pl_tied(r, 4, tied=ok | np.array([[0, 0, 0, 1], [0, 0, 0, 0]], bool))
  three = np.array([[0, 1, 1, 0], [0, 0, 1, 0]], bool)
  with pytest.raises(InputError, match=r"rankings\[0\] ties 3 items at positions 0..2 .*"
                                       r"above the maximum tie order 2"):
    luce.fit_pl_tied(r, 4, tied=three, max_tie_order=2)
  with pytest.raises(InputError, match=r"ties 3 items .* above the maximum tie order 2"):
    luce.pl_tie_log_prob(th, r, jnp.asarray(three), jnp.zeros(1))
  with pytest.raises(InputError, match=r"tied\[0, 0\] is True"):
    luce.pl_tie_log_prob(th, r, jnp.asarray(np.eye(2, 4, dtype=bool)), jnp.zeros(1))
  all_tied = np.array([[0, 1, 1, 0], [0, 1, 1, 1]], bool)
  with pytest.raises(InputError, match=r"rankings\[0\] = \[0, 1, 2\]: all its items are tied"):
    luce.fit_pl_tied(r, 4, tied=all_tied | np.array([[0, 0, 0, 0], [0, 0, 0, 0]], bool),
                     max_tie_order=4)
  with pytest.raises(InputError, match=r"no tie of order 3"):
    luce.fit_pl_tied(r, 4, tied=ok, max_tie_order=3)
  with pytest.raises(InputError, match="max_tie_order must be an integer"):
    luce.fit_pl_tied(r, 4, tied=ok, max_tie_order=0)
  with pytest.raises(ShapeError, match=r"tied must be bool\[m=2, k=4\]"):
    luce.fit_pl_tied(r, 4, tied=ok[:, :3])
  with pytest.raises(ShapeError, match=r"tied must be bool\[m=2, k=4\]"):
    luce.fit_pl_tied(r, 4, tied=ok.astype(int))
  with pytest.raises(ShapeError, match="tied must be bool with the shape of rankings"):
    luce.pl_tie_log_prob(th, r, jnp.asarray(ok[:1]), jnp.zeros(1))
  with pytest.raises(ShapeError, match="log_tie must be"):
    luce.pl_tie_log_prob(th, r, jnp.asarray(ok), 0.0)
  with pytest.raises(ShapeError, match=r"where must be bool\[m=2, n=4\]"):
    luce.fit_pl_tied(r, 4, tied=ok, where=np.ones((2, 3), bool))
  with pytest.raises(InputError, match=r"listed item must be available"):
    luce.fit_pl_tied(r, 4, tied=ok, where=np.eye(2, 4, dtype=bool))
  with pytest.raises(ShapeError, match=r"log_strengths must be float\[n\]"):
    luce.sample_pl_tied(jax.random.key(0), jnp.zeros((3, 4)), jnp.zeros(1), 5)


def test_fit_pl_dispatches_tied_lists_to_the_tie_model():
  """luce.fit_pl(..., tied=) is fit_pl_tied; max_tie_order without tied is a named error."""
  rankings = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1], [1, 0, 2], [2, 1, 0]])
  tied = np.zeros(rankings.shape, bool)
  tied[0, 1] = tied[3, 2] = True
  a = luce.fit_pl(rankings, 3, tied=tied, max_tie_order=2)
  b = luce.fit_pl_tied(rankings, 3, tied=tied, max_tie_order=2)
  assert isinstance(a, luce.PLTieFit)
  np.testing.assert_array_equal(a.log_strengths, b.log_strengths)
  np.testing.assert_array_equal(a.log_tie, b.log_tie)
  with pytest.raises(InputError, match="max_tie_order"):
    luce.fit_pl(rankings, 3, max_tie_order=2)
