"""pl_log_prob with float64 scores (jax_enable_x64): centred in float64 before any float32
step, float64 results from the float64 paths, and +inf scores refused."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luce
from luce.errors import InputError
from luce.kernels.pl_nll import cpu_ffi

IMPLS = ["auto", "xla", "reference"] + (["cpu"] if cpu_ffi.available() else [])


def _brute_log_prob(scores, ranking):
  """float64 log P of a top-k list by the product formula, with math.fsum."""
  s = [float(x) for x in scores]
  left = list(range(len(s)))
  total = 0.0
  for item in ranking:
    top = max(s[i] for i in left)
    total += s[item] - (top + math.log(math.fsum(math.exp(s[i] - top) for i in left)))
    left.remove(item)
  return total


@pytest.mark.parametrize("impl", IMPLS)
def test_large_scores_keep_their_difference(impl):
  with jax.enable_x64(True):
    scores = jnp.array([1e8, 1e8 + 1, 0.0, 0.0], jnp.float64)
    out = luce.pl_log_prob(scores, jnp.array([1, 0]), impl=impl)
    assert out.dtype == jnp.float64
    expect = -math.log1p(math.exp(-1.0))        # −0.3133: item 1 then item 0, the zeros negligible
    np.testing.assert_allclose(float(out), expect, rtol=1e-12 if impl != "cpu" else 1e-6)


@pytest.mark.parametrize("impl", ["auto", "xla", "reference"])
def test_float64_matches_brute_force_over_every_ordering(impl, rng):
  """Every ordering of 5 items with scores offset by 1e6: float64 to 1e-9, and the
  probabilities of all 120 orderings sum to 1."""
  with jax.enable_x64(True):
    base = 1e6 + rng.normal(size=5) * 3
    orders = np.array(list(itertools.permutations(range(5))))
    scores = jnp.asarray(np.broadcast_to(base, (len(orders), 5)), jnp.float64)
    out = np.asarray(luce.pl_log_prob(scores, jnp.asarray(orders), impl=impl))
    expect = np.array([_brute_log_prob(base, o) for o in orders])
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-9)
    assert abs(math.fsum(np.exp(out)) - 1.0) < 1e-12


def test_float64_gradient_matches_a_direct_float64_formula(rng):
  with jax.enable_x64(True):
    scores = jnp.asarray(1e7 + rng.normal(size=(3, 6)), jnp.float64)
    ranking = jnp.array([[2, 0, 5], [1, 3, -1], [4, 5, 0]])

    def direct(s):
      total = 0.0
      for b in range(3):
        left = list(range(6))
        for item in [int(i) for i in ranking[b] if i >= 0]:
          total = total + s[b, item] - jax.nn.logsumexp(s[b, jnp.array(left)])
          left.remove(item)
      return total

    g = jax.grad(lambda s: jnp.sum(luce.pl_log_prob(s, ranking)))(scores)
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(g, jax.grad(direct)(scores), rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_positive_infinite_scores_are_refused(dtype):
  with jax.enable_x64(True):
    scores = jnp.array([[0.0, 1.0, 2.0], [0.0, jnp.inf, 1.0]], dtype)
    with pytest.raises(InputError, match=r"scores has \+inf at index \(1, 1\)"):
      luce.pl_log_prob(scores, jnp.array([[0, 1], [2, 0]]))
    err, _ = jax.jit(luce.checked(luce.pl_log_prob))(scores, jnp.array([[0, 1], [2, 0]]))
    with pytest.raises(Exception, match=r"\+inf at flat index 4"):
      err.throw()


def test_a_huge_finite_float64_score_is_not_infinite():
  with jax.enable_x64(True):
    out = luce.pl_log_prob(jnp.array([1e300, 0.0], jnp.float64), jnp.array([0, 1]))
    assert float(out) == 0.0
