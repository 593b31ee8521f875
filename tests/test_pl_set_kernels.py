"""The set likelihood's quadrature kernels against the plain formula and XLA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luce.kernels.pl_set import quadrature, resolve_impl
from luce.kernels.pl_set.pallas import node_grad, node_stats
from luce.errors import InputError
import luce

FAST = [("xla", False), ("pallas", True)]
if jax.default_backend() in ("gpu", "tpu"):
  FAST.append(("pallas", False))


def make_b(rng, bsz, k, spread):
  b = rng.normal(size=(bsz, k)) * spread + rng.normal(size=(bsz, 1)) * spread
  valid = np.ones((bsz, k), bool)
  for r in range(1, bsz, 2):
    valid[r, rng.integers(1, k + 1):] = False
  return jnp.asarray(b, jnp.float32), jnp.asarray(valid)


@pytest.mark.parametrize("impl,interpret", FAST)
def test_matches_reference_values_and_gradients(rng, impl, interpret):
  for bsz, k, spread in [(9, 5, 2.0), (5, 130, 2.0)]:
    b, valid = make_b(rng, bsz, k, spread)
    cot = jnp.asarray(rng.normal(size=bsz), jnp.float32)
    f = lambda x, i=impl, it=interpret: jnp.sum(quadrature(x, valid, impl=i, interpret=it) * cot)
    v = quadrature(b, valid, impl=impl, interpret=interpret)
    v0 = quadrature(b, valid, impl="reference")
    np.testing.assert_allclose(np.asarray(v), np.asarray(v0), rtol=1e-5, atol=2e-5,
                               err_msg=f"k={k}")
    g = jax.grad(f)(b)
    g0 = jax.grad(lambda x: jnp.sum(quadrature(x, valid, impl="reference") * cot))(b)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-4, atol=1e-5,
                               err_msg=f"grad k={k}")
    assert np.all(np.asarray(g)[~np.asarray(valid)] == 0)


def test_pallas_matches_xla_at_extremes(rng):
  # Items far apart (b from −40 to +40) and many weak items: the float32 care
  # of the XLA form must carry over to the kernels.
  for bsz, k, spread in [(4, 16, 20.0), (3, 300, 0.5)]:
    b, valid = make_b(rng, bsz, k, spread)
    b = b - 15.0 if k == 300 else b
    v = quadrature(b, valid, impl="pallas", interpret=True)
    v0 = quadrature(b, valid, impl="xla")
    np.testing.assert_allclose(np.asarray(v), np.asarray(v0), rtol=3e-6, atol=1e-4)
    g = jax.grad(lambda x: quadrature(x, valid, impl="pallas", interpret=True).sum())(b)
    g0 = jax.grad(lambda x: quadrature(x, valid, impl="xla").sum())(b)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-4, atol=1e-5)


def test_kernels_write_every_element(rng):
  b, valid = make_b(rng, 11, 131, 2.0)
  stats = node_stats(b, valid, interpret=True, poison=True)
  assert not np.isnan(np.asarray(stats)).any()
  grad = node_grad(b, valid, stats, interpret=True, poison=True)
  assert not np.isnan(np.asarray(grad)).any()


def test_public_function_uses_the_kernels(rng):
  n, k = 60, 20
  s = jnp.asarray(rng.normal(size=(4, n)), jnp.float32)
  sub = jnp.asarray(np.stack([rng.permutation(n)[:k] for _ in range(4)]), jnp.int32)
  a = luce.pl_set_log_prob(s, sub, method="quadrature", impl="pallas", interpret=True)
  e = luce.pl_set_log_prob(s, sub[:, :12], method="exact")
  q = luce.pl_set_log_prob(s, sub[:, :12], method="quadrature", impl="pallas", interpret=True)
  np.testing.assert_allclose(np.asarray(q), np.asarray(e), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(a), np.asarray(
      luce.pl_set_log_prob(s, sub, method="quadrature", impl="xla")), rtol=1e-5, atol=1e-5)


def test_dispatch():
  expected = "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"
  assert resolve_impl("auto") == expected
  with pytest.raises(InputError, match="is not one of"):
    quadrature(jnp.zeros((1, 2)), jnp.ones((1, 2), bool), impl="cuda")
  with pytest.raises(InputError, match="interpret=True runs Pallas kernels only"):
    luce.pl_set_log_prob(jnp.zeros(4), jnp.array([0, 1]), impl="xla", interpret=True)
