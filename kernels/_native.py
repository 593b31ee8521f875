"""Build and load the native CPU kernels (XLA FFI), shared by every op that has one.

A `NativeLibrary` names one C++ source and the FFI handlers it exports. Its
`available()` compiles the source on first use with the machine's C++
compiler (`$CXX`, else g++, else c++) into a cache directory
(`$LUCE_CACHE_DIR/native`, else `$XDG_CACHE_HOME/luce/native`, else
`~/.cache/luce/native`; the system temp directory when that is not writable),
under a name keyed by the hash of the source, the jaxlib version (whose FFI
headers it includes), the compiler's version, the flags and the CPU's feature
flags (it is built with -march=native). Later processes load the cached
library; a new jaxlib, a new source or another CPU builds a new one. The build
writes to a temporary file and renames it into place, so processes building
at once (pytest -n 2) never see each other's half-written files.

No compiler, a failed build or a failed load: `available()` returns False,
warns once (`NativeKernelWarning`, with the compiler's message) and the op's
dispatcher uses its XLA implementation. Creating a `NativeLibrary` never
builds or raises. `LUCE_NATIVE=0` turns every native kernel off (silently);
`LUCE_NATIVE_CXXFLAGS` adds compiler flags (part of the cache key).

Why lazy rather than at `pip install`: see `luce.kernels.pl_nll.cpu_ffi`.
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

FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]


class NativeKernelWarning(UserWarning):
  """A native CPU kernel could not be built or loaded; XLA is used instead."""


def compiler():
  """Path of the C++ compiler ($CXX, g++, c++), or None."""
  for name in (os.environ.get("CXX"), "g++", "c++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  except OSError:
    pass
  return platform.processor()


def cache_dirs():
  env = os.environ.get("LUCE_CACHE_DIR")
  if env:
    yield os.path.join(env, "native")
  else:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    yield os.path.join(base, "luce", "native")
  yield os.path.join(tempfile.gettempdir(), f"luce-native-{os.getuid()}")


def flags():
  # LUCE_NATIVE_CXXFLAGS comes last, so e.g. -march=x86-64-v3 overrides -march=native
  # (a cache shared by machines of different CPUs).
  return FLAGS + os.environ.get("LUCE_NATIVE_CXXFLAGS", "").split()


def disabled() -> bool:
  """Whether LUCE_NATIVE turns the native kernels off."""
  return os.environ.get("LUCE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


# Headers shared by the kernels (kernels/cpu/*.h), on every build's include
# path and in every cache key.
INCLUDE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu")


def cache_key(source: str, cxx: str) -> str:
  import jaxlib
  h = hashlib.sha256()
  with open(source, "rb") as f:
    h.update(f.read())
  for header in sorted(os.listdir(INCLUDE_DIR)) if os.path.isdir(INCLUDE_DIR) else ():
    with open(os.path.join(INCLUDE_DIR, header), "rb") as f:
      h.update(b"\0" + header.encode() + b"\0" + f.read())
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
  for part in (jaxlib.__version__, version, " ".join(flags()), cpu_flags(), platform.machine()):
    h.update(b"\0" + part.encode())
  return h.hexdigest()[:20]


def build(source: str, name: str) -> str:
  """Path of the compiled `source`, `name-<key>.so`, building it if it is not cached."""
  cxx = compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found ($CXX, g++, c++)")
  filename = f"{name}-{cache_key(source, cxx)}.so"
  errors = []
  for d in cache_dirs():
    path = os.path.join(d, filename)
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
      cmd = [cxx, *flags(), "-isystem", jax.ffi.include_dir(), "-I", INCLUDE_DIR, source,
             "-o", tmp]
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


class NativeLibrary:
  """One native kernel source and the FFI targets it registers.

  Args:
    op: the op's name, for messages and the cached file's name ("pl_nll").
    source: path of the .cc file.
    targets: FFI target name -> exported handler symbol.
  """

  def __init__(self, op: str, source: str, targets: dict[str, str]):
    self.op = op
    self.source = source
    self.targets = dict(targets)
    self.state: dict = {}  # "ok", and "lib", "path" once loaded; clear() to retry
    self._lock = threading.Lock()

  def available(self) -> bool:
    """Whether the kernel is built, loaded and registered (builds once)."""
    with self._lock:
      if "ok" in self.state:
        return self.state["ok"]
      ok = False
      if disabled():
        self.state["ok"] = False
        return False
      try:
        path = build(self.source, self.op)
        lib = ctypes.CDLL(path)
        for target, symbol in self.targets.items():
          jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                      platform="cpu")
        self.state["lib"] = lib  # keep it loaded
        self.state["path"] = path
        ok = True
      except Exception as e:  # noqa: BLE001 - any failure means: use XLA
        warnings.warn(
            f"luce: the native CPU {self.op} kernel is unavailable ({type(e).__name__}: {e}); "
            f"using the XLA implementation.", NativeKernelWarning, stacklevel=3)
      self.state["ok"] = ok
      return ok

  def library_path(self):
    """Path of the loaded library, or None."""
    return self.state.get("path")
