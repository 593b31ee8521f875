"""The set likelihood's quadrature kernels against the plain formula and XLA.

Every Pallas case runs under each of `pallas_modes()`: the TPU-layout kernels
in the HLO interpreter (True) and the TPU simulator ("tpu"), the Mosaic GPU
kernels in the GPU simulator ("gpu"), and compiled (False) on an accelerator.
Inputs are fresh random draws (see conftest's `rng`), with odd batch sizes
and set sizes that are not block multiples, masked slots (including a fully
masked row) and scores spread to ±40.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from luce_test_utils import pallas_modes

import luce
from luce import kernels
from luce.errors import InputError
from luce.kernels.pl_set import mosaic_gpu, pallas, quadrature, resolve_impl

MODES = pallas_modes()
FAST = [("xla", False)] + [("pallas", m) for m in MODES]


def kernel_module(mode):
  """The module whose kernels `interpret=mode` runs."""
  return mosaic_gpu if kernels.pallas_flavour(mode) == "mosaic_gpu" else pallas


def wide_k(interpret, k=130):
  """A set size spanning two column blocks of the kernels `interpret` runs, the
  last one partial: k for the TPU layout's 128 lanes, 70 for the GPU kernels'
  64-column chunks (their simulator's time grows with the chunks)."""
  if interpret is not False and kernels.pallas_flavour(interpret) == "mosaic_gpu":
    return 70
  return k


def make_b(rng, bsz, k, spread):
  b = rng.normal(size=(bsz, k)) * spread + rng.normal(size=(bsz, 1)) * spread
  valid = np.ones((bsz, k), bool)
  for r in range(1, bsz, 2):
    valid[r, rng.integers(1, k + 1):] = False
  if bsz > 2:
    valid[2] = rng.random(k) < 0.5        # scattered holes
  if bsz > 4:
    valid[4] = False                      # an empty set: log P = 0
  return jnp.asarray(b, jnp.float32), jnp.asarray(valid)


@functools.partial(jax.jit, static_argnames=("impl", "interpret"))
def value_and_vjp(b, valid, cot, *, impl, interpret=False):
  """log P and cot · ∂ log P / ∂b in one jitted call (one forward pass)."""
  v, vjp = jax.vjp(lambda x: quadrature(x, valid, impl=impl, interpret=interpret), b)
  return v, vjp(cot)[0]


def check_grad_masked(g, valid):
  assert np.all(np.asarray(g)[~np.asarray(valid)] == 0)


@pytest.mark.parametrize("impl,interpret", FAST)
def test_matches_reference_values_and_gradients(rng, impl, interpret):
  for bsz, k, spread in [(9, 5, 2.0), (5, wide_k(interpret) if impl == "pallas" else 130, 2.0)]:
    b, valid = make_b(rng, bsz, k, spread)
    cot = jnp.asarray(rng.normal(size=bsz), jnp.float32)
    v, g = value_and_vjp(b, valid, cot, impl=impl, interpret=interpret)
    v0, g0 = value_and_vjp(b, valid, cot, impl="reference")
    np.testing.assert_allclose(np.asarray(v), np.asarray(v0), rtol=1e-5, atol=2e-5,
                               err_msg=f"k={k}")
    np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-4, atol=1e-5,
                               err_msg=f"grad k={k}")
    check_grad_masked(g, valid)
    assert np.all(np.isfinite(np.asarray(v))) and np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("interpret", MODES)
def test_pallas_matches_xla_at_extremes(rng, interpret):
  # Items far apart (b from −40 to +40) and many weak items: the float32 care
  # of the XLA form must carry over to the kernels.
  for bsz, k, spread in [(4, 16, 20.0), (3, 140, 0.5)]:
    b, valid = make_b(rng, bsz, k, spread)
    b = b - 15.0 if k == 140 else b
    ones = jnp.ones((bsz,), jnp.float32)
    v, g = value_and_vjp(b, valid, ones, impl="pallas", interpret=interpret)
    v0, g0 = value_and_vjp(b, valid, ones, impl="xla")
    np.testing.assert_allclose(np.asarray(v), np.asarray(v0), rtol=3e-6, atol=1e-4)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-4, atol=1e-5)
    check_grad_masked(g, valid)


@pytest.mark.parametrize("interpret", MODES)
@pytest.mark.parametrize("kernel", ["node_stats", "node_grad"])
def test_kernels_write_every_element(rng, interpret, kernel):
  # Outputs start as NaN (poison=True), so an element a kernel leaves
  # unwritten fails; 11 rows and 131 slots (70 for the GPU kernels' 64-column
  # chunks) leave partial blocks either way.
  mod = kernel_module(interpret)
  b, valid = make_b(rng, 11, wide_k(interpret, 131), 2.0)
  stats = mod.node_stats(b, valid, interpret=interpret, poison=kernel == "node_stats")
  out = stats if kernel == "node_stats" else mod.node_grad(b, valid, stats,
                                                           interpret=interpret, poison=True)
  assert not np.isnan(np.asarray(out)).any()
  if kernel == "node_grad":
    assert out.shape == b.shape
    check_grad_masked(out, valid)


def test_gpu_poison_starts_as_nan():
  # The GPU simulator's poison: a kernel that writes nothing returns NaN.
  from jax.experimental.pallas import mosaic_gpu as plgpu
  out = plgpu.kernel(lambda o: None, out_type=jax.ShapeDtypeStruct((64,), jnp.float32),
                     interpret=mosaic_gpu._params("gpu", True))()
  assert np.isnan(np.asarray(out)).all()


@pytest.mark.parametrize("interpret", MODES)
def test_public_function_uses_the_kernels(rng, interpret):
  n, k = 60, 20
  s = jnp.asarray(rng.normal(size=(4, n)), jnp.float32)
  sub = jnp.asarray(np.stack([rng.permutation(n)[:k] for _ in range(4)]), jnp.int32)
  f = lambda s, sub: luce.pl_set_log_prob(s, sub, method="quadrature", impl="pallas",
                                          interpret=interpret)
  a, vjp = jax.vjp(lambda s: f(s, sub), s)
  e = luce.pl_set_log_prob(s, sub[:, :12], method="exact")
  np.testing.assert_allclose(np.asarray(f(s, sub[:, :12])), np.asarray(e), rtol=1e-5, atol=1e-5)
  x = lambda s: luce.pl_set_log_prob(s, sub, method="quadrature", impl="xla")
  a0, vjp0 = jax.vjp(x, s)
  np.testing.assert_allclose(np.asarray(a), np.asarray(a0), rtol=1e-5, atol=1e-5)
  cot = jnp.asarray(rng.normal(size=4), jnp.float32)
  np.testing.assert_allclose(np.asarray(vjp(cot)[0]), np.asarray(vjp0(cot)[0]),
                             rtol=1e-4, atol=1e-5)

def test_dispatch():
  expected = "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"
  assert resolve_impl("auto") == expected
  with pytest.raises(InputError, match="is not one of"):
    quadrature(jnp.zeros((1, 2)), jnp.ones((1, 2), bool), impl="cuda")
  with pytest.raises(InputError, match="interpret=True runs Pallas kernels only"):
    luce.pl_set_log_prob(jnp.zeros(4), jnp.array([0, 1]), impl="xla", interpret=True)
  with pytest.raises(InputError, match="is not one of"):
    quadrature(jnp.zeros((1, 2)), jnp.ones((1, 2), bool), impl="pallas", interpret="cuda")
  k = mosaic_gpu.MAX_K + 1
  assert not mosaic_gpu.supports(k) and mosaic_gpu.supports(mosaic_gpu.MAX_K)
  with pytest.raises(InputError, match="Mosaic GPU kernels; they hold sets of up to"):
    quadrature(jnp.zeros((1, k)), jnp.ones((1, k), bool), impl="pallas", interpret="gpu")
  if jax.default_backend() == "cpu":
    with pytest.raises(InputError, match="cannot compile"):
      quadrature(jnp.zeros((1, 2)), jnp.ones((1, 2), bool), impl="pallas")
