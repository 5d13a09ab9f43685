"""Execute every ```python block of every docs/*.md page, in order, per page.

Where the ``docs`` extra is installed, ``tests/test_docs_build.py`` builds the
pages with Sphinx under ``-W``, and that build executes every block the same
way (``docs/_ext/exec_code.py``; a block that raises fails it, naming the page
and the block), so these tests skip rather than run every example twice.
"""

from pathlib import Path
import re

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _built_by_sphinx() -> bool:
    try:
        from tests.test_docs_build import MISSING
    except ImportError:  # pragma: no cover - the module is always there
        return False
    return not MISSING


@pytest.mark.skipif(_built_by_sphinx(), reason="the examples run in the Sphinx build "
                    "(tests/test_docs_build.py, -W)")
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_docs_examples_run(page, monkeypatch):
    blocks = BLOCK.findall(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    monkeypatch.chdir(ROOT)  # pages load shipped data by repository-relative path
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except ModuleNotFoundError as exc:  # optional extras absent
            pytest.skip(f"{page.name} block {i} needs {exc.name}")
