"""Rank selection accuracy: the share of replicates that return the true rank.

Two grids:

* ``--ratios`` (the K >> N table): ``N`` rows (default 100) and
  ``K = ratio * N`` equations, scenarios

  - ``strong``: 4 factors with ``N(0, 1)`` loadings and ``D_j ~ U(0.5, 1.5)``
    (``alsgls.simulate_sur(k=4)``, intercept + 2 regressors per equation: the
    setting in which ``rank="auto"`` used to return 7-12 at K/N = 10-20);
  - ``graded``: 3 factors with whitened signal eigenvalues
    ``theta = 3 sqrt(K/n) (4, 2, 1)``, ``n = N - p`` (the weakest at 3 x the
    detection limit);
  - ``below``: ``theta = sqrt(K/n) (16, 8, 4, 0.5)``: the fourth factor sits at
    half the detection limit and no method can see it, so the true
    (detectable) rank is 3;
  - ``null``: no factors (true rank 0).

  The likelihood methods are slow at K = 2000 (a CV replicate takes ~30 s),
  so they run fewer replicates (``--slow-seeds``, ``--cv-seeds``) than
  ``auto`` and ``onatski`` (``--seeds``), and by default on ``strong`` only
  (``--slow-scenarios``).

* the strength grid (no ``--ratios``): ``(N, K, m)`` cells with 3 factors of
  strengths ``theta = m sqrt(K/N) (4, 2, 1)``, so ``m`` is the weakest
  factor's multiple of the detection limit.

Usage::

    python benchmarks/rank_selection.py --ratios 1 5 10 20 --N 100 --jobs 2
    python benchmarks/rank_selection.py --seeds 20 --methods auto onatski --strengths 8 4 3 2 1.5 1

Each cell prints ``share correct (mean rank)``; the ratio grid also prints the
number of replicates and of ``RankSelectionWarning``s (``w``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from alsgls import als_gls, simulate_sur
from alsgls.learn.rank import RankSelectionWarning, select_rank

WEIGHTS = (4.0, 2.0, 1.0)
P = 3                                   # regressors per equation in the ratio grid
SLOW = ("bic", "aic", "cv")
SCENARIOS = {"strong": 4, "graded": 3, "below": 3, "null": 0}   # true (detectable) rank


def simulate(N: int, K: int, m: float, seed: int, p: int = 2, weights=WEIGHTS):
    """SUR data whose whitened factor eigenvalues are ``m sqrt(K/N) weights``."""
    return simulate_theta(N, K, m * np.sqrt(K / N) * np.asarray(weights), seed, p)


def simulate_theta(N: int, K: int, theta, seed: int, p: int = 2):
    """SUR data with whitened signal eigenvalues ``theta`` (eigenvalues of
    ``D^-1/2 F F' D^-1/2``), ``D_j ~ U(0.5, 1.5)``, intercept + Gaussian
    regressors independent across equations."""
    rng = np.random.default_rng(seed)
    theta = np.asarray(theta, dtype=float)
    k = theta.size
    X = rng.standard_normal((K, N, p))
    X[:, :, 0] = 1.0
    B = rng.standard_normal((K, p))
    D = rng.uniform(0.5, 1.5, size=K)
    Q, _ = np.linalg.qr(rng.standard_normal((K, k)))
    F = np.sqrt(D)[:, None] * Q * np.sqrt(theta)[None, :]
    E = rng.standard_normal((N, k)) @ F.T + rng.standard_normal((N, K)) * np.sqrt(D)
    Y = np.einsum("knp,kp->nk", X, B) + E
    return [X[j] for j in range(K)], Y


def scenario_data(name: str, N: int, K: int, seed: int):
    limit = np.sqrt(K / (N - P))
    if name == "strong":
        Xs, Y, _ = simulate_sur(N=N, K=K, p=P, k=4, seed=seed, intercept=True)
        return Xs, Y
    theta = {"graded": 3.0 * limit * np.array(WEIGHTS),
             "below": limit * np.array([16.0, 8.0, 4.0, 0.5]),
             "null": np.zeros(0)}[name]
    return simulate_theta(N, K, theta, seed, p=P)


def _one(task):
    """One replicate: (scenario, N, K, seed, methods) -> {method: (rank, warned, seconds)}."""
    name, N, K, seed, methods = task
    Xs, Y = scenario_data(name, N, K, 1000 * K + seed)
    out = {}
    for meth in methods:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RankSelectionWarning)
            t0 = time.perf_counter()
            rank = select_rank(Xs, Y, method=meth, random_state=seed).rank
            dt = time.perf_counter() - t0
        warned = any(issubclass(w.category, RankSelectionWarning) for w in caught)
        out[meth] = (int(rank), warned, dt)
    return name, K, out


def ratio_grid(args) -> list:
    tasks = []
    for name in args.scenarios:
        for ratio in args.ratios:
            K = int(ratio * args.N)
            for seed in range(max(args.seeds, args.slow_seeds, args.cv_seeds)):
                meths = [m for m in args.methods
                         if seed < (args.cv_seeds if m == "cv" else
                                    args.slow_seeds if m in SLOW else args.seeds)
                         and (m not in SLOW or name in args.slow_scenarios)]
                if meths:
                    tasks.append((name, args.N, K, seed, meths))
    # the slow cells first, so that the pool ends together
    tasks.sort(key=lambda t: -t[2] * (("cv" in t[4]) * 6 + any(m in SLOW for m in t[4]) + 0.02))
    res: dict = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, K, out in pool.map(_one, tasks):
            for meth, v in out.items():
                res.setdefault((name, K, meth), []).append(v)
    wall = time.perf_counter() - t0
    rows = []
    print(f"N = {args.N}, p = {P}; share of replicates returning the true rank "
          f"(mean rank) [replicates, RankSelectionWarnings]; wall {wall:.0f} s "
          f"on {args.jobs} processes")
    for name in args.scenarios:
        truth = SCENARIOS[name]
        print(f"\n{name} (true rank {truth})")
        print(f"{'K/N':>5} {'K':>5} " + " ".join(f"{m:>22}" for m in args.methods))
        for ratio in args.ratios:
            K = int(ratio * args.N)
            cells = []
            for meth in args.methods:
                v = res.get((name, K, meth), [])
                if not v:
                    cells.append(f"{'-':>22}")
                    continue
                ranks = np.array([x[0] for x in v])
                n_warn = sum(x[1] for x in v)
                s = f"{np.mean(ranks == truth):.2f} ({ranks.mean():.2f}) [{len(v)}, {n_warn}w]"
                cells.append(f"{s:>22}")
                rows.append({"scenario": name, "N": args.N, "K": K, "method": meth,
                             "truth": truth, "ranks": ranks.tolist(),
                             "warned": [bool(x[1]) for x in v],
                             "seconds": [x[2] for x in v]})
            print(f"{ratio:>5g} {K:>5} " + " ".join(cells), flush=True)
    return rows


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


def strength_grid(args) -> list:
    rows = []
    hdr = f"{'N':>5} {'K':>5} {'m':>5} " + " ".join(f"{m:>16}" for m in args.methods)
    print("fraction correct (mean chosen rank) [time / one fit]; k_true = 3, "
          f"theta = m sqrt(K/N) (4, 2, 1), {args.seeds} seeds")
    print(hdr)
    for N in args.N_grid:
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
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratios", type=float, nargs="+",
                    help="K/N values: run the ratio grid at N = --N (one value)")
    ap.add_argument("--N", type=int, nargs="+", default=None,
                    help="rows (strength grid: several; ratio grid: one, default 100)")
    ap.add_argument("--K", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--strengths", type=float, nargs="+", default=[8.0, 4.0, 2.0, 1.5, 1.0],
                    help="weakest factor's strength in units of sqrt(K/N)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="replicates (default 20 in the strength grid, 100 in the ratio grid)")
    ap.add_argument("--slow-seeds", type=int, default=8,
                    help="ratio grid: replicates of bic and aic")
    ap.add_argument("--cv-seeds", type=int, default=3, help="ratio grid: replicates of cv")
    ap.add_argument("--slow-scenarios", nargs="+", default=["strong"], choices=list(SCENARIOS),
                    help="ratio grid: the scenarios that run bic, aic and cv")
    ap.add_argument("--jobs", type=int, default=1, help="ratio grid: worker processes")
    ap.add_argument("--methods", nargs="+", default=["auto", "onatski", "bic", "aic", "cv"])
    ap.add_argument("--max-rank", type=int, default=8)
    ap.add_argument("--time-fit", action="store_true",
                    help="also time one ALS fit at the true rank (cost ratio column)")
    ap.add_argument("--json", help="write all results to this file")
    args = ap.parse_args(argv)

    if args.ratios:
        args.N = (args.N or [100])[0]
        args.seeds = 100 if args.seeds is None else args.seeds
        rows = ratio_grid(args)
    else:
        args.N_grid = args.N or [200, 1000]
        args.seeds = 20 if args.seeds is None else args.seeds
        rows = strength_grid(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
