"""Prebuilt native kernels (the wheel's path): instruction-set levels, the FFI
ABI rule, the manifest checks, `luce.kernels.info()`, and the libraries setup.py
builds run at every level this CPU executes with no compiler on PATH.

The wheel itself (`python -m build`, installed in a fresh venv) is checked by
.ci/run with tests/packaging/check_wheel.py; here the same build function
(`luce.kernels._isa.build_prebuilt`, what setup.py calls) writes into a
temporary folder that LUCE_NATIVE_PREBUILT_DIR points the runtime at.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import jax
import pytest

import luce
from luce import kernels
from luce.errors import InputError
from luce.kernels import _isa, _native
from luce.kernels.pl_nll import cpu_ffi as pl_nll_cpu
from luce.kernels.topk_sample import cpu_ffi as topk_cpu

REPO = pathlib.Path(__file__).resolve().parents[1]
KERNELS_DIR = pathlib.Path(kernels.__file__).parent
CHECK = REPO / "tests" / "packaging" / "check_wheel.py"

HASWELL = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx avx2 bmi1 bmi2 f16c fma abm movbe "
                    "xsave".split())
SKYLAKE_SP = HASWELL | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


# ------------------------------------------------------------------ levels and ABI
def test_levels_follow_the_cpu_flags():
  assert _isa.runnable_variants(frozenset({"sse2"}), "x86_64") == ["x86-64"]
  assert _isa.best_variant(HASWELL, "x86_64") == "x86-64-v3"
  assert _isa.best_variant(SKYLAKE_SP, "x86_64") == "x86-64-v4"
  # AVX-512F alone (Knights Landing: no BW/DQ/VL) is not v4.
  assert _isa.best_variant(HASWELL | {"avx512f", "avx512cd"}, "x86_64") == "x86-64-v3"
  # AVX2 without FMA or BMI2 is not v3.
  assert _isa.best_variant(HASWELL - {"fma"}, "x86_64") == "x86-64"
  assert _isa.best_variant(frozenset(), "other") == "generic"


def test_ffi_abi_rule():
  assert _isa.abi_compatible((0, 3), (0, 3))
  assert _isa.abi_compatible([0, 2], (0, 3))      # a newer XLA accepts an older minor
  assert not _isa.abi_compatible((0, 4), (0, 3))  # built against a newer minor
  assert not _isa.abi_compatible((1, 0), (0, 9))  # another major
  assert not _isa.abi_compatible(None, (0, 3))


def test_ffi_version_read_from_the_header(tmp_path):
  running = _isa.ffi_api_version(jax.ffi.include_dir())
  assert running is not None and running == _native.running_ffi_api()
  header = tmp_path / "xla" / "ffi" / "api" / "c_api.h"
  header.parent.mkdir(parents=True)
  header.write_text("#define XLA_FFI_API_MAJOR 2\n// x\n#define XLA_FFI_API_MINOR  17\n")
  assert _isa.ffi_api_version(str(tmp_path)) == (2, 17)
  header.write_text("#define XLA_FFI_API_MAJOR 2\n")
  assert _isa.ffi_api_version(str(tmp_path)) is None
  assert _isa.ffi_api_version(str(tmp_path / "none")) is None


def test_kernel_list_matches_the_ops():
  # setup.py builds _isa.KERNELS; each op's loader must name the same source.
  sources = {op: str(KERNELS_DIR / rel) for op, rel in _isa.KERNELS}
  assert sources == {"pl_nll": pl_nll_cpu._library.source, "topk_sample": topk_cpu._library.source}


def test_wheels_build_against_the_oldest_supported_jaxlib():
  # The prebuilt libraries load under any jaxlib whose FFI API minor is at
  # least the one they were built with, so the build must use the floor the
  # package allows, exactly: an open ">=" let `python -m build` pick the newest
  # jaxlib of the index (FFI 0.5), and the wheel then refused the jaxlib that
  # pip installed beside it (FFI 0.3).
  root = pathlib.Path(__file__).resolve().parents[1]
  with open(root / "pyproject.toml", "rb") as f:
    project = tomllib.load(f)
  build = [r for r in project["build-system"]["requires"] if r.startswith("jaxlib")]
  floors = [r for r in project["project"]["dependencies"] if r.startswith("jaxlib")]
  pins = [l.strip() for l in (root / "requirements.txt").read_text().splitlines()
          if l.startswith("jaxlib")]
  assert len(build) == len(floors) == len(pins) == 1
  version = pins[0].split("==")[1]
  assert build[0] == f"jaxlib=={version}", build
  assert floors[0].split(";")[0].strip() == f"jaxlib>={version}", floors


def test_bad_settings_are_named(monkeypatch):
  monkeypatch.setenv("LUCE_NATIVE", "sometimes")
  with pytest.raises(InputError, match="LUCE_NATIVE='sometimes'"):
    _native.mode()
  monkeypatch.setenv("LUCE_NATIVE", "prebuilt")
  assert _native.mode() == "prebuilt"
  with pytest.raises(InputError, match="LUCE_NATIVE_LEVEL='x86-64-v9'"):
    monkeypatch.setenv("LUCE_NATIVE_LEVEL", "x86-64-v9")
    _native._level_cap(["x86-64", "x86-64-v3"])


# ------------------------------------------------------------------ built libraries
@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory):
  if _isa.machine() != "x86_64" or _isa.find_compiler() is None:
    pytest.skip("needs an x86-64 machine with a C++ compiler to build the libraries")
  out = tmp_path_factory.mktemp("prebuilt")
  kernels_ = [(op, str(KERNELS_DIR / rel)) for op, rel in _isa.KERNELS]
  manifest = _isa.build_prebuilt(str(out), kernels_, _native.INCLUDE_DIR)
  return out, manifest


def test_manifest_records_the_build(prebuilt):
  out, manifest = prebuilt
  assert manifest == json.loads((out / _isa.MANIFEST).read_text())
  assert tuple(manifest["ffi_api"]) == _native.running_ffi_api()
  for op, _ in _isa.KERNELS:
    libs = manifest["kernels"][op]["libraries"]
    assert sorted(libs) == sorted(_isa.VARIANTS["x86_64"])
    for level, entry in libs.items():
      assert (out / entry["file"]).stat().st_size > 10_000, (op, level)


def _manifest_copy(prebuilt, tmp_path, edit):
  out, manifest = prebuilt
  folder = tmp_path / "copy"
  shutil.copytree(out, folder)
  manifest = json.loads(json.dumps(manifest))
  edit(manifest)
  (folder / _isa.MANIFEST).write_text(json.dumps(manifest))
  return folder


@pytest.mark.parametrize("edit, reason", [
    (lambda m: m.update(ffi_api=[m["ffi_api"][0] + 1, 0]), "XLA FFI API"),
    (lambda m: m.update(ffi_api=[m["ffi_api"][0], m["ffi_api"][1] + 1]), "XLA FFI API"),
    (lambda m: m["kernels"]["pl_nll"].update(source_sha256="0" * 64), "another version"),
    (lambda m: m.update(machine="other", platform="aarch64"), "for aarch64"),
    (lambda m: m["kernels"].pop("pl_nll"), "has no pl_nll kernel"),
    (lambda m: m["kernels"]["pl_nll"].update(libraries={}), "no prebuilt pl_nll library for this CPU"),
])
def test_unusable_prebuilt_says_why(prebuilt, tmp_path, monkeypatch, edit, reason):
  folder = _manifest_copy(prebuilt, tmp_path, edit)
  monkeypatch.setenv("LUCE_NATIVE_PREBUILT_DIR", str(folder))
  path, level, why = _native.find_prebuilt("pl_nll", pl_nll_cpu._library.source)
  assert path is None and level is None and reason in why, why


def test_missing_manifest_and_library(prebuilt, tmp_path, monkeypatch):
  monkeypatch.setenv("LUCE_NATIVE_PREBUILT_DIR", str(tmp_path))
  assert "a source checkout" in _native.find_prebuilt("pl_nll", pl_nll_cpu._library.source)[2]
  folder = _manifest_copy(prebuilt, tmp_path, lambda m: None)
  for so in folder.glob("pl_nll.*.so"):
    so.unlink()
  monkeypatch.setenv("LUCE_NATIVE_PREBUILT_DIR", str(folder))
  assert "is missing" in _native.find_prebuilt("pl_nll", pl_nll_cpu._library.source)[2]


def test_levels_pick_the_best_and_honour_the_cap(prebuilt, monkeypatch):
  out, _ = prebuilt
  monkeypatch.setenv("LUCE_NATIVE_PREBUILT_DIR", str(out))
  monkeypatch.delenv("LUCE_NATIVE_LEVEL", raising=False)
  path, level, _ = _native.find_prebuilt("topk_sample", topk_cpu._library.source)
  assert level == _isa.best_variant() and path.endswith(f"topk_sample.{level}.so")
  monkeypatch.setenv("LUCE_NATIVE_LEVEL", "x86-64")
  assert _native.find_prebuilt("topk_sample", topk_cpu._library.source)[1] == "x86-64"


def _no_compiler_env(tmp_path, prebuilt_dir, **extra):
  """An environment where no compiler can be found: PATH holds only python."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  if not (bin_dir / "python").exists():
    (bin_dir / "python").symlink_to(sys.executable)
  cache = tmp_path / "cache"
  cache.mkdir(exist_ok=True)
  env = {k: v for k, v in os.environ.items() if k not in ("CXX", "LUCE_NATIVE_LEVEL")}
  env.update(PATH=str(bin_dir), LUCE_NATIVE_PREBUILT_DIR=str(prebuilt_dir), LUCE_CACHE_DIR=str(cache),
             JAX_PLATFORMS="cpu", **extra)
  return env


@pytest.mark.slow
def test_every_runnable_level_matches_xla_without_a_compiler(prebuilt, tmp_path):
  # check_wheel.py's own per-level check (one fresh interpreter per level and
  # one for auto), on the libraries built above instead of an installed wheel;
  # it refuses a luce outside site-packages, so that one problem is allowed.
  out, _ = prebuilt
  for level in [*_isa.runnable_variants(), None]:
    env = _no_compiler_env(tmp_path, out, LUCE_NATIVE="prebuilt",
                           **({"LUCE_NATIVE_LEVEL": level} if level else {}))
    done = subprocess.run([sys.executable, str(CHECK), "--one", *([level] if level else [])],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    problems = [p for p in result["problems"] if "not the installed wheel" not in p]
    assert problems == [], (level, result, done.stderr[-2000:])
    assert result["picked"] == (level or _isa.best_variant())
    assert not os.listdir(tmp_path / "cache"), "a kernel was compiled at run time"


def test_no_compiler_and_no_prebuilt_falls_back_with_every_reason(tmp_path):
  code = ("import warnings, luce.kernels as k\n"
          "with warnings.catch_warnings(record=True) as ws:\n"
          "  warnings.simplefilter('always')\n"
          "  i = k.info()\n"
          "print(i['pl_nll'].auto, i['topk_sample'].auto, len(ws))\n"
          "print(i['pl_nll'].why)\n"
          "print(k.info_line())\n")
  env = _no_compiler_env(tmp_path, tmp_path / "nothing")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        timeout=120)
  assert done.returncode == 0, done.stderr
  picks, why, line = done.stdout.strip().splitlines()
  assert picks == "xla xla 2"   # one warning per op
  assert "a source checkout" in why and "no C++ compiler" in why and "no GPU or TPU" in why
  assert line == "kernels on cpu: pl_nll=xla, topk_sample=xla, pl_set=xla"


def test_info_here_and_on_accelerators(monkeypatch):
  here = kernels.info()
  assert set(here) == {"pl_nll", "topk_sample", "pl_set"}
  for op in ("pl_nll", "topk_sample"):
    lib = (pl_nll_cpu if op == "pl_nll" else topk_cpu)._library
    assert here[op].auto == ("cpu" if lib.available() else "xla")
    assert here[op].auto == getattr(luce.kernels, op).resolve_impl("auto")
  assert here["pl_set"].auto == luce.kernels.pl_set.resolve_impl("auto") == "xla"
  assert kernels.info_line().startswith("kernels on cpu: pl_nll=")
  for backend, flavour in (("gpu", "Mosaic GPU"), ("tpu", "Mosaic TPU")):
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    there = kernels.info()
    assert {o.auto for o in there.values()} == {"pallas"}
    assert all(flavour in o.why for o in there.values())
    assert there["pl_nll"].auto == luce.kernels.pl_nll.resolve_impl("auto")
