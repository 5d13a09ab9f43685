"""Run every als_sim experiment end to end: tables to stdout, PNGs to a folder.

Usage::

    python als_sim/run_all.py            # full grids (about 10-20 minutes on 2 cores),
                                         # figures to als_sim/figures/ (the committed ones)
    python als_sim/run_all.py --quick    # tiny grids, a smoke test (seconds); figures to a
                                         # new temporary folder, never als_sim/figures/
    python als_sim/run_all.py --out /tmp/figs --only convergence interval_coverage

``--out`` chooses the folder in either mode.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _common import output_folder  # noqa: E402  (--quick never writes als_sim/figures)

EXPERIMENTS = ["als_vs_em", "convergence", "scaling", "interval_coverage"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny grids, a smoke test; figures to a temporary folder")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the PNGs (default: als_sim/figures, or a "
                         "temporary folder with --quick)")
    ap.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=EXPERIMENTS)
    a = ap.parse_args(argv)
    a.out = output_folder(a.out, a.quick)
    opts = ["--out", str(a.out)] + (["--quick"] if a.quick else [])
    start = time.perf_counter()
    for name in a.only:
        t = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(name).main(opts)
        print(f"[{name}: {time.perf_counter() - t:.1f} s]", flush=True)
    print(f"\nall done in {time.perf_counter() - start:.1f} s; figures in {a.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
