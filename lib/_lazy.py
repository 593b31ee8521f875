"""A module imported on first attribute access (scipy.stats alone takes ~0.6 s to
import; launchers and `import luce` should not pay it before they need it)."""

from __future__ import annotations

import importlib


class LazyModule:
  """Stands for the module `name`; imports it when an attribute is first read."""

  def __init__(self, name: str):
    self._name = name

  def __getattr__(self, attr: str):
    return getattr(importlib.import_module(self._name), attr)

  def __repr__(self) -> str:
    return f"<lazy module {self._name!r}>"
