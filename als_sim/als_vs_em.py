r"""ALS against EM: two independent routes to the same Gaussian MLE.

Model (DESIGN.md section 1).  ``y_j = X_j beta_j + e_j`` for ``j = 1..K``; the rows
of the N x K error matrix are i.i.d. ``N(0, Sigma)`` with

    Sigma = F F' + Psi,   Psi = diag(D),   F  (K x k).

With the residuals ``R = Y - XB`` and the k x k core ``C = I + F' Psi^-1 F = L L'``
the negative log-likelihood is, without forming any K x K matrix,

    NLL = (N/2) [K log 2 pi + sum_j log D_j + 2 sum log diag(L)]
          + 1/2 [ sum_ij R_ij^2 / D_j - || L^-1 F' Psi^-1 R' ||_F^2 ].

* ``als_gls`` is block-coordinate descent on this NLL: a GLS beta-step by
  matrix-free preconditioned CG (``Sigma^-1 = Psi^-1 - G G'``,
  ``G = Psi^-1 F L^-T``), then an exact Lawley/Joreskog profile step for
  (F, D).  Memory O(N K p + K k).
* ``em_gls`` is the dense baseline: the beta-step solves the P x P normal
  equations ``X'(Sigma^-1 (x) I)X beta = X'(Sigma^-1 (x) I)y`` with the dense
  K x K ``Sigma^-1``; the (F, D)-step is the latent-factor EM
  (``m_i = C^-1 F' Psi^-1 r_i``; ``F = (sum r_i m_i')(sum m_i m_i' + N C^-1)^-1``;
  ``D = diag(S - F sum m_i r_i' / N)``), SQUAREM-accelerated.  Memory O(K^2 + P^2).

Both converge to the same maximiser, so at a tight tolerance they must agree
on the NLL (relative 1e-6 or better), on beta, and on ``Sigma`` (compared as
``F F'`` and ``D``: ``F`` itself is only identified up to rotation).  The
experiment fits both on ``simulate_sur`` data over a grid of K and reports the
agreement, fit time and tracemalloc peak memory; the memory column shows the
K^2 (and P^2) growth of EM against ALS's linear growth.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from _common import beta_vector, log_axis, parser, peak_bytes, save, table, timed

from alsgls import als_gls, em_gls, simulate_sur


def compare(N: int, K: int, p: int, k: int, tol: float, seed: int) -> dict:
    Xs, Y, _ = simulate_sur(N=N, K=K, p=p, k=k, seed=seed)
    t_als, a = timed(lambda: als_gls(Xs, Y, k, tol=tol, max_iter=1000))
    t_em, e = timed(lambda: em_gls(Xs, Y, k, tol=tol))
    m_als, _ = peak_bytes(lambda: als_gls(Xs, Y, k, tol=tol, max_iter=1000))
    m_em, _ = peak_bytes(lambda: em_gls(Xs, Y, k, tol=tol))
    ba, be = beta_vector(a.B), beta_vector(e.B)
    FFa, FFe = a.F @ a.F.T, e.F @ e.F.T          # K x K only for this check
    return dict(
        K=K,
        nll_rel=abs(a.nll - e.nll) / abs(e.nll),
        beta_rel=np.linalg.norm(ba - be) / np.linalg.norm(be),
        FFt_rel=np.linalg.norm(FFa - FFe) / np.linalg.norm(FFe),
        D_rel=np.max(np.abs(a.D - e.D) / e.D),
        als_s=t_als, em_s=t_em, als_mib=m_als / 2**20, em_mib=m_em / 2**20,
        als_iter=a.n_iter, em_iter=e.n_iter,
    )


def plot(rows: list[dict], out, N: int) -> None:
    import matplotlib.pyplot as plt

    K = [r["K"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4))
    for key, lab in [("nll_rel", "NLL"), ("beta_rel", "beta"), ("FFt_rel", "F F'"), ("D_rel", "D (max)")]:
        ax[0].semilogy(K, [max(r[key], 1e-16) for r in rows], "o-", label=lab)
    ax[0].axhline(1e-6, color="grey", ls=":", lw=1)
    ax[0].set(xlabel="K", ylabel="relative difference ALS vs EM", title="agreement")
    ax[0].legend(fontsize=8)
    ax[1].loglog(K, [r["als_s"] for r in rows], "o-", label="ALS")
    ax[1].loglog(K, [r["em_s"] for r in rows], "s-", label="EM (dense)")
    ax[1].set(xlabel="K", ylabel="seconds", title=f"fit time (N={N})")
    ax[1].legend(fontsize=8)
    ax[2].loglog(K, [r["als_mib"] for r in rows], "o-", label="ALS")
    ax[2].loglog(K, [r["em_mib"] for r in rows], "s-", label="EM (dense)")
    ax[2].set(xlabel="K", ylabel="tracemalloc peak, MiB", title="memory")
    ax[2].legend(fontsize=8)
    for a_ in ax[1:]:
        log_axis(a_, K)
    save(fig, out, "als_vs_em.png")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser(__doc__)
    ap.add_argument("--N", type=int, default=400)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-12)
    a = ap.parse_args(argv)
    grid = [15, 30] if a.quick else [20, 50, 100, 200, 400]
    N = 120 if a.quick else a.N
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for K in grid:
            rows.append(compare(N, K, a.p, a.k, a.tol, seed=K))
    print(f"\nALS vs EM: N={N}, p={a.p}, k={a.k}, tol={a.tol:g}")
    table(["K", "NLL rel", "beta rel", "FF' rel", "D max rel", "ALS s", "EM s",
           "ALS MiB", "EM MiB", "ALS sweeps", "EM iters"],
          [[r["K"], r["nll_rel"], r["beta_rel"], r["FFt_rel"], r["D_rel"], r["als_s"], r["em_s"],
            r["als_mib"], r["em_mib"], r["als_iter"], r["em_iter"]] for r in rows])
    plot(rows, a.out, N)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
