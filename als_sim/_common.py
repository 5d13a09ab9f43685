"""Shared helpers of the als_sim experiments: options, timing, memory, figures, tables."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURES = HERE / "figures"
DPI = 80  # keeps every PNG well under 100 KB

if str(ROOT / "benchmarks") not in sys.path:  # reuse the benchmark helpers
    sys.path.insert(0, str(ROOT / "benchmarks"))


def output_folder(out: Path | None, quick: bool) -> Path:
    """``out`` when given; else the committed figures (``als_sim/figures``) for a
    full run and a new temporary folder for ``--quick``, whose tiny grids must
    never overwrite them."""
    if out is not None:
        return out
    if quick:
        return Path(tempfile.mkdtemp(prefix="als_sim_quick_"))
    return FIGURES


class _Parser(argparse.ArgumentParser):
    """Resolves ``--out`` with :func:`output_folder` after parsing."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        a = super().parse_args(args, namespace)
        a.out = output_folder(a.out, a.quick)
        return a


def parser(doc: str | None) -> argparse.ArgumentParser:
    """Options every experiment takes: ``--quick`` and ``--out``."""
    ap = _Parser(description=(doc or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny grid (smoke test, seconds); figures to a temporary folder")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the PNG figures (default: als_sim/figures, or a "
                         "temporary folder with --quick)")
    return ap


def save(fig: Any, out: Path, name: str) -> Path:
    """Write ``fig`` as ``out/name`` (PNG, dpi 80) and close it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return path


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Best wall time over ``repeats`` calls and the last result."""
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak traced allocation of one call (tracemalloc sees numpy's buffers)."""
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table (also valid-looking markdown)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)
    cells = [[fmt(v) for v in r] for r in rows]
    width = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = lambda xs: "| " + " | ".join(x.rjust(w) for x, w in zip(xs, width)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in width) + "|"]
    out += [line(c) for c in cells]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def beta_vector(B: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(b).ravel() for b in B])


def log_axis(ax, ticks: Sequence[float], axis: str = "x") -> None:
    """Log scale with the grid values as plain tick labels (no overlapping minor labels)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xticks if axis == "x" else ax.set_yticks)(list(ticks))
    a.set_major_formatter(ScalarFormatter())
    a.set_minor_formatter(NullFormatter())
