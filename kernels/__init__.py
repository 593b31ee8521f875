"""luce's kernels: one folder per op, each with its reference, XLA and Pallas
implementations and a dispatcher taking `impl=` and `interpret=`."""

from __future__ import annotations

import jax

from luce.errors import InputError


def resolve_impl(impl: str, impls: tuple[str, ...], *, cpu: str = "xla") -> str:
  """The implementation `impl` names; "auto" is Pallas on GPU and TPU and
  `cpu` on the CPU backend. Raises InputError for a name not in `impls`."""
  if impl not in impls:
    raise InputError(f"impl={impl!r} is not one of {impls}.")
  if impl != "auto":
    return impl
  return "pallas" if jax.default_backend() in ("gpu", "tpu") else cpu


def check_interpret(impl: str, interpret: bool) -> None:
  """`interpret=True` only means something for the Pallas kernels."""
  if interpret and impl != "pallas":
    raise InputError(f"interpret=True runs Pallas kernels only; it needs impl='pallas', "
                     f"not {impl!r}.")
