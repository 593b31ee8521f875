"""The `luce` package: subpackages load lazily on first attribute access (PEP 562),
and the import rules between its parts hold."""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import luce

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fresh(code: str) -> str:
  """stdout of `code` run in a fresh interpreter (nothing imported yet)."""
  done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  return done.stdout


def test_bare_import_reaches_data_read():
  out = _fresh("""
      import sys
      import luce
      assert "luce.data" not in sys.modules
      print(callable(luce.data.read), "luce.data" in sys.modules)
      print(luce.data.read("synthetic:set?n_items=6&k=2&n_events=5").kind)
  """)
  assert out.split() == ["True", "True", "set"]


def test_bare_import_loads_no_training_stack():
  out = _fresh("""
      import sys
      import luce
      heavy = ("luce.train", "luce.eval", "luce.diffusion", "luce.models", "flax", "optax", "orbax")
      print(" ".join(m for m in heavy if m in sys.modules) or "none")
  """)
  assert out.strip() == "none"


def test_subpackages_are_attributes_and_listed():
  for name in ("data", "models", "train", "eval", "diffusion", "kernels"):
    assert name in dir(luce)
  assert luce.kernels.__name__ == "luce.kernels"
  assert luce.data.__name__ == "luce.data"


def test_unknown_attribute_raises_attribute_error_naming_the_valid_names():
  with pytest.raises(AttributeError, match=r"no attribute 'dataa'.*data, diffusion, eval.*pl_log_prob"):
    _ = luce.dataa
  assert not hasattr(luce, "not_a_part")


def _imports(path: pathlib.Path) -> set[str]:
  """Every module `path` imports (`from a.b import c` gives a.b and a.b.c)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


def test_kernels_import_only_kernels_and_errors_and_references_no_implementation():
  files = sorted((REPO / "kernels").rglob("*.py"))
  assert files
  for path in files:
    for name in _imports(path):
      if name.split(".")[0] == "luce":
        assert name in ("luce", "luce.kernels", "luce.errors") or name.startswith(
            ("luce.kernels.", "luce.errors.")), f"{path.relative_to(REPO)} imports {name}"
      if path.name == "reference.py":
        assert name.rsplit(".", 1)[-1] not in ("xla", "pallas", "mosaic_gpu", "cpu_ffi"), (
            f"{path.relative_to(REPO)} imports {name}: a reference must not import what it checks")


def test_data_imports_neither_models_nor_train():
  for path in sorted((REPO / "lib" / "data").rglob("*.py")):
    for name in _imports(path):
      assert not name.startswith(("luce.models", "luce.train", "luce.eval", "luce.diffusion")), (
          f"{path.relative_to(REPO)} imports {name}")


# ---- the direction of imports between the parts of lib/ ----------------------------------------

# Lower layers never import higher ones (DESIGN.md: kernels -> errors only; data -> core
# likelihoods; models -> core; train -> models, data, metrics; eval -> train; launchers and
# configs -> everything, and nothing in lib/ imports them).
LAYERS = {
    "errors": 0, "_lazy": 0, "kernels": 1,
    "_checks": 2, "pl": 2, "pl_set": 2, "sampling": 2, "fit": 2, "losses": 2, "metrics": 2,
    "baselines": 2, "ratings": 2, "inference": 2, "mixture": 2, "ties": 2,
    "data": 3, "models": 3, "diffusion": 4, "train": 5, "eval": 6, "tune": 7,
}


def _part(module: str) -> str | None:
  """The part of lib/ (or "configs"/"launchers") a `luce.X...` module belongs to."""
  parts = module.split(".")
  return parts[1] if parts[0] == "luce" and len(parts) > 1 else None


def _part_of_file(path: pathlib.Path) -> str:
  rel = path.relative_to(REPO)
  if rel.parts[0] == "kernels":
    return "kernels"
  return rel.parts[1].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _part_graph() -> dict[str, dict[str, str]]:
  """part -> {imported part: "file imports module"}, every import in the file (top level
  or inside a function) counted."""
  graph: dict[str, dict[str, str]] = {}
  files = sorted((REPO / "lib").rglob("*.py")) + sorted((REPO / "kernels").rglob("*.py"))
  for path in files:
    if path == REPO / "lib" / "__init__.py":
      continue  # the package root re-exports the core
    source = _part_of_file(path)
    for name in _imports(path):
      target = _part(name)
      if target is not None and target != source:
        graph.setdefault(source, {}).setdefault(target, f"{path.relative_to(REPO)} imports {name}")
  return graph


def _find_cycle(graph: dict) -> list[str] | None:
  """One cycle of `graph` (as a list of nodes, first == last), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in graph.get(node, {}):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if state.get(nxt) is None:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in list(graph):
    if state.get(node) is None:
      found = visit(node)
      if found:
        return found
  return None


def test_cycle_finder_has_teeth():
  assert _find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
  assert _find_cycle({"a": {"b": ""}, "b": {"c": ""}}) is None


def test_no_import_cycle_between_the_parts_of_lib():
  graph = _part_graph()
  assert {"train", "eval", "diffusion", "models", "data"} <= set(graph)
  cycle = _find_cycle(graph)
  assert cycle is None, " -> ".join(cycle) + ": " + "; ".join(
      graph[a][b] for a, b in zip(cycle, cycle[1:]))


def test_lib_never_imports_configs_or_launchers_and_layers_point_down():
  for source, targets in _part_graph().items():
    for target, where in targets.items():
      assert target not in ("configs", "launchers"), where
      assert target in LAYERS, f"{where}: part {target!r} has no layer in LAYERS; add it"
      assert source in LAYERS, f"part {source!r} has no layer in LAYERS; add it"
      assert LAYERS[target] <= LAYERS[source], f"{where}: {source} must not import {target}"


def test_importing_luce_train_leaves_the_slow_optional_modules_unimported():
  """Every launcher starts by importing luce.train; scipy.stats, scipy.optimize,
  tensorboardX (torch, where installed) and grain (the store pipeline) are imported
  when first used, not before."""
  code = ("import sys, luce, luce.train, luce.data; "
          "print(' '.join(m for m in ('scipy.stats', 'scipy.optimize', 'tensorboardX', 'torch', "
          "'grain') "
          "if m in sys.modules))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "", f"imported at `import luce.train`: {proc.stdout.strip()}"
  from luce import _lazy
  lazy = _lazy.LazyModule("scipy.special")
  assert abs(lazy.gammaln(5.0) - 3.1780538303479458) < 1e-12 and "scipy.special" in repr(lazy)
