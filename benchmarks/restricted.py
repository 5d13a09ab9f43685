"""Cost of linear restrictions R beta = q: restricted ML fit and restricted SEs.

Usage::

    python benchmarks/restricted.py              # K=1000, N=500, p=3, k=5, m=20, best of 3
    python benchmarks/restricted.py --quick      # K=200, N=200, a smoke test

The data are simulated once (``simulate_sur``) and validated once
(``build_problem``); ``m`` restrictions pool the slope of one regressor across
random pairs of equations (``eq_a_x1 = eq_b_x1``, each equation in at most one
pair, so the rows are independent), the sparse restrictions of a pooled-slope
or symmetry system.  By default the responses are shifted so that the
restrictions hold in the simulated truth; ``--false`` keeps the simulated
(unequal) slopes, so the restricted model is misspecified and beta and Sigma
are coupled at the restricted MLE (more ALS sweeps).  Timed, through the core API the ``SUR`` layer calls:

* ``unrestricted fit + SEs`` (the baseline) -- ``fit_problem(problem, k)``, then
  the model-based standard errors ``GLSCovariance.from_problem(...).diagonal_blocks``;
* ``unrestricted fit`` alone, for reference;
* ``restricted fit`` -- ``fit_problem(problem, k, restriction=...)``: restricted
  OLS start, projected PCG beta-steps;
* ``restricted SEs`` -- ``GLSCovariance.from_problem(..., restriction=...)
  .diagonal_blocks``: ``A^-1`` blocks minus ``W S^-1 W'`` (``m`` extra solves);
* ``restricted fit + SEs``, and the robust sandwich with the restricted bread
  against the unrestricted robust SEs (both after their fits).

Every path runs once untimed, then the paths are interleaved ``--repeats``
times; each figure is the best wall-clock time, reported as a multiple of the
baseline's best.  BLAS is limited to one thread (threadpoolctl, when installed).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import numpy as np
import scipy

import alsgls
from alsgls import simulate_sur
from alsgls.core.dispatch import fit_problem
from alsgls.core.options import solver_options
from alsgls.core.problem import build_problem
from alsgls.core.restriction import build_restriction
from alsgls.stats.inference import GLSCovariance

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from boundary import blas_one_thread  # noqa: E402  (the benchmarks' one helper for it)




def pooled_pairs(K: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` disjoint random pairs of equations (m, 2)."""
    return rng.permutation(K)[: 2 * m].reshape(m, 2)


def pooled_slopes(problem, pairs: np.ndarray, column: int = 1):
    """Restrictions ``eq_a_x{column} = eq_b_x{column}`` for the pairs ``(a, b)``."""
    lay = problem.layout
    m = pairs.shape[0]
    start = np.cumsum(lay.p) - lay.p
    R = np.zeros((m, lay.P))
    R[np.arange(m), start[pairs[:, 0]] + column] = 1.0
    R[np.arange(m), start[pairs[:, 1]] + column] = -1.0
    return build_restriction(R, None, lay)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--K", type=int, default=None, help="equations (default 1000; 200 with --quick)")
    ap.add_argument("--N", type=int, default=None, help="rows (default 500; 200 with --quick)")
    ap.add_argument("--p", type=int, default=3, help="regressors per equation (default 3)")
    ap.add_argument("--k", type=int, default=5, help="factor rank (default 5)")
    ap.add_argument("--m", type=int, default=20, help="restrictions (default 20)")
    ap.add_argument("--tol", type=float, default=1e-10, help="solver tol (default 1e-10)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="K=200, N=200")
    ap.add_argument("--false", action="store_true",
                    help="keep the simulated slopes: the restrictions are false in the data")
    args = ap.parse_args()
    K = args.K or (200 if args.quick else 1000)
    N = args.N or (200 if args.quick else 500)
    limiter, blas_note = blas_one_thread()
    print(f"command: {shlex.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {platform.platform()} ({platform.machine()}), nproc {os.cpu_count()}; "
          f"BLAS {blas_note}")
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, alsgls {alsgls.__version__}")
    print(f"data: K={K}, N={N}, p={args.p}, k={args.k}, m={args.m} pooled slopes "
          f"({'false' if args.false else 'true'} in the data), seed={args.seed}, "
          f"tol={args.tol:g}, best of {args.repeats} interleaved rounds")

    Xs, Y, truth = simulate_sur(N=N, K=K, p=args.p, k=args.k, seed=args.seed)
    pairs = pooled_pairs(K, args.m, np.random.default_rng(args.seed + 1))
    if not args.false:     # make the restrictions true: b's slope set to a's
        Y = Y.copy()
        for a, b in pairs:
            Y[:, b] += Xs[b][:, 1] * (truth.B[a][1, 0] - truth.B[b][1, 0])
    problem = build_problem(Xs, Y)
    con = pooled_slopes(problem, pairs)
    options = solver_options(tol=args.tol)
    k = args.k
    out: dict = {}

    def unrestricted():
        fit, Rt = fit_problem(problem, k, options)
        out["u"] = (fit, Rt)
        return GLSCovariance.from_problem(problem, fit.cov, Rt).diagonal_blocks

    def unrestricted_fit():
        fit_problem(problem, k, options)

    def restricted_fit():
        out["r"] = fit_problem(problem, k, options, restriction=con)

    def restricted_ses():
        fit, Rt = out["r"]
        return GLSCovariance.from_problem(problem, fit.cov, Rt,
                                          restriction=con).diagonal_blocks

    def restricted_both():
        fit, Rt = fit_problem(problem, k, options, restriction=con)
        return GLSCovariance.from_problem(problem, fit.cov, Rt,
                                          restriction=con).diagonal_blocks

    def robust_unrestricted():
        fit, Rt = out["u"]
        return GLSCovariance.from_problem(problem, fit.cov, Rt).estimator("robust") \
            .diagonal_blocks

    def robust_restricted():
        fit, Rt = out["r"]
        return GLSCovariance.from_problem(problem, fit.cov, Rt, restriction=con) \
            .estimator("robust").diagonal_blocks

    paths = {"unrestricted fit + SEs (baseline)": unrestricted,
             "unrestricted fit": unrestricted_fit,
             "restricted fit": restricted_fit,
             "restricted SEs": restricted_ses,
             "restricted fit + SEs": restricted_both,
             "robust SEs, unrestricted": robust_unrestricted,
             "robust SEs, restricted": robust_restricted}
    best = {name: np.inf for name in paths}
    with limiter:
        for f in paths.values():                    # warm-up, and the fits the SEs use
            f()
        for rep in range(args.repeats):
            names = list(paths)
            names = names[rep % len(names):] + names[: rep % len(names)]
            for name in names:
                t0 = time.perf_counter()
                paths[name]()
                best[name] = min(best[name], time.perf_counter() - t0)

    fu, fr = out["u"][0], out["r"][0]
    theta = np.concatenate([b.ravel() for b in fr.B])
    print(f"fits: unrestricted {fu.n_iter} sweeps ({int(np.sum(fu.cg_iterations))} CG), "
          f"restricted {fr.n_iter} sweeps ({int(np.sum(fr.cg_iterations))} CG), "
          f"max |R beta - q| = {np.abs(con.R @ theta - con.q).max():.1e}, "
          f"NLL per row {fu.nll:.6f} vs {fr.nll:.6f}")
    base = best["unrestricted fit + SEs (baseline)"]
    print(f"\n| {'path':36s} | best (s) | x baseline |")
    print(f"|{'-' * 38}|---------:|-----------:|")
    for name, t in best.items():
        print(f"| {name:36s} | {t:8.3f} | {t / base:10.2f} |")


if __name__ == "__main__":
    main()
