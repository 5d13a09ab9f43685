"""Cost of the statistics layer's boundary: SUR.fit and ALSGLS.fit against als_gls.

Usage::

    python benchmarks/boundary.py                # K=2000, N=1000, p=3, k=5, 5 repeats
    python benchmarks/boundary.py --quick        # K=300, N=300, for a smoke test

The data are simulated once (``simulate_sur``) as a list of K ``(N, p)``
designs and an ``(N, K)`` response, and the same arrays go to every path:

* ``als_gls``  -- ``als_gls(Xs, Y, k)``, the core solver (baseline);
* ``SUR.fit``  -- ``SUR.from_arrays(Xs, Y, rank=k).fit()``, construction
  included, standard errors not computed (``.bse`` is never touched);
* ``ALSGLS.fit`` -- ``ALSGLS(rank=k, fit_intercept=False).fit(Xs, Y)``.

Time: the paths are interleaved ``--repeats`` times (the order rotating each
repeat) after one untimed warm-up call each; a ratio is the ratio of the best
times of the same run (wall clock and, separately, CPU time through
``time.process_time``).  Memory: each path is run once more under
``tracemalloc`` (after ``gc.collect()``), and its peak is the traced peak minus
the traced size at the start of the call -- numpy's buffers are traced, BLAS
and LAPACK internal workspaces are not -- reported as a multiple of the data's
bytes (sum of ``X_j.nbytes`` plus ``Y.nbytes``).  BLAS is limited to one
thread (threadpoolctl, when installed) for everything.

Validations: during the warm-up calls ``alsgls.core.problem.check_designs``
(the Gram-matrix rank check that every validation of the designs runs) is
wrapped with a counter -- in ``alsgls.core.problem`` and in any ``alsgls``
module that imported it by name -- to count how often each path validates the
data.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import sys
import time
import tracemalloc
from contextlib import ExitStack, contextmanager

import numpy as np
import scipy

import alsgls
from alsgls import SUR, als_gls, simulate_sur

try:
    from alsgls.learn.estimator import ALSGLS
except ImportError:  # layout of an older or newer tree
    ALSGLS = getattr(alsgls, "ALSGLS", None)

TARGET_TIME = 1.3   # SUR.fit / als_gls, best wall-clock time
TARGET_PEAK = 2.5   # SUR.fit peak / data bytes
MiB = 2.0 ** 20


# --------------------------------------------------------------- helpers
def blas_one_thread() -> tuple[object, str]:
    """A context limiting BLAS to one thread, and a line describing the pools."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return ExitStack(), "threadpoolctl not installed (BLAS threads not limited)"
    pools = [f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()]
    return threadpool_limits(limits=1), f"limited to 1 thread (default pools {pools})"


@contextmanager
def count_validations():
    """Wrap ``alsgls.core.problem.check_designs`` with a counter.

    Yields a one-element list holding the number of calls (``None`` if the
    attribute does not exist).  The module attribute is patched, and so is
    every ``alsgls.*`` module that bound the same function under the same name
    (``from .problem import check_designs``); all are restored on exit.
    """
    try:
        from alsgls.core import problem
    except ImportError:
        problem = None
    orig = getattr(problem, "check_designs", None)
    if orig is None:
        yield [None]
        return
    counter = [0]

    def counted(*args, **kwargs):
        counter[0] += 1
        return orig(*args, **kwargs)

    patched = [m for name, m in list(sys.modules.items())
               if (name == "alsgls" or name.startswith("alsgls.")) and m is not None
               and getattr(m, "check_designs", None) is orig]
    for m in patched:
        m.check_designs = counted
    try:
        yield counter
    finally:
        for m in patched:
            if getattr(m, "check_designs", None) is counted:
                m.check_designs = orig


def traced_peak(f) -> int:
    """Peak traced bytes of one call of ``f`` above the traced size at its start."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        out = f()
        peak = tracemalloc.get_traced_memory()[1] - start
        del out
    finally:
        tracemalloc.stop()
    return peak


def sweeps(out) -> str:
    """Number of ALS sweeps of a path's result, for the sanity line."""
    for obj, attr in ((out, "n_iter"), (getattr(out, "fit_result", None), "n_iter"),
                      (out, "n_iter_")):
        v = getattr(obj, attr, None)
        if v is not None:
            return str(int(v))
    return "?"


def coefficients(out) -> np.ndarray | None:
    """Coefficients (K, p) of a path's result, or None if not found."""
    try:
        fit = getattr(out, "fit_result", out)
        if hasattr(fit, "B"):
            return np.array([np.ravel(b) for b in fit.B])
        if hasattr(out, "coef_list_"):  # ALSGLS in SUR form
            return np.array([np.ravel(b) for b in out.coef_list_])
        if hasattr(out, "coef_"):
            return np.asarray(out.coef_)
    except (TypeError, ValueError):
        pass
    return None


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--K", type=int, default=None, metavar="EQUATIONS", help="equations (default 2000; 300 with --quick)")
    ap.add_argument("--N", type=int, default=None, metavar="ROWS", help="rows (default 1000; 300 with --quick)")
    ap.add_argument("--p", type=int, default=3, help="regressors per equation (default 3)")
    ap.add_argument("--k", type=int, default=5, metavar="RANK", help="factor rank (default 5)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    ap.add_argument("--quick", action="store_true", help="K=300, N=300: a smoke test in seconds")
    args = ap.parse_args()
    K = args.K if args.K is not None else (300 if args.quick else 2000)
    N = args.N if args.N is not None else (300 if args.quick else 1000)
    p, k = args.p, args.k

    limit, threads = blas_one_thread()
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    print(f"command: {shlex.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {platform.platform()} ({platform.machine()}), nproc {nproc} "
          f"(os.cpu_count {os.cpu_count()}); Python {platform.python_version()}")
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, alsgls "
          f"{getattr(alsgls, '__version__', '?')}; BLAS {threads}")

    Xs, Y, _truth = simulate_sur(N=N, K=K, p=p, k=k, seed=args.seed)
    data_bytes = sum(x.nbytes for x in Xs) + Y.nbytes
    print(f"data: K={K}, N={N}, p={p}, k={k}, seed={args.seed}; "
          f"{len(Xs)} designs + Y = {data_bytes / MiB:.1f} MiB")

    paths = {
        "als_gls": lambda: als_gls(Xs, Y, k),
        "SUR.fit": lambda: SUR.from_arrays(Xs, Y, rank=k).fit(),
    }
    if ALSGLS is not None:
        paths["ALSGLS.fit"] = lambda: ALSGLS(rank=k, fit_intercept=False).fit(Xs, Y)
    names = list(paths)

    with limit:
        # warm-up, counting validations; keep the results for a sanity check
        counts, outs = {}, {}
        for name in names:
            with count_validations() as c:
                outs[name] = paths[name]()
            counts[name] = c[0]
        ref = coefficients(outs["als_gls"])
        checks = []
        for name in names:
            b = coefficients(outs[name])
            diff = (f"{np.max(np.abs(b - ref)):.1e}"
                    if b is not None and ref is not None and b.shape == ref.shape else "n/a")
            checks.append(f"{name} {sweeps(outs[name])} sweeps, max|dB| {diff}")
        del outs, ref

        # time: interleaved, order rotating, best of repeats (wall and CPU)
        wall = {n: np.inf for n in names}
        cpu = {n: np.inf for n in names}
        for r in range(args.repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                gc.collect()
                w0, c0 = time.perf_counter(), time.process_time()
                out = paths[name]()
                w1, c1 = time.perf_counter(), time.process_time()
                del out
                wall[name] = min(wall[name], w1 - w0)
                cpu[name] = min(cpu[name], c1 - c0)

        # memory: one traced run per path
        peak = {name: traced_peak(paths[name]) for name in names}

    print(f"check (warm-up run): {'; '.join(checks)}")
    if counts["als_gls"] is None:
        print("validations: alsgls.core.problem.check_designs not found; not counted")
    else:
        print("validations (check_designs calls per fit): "
              + ", ".join(f"{n} {counts[n]}" for n in names))
    print()
    print("| path | best wall s | ratio to als_gls | CPU ratio | peak MiB | peak / data bytes |")
    print("|---|---|---|---|---|---|")
    for name in names:
        print(f"| {name} | {wall[name]:.4f} | {wall[name] / wall['als_gls']:.2f} | "
              f"{cpu[name] / cpu['als_gls']:.2f} | {peak[name] / MiB:.1f} | "
              f"{peak[name] / data_bytes:.2f} |")
    print()
    t_ratio = wall["SUR.fit"] / wall["als_gls"]
    c_ratio = cpu["SUR.fit"] / cpu["als_gls"]
    m_ratio = peak["SUR.fit"] / data_bytes
    print(f"targets: SUR.fit <= {TARGET_TIME}x als_gls time, peak < {TARGET_PEAK}x data: "
          f"time {t_ratio:.2f}x {'PASS' if t_ratio <= TARGET_TIME else 'FAIL'} "
          f"(CPU {c_ratio:.2f}x), "
          f"peak {m_ratio:.2f}x {'PASS' if m_ratio < TARGET_PEAK else 'FAIL'}")


if __name__ == "__main__":
    main()
