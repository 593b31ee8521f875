"""Constrained Gumbel-top-k (and top-u) on perturbed scores.

`topk_sample(perturbed, k, u=None, forbidden=None, groups=None, quotas=None,
impl=..., interpret=...)` takes scores with the noise already added (draw it
with `luce.sampling.gumbel_noise`, so every implementation returns the same
ids for the same key) and returns int32[B, k] item ids, best first, −1 for
slots left empty; the rule is in `_common`. `top_u(perturbed, k_max, u, ...)`
is the diffusion sampler's step: row b fills its first u[b] slots.

Implementations (`impl`):
  - "reference": `reference.topk_sample_reference`, the definition in jnp.
  - "xla": `xla.topk_sample_xla`: `lax.top_k` without quotas, a scan over the
    slots with them; tuned for CPU.
  - "pallas": a k-pass chunked argmax kernel, in the flavour
    `kernels.pallas_flavour(interpret)` picks:
      * "tpu": `pallas.topk_sample_pallas` (Mosaic TPU; also what
        `interpret=True` and `interpret="tpu"` run);
      * "mosaic_gpu": `mosaic_gpu.topk_sample_mosaic_gpu` (Mosaic GPU;
        `interpret="gpu"` runs it in the GPU simulator).
    On a GPU, compiled, without quotas and with k > `GPU_PASSES_MAX_K`, the
    dispatcher keeps `lax.top_k` instead (the "xla" path): the kernel reads
    each row k times, which for a 64-row block resident in shared memory is
    about 10·k·n simple ops per row, while XLA's GPU top-k (a dedicated
    per-row kernel for small k, a segmented sort otherwise) costs about
    n·log²n and is independent of k; they cross in the tens of slots. With
    quotas the slots depend on each other and the kernel is the fast exact
    path at every k. The interpreted flavours always run the kernel.
  - "cpu": `cpu_ffi.topk_sample_cpu`, a native C++ kernel through the XLA FFI
    (CPU backend only; built on first use, "xla" when it cannot be built or
    `LUCE_NATIVE=0`).
  - "auto": Pallas on GPU and TPU; on CPU the native kernel when it is
    available, else XLA.

Every implementation returns the same ids for the same perturbed scores.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp

from luce import kernels
from luce.errors import InputError, ShapeError
from luce.kernels.topk_sample import cpu_ffi
from luce.kernels.topk_sample.mosaic_gpu import topk_sample_mosaic_gpu
from luce.kernels.topk_sample.pallas import topk_sample_pallas
from luce.kernels.topk_sample.reference import topk_sample_reference
from luce.kernels.topk_sample.xla import topk_sample_xla

IMPLS = ("auto", "reference", "xla", "pallas", "cpu")
GPU_PASSES_MAX_K = 32  # compiled on a GPU without quotas: lax.top_k above this k


def resolve_impl(impl: str) -> str:
  """The implementation "auto" stands for on the default backend."""
  return kernels.resolve_impl(impl, IMPLS, cpu="cpu" if cpu_ffi.available() else "xla")


def topk_sample(perturbed, k, *, u=None, forbidden=None, groups=None, quotas=None,
                impl="auto", interpret=False):
  """int32[B, k]: the constrained top-k of perturbed scores float[B, n].

  Args:
    perturbed: float[B, n] scores plus Gumbel noise; −inf (or NaN) marks an
      item that may not be picked.
    k: static int, 1 <= k <= n: slots per row.
    u: optional int[B] (or a scalar): fill only the first u[b] slots of row b
      (clipped to [0, k]); the others are −1.
    forbidden: optional bool[B, n] (or bool[n]), True = never pick.
    groups: optional int[n] group ids in [0, G); quotas: optional int[G, 2] or
      int[B, G, 2], (min, max) picks per group. Both or neither.
    impl, interpret: see the module docstring; interpret=True needs "pallas".
  """
  impl = resolve_impl(impl)
  interpret = kernels.check_interpret(impl, interpret)
  if impl == "pallas":
    kernels.pallas_flavour(interpret)  # InputError now for compiled Pallas on a CPU
  perturbed = jnp.asarray(perturbed)
  if perturbed.ndim != 2:
    raise ShapeError(f"perturbed must be float[B, n], got shape {perturbed.shape}.")
  rows, n = perturbed.shape
  try:
    k = operator.index(k)
  except TypeError:
    raise ShapeError(f"k must be a static Python int, got {type(k).__name__}.") from None
  if not 1 <= k <= n:
    raise InputError(f"k = {k} is out of range 1 <= k <= n = {n}.")
  if (groups is None) != (quotas is None):
    raise InputError("groups and quotas go together: pass both or neither.")
  if forbidden is not None:
    forbidden = jnp.broadcast_to(jnp.asarray(forbidden, bool), (rows, n))
  if quotas is not None:
    groups = jnp.asarray(groups, jnp.int32)
    quotas = jnp.asarray(quotas, jnp.int32)
    if groups.shape != (n,) or quotas.ndim not in (2, 3) or quotas.shape[-1] != 2:
      raise ShapeError(f"groups must be int[n] and quotas int[G, 2] or int[B, G, 2]; got "
                       f"{groups.shape} and {quotas.shape}.")
  if u is not None:
    u = jnp.broadcast_to(jnp.asarray(u, jnp.int32), (rows,))
  return _topk_sample_jit(perturbed, u, forbidden, groups, quotas, k, impl, interpret)


def top_u(perturbed, k_max, u, **kwargs):
  """The diffusion step: row b takes the first u[b] <= k_max slots of the
  constrained top-k_max (quotas stay reachable for all k_max); others −1."""
  return topk_sample(perturbed, k_max, u=u, **kwargs)


# Jitted once per shape, so eager callers pay one compile, not one per op.
@functools.partial(jax.jit, static_argnums=(5, 6, 7))
def _topk_sample_jit(perturbed, u, forbidden, groups, quotas, k, impl, interpret):
  args = (perturbed, k, u, forbidden, groups, quotas)
  if impl == "reference":
    return topk_sample_reference(*args)
  if impl == "cpu":
    return cpu_ffi.topk_sample_cpu(*args)
  if impl == "pallas":
    if kernels.pallas_flavour(interpret) == "tpu":
      return topk_sample_pallas(*args, interpret=interpret)
    if interpret is not False or quotas is not None or k <= GPU_PASSES_MAX_K:
      return topk_sample_mosaic_gpu(*args, interpret=interpret)
  return topk_sample_xla(*args)
