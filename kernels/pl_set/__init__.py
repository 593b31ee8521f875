"""The set likelihood's quadrature, log P(S) from b_i = s_i − log R.

`quadrature(b, valid, impl=..., interpret=...)` dispatches to:
  - "reference": `reference.quadrature_reference`, the plain formula on the
    same grid (no float32 care), autodiff.
  - "xla": `xla.quadrature_xla`, the careful float32 form, autodiff.
  - "pallas": `pallas.quadrature_pallas`, Pallas kernels streaming over the
    nodes with a closed-form backward (`interpret=True` runs them on CPU).
  - "auto": Pallas on GPU and TPU, XLA on CPU.
b: float[B, k], valid: bool[B, k] (False for padded slots).
"""

from __future__ import annotations

from luce import kernels
from luce.kernels.pl_set.pallas import quadrature_pallas
from luce.kernels.pl_set.reference import quadrature_reference
from luce.kernels.pl_set.xla import quadrature_xla

IMPLS = ("auto", "reference", "xla", "pallas")


def resolve_impl(impl: str) -> str:
  """The implementation "auto" stands for on the default backend."""
  return kernels.resolve_impl(impl, IMPLS)


def quadrature(b, valid, *, impl="auto", interpret=False):
  """log P(S) per row; see the module docstring. Call it inside a jit."""
  impl = resolve_impl(impl)
  interpret = kernels.check_interpret(impl, interpret)
  if impl == "reference":
    return quadrature_reference(b, valid)
  if impl == "pallas":
    return quadrature_pallas(b, valid, interpret)
  return quadrature_xla(b, valid)
