"""Build hooks of luce's wheel: the native CPU kernels, compiled for every
instruction-set level of the build machine (kernels/_isa.py), shipped as
`luce/kernels/_prebuilt/*.so` with a manifest; the metadata is in
pyproject.toml.

`pip install .`, `pip wheel .` and `python -m build` compile them (they need a
C++ compiler and jaxlib's FFI headers: jaxlib is a build requirement). An
editable install (`pip install -e .`) does not: a source checkout builds its
kernels on first use for the machine it runs on (-march=native,
kernels/_native.py), the developer path.

Settings (environment):
  LUCE_BUILD_NATIVE=0   build no kernels (the wheel is then pure Python and
                        the runtime builds on first use, or uses XLA).
  CXX                   the compiler (default g++, else c++).
A failed compile fails the build, naming the command and the compiler's
message: a wheel without its kernels would be several times slower without
saying so.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE_DIR = os.path.join(HERE, "kernels", "cpu")


def _load_isa():
  spec = importlib.util.spec_from_file_location("_luce_isa", os.path.join(HERE, "kernels", "_isa.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _wanted() -> bool:
  return os.environ.get("LUCE_BUILD_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def build_kernels(out_dir: str) -> dict:
  """Compile every kernel at every level into `out_dir`; returns the manifest."""
  isa = _load_isa()
  try:
    kernels = [(op, os.path.join(HERE, "kernels", rel)) for op, rel in isa.KERNELS]
    return isa.build_prebuilt(out_dir, kernels,
                              INCLUDE_DIR, log=lambda line: print(f"luce: {line}", file=sys.stderr))
  except RuntimeError as e:
    raise SystemExit(f"luce: {e}") from None


class BuildPyWithKernels(build_py):
  """build_py, then the kernels into build_lib/luce/kernels/_prebuilt."""

  def run(self):
    super().run()
    if getattr(self, "editable_mode", False) or not _wanted():
      return
    build_kernels(os.path.join(self.build_lib, "luce", "kernels", "_prebuilt"))


class KernelDistribution(Distribution):
  """Holds machine code (the prebuilt kernels) when they are built: the wheel's
  root is then platlib, as auditwheel and installers expect of binaries."""

  def has_ext_modules(self):
    return _wanted()


class PlatformWheel(bdist_wheel):
  """A wheel for this platform (it holds machine code) but any CPython 3: the
  libraries are loaded by ctypes and link no Python ABI."""

  def finalize_options(self):
    super().finalize_options()
    if _wanted():
      self.root_is_pure = False

  def get_tag(self):
    python, abi, plat = super().get_tag()
    if not self.root_is_pure:
      python, abi = "py3", "none"
    return python, abi, plat


setup(distclass=KernelDistribution,
      cmdclass={"build_py": BuildPyWithKernels, "bdist_wheel": PlatformWheel})
