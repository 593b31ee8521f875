"""Sphinx extension: one page per luce console script, from the launcher itself.

On `builder-inited` it reads the console scripts from pyproject.toml's
[project.scripts], imports each launcher module and writes
launchers/_generated/<script>.md: the module docstring (what it does, with
examples) and a table of the absl flags the module defines (name, default,
help). Nothing about a launcher is written by hand, so the pages follow the
code. The flags of one launcher are removed from absl's registry before the
next is imported (several launchers define --workdir or --config).

Also connects `autodoc-process-docstring` so that a module constant (a tuple,
a dict) is not described by its type's docstring ("Built-in immutable
sequence...").
"""

from __future__ import annotations

import importlib
import pathlib
import re
import sys
import tomllib

GENERATED = "launchers/_generated"


def launcher_scripts(root: pathlib.Path) -> dict[str, str]:
  """{script name: launcher module} from pyproject.toml, e.g. {"luce-fit": "luce.launchers.fit"}."""
  with open(root / "pyproject.toml", "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  return {name: target.split(":")[0] for name, target in sorted(scripts.items())}


def _cell(text: str) -> str:
  """`text` safe inside a Markdown table cell."""
  return " ".join(str(text).split()).replace("|", "\\|")


def _default(flag) -> str:
  """The flag's default as Markdown."""
  if flag.default is None:
    return "none"
  if flag.name == "config":          # ml_collections: the default is the file's path
    return f"`{_cell(flag.default_as_str)}`"
  text = flag.default_as_str if isinstance(flag.default, (list, tuple)) else repr(flag.default)
  return f"`{_cell(text)}`"


def _required(flag) -> bool:
  """Whether `mark_flag_as_required` was called on `flag` (absl registers a validator)."""
  return any("must have a value other than None" in (getattr(v, "message", "") or "")
             for v in flag.validators)


def _flags_of(module_name: str):
  """(module, [flags it defines, in definition order], flag names before); imports it."""
  from absl import flags as absl_flags
  before = set(absl_flags.FLAGS)
  module = importlib.import_module(module_name)
  return module, list(absl_flags.FLAGS.flags_by_module_dict().get(module_name, [])), before


def _forget(module_name: str, before: set) -> None:
  """Remove the flags `module_name` defined, so the next launcher can define its own."""
  from absl import flags as absl_flags
  fv = absl_flags.FLAGS
  for name in list(fv):
    if name not in before and name in fv:
      delattr(fv, name)


def launcher_page(script: str, module_name: str) -> str:
  """The Markdown page of one console script."""
  module, rows, before = _flags_of(module_name)
  try:
    doc = (module.__doc__ or "").strip("\n")
    summary, _, rest = doc.partition("\n")
    if summary.startswith(f"{script}:"):
      summary = summary[len(script) + 1:].strip()
    lines = [f"# {script}", "", f"{summary}", "", f"Module: `{module_name}`.", "", rest.strip("\n"), "",
             "## Flags", "",
             "The flags this launcher defines (`" + script + " --help` prints the same list). "
             "Every launcher also takes `--traceback` (print the full traceback of a user error, "
             "which is otherwise one line with exit status 2) and absl's own flags.", ""]
    if any(flag.name == "config" for flag in rows):
      lines += ["`--config` names a config file, `configs/NAME.py[:ARG]`; any field of it is "
                "overridden with `--config.FIELD=VALUE` (e.g. `--config.train.num_steps=100`).", ""]
    lines += ["| flag | default | help |", "| --- | --- | --- |"]
    for flag in rows:
      default = "(required)" if _required(flag) else _default(flag)
      lines.append(f"| `--{flag.name}` | {default} | {_cell(flag.help)} |")
    lines.append("")
    return "\n".join(lines)
  finally:
    _forget(module_name, before)


def _write_if_changed(path: pathlib.Path, text: str) -> None:
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def generate(app) -> None:
  srcdir = pathlib.Path(app.srcdir)
  root = srcdir.parent
  out = srcdir / GENERATED
  out.mkdir(parents=True, exist_ok=True)
  argv = sys.argv
  try:
    for script, module_name in launcher_scripts(root).items():
      _write_if_changed(out / f"{script}.md", launcher_page(script, module_name))
  finally:
    sys.argv = argv


def _constant_docstring(app, what, name, obj, options, lines) -> None:
  """Drop the type's docstring that autodoc shows for a module constant."""
  if what in ("data", "attribute") and lines:
    own = type(obj).__doc__
    if isinstance(own, str) and own.strip() and lines[0].strip() == own.strip().splitlines()[0].strip():
      lines[:] = []


_CODE = re.compile(r"(``.*?``|`[^`]*`)")


def _escape_pipes(app, what, name, obj, options, lines) -> None:
  """luce's docstrings are plain text: |S| is a set's size, not a reST substitution.

  Escapes every `|` outside inline code, doctests and literal blocks (the
  indented lines after a `::`), before napoleon reads the docstring.
  """
  literal_base = None
  for i, line in enumerate(lines):
    if literal_base is not None:
      if not line.strip() or _indent(line) > literal_base:
        continue
      literal_base = None
    if line.rstrip().endswith("::"):
      literal_base = _indent(line)
    if "|" in line and not line.lstrip().startswith(">>>"):
      parts = _CODE.split(line)
      lines[i] = "".join(part if j % 2 else part.replace("|", "\\|") for j, part in enumerate(parts))


_SECTION = re.compile(r"^(Args|Arguments|Returns|Yields|Raises|Attributes|Example|Examples|Note|Notes)"
                      r"( \(.*\))?:$")
_ITEM = re.compile(r"^([-*+] |\d+[.)] )")


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _module_paragraphs(app, what, name, obj, options, lines) -> None:
  """Module docstrings are plain text: make the blocks a reader sees into reST blocks.

  reST needs a blank line before an indented block and after it, and a list
  after a blank line; plain-text docstrings often omit both. Where the
  indentation grows after a paragraph line, the indented block becomes a
  list (it starts with "- "), a doctest block (">>>") or otherwise a literal
  block (an example command, a formula, a two-column table), as written; a
  list item right after a paragraph line starts a list. Google section
  headers (napoleon reads those) are left alone.
  """
  if what != "module":
    return
  out, literal_base = [], None
  for line in lines:
    blank = not line.strip()
    if literal_base is not None:
      if blank or _indent(line) > literal_base:
        out.append(line)
        continue
      literal_base = None
      if out and out[-1].strip():
        out.append("")
    prev = out[-1] if out else ""
    if not prev.strip() and not blank and literal_base is None:
      # An indented block after a blank line: literal too, unless a list or doctest.
      above = next((i for i in range(len(out) - 1, -1, -1) if out[i].strip()), None)
      if (above is not None and _indent(line) > _indent(out[above])
          and not _ITEM.match(out[above].lstrip()) and not _SECTION.match(out[above].strip())
          and not _ITEM.match(line.lstrip()) and not line.lstrip().startswith(">>>")
          and not out[above].rstrip().endswith("::") and _indent(out[above]) == 0):
        out[above] = out[above] + (":" if out[above].rstrip().endswith(":") else " ::")
        literal_base = _indent(out[above])
        out.append(line)
        continue
    if prev.strip() and not blank and not _SECTION.match(prev.strip()):
      item_prev = bool(_ITEM.match(prev.lstrip()))
      item = bool(_ITEM.match(line.lstrip()))
      if _indent(line) > _indent(prev) and not item_prev:
        out.append("")
        if not item and not line.lstrip().startswith(">>>"):
          out[-2] = prev + (":" if prev.rstrip().endswith(":") else " ::")
          literal_base = _indent(prev)
      elif _indent(line) == _indent(prev) and item and not item_prev:
        out.append("")
      elif _indent(line) < _indent(prev) and not item:
        item_above = next((o for o in reversed(out) if not o.strip() or _ITEM.match(o.lstrip())), "")
        if not (item_above.strip() and _indent(item_above) < _indent(line)):
          out.append("")
    out.append(line)
  lines[:] = out


def setup(app):
  app.connect("builder-inited", generate)
  app.connect("autodoc-process-docstring", _escape_pipes, priority=100)
  app.connect("autodoc-process-docstring", _module_paragraphs, priority=90)
  app.connect("autodoc-process-docstring", _constant_docstring)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
