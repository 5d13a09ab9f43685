r"""Memory and time scaling in K: O(N K (p + k)) for ALS against O(K^2 + P^2) for dense EM.

Per ALS sweep (DESIGN.md section 7) the work is

    O(N K (p k (1 + 2 n_cg) + p + 7 (k + 4)))  flops,   O(N K (p + 1))  bytes,

because every product goes through the factor form: ``Sigma^-1 v =
Psi^-1 v - G (G' v)`` (``G`` is K x k), the GLS normal operator
``(A v)_j = X_j'X_j v_j / D_j - X_j' Phi(v) G_j'`` with
``Phi(v) = sum_l (X_l v_l) G_l'`` (N x k), and the factor step's block
subspace iteration on the N x K whitened residuals (block k + 4).  Nothing is
K x K or P x P (P = sum p_j), so the peak memory beyond the data grows like
K and the fit time like a fixed multiple of one pass over the data.

The yardstick is batched equation-by-equation OLS (one batched normal-
equations solve ``(X_j'X_j)^-1 X_j'y_j`` for all j): it reads the same data
once, so "fit time / OLS time" measures how many passes the MLE needs.
Dense EM forms the K x K ``Sigma^-1`` and the P x P GLS normal matrix
(``8 P^2`` bytes: 1.2 GB at K = 4000, p = 3) and solves it in O(P^3), so it
is run only while that stays small.

Peak memory is tracemalloc's peak of traced allocations (numpy buffers
included) during one fit, data excluded; times are best-of-repeats wall
times measured without tracemalloc.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from _common import log_axis, parser, peak_bytes, save, table, timed
from speed import batched_ols  # benchmarks/speed.py: the OLS yardstick

from alsgls import als_gls, em_gls, simulate_sur


def measure(method: str, N: int, K: int, p: int, k: int, repeats: int) -> dict:
    Xs, Y, _ = simulate_sur(N=N, K=K, p=p, k=k, seed=K)
    X = np.stack(Xs)
    Yt = np.ascontiguousarray(Y.T)
    t_ols, _ = timed(lambda: batched_ols(X, Yt), max(5, 3 * repeats))
    solver = als_gls if method == "ALS" else em_gls
    t_fit, fit = timed(lambda: solver(X, Y, k), repeats)
    peak, _ = peak_bytes(lambda: solver(X, Y, k))
    return dict(method=method, K=K, P=K * p, ols_s=t_ols, fit_s=t_fit, ratio=t_fit / t_ols,
                mib=peak / 2**20, dense_mib=8 * K * K / 2**20, iters=fit.n_iter,
                converged=fit.converged)


def plot(rows: list[dict], out, title: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4))
    for method, style in [("ALS", "o-"), ("EM", "s-")]:
        rs = [r for r in rows if r["method"] == method]
        K = [r["K"] for r in rs]
        ax[0].loglog(K, [r["mib"] for r in rs], style, label=method)
        ax[1].loglog(K, [r["fit_s"] for r in rs], style, label=method)
        ax[2].loglog(K, [r["ratio"] for r in rs], style, label=method)
    Ks = np.array(sorted({r["K"] for r in rows}))
    ax[0].loglog(Ks, 8 * Ks**2 / 2**20, "k:", lw=1, label="one K x K float64")
    ax[0].set(xlabel="K", ylabel="tracemalloc peak, MiB", title="memory")
    ax[1].set(xlabel="K", ylabel="seconds", title="fit time")
    ax[2].set(xlabel="K", ylabel="fit time / batched OLS time", title="time relative to OLS")
    for a_ in ax:
        log_axis(a_, Ks)
        a_.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save(fig, out, "scaling.png")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser(__doc__)
    ap.add_argument("--N", type=int, default=500)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    if a.quick:
        N, als_K, em_K, reps = 120, [50, 100, 200], [50], 1
    else:
        N, als_K, em_K, reps = a.N, [100, 250, 500, 1000, 2000, 4000], [100, 250, 500], a.repeats
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for K in als_K:
            rows.append(measure("ALS", N, K, a.p, a.k, reps))
        for K in em_K:
            rows.append(measure("EM", N, K, a.p, a.k, 1))
    print(f"\nScaling in K: N={N}, p={a.p}, k={a.k}")
    table(["method", "K", "P", "OLS s", "fit s", "fit/OLS", "peak MiB", "K x K MiB", "iters", "conv"],
          [[r["method"], r["K"], r["P"], r["ols_s"], r["fit_s"], r["ratio"], r["mib"],
            r["dense_mib"], r["iters"], r["converged"]] for r in rows])
    plot(rows, a.out, f"N={N}, p={a.p}, k={a.k}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
