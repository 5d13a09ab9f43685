"""The documented docs build works offline, warning-free, and renders what it claims.

``sphinx-build -W -E -b html docs <out>`` (the README's command) must finish
without a warning (a broken link or reference, a docstring numpydoc cannot
parse, a public name missing from the API reference, a page example that
raises: each is a warning, so an error under ``-W``), and its pages must carry
the executed output of the examples, the figures, the API reference and the
math with a MathJax copy of their own (no network).  Skipped without the
``docs`` extra (``pip install -e ".[docs]"``).  When headless Chromium is
installed, the pages are also opened in it and MathJax must have typeset them.
"""

from __future__ import annotations

import html
import importlib.util
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_PACKAGES = ["sphinx", "myst_parser", "numpydoc", "furo", "sphinx-mathjax-offline",
                 "sklearn", "matplotlib", "pandas", "formulaic", "dask"]
MISSING = [m for m in DOCS_PACKAGES if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"the docs extra is not installed "
                                f"(missing {', '.join(MISSING)})")

#: well under a minute on the 2-core CI machine (about 20 s unloaded); the
#: bound only catches a build that has started running something heavy
BUILD_SECONDS = 300


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), "docs", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=2 * BUILD_SECONDS,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert seconds < BUILD_SECONDS, f"the docs build took {seconds:.0f} s"
    return out


def _page(site: Path, name: str) -> str:
    return (site / name).read_text(encoding="utf-8")


def test_every_page_is_built_and_linked(site):
    for md in sorted((ROOT / "docs").glob("*.md")):
        assert (site / f"{md.stem}.html").exists(), md.name
    index = _page(site, "index.html")
    for target in ("statistics.html", "from_linearmodels.html", "missing.html",
                   "estimator.html", "architecture.html", "als_sim.html", "api/index.html"):
        assert f'href="{target}' in index, target
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r'href="[^"#:]+\.md[#"]', text), f"{page.name}: unconverted .md link"


def test_examples_show_their_output_and_figures(site):
    guide = _page(site, "from_linearmodels.html")
    assert 'class="exec-output' in guide
    # the executed TypeError of linearmodels' iterate=True, printed below its block
    assert "alsgls has no iterate=: method='ml' is iterated GLS" in html.unescape(guide)
    estimator = _page(site, "estimator.html")
    plots = estimator[estimator.index('id="plots"'):]
    figures = re.findall(r'<img[^>]+src="data:image/png;base64,', plots)
    assert len(figures) >= 3, "the three plots of the estimator page are drawn"
    # the experiments page shows the committed als_sim figures
    sim = _page(site, "als_sim.html")
    for src in re.findall(r'<img[^>]*src="([^"]+\.png)"', sim):
        assert (site / src).exists(), src


def test_api_reference_covers_the_public_api(site):
    import alsgls

    api = "".join(p.read_text(encoding="utf-8") for p in (site / "api").glob("*.html"))
    names = [n for n in alsgls.__all__ if n != "datasets"] + ["ALSGLS"]
    for name in names:
        assert f'id="alsgls.{name}"' in api, name
    for name in ("stats.equation_results.EquationResults", "stats.covariance.Robust",
                 "stats.covariance.Kernel", "stats.covariance.Clustered",
                 "learn.plots.loadings_heatmap", "datasets.load"):
        assert f'id="alsgls.{name}"' in api, name
    assert 'id="alsgls.SURResults.summary"' in api          # members, from numpydoc
    assert "Parameters" in api and "Returns" in api


def test_math_is_rendered_by_a_bundled_mathjax(site):
    index = _page(site, "index.html")
    assert 'class="math notranslate nohighlight">\\(\\Sigma = F F^\\top' in index
    assert re.search(r'<script[^>]+src="_static/mathjax/tex-chtml\.js', index)
    assert (site / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text), \
            f"{page.name} loads something from the network"
        # raw exponent notation leaking into the prose
        assert "Ψ^{-½}" not in text, page.name


CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(c)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_pages_render_in_a_headless_browser(site):
    """MathJax typesets the formulas (``mjx-container`` elements), the figures
    decode, and the API page lays out its signatures, in a real browser."""
    def dom(page: str) -> str:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=15000", "--dump-dom", (site / page).as_uri()],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    index = dom("index.html")
    assert index.count("<mjx-container") > 20, "MathJax did not typeset index.html"
    assert "<mjx-merror" not in index, "MathJax reported a TeX error"
    estimator = dom("estimator.html")
    assert "<mjx-container" in estimator and "<mjx-merror" not in estimator
    assert len(re.findall(r'<img[^>]+src="data:image/png', estimator)) >= 3
    assert 'id="alsgls.SUR"' in dom("api/sur.html")
