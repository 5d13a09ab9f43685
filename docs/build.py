"""Build the alsgls docs as static HTML: docs/*.md (and als_sim/README.md) -> docs/_build/.

Usage::

    pip install markdown        # or: pip install -e ".[docs]"
    python docs/build.py        # writes docs/_build/index.html, statistics.html, ...
    python docs/build.py --out /tmp/site

Offline and dependency-light: Python-Markdown with its bundled extensions
(tables, fenced code, table of contents).  Links between pages (``x.md``)
become ``x.html``; the experiments page ``als_sim/README.md`` becomes
``als_sim.html`` with its figures copied to ``_build/als_sim/figures/``.
Open ``docs/_build/index.html`` in a browser.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
ALS_SIM = ROOT / "als_sim"
EXTENSIONS = ["tables", "fenced_code", "toc", "sane_lists"]

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — alsgls</title>
<style>
body {{ max-width: 54rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5;
        font-family: system-ui, sans-serif; color: #222; }}
nav {{ border-bottom: 1px solid #ddd; padding-bottom: .5rem; margin-bottom: 1rem; }}
nav a {{ margin-right: 1rem; }}
pre {{ background: #f6f8fa; padding: .75rem; overflow-x: auto; }}
code {{ font-family: ui-monospace, monospace; font-size: .92em; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .5rem; }}
img {{ max-width: 100%; }}
</style></head>
<body><nav>{nav}</nav>
{body}
</body></html>
"""


def pages() -> list[tuple[Path, str]]:
    """(source, output name) for every page, index first."""
    md = sorted(DOCS.glob("*.md"), key=lambda p: (p.stem != "index", p.stem))
    out = [(p, f"{p.stem}.html") for p in md]
    if (ALS_SIM / "README.md").exists():
        out.append((ALS_SIM / "README.md", "als_sim.html"))
    return out


def rewrite_links(text: str, source: Path) -> str:
    """Point markdown links at the built pages."""
    text = re.sub(r"\]\(\.\./als_sim/README\.md\)", "](als_sim.html)", text)
    text = re.sub(r"\]\(\.\./docs/([\w-]+)\.md\)", r"](\1.html)", text)
    text = re.sub(r"\]\(([\w-]+)\.md(#[\w-]*)?\)", lambda m: f"]({m[1]}.html{m[2] or ''})", text)
    if source.parent == ALS_SIM:
        text = re.sub(r"\]\(figures/", "](als_sim/figures/", text)
    return text


def build(out: Path) -> list[Path]:
    try:
        import markdown
    except ImportError:
        sys.exit("docs/build.py needs the 'markdown' package: pip install markdown")
    out.mkdir(parents=True, exist_ok=True)
    todo = pages()
    nav = " ".join(f'<a href="{name}">{html.escape(src.stem if src.parent == DOCS else "als_sim")}</a>'
                   for src, name in todo)
    written = []
    for src, name in todo:
        text = rewrite_links(src.read_text(encoding="utf-8"), src)
        body = markdown.markdown(text, extensions=EXTENSIONS, output_format="html")
        m = re.search(r"^#\s+(.+)$", text, re.M)
        title = html.escape(m[1].strip()) if m else src.stem
        (out / name).write_text(TEMPLATE.format(title=title, nav=nav, body=body), encoding="utf-8")
        written.append(out / name)
    figs = ALS_SIM / "figures"
    if figs.is_dir():
        dest = out / "als_sim" / "figures"
        dest.mkdir(parents=True, exist_ok=True)
        for png in figs.glob("*.png"):
            shutil.copy2(png, dest / png.name)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DOCS / "_build")
    a = ap.parse_args(argv)
    for path in build(a.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
