"""Tests of luce.sampling: Gumbel noise and constrained Gumbel-top-k PL sampling.

The statistical tests draw fresh random scores and keys each run (the seed is
in every assertion message, so a failure can be replayed) and compare
empirical frequencies of whole ordered lists with probabilities enumerated
independently in numpy float64. Each chi-square test rejects at p < 1e-3, and
each is shown to reject a deliberately wrong distribution, so it can fail.
Replay a failure with LUCE_TEST_SEED=<seed from the message>.
"""

import itertools
import os

import numpy as np
import pytest
import scipy.stats
import jax
import jax.numpy as jnp

from luce import sampling as sampling_module
from luce.errors import InfeasibleError, InputError, LuceError, ShapeError
from luce.sampling import gumbel_noise, pl_sample

N_SAMPLES = 100_000
P_MIN = 1e-3
EULER_GAMMA = 0.5772156649015329


def fresh_seed() -> int:
  """A new seed each run; LUCE_TEST_SEED=<seed> replays a failure."""
  env = os.environ.get("LUCE_TEST_SEED")
  return int(env) if env else int(np.random.default_rng().integers(2**31))


# ---------------------------------------------------------------------------
# Independent numpy float64 references over all ordered k-tuples of n items.
# A tuple (i_1, ..., i_k) is cell sum_j i_j n^(k-j) of a vector of n^k cells.

def cell(items, n):
  c = 0
  for i in items:
    c = c * n + int(i)
  return c


def pl_probs(scores, k, allowed=None):
  """P(ordered list) under PL restricted to the allowed items, float64[n^k]."""
  scores = np.asarray(scores, np.float64)
  n = len(scores)
  allowed = np.isfinite(scores) if allowed is None else allowed & np.isfinite(scores)
  w = np.zeros(n)
  w[allowed] = np.exp(scores[allowed] - scores[allowed].max())
  p = np.zeros(n**k)
  for perm in itertools.permutations(np.flatnonzero(allowed), k):
    rest = allowed.copy()
    prob = 1.0
    for i in perm:
      prob *= w[i] / w[rest].sum()
      rest[i] = False
    p[cell(perm, n)] = prob
  return p


def quota_ok(chosen, groups, qmin, qmax):
  c = np.bincount(np.asarray(chosen, int), minlength=len(qmin))
  return bool(np.all((qmin <= c) & (c <= qmax)))


def stagewise_probs(scores, k, allowed, groups, qmin, qmax):
  """PL restricted stage by stage to picks that leave the quotas reachable.

  Reachability is decided by brute force (does some completion of the list
  meet every quota?), not by the deficit rule the sampler uses.
  """
  scores = np.asarray(scores, np.float64)
  n = len(scores)
  items = [i for i in range(n) if allowed[i] and np.isfinite(scores[i])]
  w = np.exp(scores - scores[items].max())
  memo = {}

  def completable(chosen):
    if chosen not in memo:
      rest = [i for i in items if i not in chosen]
      memo[chosen] = any(
          quota_ok(groups[list(chosen) + list(extra)], groups, qmin, qmax)
          for extra in itertools.combinations(rest, k - len(chosen)))
    return memo[chosen]

  p = np.zeros(n**k)
  for perm in itertools.permutations(items, k):
    prob = 1.0
    for j in range(k):
      eligible = [i for i in items
                  if i not in perm[:j] and completable(frozenset(perm[:j] + (i,)))]
      if perm[j] not in eligible:
        prob = 0.0
        break
      prob *= w[perm[j]] / w[eligible].sum()
    p[cell(perm, n)] = prob
  return p


def rejection_probs(scores, k, allowed, groups, qmin, qmax):
  """PL conditioned on the quotas (sample, reject invalid lists): the OTHER semantics."""
  n = len(scores)
  p = pl_probs(scores, k, allowed)
  for perm in itertools.permutations(range(n), k):
    if not quota_ok(groups[list(perm)], groups, qmin, qmax):
      p[cell(perm, n)] = 0.0
  return p / p.sum()


def chi2_pvalue(samples, probs, n, seed):
  """Chi-square p-value of sampled lists int[N, k] against probs float64[n^k]."""
  samples = np.asarray(samples)
  assert samples.min() >= 0, f"seed {seed}: a sample holds -1: {samples.min(0)}"
  k = samples.shape[1]
  cells = (samples * n ** np.arange(k - 1, -1, -1)).sum(1)  # as `cell`, vectorized
  observed = np.bincount(cells, minlength=n**k).astype(np.float64)
  impossible = observed[probs == 0].sum()
  assert impossible == 0, f"seed {seed}: {impossible:.0f} samples have probability 0"
  expected = len(samples) * probs / probs.sum()
  # Pool the sparse cells so the chi-square approximation holds.
  small = (expected < 5) & (probs > 0)
  big = expected >= 5
  obs = np.append(observed[big], observed[small].sum())
  exp = np.append(expected[big], expected[small].sum())
  if exp[-1] == 0:
    obs, exp = obs[:-1], exp[:-1]
  return scipy.stats.chisquare(obs, exp).pvalue


def noncentrality(p_true, p_wrong, n_samples):
  """Expected excess chi-square when testing p_wrong on draws from p_true."""
  live = p_wrong > 0
  return n_samples * np.sum((p_true[live] - p_wrong[live]) ** 2 / p_wrong[live])


def draw(seed, scores, k, **kw):
  """N_SAMPLES lists from one key, scores broadcast over the batch."""
  scores = jnp.broadcast_to(jnp.asarray(scores, jnp.float32), (N_SAMPLES, len(scores)))
  return np.asarray(pl_sample(jax.random.key(seed), scores, k, **kw))


# ---------------------------------------------------------------------------
# Gumbel noise.

def test_gumbel_from_extreme_bits_is_finite_and_exact():
  bits = np.array([0, 1, 2, 2**23 - 1, 2**24, 2**31, 2**32 - 257, 2**32 - 129,
                   2**32 - 128, 2**32 - 2, 2**32 - 1], np.uint32)
  g = np.asarray(sampling_module._gumbel_from_bits(jnp.asarray(bits)))
  assert g.dtype == np.float32
  assert np.all(np.isfinite(g)), g
  assert np.all(np.diff(g) <= 0), f"g must not increase with the bits: {g}"
  # bits = 0 gives v = 2^-33 exactly: the largest value, at full precision.
  v0 = 2.0**-33
  assert g[0] == pytest.approx(-np.log(-np.log1p(-v0)), rel=1e-7)
  # The top bit patterns clamp to v = 1 - 2^-24: g = -log(24 log 2).
  assert g[-1] == pytest.approx(-np.log(24 * np.log(2)), rel=1e-6)


def test_gumbel_matches_float64_formula_where_v_is_exact():
  seed = fresh_seed()
  rng = np.random.default_rng(seed)
  # v < 1/2 covers every Gumbel value above -log(log 2) = 0.37, the decisive ones.
  bits = np.concatenate([rng.integers(0, 2**31, 10_000), rng.integers(0, 2**16, 1000)])
  g = np.asarray(sampling_module._gumbel_from_bits(jnp.asarray(bits, jnp.uint32)))
  v = (bits.astype(np.float64) + 0.5) * 2.0**-32
  ref = -np.log(-np.log1p(-v))
  np.testing.assert_allclose(g, ref, rtol=2e-6, atol=1e-6, err_msg=f"seed {seed}")


def test_gumbel_noise_distribution():
  seed = fresh_seed()
  g = np.asarray(gumbel_noise(jax.random.key(seed), (400, 500)), np.float64)
  assert g.shape == (400, 500)
  assert np.all(np.isfinite(g))
  se = np.pi / np.sqrt(6) / np.sqrt(g.size)
  assert abs(g.mean() - EULER_GAMMA) < 5 * se, f"seed {seed}: mean {g.mean()}"
  # The sample variance has standard error sigma^2 sqrt((kurtosis - 1) / N),
  # kurtosis 5.4 for the Gumbel.
  var_se = np.pi**2 / 6 * np.sqrt(4.4 / g.size)
  assert abs(g.var() - np.pi**2 / 6) < 5 * var_se, f"seed {seed}: variance {g.var()}"
  ks = scipy.stats.kstest(g.ravel(), scipy.stats.gumbel_r.cdf)
  assert ks.pvalue > P_MIN, f"seed {seed}: KS p = {ks.pvalue}"
  # The KS test sees a shift of 0.05: it can fail.
  wrong = scipy.stats.kstest(g.ravel(), scipy.stats.gumbel_r(loc=0.05).cdf)
  assert wrong.pvalue < P_MIN, f"seed {seed}: KS missed a shift, p = {wrong.pvalue}"


def test_gumbel_noise_dtype_and_determinism():
  key = jax.random.key(fresh_seed())
  a = gumbel_noise(key, (3, 7))
  assert a.dtype == jnp.float32 and a.shape == (3, 7)
  np.testing.assert_array_equal(a, gumbel_noise(key, (3, 7)))
  assert not np.array_equal(a, gumbel_noise(jax.random.fold_in(key, 1), (3, 7)))


# ---------------------------------------------------------------------------
# Distribution of the samples.

@pytest.mark.parametrize("k", [4, 2])
def test_unconstrained_matches_pl(k):
  seed = fresh_seed()
  n = 4
  scores = np.random.default_rng(seed).normal(0, 1, n).astype(np.float32)
  samples = draw(seed, scores, k)
  assert samples.shape == (N_SAMPLES, k) and samples.dtype == np.int32
  p = pl_probs(scores, k)
  pval = chi2_pvalue(samples, p, n, seed)
  assert pval > P_MIN, f"seed {seed}, scores {scores}: chi-square p = {pval}"
  # The same test rejects PL with one score shifted by 0.3: it can fail.
  shifted = scores + np.array([0.3, 0, 0, 0], np.float32)
  wrong = pl_probs(shifted, k)
  assert noncentrality(p, wrong, N_SAMPLES) > 150, f"seed {seed}"
  assert chi2_pvalue(samples, wrong, n, seed) < P_MIN, f"seed {seed}: missed a shift"


def test_large_common_offset_keeps_pl():
  # At 1e7 a float32 step is 1: without centering the noise would be rounded
  # to whole numbers and the distribution would be wrong.
  seed = fresh_seed()
  n, k = 4, 2
  base = np.random.default_rng(seed).normal(0, 1.5, n)
  scores = (base + 1e7).astype(np.float32)
  p = pl_probs(scores.astype(np.float64) - 1e7, k)
  pval = chi2_pvalue(draw(seed, scores, k), p, n, seed)
  assert pval > P_MIN, f"seed {seed}, scores {scores}: chi-square p = {pval}"


def test_forbidden_and_neg_inf_match_pl_on_allowed_items():
  seed = fresh_seed()
  rng = np.random.default_rng(seed)
  n, k = 6, 3
  # The wrong law below: PL on every finite item, conditioned on the list
  # missing the forbidden one (sampling with the ban checked afterwards).
  # Redraw until it differs enough from the right one to be told apart.
  for _ in range(20):
    scores = rng.normal(0, 1, n).astype(np.float32)
    off, ban = rng.choice(n, 2, replace=False)
    scores[off] = -np.inf
    forbidden = np.zeros(n, bool)
    forbidden[ban] = True
    p = pl_probs(scores, k, ~forbidden)
    wrong = pl_probs(scores, k)
    wrong[p == 0] = 0
    if noncentrality(p, wrong / wrong.sum(), N_SAMPLES) > 150:
      break
  else:
    pytest.fail(f"seed {seed}: no case separating the two laws")
  samples = draw(seed, scores, k, forbidden=jnp.asarray(forbidden))
  assert not np.isin(samples, [off, ban]).any(), f"seed {seed}"
  pval = chi2_pvalue(samples, p, n, seed)
  assert pval > P_MIN, f"seed {seed}, scores {scores}, ban {ban}: p = {pval}"
  assert chi2_pvalue(samples, wrong, n, seed) < P_MIN, f"seed {seed}: can't fail"


def _quota_case(rng):
  groups = np.array([0, 0, 1, 1, 2, 2, 2])
  qmin = np.array([1, 0, 1])
  qmax = np.array([2, 1, 2])
  forbidden = np.zeros(7, bool)
  forbidden[3] = True  # group 1 keeps one item
  scores = rng.normal(0, 1.5, 7).astype(np.float32)
  return scores, groups, qmin, qmax, forbidden


def test_quotas_match_stagewise_process():
  seed = fresh_seed()
  rng = np.random.default_rng(seed)
  n, k = 7, 3
  # Redraw until the stage-wise and rejection laws differ enough to be told
  # apart (almost always the first draw).
  for _ in range(20):
    scores, groups, qmin, qmax, forbidden = _quota_case(rng)
    p = stagewise_probs(scores, k, ~forbidden, groups, qmin, qmax)
    p_rej = rejection_probs(scores, k, ~forbidden, groups, qmin, qmax)
    if noncentrality(p, p_rej, N_SAMPLES) > 150:
      break
  else:
    pytest.fail(f"seed {seed}: no case separating the two laws")
  samples = draw(seed, scores, k, forbidden=jnp.asarray(forbidden),
                 groups=jnp.asarray(groups), quotas=jnp.stack([qmin, qmax], 1))
  pval = chi2_pvalue(samples, p, n, seed)
  assert pval > P_MIN, f"seed {seed}, scores {scores}: chi-square p = {pval}"
  # PL conditioned on the quotas by rejection is a different law, and the
  # test tells it apart: it can fail.
  assert chi2_pvalue(samples, p_rej, n, seed) < P_MIN, f"seed {seed}"


def test_constrained_samples_never_break_a_constraint():
  seed = fresh_seed()
  rng = np.random.default_rng(seed)
  n, n_groups, rows = 69, 7, 100_000
  sizes = np.array([12, 10, 11, 9, 8, 10, 9])
  groups = rng.permutation(np.repeat(np.arange(n_groups), sizes))
  quotas = np.array([[0, 3], [1, 2], [2, 4], [0, 0], [0, 1], [1, 10], [0, 2]])
  scores = rng.normal(0, 2, (rows, n)).astype(np.float32)
  scores[:, groups == 2] -= 3  # make the min of group 2 bind often
  scores[rng.random((rows, n)) < 0.05] = -np.inf
  forbidden = rng.random((rows, n)) < 0.2
  # The first 3 items of each group stay allowed, which keeps every row feasible.
  keep = np.concatenate([np.flatnonzero(groups == g)[:3] for g in range(n_groups)])
  forbidden[:, keep] = False
  scores[:, keep] = np.where(np.isinf(scores[:, keep]), 0.0, scores[:, keep])
  for k in (5, 10):
    out = np.asarray(pl_sample(jax.random.key(seed + k), scores, k,
                               forbidden=forbidden, groups=groups, quotas=quotas))
    msg = f"seed {seed}, k {k}"
    assert out.shape == (rows, k) and out.dtype == np.int32, msg
    assert out.min() >= 0 and out.max() < n, msg
    s = np.sort(out, axis=1)
    assert not (s[:, 1:] == s[:, :-1]).any(), f"{msg}: repeated item"
    r = np.arange(rows)[:, None]
    assert not forbidden[r, out].any(), f"{msg}: forbidden item sampled"
    assert np.isfinite(scores[r, out]).all(), f"{msg}: -inf item sampled"
    counts = (groups[out][..., None] == np.arange(n_groups)).sum(1)
    assert (counts >= quotas[:, 0]).all(), f"{msg}: a min is not met"
    assert (counts <= quotas[:, 1]).all(), f"{msg}: a max is exceeded"
    # The mins bind: without them group 2 would often be missing.
    assert (counts[:, 2] == 2).mean() > 0.5, msg


def test_nonbinding_quotas_give_the_top_k_lists():
  # Same noise, quotas that never bind: the slot-by-slot argmax must reproduce
  # lax.top_k exactly, which checks the sequential path against the simple one.
  seed = fresh_seed()
  rng = np.random.default_rng(seed)
  n, k = 30, 6
  scores = rng.normal(0, 1, (500, n)).astype(np.float32)
  forbidden = rng.random((500, n)) < 0.3
  groups = rng.integers(0, 4, n)
  quotas = np.array([[0, k]] * 4)
  key = jax.random.key(seed)
  plain = pl_sample(key, scores, k, forbidden=forbidden)
  seq = pl_sample(key, scores, k, forbidden=forbidden, groups=groups, quotas=quotas)
  np.testing.assert_array_equal(plain, seq, err_msg=f"seed {seed}")


# ---------------------------------------------------------------------------
# Shapes, keys, jit and vmap.

def test_same_key_same_samples_other_key_differs():
  seed = fresh_seed()
  scores = np.random.default_rng(seed).normal(0, 1, (100, 69)).astype(np.float32)
  groups = np.arange(69) % 7
  quotas = np.array([[0, 2]] * 7)
  key = jax.random.key(seed)
  for kw in ({}, {"groups": groups, "quotas": quotas}):
    a = pl_sample(key, scores, 5, **kw)
    np.testing.assert_array_equal(a, pl_sample(key, scores, 5, **kw), err_msg=f"seed {seed}")
    b = pl_sample(jax.random.fold_in(key, 1), scores, 5, **kw)
    assert not np.array_equal(a, b), f"seed {seed}"


def test_batch_axes_and_forbidden_broadcast():
  key = jax.random.key(fresh_seed())
  scores = jnp.zeros((2, 3, 8))
  out = pl_sample(key, scores, 3)
  assert out.shape == (2, 3, 3) and out.dtype == jnp.int32
  forbidden = np.zeros((4, 1, 8), bool)
  forbidden[:, :, :4] = True
  out = np.asarray(pl_sample(key, jnp.zeros((3, 8)), 4, forbidden=forbidden))
  assert out.shape == (4, 3, 4)
  assert np.all(np.sort(out, -1) == np.arange(4, 8)), out
  assert pl_sample(key, jnp.zeros((0, 5)), 2).shape == (0, 2)
  assert pl_sample(key, jnp.zeros(5), 5).shape == (5,)
  # Integer scores are promoted; each row is a permutation when k = n.
  out = np.asarray(pl_sample(key, jnp.arange(10).reshape(2, 5), 5))
  assert np.all(np.sort(out, -1) == np.arange(5))


def test_jit_and_vmap_agree_with_eager():
  seed = fresh_seed()
  rng = np.random.default_rng(seed)
  scores = jnp.asarray(rng.normal(0, 1, (50, 12)), jnp.float32)
  groups = jnp.asarray(np.arange(12) % 3)
  quotas = jnp.array([[1, 2], [0, 1], [1, 3]])
  key = jax.random.key(seed)
  jitted = jax.jit(pl_sample, static_argnames="k")
  for kw in ({}, {"groups": groups, "quotas": quotas}):
    np.testing.assert_array_equal(
        pl_sample(key, scores, 4, **kw), jitted(key, scores, 4, **kw),
        err_msg=f"seed {seed}")
  keys = jax.random.split(key, 50)
  out = np.asarray(jax.vmap(
      lambda kk, s: pl_sample(kk, s, 4, groups=groups, quotas=quotas))(keys, scores))
  assert out.shape == (50, 4)
  assert np.array_equal(
      out[7], np.asarray(pl_sample(keys[7], scores[7], 4, groups=groups, quotas=quotas)))
  counts = (np.asarray(groups)[out][..., None] == np.arange(3)).sum(1)
  assert (counts >= np.asarray(quotas)[:, 0]).all()
  assert (counts <= np.asarray(quotas)[:, 1]).all()


def test_under_jit_unfillable_slots_are_minus_one():
  key = jax.random.key(fresh_seed())
  jitted = jax.jit(pl_sample, static_argnames="k")
  # Without quotas: a row with 2 allowed items gets them, then -1 padding.
  scores = jnp.array([[0.0, -jnp.inf, 1.0, -jnp.inf, -jnp.inf],
                      [0.0, 0.0, 0.0, 0.0, 0.0]])
  out = np.asarray(jitted(key, scores, 4))
  assert sorted(out[0, :2]) == [0, 2] and list(out[0, 2:]) == [-1, -1], out
  assert out[1].min() >= 0, out
  # NaN or +inf in a row: the whole row is -1, other rows are sampled.
  bad = scores.at[0, 1].set(jnp.nan).at[1, 4].set(jnp.inf)
  bad = jnp.concatenate([bad, jnp.zeros((1, 5))])
  out = np.asarray(jitted(key, bad, 2))
  assert (out[:2] == -1).all() and (out[2] >= 0).all(), out
  # With quotas: a row no list can satisfy is all -1, feasible rows are valid.
  groups = jnp.array([0, 0, 1, 1, 1])
  quotas = jnp.array([[1, 1], [2, 3]])
  scores = jnp.zeros((3, 5)).at[1, 2:4].set(-jnp.inf)  # row 1: group 1 has 1 item
  out = np.asarray(jitted(key, scores, 3, groups=groups, quotas=quotas))
  assert (out[1] == -1).all(), out
  assert (out[[0, 2]] >= 0).all(), out
  # Traced quotas that are infeasible (min > max) or traced group ids out of
  # range: every row is -1, nothing invalid comes back.
  f = jax.jit(lambda g, q: pl_sample(key, jnp.zeros((3, 5)), 3, groups=g, quotas=q))
  assert (np.asarray(f(groups, jnp.array([[2, 1], [1, 3]]))) == -1).all()
  assert (np.asarray(f(groups, jnp.array([[2, 2], [2, 2]]))) == -1).all()
  assert (np.asarray(f(groups.at[0].set(5), quotas)) == -1).all()
  assert (np.asarray(f(groups, quotas)) >= 0).all()


# ---------------------------------------------------------------------------
# Bad and infeasible inputs.

KEY = jax.random.key(0)
S6 = jnp.zeros(6)
G6 = jnp.array([0, 0, 1, 1, 2, 2])
Q3 = jnp.array([[0, 2], [1, 2], [0, 2]])

BAD_INPUTS = [
    ("nan", lambda: pl_sample(KEY, S6.at[2].set(jnp.nan), 2), InputError, r"scores has NaN at index \(2,\)"),
    ("posinf", lambda: pl_sample(KEY, S6.at[1].set(jnp.inf), 2), InputError, r"scores has \+inf"),
    ("complex", lambda: pl_sample(KEY, S6.astype(jnp.complex64), 2), ShapeError, "scores must be a float"),
    ("scalar", lambda: pl_sample(KEY, 1.0, 1), ShapeError, "scores must have at least one axis"),
    ("k0", lambda: pl_sample(KEY, S6, 0), InputError, "k = 0 is out of range"),
    ("k>n", lambda: pl_sample(KEY, S6, 7), InputError, "k = 7 is out of range"),
    ("kfloat", lambda: pl_sample(KEY, S6, 2.0), ShapeError, "k must be a Python int"),
    ("kbool", lambda: pl_sample(KEY, S6, True), ShapeError, "k must be a Python int"),
    ("ktraced", lambda: jax.jit(pl_sample)(KEY, S6, 2), ShapeError, "k must be a static"),
    ("forbidden ids", lambda: pl_sample(KEY, S6, 2, forbidden=jnp.array([1, 3])), ShapeError, "forbidden must be a bool"),
    ("forbidden n", lambda: pl_sample(KEY, S6, 2, forbidden=jnp.zeros(5, bool)), ShapeError, "forbidden .* does not broadcast"),
    ("forbidden batch", lambda: pl_sample(KEY, jnp.zeros((2, 6)), 2, forbidden=jnp.zeros((3, 6), bool)), ShapeError, "forbidden .* does not broadcast"),
    ("groups alone", lambda: pl_sample(KEY, S6, 2, groups=G6), InputError, "groups was given alone"),
    ("quotas alone", lambda: pl_sample(KEY, S6, 2, quotas=Q3), InputError, "quotas was given alone"),
    ("groups length", lambda: pl_sample(KEY, S6, 2, groups=G6[:5], quotas=Q3), ShapeError, r"groups must have shape \(n,\)"),
    ("groups float", lambda: pl_sample(KEY, S6, 2, groups=G6 * 1.0, quotas=Q3), ShapeError, "groups must hold integer"),
    ("group id high", lambda: pl_sample(KEY, S6, 2, groups=G6.at[4].set(3), quotas=Q3), InputError, r"groups\[4\] = 3 is not a group id"),
    ("group id neg", lambda: pl_sample(KEY, S6, 2, groups=G6.at[0].set(-1), quotas=Q3), InputError, r"groups\[0\] = -1"),
    ("quotas shape", lambda: pl_sample(KEY, S6, 2, groups=G6, quotas=jnp.zeros((3, 3), int)), ShapeError, r"quotas must have shape \(G, 2\)"),
    ("quotas 1d", lambda: pl_sample(KEY, S6, 2, groups=G6, quotas=jnp.zeros(6, int)), ShapeError, r"quotas must have shape \(G, 2\)"),
    ("quotas float", lambda: pl_sample(KEY, S6, 2, groups=G6, quotas=Q3 * 1.0), ShapeError, "quotas must hold integer"),
    ("quotas neg", lambda: pl_sample(KEY, S6, 2, groups=G6, quotas=Q3.at[2, 1].set(-1)), InputError, r"quotas\[2, 1\] = -1 is negative"),
    ("too few allowed", lambda: pl_sample(KEY, jnp.zeros((3, 6)).at[1, :4].set(-jnp.inf), 3), InfeasibleError, r"row \(1,\) of scores has 2 allowed items .* k = 3"),
    ("too few unforbidden", lambda: pl_sample(KEY, S6, 3, forbidden=jnp.arange(6) < 4), InfeasibleError, "scores has 2 allowed items .* k = 3"),
    ("min > max", lambda: pl_sample(KEY, S6, 2, groups=G6, quotas=Q3.at[1].set(jnp.array([2, 1]))), InfeasibleError, r"quotas\[1\] = \(2, 1\) .* min > max"),
    ("sum min > k", lambda: pl_sample(KEY, S6, 2, groups=G6, quotas=jnp.array([[1, 2], [1, 2], [1, 2]])), InfeasibleError, "minimums of quotas add up to 3 .* k = 2"),
    ("group short", lambda: pl_sample(KEY, jnp.zeros((2, 6)).at[1, 3].set(-jnp.inf), 3, groups=G6, quotas=Q3.at[1, 0].set(2)), InfeasibleError, r"row \(1,\) of scores: group 1 has 1 allowed items but quotas\[1\] asks for at least 2"),
    ("supply < k", lambda: pl_sample(KEY, S6, 4, groups=G6, quotas=jnp.array([[0, 1], [0, 1], [0, 1]])), InfeasibleError, "supply at most 3 picks .* k = 4"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_raise(call, error, message):
  with pytest.raises(error, match=message) as info:
    call()
  assert isinstance(info.value, (LuceError, ValueError))


def test_feasible_edge_cases_do_not_raise():
  # Exactly tight: sum of mins = k, and supply = k.
  out = np.asarray(pl_sample(KEY, S6, 3, groups=G6, quotas=jnp.array([[1, 1]] * 3)))
  assert sorted(G6[out].tolist()) == [0, 1, 2]
  out = np.asarray(pl_sample(KEY, S6, 3, groups=G6, quotas=jnp.array([[0, 0], [0, 1], [2, 2]])))
  assert sorted(out.tolist()) in ([2, 4, 5], [3, 4, 5])


def test_checked_reports_infeasible_rows_under_jit():
  """Under luce.checked the eager InfeasibleError conditions become checkify errors
  (before: ids of -1 came back with no error)."""
  import luce
  key = jax.random.key(0)
  groups = jnp.array([0, 0, 1, 1, 1])
  quotas = jnp.array([[3, 5], [0, 5]])          # group 0 has 2 items but needs 3
  scores = jnp.zeros((2, 5))
  fn = jax.jit(luce.checked(lambda key, s: pl_sample(key, s, 4, groups=groups, quotas=quotas)))
  err, out = fn(key, scores)
  with pytest.raises(Exception, match=r"row 0 of scores \(flat\): no list of k = 4 picks meets"):
    err.throw()
  short = jnp.array([[0.0, 0.0, -jnp.inf, -jnp.inf, -jnp.inf], [0.0] * 5])
  err, _ = jax.jit(luce.checked(lambda key, s: pl_sample(key, s, 3)))(key, short)
  with pytest.raises(Exception, match=r"row 0 of scores \(flat\) has fewer allowed items"):
    err.throw()
  err, out = jax.jit(luce.checked(lambda key, s: pl_sample(key, s, 3)))(key, jnp.zeros((2, 5)))
  err.throw()                                   # feasible: no error
  assert (np.asarray(out) >= 0).all()


def test_inclusion_counts_skip_padding_and_refuse_other_ids():
  from luce.errors import ShapeError
  from luce.models import inclusion_counts
  drawn = np.array([[[0, 2], [2, -1]]])          # 2 draws; the second is short
  np.testing.assert_allclose(inclusion_counts(drawn, 3), [[0.5, 0.0, 1.0]])
  with pytest.raises(ShapeError, match="item id 3, outside"):
    inclusion_counts(np.array([[[0, 3]]]), 3)
