"""The documentation lists every public name and every launcher (no Sphinx build).

Reads the sources statically (ast, no imports), so it runs in well under a
second: every public name of every public module must resolve to an object
that some autosummary list in docs/api/ gives a page (one `:toctree:` entry,
under any of its public names), and every console script of pyproject.toml
must be in the launchers' toctree. `bash docs/build.sh` builds the site.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import re
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Import prefix -> folder (pyproject.toml's package-dir), longest first.
FOLDERS = (("luce.launchers", "launchers"), ("luce.configs", "configs"), ("luce.kernels", "kernels"),
           ("luce", "lib"))


def module_file(module: str) -> pathlib.Path | None:
  """The source file of a luce module (a package's __init__.py), or None."""
  for prefix, folder in FOLDERS:
    if module == prefix or module.startswith(prefix + "."):
      rest = module[len(prefix):].lstrip(".").split(".") if module != prefix else []
      base = ROOT / folder / pathlib.Path(*rest) if rest else ROOT / folder
      if (base / "__init__.py").exists():
        return base / "__init__.py"
      if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
      return None
  return None


def public_modules() -> list[str]:
  """luce, its core modules (lib/*.py), its subpackages and the kernel op packages."""
  mods = ["luce", "luce.kernels"]
  mods += [f"luce.{p.stem}" for p in sorted((ROOT / "lib").glob("*.py"))
           if not p.stem.startswith("_")]
  mods += [f"luce.{p.parent.name}" for p in sorted((ROOT / "lib").glob("*/__init__.py"))
           if not p.parent.name.startswith("_")]
  mods += [f"luce.kernels.{p.parent.name}" for p in sorted((ROOT / "kernels").glob("*/__init__.py"))
           if not p.parent.name.startswith("_") and p.parent.name != "cpu"]
  return mods


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
  if not node.level:
    return node.module or ""
  parts = module.split(".")
  base = parts if is_package else parts[:-1]
  base = base[:len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _statements(body):
  for node in body:
    if isinstance(node, ast.If):
      yield from _statements(node.body + node.orelse)
    elif isinstance(node, ast.Try):
      yield from _statements(node.body + node.orelse + node.finalbody
                             + [s for h in node.handlers for s in h.body])
    else:
      yield node


@functools.cache
def bindings(module: str) -> tuple[dict, list | None]:
  """({top-level name: ("def",) | ("import", module, name)}, __all__ or None) of `module`."""
  path = module_file(module)
  is_package = path.name == "__init__.py"
  names, exported = {}, None
  for node in _statements(ast.parse(path.read_text()).body):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names[node.name] = ("def",)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      for target in targets:
        for n in ast.walk(target):
          if isinstance(n, ast.Name):
            names[n.id] = ("def",)
            if n.id == "__all__":
              exported = list(ast.literal_eval(node.value))
    elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
      source = _absolute(module, node, is_package)
      for alias in node.names:
        names[alias.asname or alias.name] = ("import", source, alias.name)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        names[alias.asname or alias.name.split(".")[0]] = ("module", alias.name)
  return names, exported


def canonical(module: str, name: str):
  """Where `module.name` is defined: ("luce.x", "name"), ("module", "luce.x.y") for a
  module, or None for a name from outside luce or one that does not exist."""
  if module_file(f"{module}.{name}") is not None and module_file(module).name == "__init__.py":
    if name not in bindings(module)[0] or bindings(module)[0][name][0] != "def":
      return ("module", f"{module}.{name}")
  binding = bindings(module)[0].get(name)
  if binding is None:
    return None
  if binding[0] == "def":
    return (module, name)
  if binding[0] == "module":
    return ("module", binding[1])
  _, source, source_name = binding
  if not (source == "luce" or source.startswith("luce.")):
    return None
  if module_file(f"{source}.{source_name}") is not None:
    return ("module", f"{source}.{source_name}")
  return canonical(source, source_name)


def public_names(module: str) -> list[str]:
  """`__all__`, else the names a package binds at its top (definitions and luce
  re-exports) or a plain module defines, without _names and modules."""
  names, exported = bindings(module)
  if exported is not None:
    return exported
  is_package = module_file(module).name == "__init__.py"
  out = []
  for name, binding in names.items():
    if name.startswith("_") or (binding[0] != "def" and not is_package):
      continue
    where = canonical(module, name)
    if where is not None and where[0] != "module":
      out.append(name)
  return out


def autosummary_entries() -> list[tuple[str, str, bool]]:
  """[(page, full name, in a :toctree: list)] of every autosummary directive in docs/api."""
  out = []
  for page in sorted((DOCS / "api").glob("*.rst")):
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
      if lines[i].strip() == ".. autosummary::":
        toctree, i = False, i + 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
          entry = lines[i].strip()
          if entry.startswith(":toctree:"):
            toctree = True
          elif entry and not entry.startswith(":"):
            out.append((page.name, entry.lstrip("~"), toctree))
          i += 1
      else:
        i += 1
  return out


def split_entry(entry: str):
  """("luce.x", "name") of a documented full name (the longest module prefix)."""
  parts = entry.split(".")
  for cut in range(len(parts) - 1, 0, -1):
    module = ".".join(parts[:cut])
    if module_file(module) is not None:
      return module, ".".join(parts[cut:])
  return None, entry


def test_public_modules_found():
  mods = public_modules()
  for expected in ("luce", "luce.data", "luce.models", "luce.train", "luce.diffusion", "luce.eval",
                   "luce.tune", "luce.kernels", "luce.pl", "luce.pl_set", "luce.fit", "luce.ties",
                   "luce.inference", "luce.mixture", "luce.ratings", "luce.baselines", "luce.metrics",
                   "luce.losses", "luce.sampling", "luce.errors", "luce.kernels.pl_nll"):
    assert expected in mods
  assert "pl_log_prob" in public_names("luce")
  assert "ShapeError" not in public_names("luce.pl")          # imported for use, not exported
  assert canonical("luce.eval", "portfolio_backtest") == ("luce.eval._portfolio", "backtest")
  assert canonical("luce.train", "NonFiniteError") == ("luce.errors", "NonFiniteError")


def test_every_entry_resolves():
  bad = []
  for page, entry, _ in autosummary_entries():
    module, name = split_entry(entry)
    if module is None or "." in name or canonical(module, name) in (None,):
      bad.append(f"{page}: {entry}")
  assert not bad, "autosummary entries that name no luce object:\n" + "\n".join(bad)


def test_every_public_name_has_a_page():
  pages = {}
  for _page, entry, toctree in autosummary_entries():
    if toctree:
      module, name = split_entry(entry)
      pages.setdefault(canonical(module, name), []).append(entry)
  twice = {k: v for k, v in pages.items() if len(v) > 1}
  assert not twice, f"objects with more than one page (list one name, the others without :toctree:): {twice}"
  missing = []
  for module in public_modules():
    for name in public_names(module):
      if canonical(module, name) not in pages:
        missing.append(f"{module}.{name}")
  assert not missing, ("public names with no page: add each to an autosummary :toctree: list in "
                       "docs/api/*.rst:\n" + "\n".join(missing))


def test_every_public_module_has_a_page():
  documented = set()
  for page in (DOCS / "api").glob("*.rst"):
    documented.update(re.findall(r"^\.\. automodule:: (\S+)", page.read_text(), re.M))
  missing = [m for m in public_modules() if m not in documented]
  assert not missing, f"modules without an `.. automodule::` page in docs/api: {missing}"


def test_every_launcher_has_a_page():
  with open(ROOT / "pyproject.toml", "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  modules = {target.split(":")[0] for target in scripts.values()}
  launchers = {f"luce.launchers.{p.stem}" for p in (ROOT / "launchers").glob("*.py")
               if not p.stem.startswith("_")}
  assert launchers <= modules, f"launcher modules without a console script: {launchers - modules}"
  index = (DOCS / "launchers" / "index.md").read_text()
  listed = set(re.findall(r"^_generated/(\S+)$", index, re.M))
  assert set(scripts) <= listed, f"launchers missing from docs/launchers/index.md: {set(scripts) - listed}"


@pytest.mark.parametrize("tutorial", sorted((DOCS / "tutorials").glob("*.py")), ids=lambda p: p.name)
def test_tutorials_are_percent_scripts_in_the_toctree(tutorial):
  text = tutorial.read_text()
  assert text.startswith("# ---\n# jupyter:") or "# %%" in text, f"{tutorial.name}: not a jupytext percent script"
  ast.parse(text)
  index = (DOCS / "tutorials" / "index.md").read_text()
  assert tutorial.stem in index, f"{tutorial.name} is not in docs/tutorials/index.md"
