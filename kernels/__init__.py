"""luce's kernels: one folder per op, each with its reference, XLA and Pallas
implementations and a dispatcher taking `impl=` and `interpret=`.

Every op has two Pallas kernels:
  - `pallas.py`: `pl.pallas_call` over (8, 128)-tiled blocks, compiled by
    Mosaic TPU on a TPU (with `pltpu.CompilerParams`). It is also what
    `interpret=True` runs through Pallas' HLO interpreter on any backend.
  - `mosaic_gpu.py`: a Mosaic GPU kernel (`plgpu.kernel`: warpgroup-sized row
    blocks in shared memory, TMA copies, mbarriers), compiled on a GPU.

`impl="auto"` picks Pallas on a GPU or TPU and, on the CPU, the native C++
kernel where the op has one (prebuilt in a wheel, or built on first use in a
source checkout) else XLA; `info()` says per op what it picks here and why.

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

from typing import NamedTuple

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


class OpInfo(NamedTuple):
  """What `impl="auto"` runs for one op on this machine, and why."""
  op: str
  auto: str     # "cpu", "xla" or "pallas"
  why: str      # a sentence
  library: str | None = None   # the native library loaded, if any
  kind: str | None = None      # "prebuilt" (from the wheel) or "built" (here, on first use)
  level: str | None = None     # the prebuilt's instruction-set level, or "native"


_OPS = ("pl_nll", "topk_sample", "pl_set")


def _missing_flags(level: str) -> str:
  """Why this CPU stops at `level`: the flags the next level needs that it lacks."""
  from luce.kernels import _isa
  names = list(_isa.VARIANTS[_isa.machine()])
  if level not in names or level == names[-1]:
    return ""
  nxt = names[names.index(level) + 1]
  lacking = sorted(set(_isa.VARIANTS[_isa.machine()][nxt][1]) - _isa.cpu_feature_flags())
  return f"; this CPU has no {', '.join(lacking)} for {nxt}" if lacking else ""


def info() -> dict[str, OpInfo]:
  """Per op, the implementation `impl="auto"` picks on this machine and why.

  On the CPU backend this finds (or builds) the native kernels, as the first
  call of an op would. pl_set has no native kernel, so on a CPU:

  >>> import luce
  >>> luce.kernels.info()["pl_set"].auto
  'xla'
  """
  from luce.kernels.pl_nll import cpu_ffi as pl_nll_cpu
  from luce.kernels.topk_sample import GPU_PASSES_MAX_K
  from luce.kernels.topk_sample import cpu_ffi as topk_cpu
  backend = jax.default_backend()
  out = {}
  if backend in ("gpu", "tpu"):
    flavour = "Mosaic GPU" if backend == "gpu" else "Mosaic TPU"
    for op in _OPS:
      why = f"{backend.upper()} backend: the compiled {flavour} Pallas kernel"
      if op == "topk_sample" and backend == "gpu":
        why += f" (lax.top_k for k > {GPU_PASSES_MAX_K} without quotas)"
      if op == "pl_nll":
        why += " (float64 scores: xla)"
      out[op] = OpInfo(op, "pallas", why)
    return out
  cpu = f"{backend} backend (no GPU or TPU)"
  for op, library in (("pl_nll", pl_nll_cpu._library), ("topk_sample", topk_cpu._library)):
    how = library.describe()
    if library.available():
      extra = _missing_flags(library.state.get("level", "")) if library.state.get("kind") == "prebuilt" else ""
      why = f"{cpu}: the native CPU kernel, {how}{extra}"
      if op == "pl_nll":
        why += " (float64 scores: xla)"
      out[op] = OpInfo(op, "cpu", why, library.library_path(), library.state.get("kind"),
                       library.state.get("level"))
    else:
      out[op] = OpInfo(op, "xla", f"{cpu}: the XLA implementation; native kernel {how}")
  out["pl_set"] = OpInfo("pl_set", "xla", f"{cpu}: the XLA implementation (pl_set has no native kernel)")
  return out


def info_line() -> str:
  """`info()` in one line, for logs: "pl_nll=cpu (prebuilt x86-64-v4), ..."."""
  parts = []
  for op in info().values():
    if op.kind == "prebuilt":
      parts.append(f"{op.op}={op.auto} (prebuilt, {op.level})")
    elif op.kind == "built":
      parts.append(f"{op.op}={op.auto} (built here, -march=native)")
    else:
      parts.append(f"{op.op}={op.auto}")
  return f"kernels on {jax.default_backend()}: " + ", ".join(parts)
