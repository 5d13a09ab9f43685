"""ALS on Dask arrays against the in-memory fit of the same data.

The data -- K equations, N rows, p regressors each, a k-factor error
structure -- are generated chunk by chunk into ``.npy`` stacks on disk
(``dask.array.to_npy_stack``: one file per chunk of equations, never the
whole array in one process).  Then, each in a fresh process:

* ``inmemory``: the NumPy arrays loaded from the files, ``als_gls`` timed;
* ``dask``: a ``LocalCluster`` of ``--workers`` worker processes (one thread
  each, ``--memory-limit`` each), the Dask arrays built from the files
  (``from_npy_stack``), ``als_gls`` timed -- including reading the files
  into the workers (``persist``) and the validation pass, reported apart --
  with the peak resident memory of each worker (``ru_maxrss``), what the
  workers spilled to disk, and the bytes sent between processes per sweep:
  by the workers (to each other and to the driver, their own counters) and
  over the loopback interface in total (client, scheduler and workers).

The table compares the fits (NLL and coefficients), the times (ratio to
the in-memory fit) and the per-sweep time with 1 and 2 workers.

Usage::

    python benchmarks/dask_scale.py                      # K=100000 N=500 p=3 k=5
    python benchmarks/dask_scale.py --K 20000 --workers 2 --memory-limit 1GB
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(path: Path, K: int, N: int, p: int, k: int, chunk: int, seed: int) -> None:
    """X (K, N, p) and Y (N, K) as npy stacks chunked along equations."""
    import dask
    import dask.array as da

    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((N, k))                 # common to every equation
    F = rng.standard_normal((K, k)) * 0.7
    D = rng.uniform(0.5, 1.5, K)
    beta = rng.standard_normal((K, p))
    X = da.random.default_rng(seed + 1).standard_normal((K, N, p), chunks=(chunk, N, p))
    E = da.random.default_rng(seed + 2).standard_normal((K, N), chunks=(chunk, N))
    Fd = da.from_array(F, chunks=(chunk, k))
    Yt = ((X @ da.from_array(beta, chunks=(chunk, p))[:, :, None])[:, :, 0]
          + Fd @ factors.T + da.from_array(np.sqrt(D), chunks=chunk)[:, None] * E)
    with dask.config.set(scheduler="threads"):
        da.to_npy_stack(path / "X", X, axis=0)
        da.to_npy_stack(path / "Y", Yt.T, axis=1)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_inmemory(path: Path, k: int, tol: float) -> dict:
    import dask.array as da

    from alsgls import als_gls

    t0 = time.perf_counter()
    X = np.ascontiguousarray(da.from_npy_stack(path / "X").compute(scheduler="threads"))
    Y = np.ascontiguousarray(da.from_npy_stack(path / "Y").compute(scheduler="threads"))
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = als_gls(X, Y, k, tol=tol)
    seconds = time.perf_counter() - t0
    np.save(path / "B_inmemory.npy", np.stack(fit.B)[:, :, 0])
    return dict(load=load, fit=seconds, n_iter=fit.n_iter, nll=fit.nll,
                converged=fit.converged, peak_rss_mb=_rss_mb(),
                cg=int(fit.cg_iterations.sum()), eig=int(fit.eig_iterations.sum()))


def _worker_counters(dask_worker) -> dict:
    spilled = getattr(dask_worker.data, "spilled_total", None)
    disk = getattr(spilled, "disk", 0) if spilled is not None else 0
    return dict(out=dask_worker.transfer_outgoing_bytes_total,
                rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                spilled=int(disk or 0))


def _loopback_bytes() -> int:
    import psutil

    lo = psutil.net_io_counters(pernic=True).get("lo")
    return int(lo.bytes_sent) if lo is not None else 0


def run_dask(path: Path, k: int, tol: float, workers: int, memory_limit: str,
             residuals: str) -> dict:
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from alsgls.core.dispatch import fit_problem
    from alsgls.core.lazy_problem import build_lazy_problem
    from alsgls.core.options import solver_options

    # spill by process memory only (the managed-memory estimate counts views of
    # one chunk several times), pause late: the data are meant to fill the workers
    dask.config.set({"distributed.worker.memory.target": False,
                     "distributed.worker.memory.spill": 0.85,
                     "distributed.worker.memory.pause": 0.92,
                     "distributed.worker.memory.terminate": 0.98})
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit, dashboard_address=None,
                           silence_logs=40)
    client = Client(cluster)
    X = da.from_npy_stack(path / "X")
    Y = da.from_npy_stack(path / "Y")
    # als_gls in its two parts (alsgls.dask.fit does both): reading the files
    # into the workers with the validation pass, then the fit, timed apart
    t0 = time.perf_counter()
    problem = build_lazy_problem(X, Y, residuals=residuals)
    load = time.perf_counter() - t0
    before = client.run(_worker_counters)
    lo0 = _loopback_bytes()
    compute, calls = dask.base.compute, [0]

    def counting(*args, **kwargs):      # every round trip: materialize, float(), compute
        calls[0] += 1
        return compute(*args, **kwargs)

    dask.base.compute = counting
    t0 = time.perf_counter()
    fit, _ = fit_problem(problem, k, solver_options(tol=tol))
    seconds = time.perf_counter() - t0
    dask.base.compute = compute
    lo1 = _loopback_bytes()
    after = client.run(_worker_counters)
    B = np.stack(fit.B)[:, :, 0]
    ref = path / "B_inmemory.npy"
    dB = float(np.max(np.abs(B - np.load(ref))) / np.max(np.abs(B))) if ref.exists() else None
    out = sum(after[w]["out"] - before[w]["out"] for w in after)
    result = dict(
        workers=workers, memory_limit=memory_limit, load=load, fit=seconds,
        n_iter=fit.n_iter, nll=fit.nll, converged=fit.converged,
        store_residuals=bool(problem.store_residuals), dB=dB,
        worker_peak_rss_mb=sorted(round(a["rss_mb"]) for a in after.values()),
        spilled_bytes=sum(a["spilled"] for a in after.values()),
        worker_bytes_per_sweep=out / max(fit.n_iter, 1),
        loopback_bytes_per_sweep=(lo1 - lo0) / max(fit.n_iter, 1),
        driver_peak_rss_mb=_rss_mb(), round_trips=calls[0],
        cg=int(fit.cg_iterations.sum()), eig=int(fit.eig_iterations.sum()))
    client.close()
    cluster.close()
    return result


def _child(args: argparse.Namespace, what: str, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--path", str(args.path),
           "--k", str(args.k), "--tol", str(args.tol)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise RuntimeError(f"the {what} run failed (exit {out.returncode}); its stderr is above")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, default=100_000)
    ap.add_argument("--N", type=int, default=500)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=5000, help="equations per chunk")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="1.5GB", help="per worker")
    ap.add_argument("--memory-limit-1", default="6GB", help="of the one-worker run")
    ap.add_argument("--residuals", default="auto", choices=("auto", "store", "recompute"))
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--path", type=Path, default=None)
    ap.add_argument("--skip-one-worker", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "inmemory":
        print(json.dumps(run_inmemory(args.path, args.k, args.tol)))
        return
    if args.child == "dask":
        print(json.dumps(run_dask(args.path, args.k, args.tol, args.workers,
                                  args.memory_limit, args.residuals)))
        return
    own = args.path is None
    args.path = args.path or Path(tempfile.mkdtemp(prefix="alsgls_dask_"))
    try:
        t0 = time.perf_counter()
        generate(args.path, args.K, args.N, args.p, args.k, args.chunk, args.seed)
        gb = 8 * args.K * args.N * (args.p + 1) / 1e9
        print(f"# data: K={args.K} N={args.N} p={args.p} k={args.k}: X and Y {gb:.2f} GB "
              f"in npy stacks of {args.chunk} equations ({time.perf_counter() - t0:.0f} s)")
        print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
              f"cores, python {platform.python_version()}, numpy {np.__version__}")
        mem = _child(args, "inmemory")
        print("# in-memory:", json.dumps(mem))
        runs = [_child(args, "dask", workers=args.workers, memory_limit=args.memory_limit,
                       residuals=args.residuals)]
        print("# dask:", json.dumps(runs[0]))
        if not args.skip_one_worker:     # the same residual mode, for a fair scaling
            mode = "store" if runs[0]["store_residuals"] else "recompute"
            runs.append(_child(args, "dask", workers=1, memory_limit=args.memory_limit_1,
                               residuals=mode))
            print("# dask:", json.dumps(runs[1]))
        print()
        print("| run | load + validate (s) | fit (s) | sweeps | s / sweep | fit / in-memory "
              "| NLL rel. diff | B max rel. diff | peak RSS (MB) | spilled (MB) "
              "| worker bytes / sweep (MB) | loopback bytes / sweep (MB) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        print(f"| in memory | {mem['load']:.1f} | {mem['fit']:.1f} | {mem['n_iter']} | "
              f"{mem['fit'] / mem['n_iter']:.2f} | 1 | -- | -- | {mem['peak_rss_mb']:.0f} "
              "(one process) | -- | -- | -- |")
        for r in runs:
            print(f"| Dask, {r['workers']} worker(s) x {r['memory_limit']}"
                  f"{'' if r['store_residuals'] else ', residuals recomputed'} | "
                  f"{r['load']:.1f} | {r['fit']:.1f} | {r['n_iter']} | "
                  f"{r['fit'] / r['n_iter']:.2f} | {r['fit'] / mem['fit']:.2f} | "
                  f"{abs(r['nll'] - mem['nll']) / abs(mem['nll']):.1e} | {r['dB']:.1e} | "
                  f"{', '.join(str(m) for m in r['worker_peak_rss_mb'])} (per worker) | "
                  f"{r['spilled_bytes'] / 1e6:.0f} | {r['worker_bytes_per_sweep'] / 1e6:.1f} | "
                  f"{r['loopback_bytes_per_sweep'] / 1e6:.1f} |")
        if len(runs) == 2:
            s2, s1 = (r["fit"] / r["n_iter"] for r in runs)
            print(f"\nper-sweep time, 1 -> {runs[0]['workers']} workers: {s1:.2f} s -> "
                  f"{s2:.2f} s (speed-up {s1 / s2:.2f}x)")
    finally:
        if own:
            shutil.rmtree(args.path, ignore_errors=True)


if __name__ == "__main__":
    main()
