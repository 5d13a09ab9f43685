"""Kernel (HAC) and clustered standard errors at large K: time relative to a fit
with unadjusted standard errors.

Usage::

    python benchmarks/hac_clustered.py --N 500 --K 1000 --p 3 --k 5 --repeats 3

Each cell is a complete ``SUR.fit(cov_type=..., **options)`` followed by all P
standard errors (``res.bse``), from scratch (nothing shared between cells),
divided by the same for ``cov_type="unadjusted"``: a ratio of 1.0 means the
estimator costs no more than the model-based standard errors.  The cells are
interleaved and the best of ``--repeats`` is kept.  The sandwich estimators
solve the N score vectors once (``H = A^-1 Gamma'``, K x pmax x N); the kernel
then convolves ``H`` along the rows and the clustered one sums it within
clusters, so every robust-type covariance costs about the same.  The column
``shared`` is the marginal time of ``with_cov_type(...).bse`` on a fit whose
unadjusted SEs are done: the first sandwich pays for ``H``, the others reuse it.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from alsgls import simulate_sur
from alsgls.stats.system import SUR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=500)
    ap.add_argument("--K", type=int, default=1000)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)      # sqrt of a negative two-way variance
    Xs, Y, _ = simulate_sur(N=a.N, K=a.K, p=a.p, k=a.k, seed=0, intercept=True, x_common=0.5)
    mod = SUR.from_arrays(Xs, Y, rank=a.k)
    firms = np.arange(a.N) // 10                     # 50 "groups" of 10 consecutive rows
    period = np.arange(a.N) % 25                     # crossed with 25 "periods"
    cells = [
        ("unadjusted", {}),
        ("robust", {}),
        ("kernel", dict(kernel="bartlett")),              # automatic bandwidth
        ("kernel", dict(kernel="bartlett", bandwidth=10)),
        ("kernel", dict(kernel="qs")),                    # every lag: FFT convolution
        ("clustered", dict(clusters=firms)),
        ("clustered", dict(clusters=np.column_stack([firms, period]), group_debias=True)),
    ]
    _ = mod.fit().bse                                # warm-up (imports, BLAS)
    best = [np.inf] * len(cells)
    info = [""] * len(cells)
    for _ in range(a.repeats):
        for i, (cov_type, opts) in enumerate(cells):
            t0 = time.perf_counter()
            res = mod.fit(cov_type=cov_type, **opts)
            se = res.bse.to_numpy()
            best[i] = min(best[i], time.perf_counter() - t0)
            est = res.cov_estimator
            if cov_type == "kernel":
                info[i] = f"bandwidth {est.bandwidth:g}"
            elif cov_type == "clustered":
                info[i] = f"groups {est.nclusters}"
            bad = int((~np.isfinite(se)).sum())     # two-way clustering is not always PSD
            if bad:
                info[i] += f" ({bad} negative variances)"
    # the marginal cost on a shared covariance: with_cov_type after the unadjusted SEs
    extra = [np.inf] * len(cells)
    for _ in range(a.repeats):
        res0 = mod.fit()
        _ = res0.bse
        for i, (cov_type, opts) in enumerate(cells):
            t0 = time.perf_counter()
            _ = res0.with_cov_type(cov_type, **opts).bse
            extra[i] = min(extra[i], time.perf_counter() - t0)
    base = best[0]
    print(f"N={a.N} K={a.K} p={a.p} k={a.k} P={res.df_model} method={res.covariance.method}; "
          f"best of {a.repeats}, interleaved")
    print(f"{'cov_type':<12}{'options':<44}{'fit + all SEs (s)':>18}{'x unadjusted':>14}"
          f"{'shared (s)':>12}  note")
    for (cov_type, opts), t, t_extra, note in zip(cells, best, extra, info):
        shown = ", ".join(f"{k}={'(N, 2)' if np.ndim(v) == 2 else '(N,)' if np.ndim(v) else v}"
                          for k, v in opts.items())
        print(f"{cov_type:<12}{shown:<44}{t:>18.2f}{t / base:>14.2f}{t_extra:>12.3f}  {note}")
    print("shared: with_cov_type(...).bse after the unadjusted SEs of the same fit (the "
          "sandwiches then share the solved scores: the robust row pays for them)")


if __name__ == "__main__":
    main()
