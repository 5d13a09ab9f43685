"""Fit time of als_gls as a ratio to batched equation-by-equation OLS.

Usage::

    python benchmarks/speed.py                # default BLAS threads
    OPENBLAS_NUM_THREADS=1 python benchmarks/speed.py
    python benchmarks/speed.py --quick        # small grid, for a smoke test

OLS is one batched normal-equations solve on the same (K, N, p) array,
measured in the same process; the ALS fit starts from the same array and
includes validation.  Baseline and fit are interleaved ``--repeats`` times and
each ratio uses the best time of each, so both see the same machine state.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from alsgls import als_gls, simulate_sur


def batched_ols(X: np.ndarray, Yt: np.ndarray) -> np.ndarray:
    """OLS for every equation: X (K, N, p), Yt (K, N) -> (K, p)."""
    gram = X.transpose(0, 2, 1) @ X
    rhs = Yt[:, None, :] @ X                      # (K, 1, p)
    return np.linalg.solve(gram, rhs.transpose(0, 2, 1))[..., 0]


def best_of(f, repeats: int, clock=time.perf_counter) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t = clock()
        out = f()
        best = min(best, clock() - t)
    return best, out


def run(N: int, K: int, p: int, k: int, repeats: int, seed: int = 0) -> dict:
    Xs, Y, truth = simulate_sur(N=N, K=K, p=p, k=k, seed=seed)
    X = np.stack(Xs)
    Yt = np.ascontiguousarray(Y.T)
    # interleave baseline and fit so that both see the same machine state
    t_ols, t_fit, t_list, c_ols, c_fit, fit = np.inf, np.inf, np.inf, np.inf, np.inf, None
    cpu = time.process_time
    for _ in range(repeats):
        t_ols = min(t_ols, best_of(lambda: batched_ols(X, Yt), 5)[0])
        c_ols = min(c_ols, best_of(lambda: batched_ols(X, Yt), 5, cpu)[0])
        t, fit = best_of(lambda: als_gls(X, Y, k), 1)
        t_fit = min(t_fit, t)
        c_fit = min(c_fit, best_of(lambda: als_gls(X, Y, k), 1, cpu)[0])
        t_list = min(t_list, best_of(lambda: als_gls(Xs, Y, k), 1)[0])
    return dict(N=N, K=K, p=p, k=k, ols_s=t_ols, fit_s=t_fit, ratio=t_fit / t_ols,
                cpu_ratio=c_fit / c_ols,
                ratio_list=t_list / t_ols, sweeps=fit.n_iter, converged=fit.converged,
                cg=int(fit.cg_iterations.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    grid = [(500, 100, 3, 4), (500, 1000, 3, 4), (500, 4000, 3, 4), (2000, 1000, 5, 5)]
    if args.quick:
        grid = [(200, 100, 3, 4), (300, 500, 3, 4)]
    try:
        from threadpoolctl import threadpool_info
        threads = [f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()]
    except ImportError:
        threads = ["threadpoolctl not installed"]
    print(f"BLAS threads: {threads}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"{'N':>5} {'K':>5} {'p':>2} {'k':>2} {'OLS s':>8} {'fit s':>8} {'ratio':>6} "
          f"{'ratio(list)':>11} {'CPU ratio':>9} {'sweeps':>6} {'CG':>4}")
    for N, K, p, k in grid:
        r = run(N, K, p, k, args.repeats)
        print(f"{N:5d} {K:5d} {p:2d} {k:2d} {r['ols_s']:8.4f} {r['fit_s']:8.4f} {r['ratio']:6.1f} "
              f"{r['ratio_list']:11.1f} {r['cpu_ratio']:9.1f} {r['sweeps']:6d} {r['cg']:4d}",
              flush=True)


if __name__ == "__main__":
    main()
