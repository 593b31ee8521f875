"""luce's kernels: one folder per op, each with its reference, XLA and Pallas
implementations and a dispatcher taking `impl=` and `interpret=`.

Every op has two Pallas kernels:
  - `pallas.py`: `pl.pallas_call` over (8, 128)-tiled blocks, compiled by
    Mosaic TPU on a TPU (with `pltpu.CompilerParams`). It is also what
    `interpret=True` runs through Pallas' HLO interpreter on any backend.
  - `mosaic_gpu.py`: a Mosaic GPU kernel (`plgpu.kernel`: warpgroup-sized row
    blocks in shared memory, TMA copies, mbarriers), compiled on a GPU.

`interpret=` picks how a Pallas kernel runs:
  False   compiled for the default backend: Mosaic GPU on a GPU, Mosaic TPU on
          a TPU (a CPU has no compiled Pallas: InputError).
  True    the TPU-layout kernel in Pallas' HLO interpreter (fast; any backend).
  "gpu"   the Mosaic GPU kernel in Pallas' GPU simulator (shared memory,
          barriers and TMA copies emulated on the CPU).
  "tpu"   the TPU kernel in Pallas' TPU simulator (memory spaces, DMAs and
          semaphores emulated, with race checks).
"""

from __future__ import annotations

import jax

from luce.errors import InputError

INTERPRET_MODES = (False, True, "gpu", "tpu")


def resolve_impl(impl: str, impls: tuple[str, ...], *, cpu: str = "xla") -> str:
  """The implementation `impl` names; "auto" is Pallas on GPU and TPU and
  `cpu` on the CPU backend. Raises InputError for a name not in `impls`."""
  if impl not in impls:
    raise InputError(f"impl={impl!r} is not one of {impls}.")
  if impl != "auto":
    return impl
  return "pallas" if jax.default_backend() in ("gpu", "tpu") else cpu


def interpret_mode(interpret) -> bool | str:
  """`interpret` checked and made hashable: False, True, "gpu" or "tpu"."""
  if isinstance(interpret, str):
    if interpret in ("gpu", "tpu"):
      return interpret
  elif interpret is None or interpret in (0, 1):  # bools are 0 and 1
    return bool(interpret)
  raise InputError(f"interpret={interpret!r} is not one of {INTERPRET_MODES}.")


def check_interpret(impl: str, interpret) -> bool | str:
  """`interpret` only means something for the Pallas kernels; returns the
  checked mode (see `interpret_mode`)."""
  mode = interpret_mode(interpret)
  if mode is not False and impl != "pallas":
    raise InputError(f"interpret={mode!r} runs Pallas kernels only; it needs impl='pallas', "
                     f"not {impl!r}.")
  return mode


def pallas_flavour(interpret) -> str:
  """Which Pallas kernel runs: "mosaic_gpu" or "tpu" (the latter is also the
  HLO-interpreted one). Raises InputError for compiled Pallas on a CPU."""
  mode = interpret_mode(interpret)
  if mode == "gpu":
    return "mosaic_gpu"
  if mode in (True, "tpu"):
    return "tpu"
  backend = jax.default_backend()
  if backend == "gpu":
    return "mosaic_gpu"
  if backend == "tpu":
    return "tpu"
  raise InputError(f"impl='pallas' cannot compile on the {backend!r} backend: pass "
                   "interpret=True (HLO interpreter), 'gpu' or 'tpu' (hardware simulators), "
                   "or use impl='auto'.")


def interpret_params(interpret):
  """The value for `pallas_call(interpret=...)` / `plgpu.kernel(interpret=...)`."""
  mode = interpret_mode(interpret)
  if mode == "gpu":
    # Not re-exported by jax.experimental.pallas.mosaic_gpu in JAX 0.10.2.
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
    return InterpretGPUParams()
  if mode == "tpu":
    from jax.experimental.pallas import tpu as pltpu
    return pltpu.InterpretParams()
  return mode
