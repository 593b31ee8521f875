"""luce.diffusion: likelihoods (recursion, PL special case, ELBO), sampler, masks, metrics."""

import functools
import itertools
import math

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from scipy import stats

import luce
from luce import diffusion as D
from luce.errors import InfeasibleError, InputError


@functools.lru_cache(maxsize=None)
def _model(n, k, seed=0, mixer="deepsets", scale=0.5):
  """A context-free denoiser with random (not zero) interaction weights:
  (set logits_fn, ordered logits_fn), both jitted; cached so tests share compiles."""
  model = D.SubsetDenoiser(n_items=n, k=k, hidden=16, depth=2, mixer=mixer)
  vis = jnp.zeros((1, n), bool)
  init = jax.jit(lambda key: model.init(key, None, vis, jnp.full((1,), k), method="init_all"))
  params = init(jax.random.key(seed))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  params = tree.unflatten([x + scale * jax.random.normal(key, x.shape) for x, key in zip(leaves, keys)])
  enc = model.apply({"params": params}, None, method="encode")
  fn = jax.jit(lambda v, r: model.apply({"params": params}, enc, v, r, method="denoise"))
  ordered = jax.jit(lambda v, r: model.apply({"params": params}, enc, v, r, method="denoise_ordered"))
  return fn, ordered


def _all_sets(n, k):
  return jnp.asarray(list(itertools.combinations(range(n), k)), jnp.int32)


def _brute_force_log_prob(fn, subset, n, allowed_fn=None):
  """Sum over the k! orders of prod_j pi(s_j | s_<j), one network call per prefix."""
  k = len(subset)
  total = 0.0
  for order in itertools.permutations(subset):
    p = 1.0
    for j, item in enumerate(order):
      vis = np.zeros((1, 1, n), bool)
      vis[0, 0, list(order[:j])] = True
      r = np.full((1, 1), k - j)
      logits = np.asarray(fn(jnp.asarray(vis), jnp.asarray(r)), np.float64)[0, 0]
      ok = ~vis[0, 0] if allowed_fn is None else np.asarray(allowed_fn(vis[0], r[0]))[0]
      w = np.where(ok, np.exp(logits - logits[ok].max()), 0.0)
      p *= w[item] / w.sum()
    total += p
  return math.log(total)


@pytest.mark.parametrize("n,k,mixer,scale", [(6, 3, "deepsets", 0.8), (6, 4, "deepsets", 0.5),
                                             (6, 3, "transformer", 0.5)])
def test_recursion_matches_brute_force_enumeration(n, k, mixer, scale):
  fn, _ = _model(n, k, mixer=mixer, scale=scale)
  sets = _all_sets(n, k)[::7][:3]
  got = np.asarray(D.exact_set_log_prob(fn, sets, n))
  want = [_brute_force_log_prob(fn, list(np.asarray(s)), n) for s in sets]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_recursion_with_quotas_matches_brute_force():
  n, k = 7, 3
  groups, quotas = jnp.array([0, 0, 0, 1, 1, 1, 2]), jnp.array([[1, 2], [0, 1], [1, 1]])
  fn, _ = _model(n, k, seed=6, scale=0.8)
  allowed = lambda vis, r: D.allowed_items(jnp.asarray(vis), jnp.asarray(r), groups=groups, quotas=quotas)
  sets = jnp.array([[0, 3, 6], [1, 2, 6]], jnp.int32)
  got = np.asarray(D.exact_set_log_prob(fn, sets, n, groups=groups, quotas=quotas))
  want = [_brute_force_log_prob(fn, list(np.asarray(s)), n, allowed) for s in sets]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,k,mixer,scale", [(6, 3, "deepsets", 0.8), (6, 3, "transformer", 0.5)])
def test_probabilities_of_all_sets_sum_to_one(n, k, mixer, scale):
  fn, _ = _model(n, k, mixer=mixer, scale=scale)
  p = jnp.exp(D.exact_set_log_prob(fn, _all_sets(n, k), n))
  assert float(jnp.sum(p)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("n,k", [(8, 1), (30, 6), (69, 5)])
def test_pl_special_case_equals_pl_set_log_prob(n, k):
  rng = np.random.default_rng(k)
  scores = jnp.asarray(rng.normal(0, 1.5, (16, n)), jnp.float32)
  sets = jnp.asarray(np.stack([rng.choice(n, k, replace=False) for _ in range(16)]), jnp.int32)
  available = jnp.asarray(rng.random((16, n)) < 0.9).at[jnp.arange(16)[:, None], sets].set(True)
  got = D.exact_set_log_prob(D.pl_logits_fn(scores), sets, n, available=available)
  want = luce.pl_set_log_prob(scores, sets, where=available, method="exact")
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-5)


@pytest.mark.parametrize("n,k,mixer,scale", [(6, 3, "deepsets", 0.8), (6, 3, "transformer", 0.5),
                                             (30, 5, "deepsets", 0.5)])
def test_elbo_bounds_exact_nll_on_every_event(n, k, mixer, scale):
  fn, _ = _model(n, k, mixer=mixer, scale=scale)
  sets = _all_sets(n, k) if math.comb(n, k) < 100 else jnp.asarray(
      np.stack([np.random.default_rng(i).choice(n, k, replace=False) for i in range(64)]), jnp.int32)
  nll, bound = D.exact_nll_and_elbo(fn, sets, n)
  assert np.all(np.asarray(bound) >= np.asarray(nll) - 1e-5)
  np.testing.assert_allclose(D.set_elbo(fn, sets, n), bound, rtol=1e-6)
  np.testing.assert_allclose(-D.exact_set_log_prob(fn, sets, n), nll, rtol=1e-6)


def test_md4_loss_is_an_unbiased_estimate_of_the_bound():
  n, k = 30, 5
  rng = np.random.default_rng(0)
  fn, _ = _model(n, k)
  sets = jnp.asarray(np.stack([rng.choice(n, k, replace=False) for _ in range(4)]), jnp.int32)
  _, bound = D.exact_nll_and_elbo(fn, sets, n)
  mc = D.set_elbo(fn, sets, n, key=jax.random.key(0), samples=4000)
  np.testing.assert_allclose(mc, bound, rtol=0.03)


def test_ordered_loss_is_finite_with_finite_gradients():
  n, k = 10, 4
  model = D.SubsetDenoiser(n_items=n, k=k, hidden=8)
  params = jax.jit(lambda key: model.init(key, None, jnp.zeros((1, n), bool), jnp.full((1,), k),
                                          method="init_all"))(jax.random.key(0))["params"]
  ranking = jnp.array([[3, 1, 7, 0], [9, 8, 2, 5]], jnp.int32)

  def loss(p):
    enc = model.apply({"params": p}, None, method="encode")
    fn = lambda v, r: model.apply({"params": p}, enc, v, r, method="denoise_ordered")
    return jnp.mean(D.ordered_diffusion_loss(fn, ranking, n, jax.random.key(1)))

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_exact_sampler_matches_model_distribution_chi_square():
  n, k = 6, 3
  fn, _ = _model(n, k, scale=0.8)
  sets = _all_sets(n, k)
  p = np.exp(np.asarray(D.exact_set_log_prob(fn, sets, n), np.float64))
  samples = np.asarray(jax.jit(lambda key: D.sample_sets(key, fn, n, k, 20000))(jax.random.key(0)))
  index = {tuple(s): i for i, s in enumerate(np.asarray(sets).tolist())}
  counts = np.bincount([index[tuple(s)] for s in samples.tolist()], minlength=len(sets))
  _, pvalue = stats.chisquare(counts, p / p.sum() * len(samples))
  assert pvalue > 1e-3


def test_exact_sampler_with_quotas_matches_masked_model_chi_square():
  n, k = 7, 3
  groups, quotas = jnp.array([0, 0, 0, 1, 1, 1, 2]), jnp.array([[1, 1], [0, 2], [0, 1]])
  available = jnp.array([True, True, True, True, False, True, True])
  fn, _ = _model(n, k, seed=6, scale=0.8)
  cons = dict(available=available, groups=groups, quotas=quotas)
  sets = _all_sets(n, k)
  p = np.exp(np.asarray(D.exact_set_log_prob(fn, sets, n, **cons), np.float64))
  assert p.sum() == pytest.approx(1.0, abs=1e-5)
  samples = np.asarray(D.sample_sets(jax.random.key(1), fn, n, k, 20000, **cons))
  index = {tuple(s): i for i, s in enumerate(np.asarray(sets).tolist())}
  counts = np.bincount([index[tuple(s)] for s in samples.tolist()], minlength=len(sets))
  assert np.all(counts[p == 0] == 0)
  _, pvalue = stats.chisquare(counts[p > 0], p[p > 0] / p.sum() * len(samples))
  assert pvalue > 1e-3


@pytest.mark.parametrize("steps", [5, 2])
def test_constrained_samples_never_violate_a_constraint(steps):
  n, k, batch = 69, 5, 20_000
  rng = np.random.default_rng(steps)
  groups = jnp.asarray(np.arange(n) % 4)
  quotas = jnp.array([[1, 2], [0, 1], [2, 3], [0, 5]])
  available = jnp.asarray(rng.random(n) < 0.8)
  fn, _ = _model(n, k, seed=7, scale=1.0)
  draw = jax.jit(lambda key: D.sample_sets(key, fn, n, k, batch, steps=steps, available=available,
                                           groups=groups, quotas=quotas))
  samples = np.asarray(draw(jax.random.key(steps)))
  assert samples.shape == (batch, k)
  assert D.validity_rate(samples, n, k, available=available, groups=groups, quotas=quotas) == 1.0


def test_sampler_is_deterministic_given_the_key():
  n, k = 30, 5
  fn, _ = _model(n, k)
  a = D.sample_sets(jax.random.key(3), fn, n, k, 64, steps=3)
  b = D.sample_sets(jax.random.key(3), fn, n, k, 64, steps=3)
  c = D.sample_sets(jax.random.key(4), fn, n, k, 64, steps=3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_infeasible_constraints_raise_before_sampling():
  n, k = 10, 4
  fn, _ = _model(n, k)
  groups = jnp.asarray(np.arange(n) % 2)
  with pytest.raises(InfeasibleError):
    D.sample_sets(jax.random.key(0), fn, n, k, 8, groups=groups, quotas=jnp.array([[3, 3], [2, 4]]))
  with pytest.raises(InfeasibleError):
    D.sample_sets(jax.random.key(0), fn, n, k, 8, available=jnp.arange(n) < 3)
  with pytest.raises(InfeasibleError):  # group 0 has 2 available items (6, 8); asks for 3
    D.sample_sets(jax.random.key(0), fn, n, k, 8, available=jnp.arange(n) >= 6,
                  groups=groups, quotas=jnp.array([[3, 4], [0, 4]]))
  with pytest.raises(InputError):
    D.sample_sets(jax.random.key(0), fn, n, k, 8, steps=k + 1)


def test_pl_sampler_matches_pl_inclusion():
  # With the PL logits function the sampler draws PL sets: inclusion rates
  # agree with those of luce.pl_sample.
  n, k, batch = 12, 3, 40000
  scores = jnp.asarray(np.random.default_rng(0).normal(size=n), jnp.float32)
  fn = D.pl_logits_fn(jnp.broadcast_to(scores, (batch, n)))
  ours = D.inclusion_from_samples(np.asarray(D.sample_sets(jax.random.key(0), fn, n, k, batch))[None], n)
  theirs = D.inclusion_from_samples(
      np.asarray(luce.pl_sample(jax.random.key(1), jnp.broadcast_to(scores, (batch, n)), k))[None], n)
  np.testing.assert_allclose(ours, theirs, atol=0.015)


def test_metrics_on_uniform_sets():
  n, k = 30, 5
  rng = np.random.default_rng(0)
  a = np.stack([rng.choice(n, k, replace=False) for _ in range(3000)])
  b = np.stack([rng.choice(n, k, replace=False) for _ in range(3000)])
  assert abs(D.cooccurrence_mmd(a, b, n)) < 0.05
  skew = np.stack([rng.choice(n, k, replace=False, p=np.arange(1, n + 1) / (n * (n + 1) / 2))
                   for _ in range(3000)])
  assert D.cooccurrence_mmd(a, skew, n) > 10 * abs(D.cooccurrence_mmd(a, b, n))
  hist = D.overlap_histogram(a, n, k, pairs=20000)
  np.testing.assert_allclose(hist["observed"], hist["expected"], atol=0.015)
  assert hist["expected"].sum() == pytest.approx(1.0)
  cal = D.inclusion_calibration(np.full((3000, n), k / n), b)
  assert cal["ece"] < 0.01 and cal["brier"] == pytest.approx(k / n * (1 - k / n), abs=0.01)
  assert D.validity_rate(a, n, k) == 1.0
  assert D.validity_rate(np.array([[0, 0, 1, 2, 3]]), n, k) == 0.0
