"""Standard errors beyond the exact core: time and peak memory of fit vs SEs.

Usage::

    python benchmarks/inference_large.py --N 2000 --K 1000 --p 3 --k 5

With ``N k > EXACT_CORE_LIMIT`` (10,000 > 8,192 here) ``GLSCovariance`` takes the
truncated eigen-correction (``method="lanczos"``).  Peak memory is
tracemalloc's peak of Python/numpy allocations during each phase (the data are
allocated before).  ``--robust`` also times the robust sandwich (N PCG
right-hand sides); ``--check-exact`` compares with the exact core (needs
``8 (N k)^2`` bytes).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from alsgls import simulate_sur
from alsgls.stats import inference
from alsgls.stats.system import SUR


def _timed(fn):
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return out, dt, tracemalloc.get_traced_memory()[1] / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=2000)
    ap.add_argument("--K", type=int, default=1000)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--x-common", type=float, default=0.5)
    ap.add_argument("--robust", action="store_true")
    ap.add_argument("--check-exact", action="store_true")
    a = ap.parse_args()
    Xs, Y, _ = simulate_sur(N=a.N, K=a.K, p=a.p, k=a.k, seed=0, intercept=True,
                            x_common=a.x_common)
    mod = SUR.from_arrays(Xs, Y, rank=a.k)
    print(f"N={a.N} K={a.K} p={a.p} k={a.k}  N*k={a.N * a.k} (exact limit "
          f"{inference.EXACT_CORE_LIMIT})  design {mod.data.X.nbytes / 2**20:.0f} MiB")
    tracemalloc.start()
    res, t_fit, m_fit = _timed(mod.fit)
    print(f"fit:        {t_fit:8.2f} s  peak {m_fit:7.0f} MiB  ({res.iterations} sweeps)")
    se, t_se, m_se = _timed(lambda: res.bse.to_numpy())
    inf = res.covariance
    info = inf.eigen_info
    print(f"model SEs:  {t_se:8.2f} s  peak {m_se:7.0f} MiB  method={inf.method}")
    if info is not None:
        print(f"  eigen-correction: r={info.rank} subspace={info.subspace_dim} "
              f"M-products={info.n_matvecs} lambda_(r+1)<={info.lambda_next:.3g} "
              f"bound={inf.truncation_bound:.2e} (tol {info.tol:g}) top eigenvalues "
              f"{np.round(info.eigenvalues[: 2 * a.k], 4)}")
    if a.robust:
        rob = res.with_cov_type("robust")   # shares the factored covariance
        _, t_r, m_r = _timed(lambda: rob.bse.to_numpy())
        print(f"robust SEs: {t_r:8.2f} s  peak {m_r:7.0f} MiB  PCG {inf.solve_info}")
    tracemalloc.stop()
    print(f"(dense P x P: {8 * res.df_model ** 2 / 2**30:.2f} GiB; dense core (Nk)^2: "
          f"{8 * (a.N * a.k) ** 2 / 2**30:.2f} GiB; finite SEs: {np.isfinite(se).all()})")
    if a.check_exact:
        d = mod.data
        old = inference.EXACT_CORE_LIMIT
        inference.EXACT_CORE_LIMIT = a.N * a.k
        try:
            ex, t_ex, _ = _timed(lambda: inference.GLSCovariance(
                d.X, d.p, res.sigma, method="exact").diagonal_blocks)
        finally:
            inference.EXACT_CORE_LIMIT = old
        v_ex = ex[res._eq, res._col, res._col]
        v_la = inf.diagonal_blocks[res._eq, res._col, res._col]
        rel = (v_ex - v_la) / v_la
        print(f"exact SEs:  {t_ex:8.2f} s  max relative variance error {rel.max():.2e} "
              f"(bound {inf.truncation_bound:.2e}), min {rel.min():.2e}")


if __name__ == "__main__":
    main()
