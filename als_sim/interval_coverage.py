r"""Coverage of the 95 % intervals from ``SUR(...).fit()`` standard errors.

Inference (DESIGN.md section 4, docs/statistics.md).  The model-based
covariance of the GLS coefficients is ``Var(beta-hat) = A^-1`` with the
information ``A = X'(Sigma-hat^-1 (x) I_N) X`` (the (F, D) uncertainty does not
enter: the information is block diagonal between mean and covariance).
alsgls computes the diagonal blocks of ``A^-1`` exactly without the P x P
matrix: ``A = Delta - U U'`` with ``Delta_j = X_j'X_j / D_j`` and a correction of
rank at most N k, inverted through an N k x N k Woodbury core.  The robust
(sandwich) covariance is ``A^-1 (sum_i g_i g_i') A^-1``, ``g_i = X_i' Sigma-hat^-1 r_i``.
``debiased`` scales coefficient j's variance by ``N / (N - p_j)`` and uses
``t(N - p_j)`` quantiles.

An interval ``beta-hat_c +- q * se_c`` covers with probability 0.95 when
``se_c`` estimates ``sd(beta-hat_c)`` well and ``(beta-hat_c - beta_c) / se_c`` is
close to its reference distribution.  With R replicates a true 95 % coverage
is estimated to within ``+- 1.96 sqrt(0.95 * 0.05 / R)`` per coefficient.
We report, averaged over the P coefficients, the SE ratio
``mean(se_c) / sd(beta-hat_c)`` and the coverage, for cov_type unadjusted and
robust (normal quantiles) and unadjusted + debiased (t quantiles), on
K = 10 equations with an intercept, regressors correlated across equations
and k = 2 strong factors (the design of ``benchmarks/calibration.py``, whose
``one_size`` this script reuses).  Plug-in Sigma-hat (divisor N) is biased
down in small samples, so coverage at N = 50 falls short of 95 %.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from _common import log_axis, parser, save, table
from calibration import one_size  # benchmarks/calibration.py

try:  # one BLAS thread: the exact SEs factor an N k x N k core (see calibration.py)
    from threadpoolctl import threadpool_limits
except ImportError:  # optional (alsgls[fast]); only slower without it
    from contextlib import nullcontext as threadpool_limits  # type: ignore[assignment]

TYPES = ("unadjusted", "robust", "debiased")


def plot(rows: list[dict], out, reps: int, title: str) -> None:
    import matplotlib.pyplot as plt

    N = np.array([r["N"] for r in rows])
    band = 1.96 * np.sqrt(0.95 * 0.05 / reps)
    fig, ax = plt.subplots(1, 2, figsize=(8.5, 3.4))
    ax[0].axhspan(0.95 - band, 0.95 + band, color="grey", alpha=0.2,
                  label=f"MC band, one coefficient (R={reps})")
    ax[0].axhline(0.95, color="k", lw=1)
    ax[1].axhline(1.0, color="k", lw=1)
    for name, style in zip(TYPES, ["o-", "s-", "^-"]):
        ax[0].semilogx(N, [r[f"{name}: coverage"] for r in rows], style, label=name)
        ax[1].semilogx(N, [r[f"{name}: SE ratio"] for r in rows], style, label=name)
    ax[0].set(xlabel="N", ylabel="coverage of nominal 95 %", title="interval coverage")
    ax[1].set(xlabel="N", ylabel="mean SE / Monte Carlo SD", title="SE ratio")
    for a_ in ax:
        log_axis(a_, N)
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save(fig, out, "coverage.png")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser(__doc__)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500])
    ap.add_argument("--K", type=int, default=10)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=2)
    a = ap.parse_args(argv)
    reps, sizes = (20, [40, 80]) if a.quick else (a.reps, a.sizes)
    rows = []
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        for N in sizes:
            rows.append({"N": N, **one_size(N, reps, a.K, a.p, a.k, seed=0)})
    print(f"\nCoverage: K={a.K}, p={a.p} (intercept), k={a.k}, {reps} replicates per N")
    table(["N", "bias/sd", *(f"{t} SE ratio" for t in TYPES), *(f"{t} cover" for t in TYPES)],
          [[r["N"], r["bias/sd"], *(r[f"{t}: SE ratio"] for t in TYPES),
            *(r[f"{t}: coverage"] for t in TYPES)] for r in rows])
    plot(rows, a.out, reps, f"K={a.K}, p={a.p}, k={a.k}, {reps} replicates")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
