"""The set likelihood's quadrature, log P(S) from b_i = s_i − log R.

`quadrature(b, valid, impl=..., interpret=...)` dispatches to:
  - "reference": `reference.quadrature_reference`, the plain formula on the
    same grid (no float32 care), autodiff.
  - "xla": `xla.quadrature_xla`, the careful float32 form, closed-form VJP.
  - "pallas": Pallas kernels streaming over the nodes with a closed-form
    backward, the flavour `kernels.pallas_flavour(interpret)` names:
      "tpu"         `pallas.quadrature_pallas` (Mosaic TPU; interpret=True
                    and "tpu" run it on any backend),
      "mosaic_gpu"  `mosaic_gpu.quadrature_mosaic_gpu` (Mosaic GPU;
                    interpret="gpu" runs it in the GPU simulator). Its shared
                    memory holds sets of up to `mosaic_gpu.MAX_K` slots.
  - "auto": Pallas on GPU and TPU, XLA on CPU, and XLA on a GPU for sets
    larger than the Mosaic GPU kernels hold.
b: float[B, k], valid: bool[B, k] (False for padded slots).
"""

from __future__ import annotations

from luce import kernels
from luce.errors import InputError
from luce.kernels.pl_set import mosaic_gpu
from luce.kernels.pl_set.mosaic_gpu import quadrature_mosaic_gpu
from luce.kernels.pl_set.pallas import quadrature_pallas
from luce.kernels.pl_set.reference import quadrature_reference
from luce.kernels.pl_set.xla import quadrature_xla

IMPLS = ("auto", "reference", "xla", "pallas")


def resolve_impl(impl: str) -> str:
  """The implementation "auto" stands for on the default backend."""
  return kernels.resolve_impl(impl, IMPLS)


def quadrature(b, valid, *, impl="auto", interpret=False):
  """log P(S) per row; see the module docstring. Call it inside a jit."""
  auto = impl == "auto"
  impl = resolve_impl(impl)
  interpret = kernels.check_interpret(impl, interpret)
  if impl == "reference":
    return quadrature_reference(b, valid)
  if impl == "pallas":
    if kernels.pallas_flavour(interpret) == "tpu":
      return quadrature_pallas(b, valid, interpret)
    if mosaic_gpu.supports(b.shape[-1]):
      return quadrature_mosaic_gpu(b, valid, interpret)
    if not auto:
      raise InputError(f"impl='pallas' here runs the Mosaic GPU kernels; they hold sets of up to "
                       f"{mosaic_gpu.MAX_K} slots, not k={b.shape[-1]}: use impl='auto' "
                       "or 'xla'.")
  return quadrature_xla(b, valid)
