"""The documented docs build (``python docs/build.py``) runs offline and links the pages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("markdown")


def test_build_writes_linked_html(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (tmp_path / f"{page.stem}.html").exists(), page.name
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<table>" in index                       # the notation table rendered
    assert 'href="statistics.html"' in index        # .md links rewritten
    assert 'href="missing.html"' in index
    assert ".md)" not in index
    if (ROOT / "als_sim" / "README.md").exists():
        sim = (tmp_path / "als_sim.html").read_text(encoding="utf-8")
        for src in __import__("re").findall(r'<img[^>]*src="([^"]+)"', sim):
            assert (tmp_path / src).exists(), src  # figures copied beside the page
