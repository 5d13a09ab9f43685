"""Sphinx configuration of the alsgls documentation.

Build (``pip install -e ".[docs]"``; offline, warnings are errors)::

    sphinx-build -W -E -b html docs docs/_build/html

The pages are the markdown files of this folder (MyST), the API reference is
generated from the numpydoc docstrings (``docs/api/``), the ```python blocks
run at build time and show their output and figures (``_ext/exec_code.py``),
and math is rendered by a MathJax copy bundled in the build
(``sphinx-mathjax-offline``): no page fetches anything from the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT / "src"))          # document this checkout

import alsgls  # noqa: E402

project = "alsgls"
author = "the alsgls developers"
copyright = "the alsgls developers"
release = version = alsgls.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",     # MathJax 3 copied into _static: math renders offline
    "exec_code",                  # run ```python blocks, show their output
    "api_coverage",               # every name in alsgls.__all__ is documented
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "_templates", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# -- MyST: markdown pages ----------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3          # links such as estimator.md#choosing-the-rank
myst_dmath_double_inline = True

# -- API reference -----------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"        # the numpydoc Parameters sections give the types
autosummary_generate = False      # the reference pages list their objects themselves
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()

# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = f"alsgls {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
