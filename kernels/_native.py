"""Load the native CPU kernels (XLA FFI), shared by every op that has one:
prebuilt from the wheel, else built on first use, else XLA.

A `NativeLibrary` names one C++ source and the FFI handlers it exports. Its
`available()` finds a library in this order, and remembers which and why
(`describe()`, `luce.kernels.info()`):

  1. Prebuilt (a wheel: `pip install luce`, `pip install .`, `python -m build`).
     setup.py compiled every kernel for each instruction-set level of its
     machine (x86-64, x86-64-v3 = AVX2, x86-64-v4 = AVX-512: `luce.kernels._isa`)
     into `luce/kernels/_prebuilt` with a manifest. The highest level this CPU
     runs is loaded, if the manifest's source hash is this source's and its XLA
     FFI API version is one the running jaxlib accepts (same major, minor at
     most the running one). No compiler is needed. `LUCE_NATIVE_PREBUILT_DIR`
     points elsewhere (tests); `LUCE_NATIVE_LEVEL=x86-64-v3` caps the level
     (to compare levels on one machine).
  2. Built here (a source checkout, `pip install -e .`: the developer path).
     The source is compiled on first use with the machine's C++ compiler
     (`$CXX`, else g++, else c++) and -march=native into a cache directory
     (`$LUCE_CACHE_DIR/native`, else `$XDG_CACHE_HOME/luce/native`, else
     `~/.cache/luce/native`; the system temp directory when that is not
     writable), under a name keyed by the hash of the source and headers, the
     jaxlib version (whose FFI headers it includes), the compiler's version,
     the flags and the CPU's feature flags. Later processes load the cached
     library. The build writes to a temporary file and renames it into place,
     so processes building at once (pytest -n 2) never see half-written files.
  3. Neither: `available()` returns False, warns once (`NativeKernelWarning`,
     with every reason) and the op's dispatcher uses its XLA implementation.

`LUCE_NATIVE=0` turns every native kernel off (silently); `LUCE_NATIVE=prebuilt`
allows only step 1 and `LUCE_NATIVE=build` only step 2. `LUCE_NATIVE_CXXFLAGS`
adds compiler flags to step 2 (part of the cache key). Creating a
`NativeLibrary` never builds or raises.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings

import jax

from luce.kernels import _isa

FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]


class NativeKernelWarning(UserWarning):
  """A native CPU kernel could not be built or loaded; XLA is used instead."""


def compiler():
  """Path of the C++ compiler ($CXX, g++, c++), or None."""
  return _isa.find_compiler()


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


# Headers shared by the kernels (kernels/cpu/*.h), on every build's include
# path and in every cache key.
INCLUDE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu")


def cache_key(source: str, cxx: str) -> str:
  import jaxlib
  h = hashlib.sha256(_isa.source_hash(source, INCLUDE_DIR).encode())
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


PREBUILT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_prebuilt")


def mode() -> str:
  """LUCE_NATIVE read as "off", "prebuilt", "build" or "auto" (the default:
  prebuilt, else built here). Any other value is an InputError."""
  value = os.environ.get("LUCE_NATIVE", "1").strip().lower()
  if value in ("0", "false", "no", "off"):
    return "off"
  if value in ("", "1", "true", "yes", "on", "auto"):
    return "auto"
  if value in ("prebuilt", "build"):
    return value
  from luce.errors import InputError
  raise InputError(f"LUCE_NATIVE={value!r} is not one of 0, 1, auto, prebuilt, build.")


def prebuilt_dir() -> str:
  return os.environ.get("LUCE_NATIVE_PREBUILT_DIR") or PREBUILT_DIR


def running_ffi_api():
  """(major, minor) of the running jaxlib's XLA FFI C API, or None."""
  return _isa.ffi_api_version(jax.ffi.include_dir())


def _level_cap(levels: list[str]) -> list[str]:
  cap = os.environ.get("LUCE_NATIVE_LEVEL", "").strip()
  if not cap:
    return levels
  if cap not in levels:
    from luce.errors import InputError
    known = list(_isa.VARIANTS[_isa.machine()])
    raise InputError(f"LUCE_NATIVE_LEVEL={cap!r} is not a level this CPU runs "
                     f"({', '.join(levels) or 'none'}; the levels of this machine: {', '.join(known)}).")
  return levels[:levels.index(cap) + 1]


def find_prebuilt(op: str, source: str):
  """(path, level, None) of the prebuilt library of `op` this machine should
  load, or (None, None, reason) saying why there is none."""
  folder = prebuilt_dir()
  manifest = _isa.read_manifest(folder)
  if manifest is None:
    return None, None, f"no prebuilt libraries ({folder} has no {_isa.MANIFEST}: a source checkout)"
  entry = manifest.get("kernels", {}).get(op)
  if entry is None:
    return None, None, f"the prebuilt manifest in {folder} has no {op} kernel"
  if manifest.get("machine") != _isa.machine():
    return None, None, (f"the prebuilt libraries are for {manifest.get('platform')}, "
                        f"this machine is {platform.machine()}")
  if entry.get("source_sha256") != _isa.source_hash(source, INCLUDE_DIR):
    return None, None, f"the prebuilt {op} library was built from another version of {source}"
  running = running_ffi_api()
  if not _isa.abi_compatible(manifest.get("ffi_api"), running):
    built = ".".join(map(str, manifest.get("ffi_api") or ())) or "?"
    now = ".".join(map(str, running or ())) or "?"
    return None, None, (f"the prebuilt libraries use XLA FFI API {built} (jaxlib "
                        f"{manifest.get('jaxlib')}), the running jaxlib {_jaxlib_version()} has {now}")
  libraries = entry.get("libraries", {})
  levels = [name for name in _level_cap(_isa.runnable_variants()) if name in libraries]
  if not levels:
    return None, None, f"no prebuilt {op} library for this CPU's instruction set"
  level = levels[-1]
  path = os.path.join(folder, libraries[level]["file"])
  if not os.path.exists(path):
    return None, None, f"the prebuilt {op} library {path} is missing"
  return path, level, None


def _jaxlib_version() -> str:
  import jaxlib
  return jaxlib.__version__


class NativeLibrary:
  """One native kernel source and the FFI targets it registers.

  Args:
    op: the op's name, for messages and the library files' names ("pl_nll").
    source: path of the .cc file.
    targets: FFI target name -> exported handler symbol.
  """

  def __init__(self, op: str, source: str, targets: dict[str, str]):
    self.op = op
    self.source = source
    self.targets = dict(targets)
    # "ok", "how" (a sentence) and, once loaded, "lib", "path", "kind"
    # ("prebuilt" or "built") and "level"; clear() it to look again.
    self.state: dict = {}
    self._lock = threading.Lock()

  def _load(self, path: str):
    lib = ctypes.CDLL(path)
    for target, symbol in self.targets.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    self.state["lib"] = lib  # keep it loaded
    self.state["path"] = path

  def available(self) -> bool:
    """Whether the kernel is loaded and registered (finds or builds it once)."""
    with self._lock:
      if "ok" in self.state:
        return self.state["ok"]
      how = mode()
      if how == "off":
        self.state.update(ok=False, how="turned off (LUCE_NATIVE=0)")
        return False
      reasons = []
      if how in ("auto", "prebuilt"):
        path, level, why = find_prebuilt(self.op, self.source)
        if path is not None:
          try:
            self._load(path)
            self.state.update(ok=True, kind="prebuilt", level=level,
                              how=f"prebuilt library for {level} ({os.path.basename(path)})")
            return True
          except Exception as e:  # noqa: BLE001 - any failure: try the next way
            why = f"the prebuilt {os.path.basename(path)} did not load ({type(e).__name__}: {e})"
        reasons.append(why)
      if how in ("auto", "build"):
        try:
          path = build(self.source, self.op)
          self._load(path)
          note = f"; {reasons[0]}" if reasons else ""
          self.state.update(ok=True, kind="built", level="native",
                            how=f"built on this machine with {' '.join(flags()[:2])} ({path}{note})")
          return True
        except Exception as e:  # noqa: BLE001 - any failure means: use XLA
          reasons.append(f"no build here ({type(e).__name__}: {e})")
      self.state.update(ok=False, how="unavailable: " + "; ".join(reasons))
      warnings.warn(
          f"luce: the native CPU {self.op} kernel is unavailable ({'; '.join(reasons)}); "
          f"using the XLA implementation.", NativeKernelWarning, stacklevel=3)
      return False

  def describe(self) -> str:
    """How the kernel was found (or why not); looks for it first."""
    self.available()
    return self.state["how"]

  def library_path(self):
    """Path of the loaded library, or None."""
    return self.state.get("path")
