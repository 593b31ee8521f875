"""Plackett-Luce NLL through a native CPU kernel (XLA FFI), built on first use.

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

Build mechanism, and why it is lazy:

  The first call that needs the kernel compiles `pl_nll.cc` with the machine's
  C++ compiler (`$CXX`, else g++, else c++) into a cache directory
  (`$LUCE_CACHE_DIR`, else `$XDG_CACHE_HOME/luce`, else `~/.cache/luce`; the
  system temp directory when that is not writable), under a name keyed by the
  hash of the source, the jaxlib version (whose FFI headers it includes), the
  compiler's version, the flags and the CPU's feature flags (it is built with
  -march=native). Later processes load the cached library; a new jaxlib, a new
  source or another CPU builds a new one. The build writes to a temporary file
  and renames it into place, so processes building at once (pytest -n 2) do
  not see each other's half-written files.

  Building at `pip install` time instead would need jaxlib's headers inside
  pip's isolated build environment (so jax as a build requirement, pinned to
  the runtime's version or the ABI key drifts), a setup.py with an extension
  for editable installs, and a rebuild by hand after every jaxlib upgrade. The
  lazy build has none of that, so `pip install -e .` stays the one command; it
  costs a few seconds once per machine, jaxlib and source version.

  No compiler, a failed build or a failed load: `available()` returns False,
  warns once (`NativeKernelWarning`, with the compiler's message) and the
  dispatcher uses the XLA implementation. Importing this module never builds
  or raises. `LUCE_NATIVE=0` turns the native kernel off;
  `LUCE_NATIVE_CXXFLAGS` adds compiler flags (part of the cache key).

  The kernel uses 16-float vectors with AVX-512 (gather/scatter intrinsics for
  the picks), 8 with AVX/AVX2 and 4 otherwise; on this project's machine
  (AVX-512) one thread does value+grad at (256, 1024) in ~0.7 ms, built for
  AVX2 ~1.3 ms, for plain x86-64 ~1.9 ms (the XLA implementation: ~3.5 ms).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings

import jax
import jax.numpy as jnp

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu", "pl_nll.cc")
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
_TARGET = "luce_pl_nll"
_TARGET_GRAD = "luce_pl_nll_grad"

_lock = threading.Lock()
_state: dict = {}


class NativeKernelWarning(UserWarning):
  """The native CPU kernel could not be built or loaded; XLA is used instead."""


def _compiler():
  for name in (os.environ.get("CXX"), "g++", "c++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  except OSError:
    pass
  return platform.processor()


def _cache_dirs():
  env = os.environ.get("LUCE_CACHE_DIR")
  if env:
    yield os.path.join(env, "native")
  else:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    yield os.path.join(base, "luce", "native")
  yield os.path.join(tempfile.gettempdir(), f"luce-native-{os.getuid()}")


def _flags():
  # LUCE_NATIVE_CXXFLAGS comes last, so e.g. -march=x86-64-v3 overrides -march=native
  # (a cache shared by machines of different CPUs).
  return _FLAGS + os.environ.get("LUCE_NATIVE_CXXFLAGS", "").split()


def _key(cxx: str) -> str:
  import jaxlib
  h = hashlib.sha256()
  with open(_SOURCE, "rb") as f:
    h.update(f.read())
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
  for part in (jaxlib.__version__, version, " ".join(_flags()), _cpu_flags(), platform.machine()):
    h.update(b"\0" + part.encode())
  return h.hexdigest()[:20]


def _build() -> str:
  """Path of the compiled library, building it if it is not cached."""
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found ($CXX, g++, c++)")
  name = f"pl_nll-{_key(cxx)}.so"
  errors = []
  for d in _cache_dirs():
    path = os.path.join(d, name)
    if os.path.exists(path):
      return path
    try:
      os.makedirs(d, exist_ok=True)
      fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=d)
      os.close(fd)
    except OSError as e:
      errors.append(f"{d}: {e}")
      continue
    try:
      cmd = [cxx, *_flags(), "-isystem", jax.ffi.include_dir(), _SOURCE, "-o", tmp]
      out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
      if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
      os.chmod(tmp, 0o755)
      os.replace(tmp, path)
      return path
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
  raise RuntimeError("no writable cache directory: " + "; ".join(errors))


def available() -> bool:
  """Whether the native kernel is built, loaded and registered (builds once)."""
  with _lock:
    if "ok" in _state:
      return _state["ok"]
    ok = False
    if os.environ.get("LUCE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
      _state["ok"] = False
      return False
    try:
      path = _build()
      lib = ctypes.CDLL(path)
      jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.LucePlNll), platform="cpu")
      jax.ffi.register_ffi_target(_TARGET_GRAD, jax.ffi.pycapsule(lib.LucePlNllGrad),
                                  platform="cpu")
      _state["lib"] = lib  # keep it loaded
      _state["path"] = path
      ok = True
    except Exception as e:  # noqa: BLE001 - any failure means: use XLA
      warnings.warn(
          f"luce: the native CPU pl_nll kernel is unavailable ({type(e).__name__}: {e}); "
          f"using the XLA implementation.", NativeKernelWarning, stacklevel=2)
    _state["ok"] = ok
    return ok


def library_path():
  """Path of the loaded library, or None."""
  return _state.get("path")


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
