"""Every Pallas kernel lowers for the hardware it is written for.

`jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` runs Pallas'
Mosaic GPU lowering on a CPU-only machine, and ("tpu",) its Mosaic TPU
lowering: each primitive the kernel uses must have a lowering rule there
(expm1, for one, has none in Mosaic GPU), each Mosaic GPU register layout
must be consistent, every TMA copy and barrier well formed. The compiled
path's value is tested on an accelerator (tests/test_*_kernels.py run
compiled there); this test makes sure a CPU-only CI catches a kernel that
would not even lower. What it cannot catch: TPU vector-layout limits and
GPU register or shared-memory budgets, which the backend compilers check.
"""

import jax
import jax.numpy as jnp
import pytest

from luce.kernels.pl_nll.mosaic_gpu import pl_nll_mosaic_gpu
from luce.kernels.pl_nll.pallas import pl_nll_pallas
from luce.kernels.pl_set.mosaic_gpu import quadrature_mosaic_gpu
from luce.kernels.pl_set.pallas import quadrature_pallas
from luce.kernels.topk_sample.mosaic_gpu import topk_sample_mosaic_gpu
from luce.kernels.topk_sample.pallas import topk_sample_pallas

TARGETS = {"cuda": "mosaic_gpu", "tpu": "tpu_custom_call"}


def lowered_text(fn, platform, *shapes):
  return jax.jit(fn).trace(*shapes).lower(lowering_platforms=(platform,)).as_text()


def value_and_grad(f):
  return lambda x, aux: jax.value_and_grad(lambda y: f(y, aux).sum())(x)


def spec(shape, dtype):
  return jax.ShapeDtypeStruct(shape, dtype)


@pytest.mark.parametrize("platform", list(TARGETS))
@pytest.mark.parametrize("b,n,k,dtype", [(16384, 1024, 1024, jnp.float32),
                                         (100, 300, 17, jnp.bfloat16), (3, 2, 1, jnp.float32)])
def test_pl_nll_value_and_grad_lower(platform, b, n, k, dtype):
  kernel = pl_nll_mosaic_gpu if platform == "cuda" else pl_nll_pallas
  text = lowered_text(value_and_grad(kernel), platform, spec((b, n), dtype), spec((b, k), jnp.int32))
  assert TARGETS[platform] in text


@pytest.mark.parametrize("platform", list(TARGETS))
@pytest.mark.parametrize("k,quotas", [(1, False), (40, False), (8, True)])
def test_topk_sample_lowers(platform, k, quotas):
  n = 700
  extra = {}
  if quotas:
    extra = dict(groups=jnp.arange(n) % 4, quotas=jnp.array([[1, 3]] * 4))
  if platform == "cuda":
    fn = lambda z: topk_sample_mosaic_gpu(z, k, interpret=False, **extra)
  else:
    fn = lambda z: topk_sample_pallas(z, k, interpret=False, **extra)
  assert TARGETS[platform] in lowered_text(fn, platform, spec((100, n), jnp.float32))


@pytest.mark.parametrize("platform", list(TARGETS))
@pytest.mark.parametrize("b,k", [(100, 17), (64, 300)])
def test_pl_set_value_and_grad_lower(platform, b, k):
  kernel = quadrature_mosaic_gpu if platform == "cuda" else quadrature_pallas
  text = lowered_text(value_and_grad(lambda x, v: kernel(x, v, False)), platform,
                      spec((b, k), jnp.float32), spec((b, k), bool))
  assert TARGETS[platform] in text


def test_the_check_has_teeth():
  """A kernel using a primitive Mosaic GPU cannot lower is refused here."""
  from jax.experimental.pallas import mosaic_gpu as plgpu

  def body(x_gmem, o_gmem, x_smem, o_smem, bar):
    plgpu.copy_gmem_to_smem(x_gmem, x_smem, bar)
    plgpu.barrier_wait(bar)
    o_smem[...] = jnp.expm1(x_smem[...])
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem)
    plgpu.wait_smem_to_gmem(0)

  f = plgpu.kernel(body, out_type=spec((128,), jnp.float32),
                   scratch_types=[plgpu.SMEM((128,), jnp.float32)] * 2 + [plgpu.Barrier()])
  with pytest.raises(NotImplementedError, match="expm1"):
    lowered_text(f, "cuda", spec((128,), jnp.float32))
