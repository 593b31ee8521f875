"""topk_sample through a native CPU kernel (XLA FFI): prebuilt in a wheel,
built on first use in a source checkout.

The kernel is `cpu/topk.cc` (its header comment gives the algorithm): per
row, one pass that keys every available item by (z desc, id asc) and keeps
the best u in a small sorted buffer (or nth_element + sort for many slots);
with quotas, the row's keys sorted lazily, best first, and walked once with
per-group counters, which is the reference's greedy slot rule because an
item's eligibility only ever shrinks along the slots. O(n + k log k) per
usual row, against XLA's O(n log n)-ish `lax.top_k` and O(k·n) slot scan.
NaN and −inf scores and forbidden items are folded in by the kernel itself,
so the call reads the scores once.

Rows are split over XLA's intra-op thread pool when a call has more than
~64k elements of work (`LUCE_TOPK_THREADS=1` keeps every row on the calling
thread). Prebuilt libraries, the first-use build, the cache and the fallback:
`luce.kernels._native` (`LUCE_NATIVE=0` turns it off; with no usable prebuilt
library and no compiler it warns once and the XLA implementation is used).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from luce.kernels import _native
from luce.kernels._native import NativeKernelWarning  # noqa: F401 - part of this module's API

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu", "topk.cc")
_TARGET = "luce_topk_sample"

_library = _native.NativeLibrary("topk_sample", _SOURCE, {_TARGET: "LuceTopkSample"})
_state = _library.state  # clear() it to retry the build


def available() -> bool:
  """Whether the native kernel is built, loaded and registered (builds once)."""
  return _library.available()


def library_path():
  """Path of the loaded library, or None."""
  return _library.library_path()


def topk_sample_cpu(perturbed, k, u=None, forbidden=None, groups=None, quotas=None):
  """Arguments and result as `reference.topk_sample_reference`.

  Falls back to `xla.topk_sample_xla` when the kernel is unavailable or the
  default backend is not the CPU (the target exists for the CPU only).
  """
  if jax.default_backend() != "cpu" or not available():
    from luce.kernels.topk_sample.xla import topk_sample_xla
    return topk_sample_xla(perturbed, k, u, forbidden, groups, quotas)
  z = perturbed.astype(jnp.float32)
  rows, n = z.shape
  empty = jnp.zeros((0,), jnp.int32)
  f = jnp.zeros((0,), jnp.bool_) if forbidden is None else jnp.broadcast_to(
      forbidden.astype(jnp.bool_), (rows, n))
  uu = empty if u is None else jnp.broadcast_to(jnp.asarray(u, jnp.int32), (rows,))
  if quotas is None:
    g, q = empty, empty
  else:
    g, q = groups.astype(jnp.int32), quotas.astype(jnp.int32)
  out = jax.ShapeDtypeStruct((rows, k), jnp.int32)
  return jax.ffi.ffi_call(_TARGET, out, vmap_method="broadcast_all")(z, f, uu, g, q)
