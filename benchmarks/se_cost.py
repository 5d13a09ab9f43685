"""What standard errors cost relative to the fit: time and peak memory.

Usage::

    python benchmarks/se_cost.py --K 2000 --N 1000 --p 3 --k 5 --repeats 3

For each repeat (interleaved: fit, then each SE computation on fresh results of
that fit, so a change of machine load hits every column alike) it times

* ``fit``: ``SUR(...).fit()``;
* ``model SEs``: ``res.bse`` (all P model-based standard errors);
* ``robust SEs``: ``res.with_cov_type("robust").bse`` on fresh results (the
  model-based part included: nothing is shared with the previous column);
* ``kernel SEs``: the same with ``cov_type="kernel"`` (Bartlett, automatic
  bandwidth) on fresh results;
* ``clustered SEs``: the same with ``cov_type="clustered"`` and ``--clusters``
  (default 50) clusters of consecutive rows, on fresh results;
* ``summary(10)``: ``res.summary(max_equations=10)`` on fresh results;

and reports the best of the repeats as seconds and as multiples of the best
fit, and the peak of traced allocations during each phase (tracemalloc: numpy
reports its buffers) as multiples of the data's bytes (designs plus
responses as the model holds them).  ``--se-method`` and ``--se-tol`` pass
through to ``fit``.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np

from alsgls import simulate_sur

try:  # labelled outputs import pandas on first use: not part of what is timed
    import pandas  # noqa: F401
except ImportError:
    pass
from alsgls.stats.covariance import covariance_config
from alsgls.stats.results import SURResults
from alsgls.stats.system import SUR

#: phase -> the cov_type of the results it times
SANDWICHES = {"robust SEs": "robust", "kernel SEs": "kernel", "clustered SEs": "clustered"}


def _timed(fn):
    gc.collect()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return out, dt, tracemalloc.get_traced_memory()[1] - base


def _fresh(res: SURResults, cov_type: str = "unadjusted", clusters: int = 50) -> SURResults:
    """Results of the same fit with nothing computed (no shared covariance);
    ``"clustered"`` with ``clusters`` groups of consecutive rows, ``"kernel"``
    with the defaults (Bartlett, automatic bandwidth)."""
    N = res.model.nobs
    options = {"clusters": np.arange(N) * clusters // N} if cov_type == "clustered" else {}
    config = (covariance_config(cov_type, N, **options)
              if cov_type in ("kernel", "clustered") else None)
    return SURResults(res.model, res.fit_result, cov_type=cov_type, cov_config=config,
                      residuals=res._Rt, method=res.method, se_options=res.se_options)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=2000)
    ap.add_argument("--N", type=int, default=1000)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--se-method", default="auto")
    ap.add_argument("--se-tol", type=float, default=None)
    ap.add_argument("--clusters", type=int, default=50,
                    help="groups of consecutive rows of the clustered phase")
    ap.add_argument("--no-robust", action="store_true",
                    help="skip the robust, kernel and clustered phases")
    a = ap.parse_args()
    Xs, Y, _ = simulate_sur(N=a.N, K=a.K, p=a.p, k=a.k, seed=0, intercept=True, x_common=0.5)
    mod = SUR.from_arrays(Xs, Y, rank=a.k)
    del Xs, Y
    data = mod.data.X.nbytes + mod.data.Yt.nbytes
    print(f"K={a.K} N={a.N} p={a.p} k={a.k}  P={int(mod.data.p.sum())}  "
          f"data {data / 2**20:.0f} MiB (designs + responses)")
    phases = ["fit", "model SEs", *SANDWICHES, "summary(10)"]
    if a.no_robust:
        phases = [ph for ph in phases if ph not in SANDWICHES]
    times = {ph: [] for ph in phases}
    peaks = {ph: [] for ph in phases}
    tracemalloc.start()
    info, robust_bound = None, float("nan")
    for rep in range(a.repeats):
        res, dt, pk = _timed(lambda: mod.fit(se_method=a.se_method, se_tol=a.se_tol))
        times["fit"].append(dt)
        peaks["fit"].append(pk)
        for phase in phases[1:]:
            fresh = _fresh(res, SANDWICHES.get(phase, "unadjusted"), a.clusters)
            work = ((lambda r: r.summary(max_equations=10).as_text())
                    if phase == "summary(10)" else (lambda r: r.bse.to_numpy()))
            _, dt, pk = _timed(lambda r=fresh, w=work: w(r))
            times[phase].append(dt)
            peaks[phase].append(pk)
            if phase == "model SEs":
                info = fresh.covariance
            elif phase == "robust SEs":
                robust_bound = float(np.nanmax(fresh.covariance.robust_se_bounds))
            del fresh
        del res
        print(f"repeat {rep + 1}: " + ", ".join(f"{ph} {times[ph][-1]:.2f} s" for ph in phases),
              flush=True)
    tracemalloc.stop()
    fit = min(times["fit"])
    print()
    print("| phase | time (s) | x fit | peak memory (MiB) | x data |")
    print("|---|---|---|---|---|")
    for ph in phases:
        t, m = min(times[ph]), min(peaks[ph])
        print(f"| {ph} | {t:.2f} | {t / fit:.2f} | {m / 2**20:.0f} | {m / data:.2f} |")
    e = info.eigen_info
    print()
    print(f"SE method: {info.method}"
          + ("" if e is None else
             f"; Krylov basis {e.subspace_dim}, {e.n_matvecs} products with M, rank {e.rank}, "
             f"certified lambda_(r+1) <= {e.lambda_next:.3g}, variance bound "
             f"{e.bound:.2g} (SE bound {np.sqrt(1 + e.bound) - 1:.2g})"))
    if "robust SEs" in phases:
        print(f"robust SE bound {robust_bound:.2g} (relative, every robust standard error)")


if __name__ == "__main__":
    main()
