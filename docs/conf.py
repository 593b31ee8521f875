"""Sphinx configuration of luce's documentation (built by docs/build.sh)."""

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "luce"
author = "luce authors"
copyright = "luce authors"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",               # MyST Markdown pages and the executed tutorials (loads myst_parser)
    "luce_launchers",        # docs/_ext: one page per console script, from its absl flags
]

# Markdown (MyST) and reStructuredText pages; the tutorials are jupytext
# percent scripts, read as notebooks and executed on every build.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".py": "myst-nb"}
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
exclude_patterns = ["_build", "_ext", "_templates", "conf.py", "**/.ipynb_checkpoints", "README.md"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Figures and workdirs of the executed tutorials (each also runs as a plain script).
os.environ.setdefault("LUCE_TUTORIAL_OUT", str(DOCS / "_build" / "tutorial_files"))
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = int(os.environ.get("LUCE_DOCS_CELL_TIMEOUT", "300"))
nb_merge_streams = True

# The API: autosummary writes one page per listed name into api/_generated.
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# Google-style docstrings. Attributes as :ivar: fields, so a dataclass field
# named in "Attributes:" is not described twice (napoleon and autodoc).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False

# The docstrings write `name` for code, as Markdown does: render it as a
# cross-reference where one exists and as code where none does.
default_role = "py:obj"

templates_path = ["_templates"]
html_theme = "furo"
html_title = "luce"
html_static_path = []
