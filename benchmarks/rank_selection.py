"""Rank selection accuracy: selected rank vs true rank over a grid of factor strengths.

Data: SUR systems with ``k_true`` factors of *heterogeneous* strength.  The
whitened signal eigenvalues (eigenvalues of ``Psi^-1/2 F F' Psi^-1/2``) are
``theta_l = m * sqrt(K/N) * w_l`` with ``w = (4, 2, 1)`` (``k_true = 3``), so
``m`` is the weakest factor's strength in units of the detection limit
``sqrt(K/N)``: ``m < 1`` is undetectable by any method, ``m >= 2`` is
"clearly above" the limit.  ``D_j ~ U(0.5, 1.5)``; ``p`` regressors per equation
(intercept + Gaussian), independent across equations.

Usage (full grid is slow for the likelihood methods at K = 1000)::

    python benchmarks/rank_selection.py                       # full grid, all methods
    python benchmarks/rank_selection.py --seeds 5 --methods onatski auto
    python benchmarks/rank_selection.py --N 200 --K 100 --methods bic aic cv --seeds 10

Prints one row per (N, K, m) cell: fraction of seeds where each method chose
``k_true``, the mean chosen rank, and the mean time relative to one ALS fit at
the true rank (``--time-fit``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from alsgls import als_gls
from alsgls.learn.rank import select_rank

WEIGHTS = (4.0, 2.0, 1.0)


def simulate(N: int, K: int, m: float, seed: int, p: int = 2, weights=WEIGHTS):
    """SUR data whose whitened factor eigenvalues are ``m sqrt(K/N) weights``."""
    rng = np.random.default_rng(seed)
    k = len(weights)
    X = rng.standard_normal((K, N, p))
    X[:, :, 0] = 1.0
    B = rng.standard_normal((K, p))
    D = rng.uniform(0.5, 1.5, size=K)
    Q, _ = np.linalg.qr(rng.standard_normal((K, k)))
    theta = m * np.sqrt(K / N) * np.asarray(weights)
    F = np.sqrt(D)[:, None] * Q * np.sqrt(theta)[None, :]
    E = rng.standard_normal((N, k)) @ F.T + rng.standard_normal((N, K)) * np.sqrt(D)
    Y = np.einsum("knp,kp->nk", X, B) + E
    return [X[j] for j in range(K)], Y


def run_cell(N, K, m, seeds, methods, time_fit, max_rank):
    k_true = len(WEIGHTS)
    out = {meth: {"correct": 0, "ranks": [], "time": []} for meth in methods}
    fit_times = []
    for seed in range(seeds):
        Xs, Y = simulate(N, K, m, seed)
        if time_fit:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                als_gls(Xs, Y, k_true)
            fit_times.append(time.perf_counter() - t0)
        for meth in methods:
            t0 = time.perf_counter()
            sel = select_rank(Xs, Y, method=meth, max_rank=max_rank, random_state=seed)
            out[meth]["time"].append(time.perf_counter() - t0)
            out[meth]["ranks"].append(int(sel.rank))
            out[meth]["correct"] += int(sel.rank == k_true)
    return out, fit_times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--N", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--K", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--strengths", type=float, nargs="+", default=[8.0, 4.0, 2.0, 1.5, 1.0],
                    help="weakest factor's strength in units of sqrt(K/N)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--methods", nargs="+", default=["auto", "onatski", "bic", "aic", "cv"])
    ap.add_argument("--max-rank", type=int, default=8)
    ap.add_argument("--time-fit", action="store_true",
                    help="also time one ALS fit at the true rank (cost ratio column)")
    ap.add_argument("--json", help="write all results to this file")
    args = ap.parse_args(argv)

    rows = []
    hdr = f"{'N':>5} {'K':>5} {'m':>5} " + " ".join(f"{m:>16}" for m in args.methods)
    print("fraction correct (mean chosen rank) [time / one fit]; k_true = 3, "
          f"theta = m sqrt(K/N) (4, 2, 1), {args.seeds} seeds")
    print(hdr)
    for N in args.N:
        for K in args.K:
            for m in args.strengths:
                res, ft = run_cell(N, K, m, args.seeds, args.methods, args.time_fit,
                                   args.max_rank)
                cells = []
                for meth in args.methods:
                    r = res[meth]
                    frac = r["correct"] / args.seeds
                    s = f"{frac:.2f} ({np.mean(r['ranks']):.2f})"
                    if ft:
                        s += f" [{np.sum(r['time']) / np.sum(ft):.2g}]"
                    cells.append(f"{s:>16}")
                print(f"{N:>5} {K:>5} {m:>5g} " + " ".join(cells), flush=True)
                rows.append({"N": N, "K": K, "m": m, "fit_time": ft,
                             **{meth: res[meth] for meth in args.methods}})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
