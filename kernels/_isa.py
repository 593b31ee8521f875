"""Instruction-set levels, FFI ABI versions and the compiler command of the
native CPU kernels, shared by the wheel build (setup.py) and the runtime
(`luce.kernels._native`).

This module imports nothing but the standard library: setup.py loads it from
its file, in pip's isolated build environment, before luce or jax exist there.

Prebuilt libraries. A wheel carries every native kernel compiled once per
instruction-set level of its machine (`VARIANTS`): on x86-64 the psABI levels
"x86-64" (SSE2, any x86-64 CPU), "x86-64-v3" (AVX2, FMA, BMI2: Haswell, Zen 1
and newer) and "x86-64-v4" (AVX-512 F/BW/CD/DQ/VL: Skylake-SP, Zen 4 and
newer). At run time `best_variant()` reads the CPU's feature flags and picks
the highest level the CPU has all the flags of; the kernels' sources choose
their vector width from the compiler's `__AVX512F__` / `__AVX__` macros, so
each level runs its own code path. This is the runtime dispatch of the wheel:
per library rather than per function (GCC's `target_clones`), which keeps the
sources free of dispatch code and tests each level as a whole library
(tests/test_native_prebuilt.py runs every level this CPU can execute against
the XLA implementation).

ABI. The kernels talk to XLA through the XLA FFI's C API, whose header
(`xla/ffi/api/c_api.h` in jaxlib's include folder) defines
XLA_FFI_API_MAJOR/MINOR. A handler compiled against version (M, m) runs in
an XLA of version (M, m') with m' >= m: minor versions only add fields, which
an older handler never reads, and XLA keeps accepting older minors. So a
prebuilt library is used when the running jaxlib's major equals the build's
and its minor is at least the build's (`abi_compatible`); otherwise the
runtime falls back to building from source (if a compiler is there) or to
XLA, and says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess

# Common flags of every build; the level adds its -march.
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")

# name -> (compiler flags, CPU flags the level needs, as /proc/cpuinfo spells them)
_X86_V3 = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_X86_V4 = _X86_V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
VARIANTS = {
    "x86_64": {
        "x86-64": (("-march=x86-64", "-mtune=generic"), ()),
        "x86-64-v3": (("-march=x86-64-v3", "-mtune=generic"), _X86_V3),
        "x86-64-v4": (("-march=x86-64-v4", "-mtune=generic"), _X86_V4),
    },
    # Other machines: one library for the compiler's default target.
    "other": {
        "generic": ((), ()),
    },
}

MANIFEST = "manifest.json"

# Every native kernel: (op, its source relative to kernels/). setup.py builds
# these; each op's cpu_ffi module loads its own (tests/test_native_prebuilt.py
# checks the two agree).
KERNELS = (
    ("pl_nll", "pl_nll/cpu/pl_nll.cc"),
    ("topk_sample", "topk_sample/cpu/topk.cc"),
)


def machine() -> str:
  """"x86_64" on x86-64 machines, else "other" (the key of VARIANTS)."""
  return "x86_64" if platform.machine().lower() in ("x86_64", "amd64") else "other"


def cpu_feature_flags() -> frozenset[str]:
  """The CPU's feature flags from /proc/cpuinfo (empty where it is unreadable)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def runnable_variants(flags: frozenset[str] | None = None, arch: str | None = None) -> list[str]:
  """The levels of `arch` (default: this machine) whose CPU flags are all in
  `flags` (default: this CPU's), lowest first."""
  flags = cpu_feature_flags() if flags is None else flags
  table = VARIANTS[arch or machine()]
  return [name for name, (_, needs) in table.items() if set(needs) <= flags]


def best_variant(flags: frozenset[str] | None = None, arch: str | None = None) -> str | None:
  """The highest level this CPU can run, or None (no level: not expected)."""
  names = runnable_variants(flags, arch)
  return names[-1] if names else None


def ffi_api_version(include_dir: str) -> tuple[int, int] | None:
  """(major, minor) of the XLA FFI C API in `include_dir`, or None."""
  path = os.path.join(include_dir, "xla", "ffi", "api", "c_api.h")
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  major = re.search(r"#define\s+XLA_FFI_API_MAJOR\s+(\d+)", text)
  minor = re.search(r"#define\s+XLA_FFI_API_MINOR\s+(\d+)", text)
  if not (major and minor):
    return None
  return int(major.group(1)), int(minor.group(1))


def abi_compatible(built: tuple[int, int] | list[int] | None,
                   running: tuple[int, int] | list[int] | None) -> bool:
  """Whether a handler built against FFI API `built` runs in XLA `running`."""
  if built is None or running is None:
    return False
  return int(built[0]) == int(running[0]) and int(running[1]) >= int(built[1])


def jaxlib_include_dir() -> str | None:
  """jaxlib's include folder, found without importing jaxlib (or jax)."""
  import importlib.util
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.submodule_search_locations:
    return None
  for base in spec.submodule_search_locations:
    path = os.path.join(base, "include")
    if os.path.isdir(path):
      return path
  return None


def source_hash(source: str, include_dir: str) -> str:
  """sha256 of a kernel source and every header in the kernels' shared
  include folder (kernels/cpu), so that a changed header changes it too."""
  h = hashlib.sha256()
  with open(source, "rb") as f:
    h.update(f.read())
  headers = sorted(os.listdir(include_dir)) if os.path.isdir(include_dir) else ()
  for header in headers:
    with open(os.path.join(include_dir, header), "rb") as f:
      h.update(b"\0" + header.encode() + b"\0" + f.read())
  return h.hexdigest()


def compile_command(cxx: str, source: str, output: str, *, ffi_include: str, include_dir: str,
                    level_flags=(), extra_flags=()) -> list[str]:
  """The compiler command that builds one kernel library."""
  return [cxx, *BASE_FLAGS, *level_flags, *extra_flags, "-isystem", ffi_include, "-I",
          include_dir, source, "-o", output]


def compiler_version(cxx: str) -> str:
  out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
  return out.stdout.splitlines()[0] if out.stdout else ""


def read_manifest(folder: str) -> dict | None:
  """The manifest of a prebuilt folder, or None when there is none."""
  try:
    with open(os.path.join(folder, MANIFEST)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def find_compiler() -> str | None:
  """Path of the C++ compiler ($CXX, g++, c++), or None."""
  for name in (os.environ.get("CXX"), "g++", "c++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def build_prebuilt(out_dir: str, kernels, include_dir: str, *, cxx: str | None = None,
                   levels=None, log=lambda line: None) -> dict:
  """Compile each (op, source) of `kernels` at every level of this machine
  (or `levels`) into `out_dir` as OP.LEVEL.so, and write the manifest the
  runtime reads (`luce.kernels._native.find_prebuilt`). Returns the manifest.

  Raises RuntimeError naming what is missing (a compiler, jaxlib's headers)
  or the failed command with the compiler's message.
  """
  cxx = cxx or find_compiler()
  if cxx is None:
    raise RuntimeError("building the native CPU kernels needs a C++ compiler ($CXX, g++ or c++); "
                       "set LUCE_BUILD_NATIVE=0 to build without them")
  ffi_include = jaxlib_include_dir()
  if ffi_include is None:
    raise RuntimeError("building the native CPU kernels needs jaxlib's FFI headers (jaxlib is a "
                       "build requirement in pyproject.toml)")
  api = ffi_api_version(ffi_include)
  if api is None:
    raise RuntimeError(f"no XLA FFI API version in {ffi_include}/xla/ffi/api/c_api.h")
  import importlib.metadata
  arch = machine()
  table = VARIANTS[arch]
  unknown = sorted(set(levels or ()) - set(table))
  if unknown:
    raise RuntimeError(f"unknown levels {unknown} (this machine's: {list(table)})")
  os.makedirs(out_dir, exist_ok=True)
  manifest = {"machine": arch, "platform": platform.machine(),
              "jaxlib": importlib.metadata.version("jaxlib"), "ffi_api": list(api),
              "compiler": compiler_version(cxx), "kernels": {}}
  for op, source in kernels:
    entry = {"source_sha256": source_hash(source, include_dir), "libraries": {}}
    for level, (level_flags, needs) in table.items():
      if levels is not None and level not in levels:
        continue
      name = f"{op}.{level}.so"
      tmp = os.path.join(out_dir, name + ".tmp")
      cmd = compile_command(cxx, source, tmp, ffi_include=ffi_include, include_dir=include_dir,
                            level_flags=level_flags)
      log(" ".join(cmd))
      done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
      if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
      os.replace(tmp, os.path.join(out_dir, name))
      entry["libraries"][level] = {"file": name, "cpu_flags": list(needs)}
    manifest["kernels"][op] = entry
  with open(os.path.join(out_dir, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  return manifest
