"""Compare the matrix-free ALS solver with the dense EM baseline on simulated SUR data.

Usage::

    python examples/compare_als_vs_em.py            # default grid, < 2 minutes on 2 cores
    python examples/compare_als_vs_em.py --K 50 100 --em-max-K 100 --N 300

For each K it simulates ``simulate_sur(N, K, p, k)`` plus an independent test
sample from the same truth, fits ``als_gls`` (every K) and ``em_gls`` (K up
to ``--em-max-K``, where the dense K x K / P x P path stays small), and
prints beta-RMSE against the truth, test NLL per row, fit time and peak
memory (tracemalloc, which sees numpy's allocations).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from alsgls import als_gls, em_gls, nll_per_row, simulate_sur


def fit_and_measure(solver, Xs, Y, k):
    tracemalloc.start()
    t = time.perf_counter()
    fit = solver(Xs, Y, k)
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return fit, elapsed, peak


def test_sample(N, K, p, truth, seed):
    """Fresh rows from the same truth (the simulator draws a new truth per seed)."""
    rng = np.random.default_rng(seed)
    Xs = [rng.standard_normal((N, p)) for _ in range(K)]
    E = rng.standard_normal((N, truth.F.shape[1])) @ truth.F.T \
        + rng.standard_normal((N, K)) * np.sqrt(truth.D)
    Y = np.column_stack([x @ b for x, b in zip(Xs, truth.B)]) + E
    return Xs, Y


def main() -> None:
    ap = argparse.ArgumentParser(description="ALS vs EM on simulated SUR data")
    ap.add_argument("--K", type=int, nargs="+", default=[50, 100, 200, 500, 1000, 2000])
    ap.add_argument("--N", type=int, default=500)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--em-max-K", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rows = []
    for K in args.K:
        Xs, Y, truth = simulate_sur(N=args.N, K=K, p=args.p, k=args.k, seed=args.seed + K)
        Xt, Yt = test_sample(args.N, K, args.p, truth, seed=10_000 + K)
        b_true = np.concatenate([b.ravel() for b in truth.B])
        for name, solver in (("ALS", als_gls), ("EM", em_gls)):
            if name == "EM" and K > args.em_max_K:
                continue
            print(f"fitting {name} K={K} ...", flush=True)
            fit, secs, peak = fit_and_measure(solver, Xs, Y, args.k)
            rmse = np.sqrt(np.mean((np.concatenate([b.ravel() for b in fit.B]) - b_true) ** 2))
            test_nll = nll_per_row(Yt - fit.predict(Xt), fit.F, fit.D)
            rows.append((K, name, rmse, test_nll, secs, peak / 2**20, fit.n_iter, fit.converged))

    print()
    print(f"N={args.N}, p={args.p}, k={args.k}; test NLL per row on {args.N} fresh rows")
    print(f"{'K':>5} {'method':>6} {'beta RMSE':>10} {'test NLL':>12} {'time s':>8} "
          f"{'peak MiB':>9} {'iters':>5} {'conv':>5}")
    for K, name, rmse, nll, secs, mib, it, conv in rows:
        print(f"{K:5d} {name:>6} {rmse:10.5f} {nll:12.4f} {secs:8.3f} {mib:9.1f} {it:5d} {str(conv):>5}")


if __name__ == "__main__":
    main()
