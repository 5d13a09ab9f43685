"""Run the ```python blocks of each page at build time and show what they print.

A small, offline Sphinx extension (what myst-nb or jupyter-sphinx do with a
kernel, done in-process): when a page is read, its ``python`` code blocks are
executed in order in one namespace per page, with the repository root as the
working directory (the pages read shipped data by repository-relative path,
as ``tests/test_docs.py`` does).  Below each block it inserts

* what the block wrote to stdout and stderr (warnings shown as
  ``WarningClass: message``), as a literal block with the class
  ``exec-output``;
* every matplotlib figure the block left open, as a PNG embedded in the page
  (a ``data:`` URI, so nothing is written into the source tree), then closed.

A block that raises is reported as a Sphinx warning naming the page and the
block (an error under ``sphinx-build -W``), and its traceback is shown.

Configuration (``conf.py`` or ``sphinx-build -D``):

``exec_code`` (default True)
    False leaves the pages as written (a quick layout-only build:
    ``sphinx-build -D exec_code=0 ...``).
``exec_code_cwd`` (default: the parent of the source directory)
    Working directory while the blocks run.
``exec_code_figure_dpi`` (default 96)
    Resolution of the embedded figures.

Pages are executed when Sphinx reads them: an incremental build re-runs only
the pages that changed, so rebuild with ``-E`` after changing the package.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: node class names the extension adds (styled by ``_static/exec_code.css``)
OUTPUT_CLASS = "exec-output"
FIGURE_CLASS = "exec-figure"


def python_blocks(doctree: nodes.Node) -> list[nodes.literal_block]:
    """The page's ``python`` code blocks in document order."""
    return [n for n in doctree.findall(nodes.literal_block)
            if n.get("language") == "python" and OUTPUT_CLASS not in n["classes"]]


def _show_warning(buf: io.StringIO):
    def show(message, category, filename, lineno, file=None, line=None):
        buf.write(f"{category.__name__}: {message}\n")
    return show


def run_block(code: str, name: str, namespace: dict) -> tuple[str, BaseException | None]:
    """Execute ``code`` in ``namespace``; return (stdout + stderr, exception or None)."""
    buf = io.StringIO()
    error = None
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
            warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning(buf)
        try:
            exec(compile(code, name, "exec"), namespace)
        except Exception as exc:  # reported by the caller, shown on the page
            error = exc
            # the traceback from the block's own frame (not this function's)
            buf.write("".join(traceback.format_exception(type(exc), exc,
                                                         exc.__traceback__.tb_next)))
    return buf.getvalue(), error


def open_figures(dpi: int) -> list[bytes]:
    """PNG bytes of every open matplotlib figure, which are then closed."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    out = []
    for num in plt.get_fignums():
        fig = plt.figure(num)
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=dpi, bbox_inches="tight")
        out.append(png.getvalue())
        plt.close(fig)
    return out


def _output_nodes(text: str, figures: list[bytes], where: str) -> nodes.container:
    box = nodes.container(classes=[OUTPUT_CLASS])
    if text:
        block = nodes.literal_block(text, text, classes=[OUTPUT_CLASS], language="none")
        box += block
    for i, png in enumerate(figures):
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        box += nodes.image(uri=uri, alt=f"figure {i + 1} drawn by {where}",
                           classes=[FIGURE_CLASS])
    return box


def _docname(env: Any) -> str:
    """The page being read (``env.current_document`` from Sphinx 8.2 on)."""
    current = getattr(env, "current_document", None)
    return current.docname if current is not None else env.docname


def execute_page(app: Any, doctree: nodes.document) -> None:
    """``doctree-read`` handler: run the page's blocks, insert their output."""
    if not app.config.exec_code:
        return
    blocks = python_blocks(doctree)
    if not blocks:
        return
    docname = _docname(app.env)
    cwd = Path(app.config.exec_code_cwd or Path(app.srcdir).parent)
    namespace: dict = {"__name__": f"docs_{docname.replace('/', '_')}"}
    old_cwd = os.getcwd()
    os.chdir(cwd)
    try:
        for i, block in enumerate(blocks):
            where = f"{docname}[block {i}]"
            text, error = run_block(block.astext(), where, namespace)
            if error is not None:
                logger.warning("python block %d of %s raised %s: %s", i, docname,
                               type(error).__name__, error, location=block,
                               type="exec_code", subtype="error")
            figures = open_figures(app.config.exec_code_figure_dpi)
            if text or figures:
                parent = block.parent
                parent.insert(parent.index(block) + 1, _output_nodes(text, figures, where))
    finally:
        os.chdir(old_cwd)
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close("all")


def setup(app: Any) -> dict:
    os.environ.setdefault("MPLBACKEND", "Agg")     # before any block imports pyplot
    app.add_config_value("exec_code", True, "env", bool)
    app.add_config_value("exec_code_cwd", None, "env")
    app.add_config_value("exec_code_figure_dpi", 96, "env", int)
    # before the image collector (priority 500) so the figures are registered
    app.connect("doctree-read", execute_page, priority=400)
    app.add_css_file("exec_code.css")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
