"""Paired in-process timing of two versions of alsgls on the speed benchmark's fit.

Usage::

    git worktree add /tmp/alsgls_old <rev>
    OPENBLAS_NUM_THREADS=1 python benchmarks/paired_ab.py /tmp/alsgls_old --K 1000 --rounds 60

The other version's ``src/alsgls`` is copied under the name ``alsgls_other``
(the package imports itself only relatively) and imported beside the
installed ``alsgls``.  Each round times one ``strong_ols`` call and one
``als_gls`` fit of each version, in alternating order, on the same data
(N = 500, p = 3, k = 4 as in ``speed.py``).  On a shared machine whose speed
drifts by tens of percent within minutes, the median of the per-round ratios
``this / other`` is stable to about 1% where best-of timings in separate
processes move by 10%; comparing a version with itself gives 0.99-1.0.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from speed import strong_ols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", help="root of the other checkout (with src/alsgls)")
    ap.add_argument("--K", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    shutil.copytree(Path(args.other) / "src" / "alsgls", tmp / "alsgls_other")
    sys.path.insert(0, str(tmp))
    import alsgls
    import alsgls_other

    Xs, Y, _ = alsgls.simulate_sur(N=500, K=args.K, p=3, k=4, seed=0)
    X = np.stack(Xs)
    Yt = np.ascontiguousarray(Y.T)
    fits = {"this": alsgls.als_gls, "other": alsgls_other.als_gls}
    times = {"this": [], "other": []}
    t_ols = []
    for r in range(args.rounds):
        t = time.perf_counter()
        strong_ols(X, Yt)
        t_ols.append(time.perf_counter() - t)
        for name in (("this", "other") if r % 2 else ("other", "this")):
            t = time.perf_counter()
            fits[name](X, Y, 4)
            times[name].append(time.perf_counter() - t)
    a, b = np.array(times["this"]), np.array(times["other"])
    q = lambda v: np.round(np.percentile(v, [0, 25, 50]) * 1e3, 2)   # noqa: E731
    print(f"K = {args.K}: this min/q25/median {q(a)} ms, other {q(b)} ms; "
          f"paired median ratio this/other {np.median(a / b):.3f}; "
          f"strong OLS best {min(t_ols) * 1e3:.2f} ms")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
