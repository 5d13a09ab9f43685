"""Time and peak memory of a fit alone versus fit plus all standard errors.

For the cost of standard errors as multiples of the fit (model-based,
robust, ``summary()`` of ten equations; interleaved, best of several runs)
see ``benchmarks/se_cost.py``.

Usage::

    python benchmarks/scale_inference.py --K 2000 --N 500 --p 3 --k 2

Peak memory is tracemalloc's peak of Python/numpy allocations (numpy reports
its buffers to tracemalloc) above the data, for each phase separately.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from alsgls import simulate_sur

try:  # labelled outputs import pandas on first use: not part of what is timed
    import pandas  # noqa: F401
except ImportError:
    pass
from alsgls.stats.system import SUR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=2000)
    ap.add_argument("--N", type=int, default=500)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--robust", action="store_true", help="also time robust SEs")
    a = ap.parse_args()
    Xs, Y, _ = simulate_sur(N=a.N, K=a.K, p=a.p, k=a.k, seed=0, intercept=True, x_common=0.5)
    mod = SUR.from_arrays(Xs, Y, rank=a.k)
    data_mb = mod.data.X.nbytes / 2**20
    tracemalloc.start()
    t0 = time.perf_counter()
    res = mod.fit()
    t_fit = time.perf_counter() - t0
    _, peak_fit = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    se = res.bse.to_numpy()
    t_se = time.perf_counter() - t0
    _, peak_se = tracemalloc.get_traced_memory()
    print(f"K={a.K} N={a.N} p={a.p} k={a.k}  P={res.df_model}  design {data_mb:.0f} MiB")
    print(f"fit:        {t_fit:7.2f} s  peak {peak_fit / 2**20:7.0f} MiB  ({res.iterations} sweeps)")
    print(f"model SEs:  {t_se:7.2f} s  peak {peak_se / 2**20:7.0f} MiB  (ratio to fit {t_se / t_fit:.2f})")
    if a.robust:
        from alsgls.stats.results import SURResults
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        SURResults(mod, res.fit_result, cov_type="robust").bse
        t_r = time.perf_counter() - t0
        _, peak_r = tracemalloc.get_traced_memory()
        print(f"robust SEs: {t_r:7.2f} s  peak {peak_r / 2**20:7.0f} MiB")
    dense_gb = 8 * res.df_model ** 2 / 2**30
    print(f"(a dense P x P information matrix would need {dense_gb:.2f} GiB; finite SEs: {np.isfinite(se).all()})")


if __name__ == "__main__":
    main()
