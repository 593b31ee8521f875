"""Plackett-Luce negative log-likelihood of ordered top-k lists.

`pl_nll(scores, ranking, where, weights, impl=...)` dispatches to:
  - "reference": `reference.pl_nll_reference`, pure jnp, O(n·k), autodiff.
  - "xla": `xla.pl_nll_xla`, O(n + k) with a closed-form custom VJP.
  - "cpu": `cpu_ffi.pl_nll_cpu`, a native C++ kernel through the XLA FFI
    (CPU backend only; built on first use, XLA when it cannot be built).
  - "auto": the fastest implementation for the default backend: on CPU the
    native kernel when it is available, else XLA.
All take flat batches: scores float[B, n], ranking int32[B, k].
"""

from __future__ import annotations

import functools

import jax

from luce.errors import InputError
from luce.kernels.pl_nll import cpu_ffi
from luce.kernels.pl_nll.reference import pl_nll_reference
from luce.kernels.pl_nll.xla import pl_nll_xla

IMPLS = ("auto", "reference", "xla", "cpu")


def pl_nll(scores, ranking, where=None, weights=None, *, impl="auto"):
  """−log P(ranking | scores) per row; see the module docstring for `impl`."""
  if impl not in IMPLS:
    raise InputError(f"impl={impl!r} is not one of {IMPLS}.")
  if impl == "auto":
    impl = "cpu" if jax.default_backend() == "cpu" and cpu_ffi.available() else "xla"
  return _pl_nll_jit(scores, ranking, where, weights, impl)


# Jitted once per shape, so eager callers pay one compile, not one per op.
@functools.partial(jax.jit, static_argnums=(4,))
def _pl_nll_jit(scores, ranking, where, weights, impl):
  if impl == "reference":
    return pl_nll_reference(scores, ranking, where, weights)
  if impl == "cpu":
    return cpu_ffi.pl_nll_cpu(scores, ranking, where, weights)
  return pl_nll_xla(scores, ranking, where, weights)
