"""Plackett-Luce NLL through a native CPU kernel (XLA FFI): prebuilt in a wheel,
built on first use in a source checkout.

The kernel is `cpu/pl_nll.cc` (its header comment gives the math and the
fast/exact paths). Per row it makes one pass over the scores (max, exp,
sum of the never-picked items), one reverse scan over the picks for the
denominators, and, when a gradient is wanted, one forward scan and one more
multiply per item: n + k exps and k logs in all, no sort, no scatter over the
batch (picks are gathered and marked with AVX-512 gather/scatter within the
row). The forward used under differentiation returns the gradient for a unit
cotangent next to the value (the e_i are still in L1 there, where a separate
backward would redo n exps), and the backward only scales it by the
cotangent, which XLA fuses into whatever comes next. Residuals are that
gradient, f32[B, n] and f32[B, k]: the size of the inputs.

Rows are split over XLA's intra-op thread pool (the FFI `ThreadPool`
context) when a call has more than ~64k elements of work; the calling thread
claims blocks of rows too, so a busy pool only costs the split.
`LUCE_PL_NLL_THREADS=1` keeps every row on the calling thread.

Where the library comes from (`luce.kernels._native`, shared with the other
native kernels):

  A wheel (`pip install .`, `python -m build`) ships the kernel prebuilt for
  each x86-64 level (x86-64, x86-64-v3 = AVX2, x86-64-v4 = AVX-512); the
  highest level this CPU runs is loaded, with no compiler needed, when the
  running jaxlib's XLA FFI API accepts the one it was built against. A source
  checkout (`pip install -e .`) compiles `pl_nll.cc` on first use with the
  machine's C++ compiler and -march=native into a cache directory, once per
  machine, jaxlib and source version. With neither, `available()` returns
  False, warns once (`NativeKernelWarning`, with the reasons) and the
  dispatcher uses the XLA implementation. Importing this module never builds
  or raises. `LUCE_NATIVE=0` turns the native kernel off.
  `luce.kernels.info()` says which library each op uses and why.

  The kernel uses 16-float vectors with AVX-512 (gather/scatter intrinsics for
  the picks), 8 with AVX/AVX2 and 4 otherwise; on this project's machine
  (AVX-512) one thread does value+grad at (256, 1024) in ~0.7 ms, built for
  AVX2 ~1.3 ms, for plain x86-64 ~1.9 ms (the XLA implementation: ~3.5 ms).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from luce.kernels import _native
from luce.kernels._native import NativeKernelWarning  # noqa: F401 - part of this module's API

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu", "pl_nll.cc")
_TARGET = "luce_pl_nll"
_TARGET_GRAD = "luce_pl_nll_grad"

# Build, cache and registration: `luce.kernels._native`.
_library = _native.NativeLibrary("pl_nll", _SOURCE,
                                 {_TARGET: "LucePlNll", _TARGET_GRAD: "LucePlNllGrad"})
_state = _library.state  # clear() it to retry the build


def available() -> bool:
  """Whether the native kernel is built, loaded and registered (builds once)."""
  return _library.available()


def library_path():
  """Path of the loaded library, or None."""
  return _library.library_path()


def _call(with_grad, s, ranking, where, w):
  f32 = jnp.float32
  nll = jax.ShapeDtypeStruct(s.shape[:-1], f32)
  if with_grad:
    out = (nll, jax.ShapeDtypeStruct(s.shape, f32), jax.ShapeDtypeStruct(ranking.shape, f32))
    return jax.ffi.ffi_call(_TARGET_GRAD, out, vmap_method="broadcast_all")(s, ranking, where, w)
  return jax.ffi.ffi_call(_TARGET, nll, vmap_method="broadcast_all")(s, ranking, where, w)


@jax.custom_vjp
def _pl_nll(s, ranking, where, w):
  return _call(False, s, ranking, where, w)


def _pl_nll_fwd(s, ranking, where, w):
  nll, gs, gw = _call(True, s, ranking, where, w)
  return nll, (gs, gw, w)


def _pl_nll_bwd(res, g):
  gs, gw, w = res
  g = g[..., None]
  # An empty w stands for "no weights": its cotangent is empty too.
  return gs * g, None, None, (gw * g if w.shape == gw.shape else jnp.zeros_like(w))


_pl_nll.defvjp(_pl_nll_fwd, _pl_nll_bwd)


def pl_nll_cpu(scores, ranking, where=None, weights=None):
  """−log P(ranking) under Plackett-Luce by the native kernel; see pl_nll_xla.

  Same arguments, results and gradients as `xla.pl_nll_xla` (float32 out,
  +inf with zero gradient for a list that picks an unavailable item, 0 for an
  all-padding list). Falls back to it when the kernel is unavailable or the
  default backend is not the CPU (the target exists for the CPU only).
  """
  if jax.default_backend() != "cpu" or not available():
    from luce.kernels.pl_nll.xla import pl_nll_xla
    return pl_nll_xla(scores, ranking, where, weights)
  s = scores.astype(jnp.float32)
  r = ranking.astype(jnp.int32)
  m = jnp.zeros((0,), jnp.bool_) if where is None else where.astype(jnp.bool_)
  w = jnp.zeros((0,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  return _pl_nll(s, r, m, w)
