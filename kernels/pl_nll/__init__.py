"""Plackett-Luce negative log-likelihood of ordered top-k lists.

`pl_nll(scores, ranking, where, weights, impl=..., interpret=...)` dispatches to:
  - "reference": `reference.pl_nll_reference`, pure jnp, O(n·k), autodiff.
  - "xla": `xla.pl_nll_xla`, O(n + k) with a closed-form custom VJP, tuned
    for XLA on CPU.
  - "pallas": a Pallas kernel, picked by `luce.kernels.pallas_flavour`:
    `mosaic_gpu.pl_nll_mosaic_gpu` (Mosaic GPU: on a GPU, or `interpret="gpu"`
    in the GPU simulator) or `pallas.pl_nll_pallas` (Mosaic TPU: on a TPU,
    `interpret="tpu"` in the TPU simulator, `interpret=True` in the HLO
    interpreter). Compiled Pallas on a CPU raises InputError.
  - "cpu": `cpu_ffi.pl_nll_cpu`, a native C++ kernel through the XLA FFI
    (CPU backend only; built on first use, XLA when it cannot be built).
  - "auto": Pallas on GPU and TPU; on CPU the native kernel when it is
    available, else XLA.
All take flat batches: scores float[B, n], ranking int32[B, k].

float64 scores (under `jax_enable_x64`) are centred on each row's largest
available score in float64 first, so scores such as 1e8 and 1e8 + 1 keep their
difference. "reference" and "xla" then compute in float64 and "auto" picks
"xla" for them; the kernels ("cpu", "pallas") are float32 and compute on the
centred scores, their result cast to float64.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from luce import kernels
from luce.kernels.pl_nll import cpu_ffi
from luce.kernels.pl_nll.mosaic_gpu import pl_nll_mosaic_gpu
from luce.kernels.pl_nll.pallas import pl_nll_pallas
from luce.kernels.pl_nll.reference import pl_nll_reference
from luce.kernels.pl_nll.xla import pl_nll_xla

IMPLS = ("auto", "reference", "xla", "pallas", "cpu")


def resolve_impl(impl: str) -> str:
  """The implementation "auto" stands for on the default backend."""
  return kernels.resolve_impl(impl, IMPLS, cpu="cpu" if cpu_ffi.available() else "xla")


FLOAT64_IMPLS = ("reference", "xla")


def pl_nll(scores, ranking, where=None, weights=None, *, impl="auto", interpret=False):
  """−log P(ranking | scores) per row; see the module docstring for `impl`."""
  wide = jnp.asarray(scores).dtype == jnp.float64
  impl = "xla" if (wide and impl == "auto") else resolve_impl(impl)
  interpret = kernels.check_interpret(impl, interpret)
  if impl == "pallas":
    impl = kernels.pallas_flavour(interpret)   # "mosaic_gpu" or "tpu"; InputError on CPU
  if wide:
    return _pl_nll_wide(scores, ranking, where, weights, impl, interpret)
  return _pl_nll_jit(scores, ranking, where, weights, impl, interpret)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _pl_nll_wide(scores, ranking, where, weights, impl, interpret):
  """float64 scores: centre each row in float64, then the float64 or float32 path."""
  s = scores if where is None else jnp.where(where, scores, -jnp.inf)
  top = jnp.max(s, axis=-1, keepdims=True)
  s = s - jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  if impl in FLOAT64_IMPLS:
    return _pl_nll_jit(s, ranking, None, weights, impl, interpret)
  w = None if weights is None else weights.astype(jnp.float32)
  return _pl_nll_jit(s.astype(jnp.float32), ranking, None, w, impl, interpret).astype(jnp.float64)


# Jitted once per shape, so eager callers pay one compile, not one per op.
@functools.partial(jax.jit, static_argnums=(4, 5))
def _pl_nll_jit(scores, ranking, where, weights, impl, interpret):
  if impl == "reference":
    return pl_nll_reference(scores, ranking, where, weights)
  if impl == "mosaic_gpu":
    return pl_nll_mosaic_gpu(scores, ranking, where, weights, interpret=interpret)
  if impl == "tpu":
    return pl_nll_pallas(scores, ranking, where, weights, interpret=interpret)
  if impl == "cpu":
    return cpu_ffi.pl_nll_cpu(scores, ranking, where, weights)
  return pl_nll_xla(scores, ranking, where, weights)
