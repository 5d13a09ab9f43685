"""Time peer SUR/GLS implementations against a batched-OLS baseline.

Standalone: it does NOT import this repository's ``alsgls``. Run it with the
interpreter of a separate virtual environment that holds the peer, e.g.

    python3 -m venv /tmp/peer_alsgls
    /tmp/peer_alsgls/bin/pip install alsgls==2.2.0 numpy scipy threadpoolctl
    /tmp/peer_alsgls/bin/python benchmarks/peers.py --peer alsgls

    # linearmodels in its own venv (e.g. /tmp/lmref)
    /tmp/lmref/bin/python benchmarks/peers.py --peer linearmodels

Peers
-----
* ``alsgls`` (the PyPI package of that name, v2.2.0 measured): its main ALS
  routine ``alsgls.als_gls(Xs, Y, k)`` with every other argument at its default
  (``sweeps=8``, ``rel_tol=1e-6``, ``lam_B=1e-3``, CG beta step).
* ``linearmodels``: ``SUR(equations).fit(method="gls", iterate=True)``
  (iterated FGLS) and the default two-step ``SUR(equations).fit()`` (one FGLS
  step, robust covariance). Both include linearmodels' covariance estimate.

Each cell (peer, method, N, K, p, k, thread setting) runs in a fresh child
process so that ``ru_maxrss`` is the peak RSS of that cell alone. In the same
child the batched OLS baseline

    gram = X.transpose(0, 2, 1) @ X; rhs = Yt[:, None, :] @ X
    np.linalg.solve(gram, rhs.transpose(0, 2, 1))

is timed on X stacked (K, N, p) and Yt (K, N); best of ``--ols-repeats``.

Data: X_j ~ N(0, 1) (N x p), B ~ N(0, 1), errors E = Z F^T + eps sqrt(D) with
Sigma = F F^T + diag(D), F ~ N(0, 1) (K x k), D ~ U(0.5, 1.5).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import time

ALSGLS_GRID = [  # (N, p, k, K)
    (500, 3, 4, 100),
    (500, 3, 4, 1000),
    (500, 3, 4, 4000),
    (2000, 5, 5, 1000),
]
LM_GRID = [(500, 3, 4, K) for K in (50, 100, 200, 400)]  # k only shapes the data
LM_METHODS = ["gls_iterate", "default"]


# ---------------------------------------------------------------------------
# data and reference formulas (numpy only)
# ---------------------------------------------------------------------------
def simulate_sur(N, K, p, k, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((K, N, p))
    B = rng.standard_normal((K, p))
    F = rng.standard_normal((K, k))
    D = rng.uniform(0.5, 1.5, size=K)
    E = rng.standard_normal((N, k)) @ F.T + rng.standard_normal((N, K)) * np.sqrt(D)
    Y = np.einsum("knp,kp->nk", X, B) + E
    return X, Y, B, F, D


def nll_per_row(R, F, D):
    """0.5[K log 2pi + log|Sigma| + tr(Sigma^-1 R^T R)/N], Sigma = F F^T + diag(D).

    Woodbury: Sigma^-1 = D^-1 - D^-1 F C^-1 F^T D^-1, C = I + F^T D^-1 F, and
    log|Sigma| = log|D| + log|C|. No K x K matrix is formed.
    """
    import numpy as np

    N, K = R.shape
    Dinv = 1.0 / D
    FD = F * Dinv[:, None]  # D^-1 F  (K, k)
    C = np.eye(F.shape[1]) + F.T @ FD
    L = np.linalg.cholesky(C)
    RD = R * Dinv[None, :]  # R D^-1
    T = np.linalg.solve(L, (R @ FD).T)  # L^-1 F^T D^-1 R^T  (k, N)
    quad = float(np.sum(RD * R)) - float(np.sum(T * T))
    logdet = float(np.sum(np.log(D))) + 2.0 * float(np.sum(np.log(np.diag(L))))
    return 0.5 * (K * np.log(2.0 * np.pi) + logdet + quad / N)


def batched_ols(X, Yt):
    import numpy as np

    gram = X.transpose(0, 2, 1) @ X
    rhs = Yt[:, None, :] @ X
    return np.linalg.solve(gram, rhs.transpose(0, 2, 1))


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ---------------------------------------------------------------------------
# one cell, in a child process
# ---------------------------------------------------------------------------
def run_cell(args):
    if args.mem_limit_gb > 0:
        lim = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    import numpy as np

    N, K, p, k = args.N, args.K, args.p, args.k
    out = dict(peer=args.peer, method=args.method, N=N, K=K, p=p, k=k,
               threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"))
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [(d.get("internal_api"), d.get("num_threads"))
                       for d in threadpool_info()]
    except ImportError:
        out["blas"] = "threadpoolctl not installed"

    X, Y, B_true, F_true, D_true = simulate_sur(N, K, p, k, seed=args.seed)
    Yt = np.ascontiguousarray(Y.T)
    if args.save_npz:
        np.savez(args.save_npz, X=X, Y=Y, B_true=B_true, F_true=F_true,
                 D_true=D_true, seed=args.seed)

    ols_times = []
    for _ in range(args.ols_repeats):
        t0 = time.perf_counter()
        B_ols = batched_ols(X, Yt)
        ols_times.append(time.perf_counter() - t0)
    out["ols_s"] = min(ols_times)
    out["rss_before_fit_mb"] = maxrss_mb()

    fit_times, build_times = [], []
    t_start = time.perf_counter()
    while True:
        if args.peer == "alsgls":
            import alsgls

            out["peer_version"] = importlib.metadata.version("alsgls")
            Xs = [X[j] for j in range(K)]
            t0 = time.perf_counter()
            B_list, F, D, _mem, info = alsgls.als_gls(Xs, Y, k)
            fit_times.append(time.perf_counter() - t0)
        else:
            import linearmodels
            from linearmodels.system import SUR

            out["peer_version"] = importlib.metadata.version("linearmodels")
            t0 = time.perf_counter()
            mod = SUR({f"y{j}": (Y[:, j], X[j]) for j in range(K)})
            t1 = time.perf_counter()
            if args.method == "gls_iterate":
                res = mod.fit(method="gls", iterate=True)
            else:
                res = mod.fit()
            t2 = time.perf_counter()
            build_times.append(t1 - t0)
            fit_times.append(t2 - t1)
        spent = time.perf_counter() - t_start
        if len(fit_times) >= args.fit_repeats or spent + fit_times[-1] > args.repeat_budget_s:
            break

    out["fit_s"] = min(fit_times)
    out["fit_runs"] = len(fit_times)
    out["fit_all_s"] = fit_times
    out["ratio_fit_over_ols"] = out["fit_s"] / out["ols_s"]
    out["rss_peak_mb"] = maxrss_mb()

    if args.peer == "alsgls":
        out["sweeps"] = len(info["nll_trace"]) - 1
        out["cg_iters_final"] = info["cg"]["iterations"] if info["cg"] else None
        out["sigma_lbfgs_iters"] = int(sum(info["sigma_iters"]))
        Bhat = np.stack([b.ravel() for b in B_list])  # (K, p)
        R = Y - np.einsum("knp,kp->nk", X, Bhat)
        out["nll_own_formula"] = nll_per_row(R, F, D)
        out["nll_peer_reported"] = float(info["nll_trace"][-1])
        out["nll_trace"] = [float(v) for v in info["nll_trace"]]
        R_true = Y - np.einsum("knp,kp->nk", X, B_true)
        out["nll_true_params"] = nll_per_row(R_true, F_true, D_true)
        R_ols = Y - np.einsum("knp,kp->nk", X, B_ols[:, :, 0])
        out["nll_ols_resid_diagD"] = nll_per_row(
            R_ols, np.zeros((K, 1)), np.var(R_ols, axis=0))
        out["coef_rmse_vs_true"] = float(np.sqrt(np.mean((Bhat - B_true) ** 2)))
        out["coef_rmse_ols_vs_true"] = float(
            np.sqrt(np.mean((B_ols[:, :, 0] - B_true) ** 2)))
    else:
        out["build_s"] = min(build_times)
        out["iterations"] = int(res.iterations)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------
def launch(base, extra_env, timeout_s):
    env = dict(os.environ, **extra_env)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *base]
    t0 = time.perf_counter()
    try:
        cp = subprocess.run(cmd, env=env, capture_output=True, text=True,
                            timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": f"skipped: exceeded {timeout_s:.0f} s wall"}
    for line in cp.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r.pop("threads", None)
            r["status"] = "ok"
            r["cell_wall_s"] = time.perf_counter() - t0
            return r
    tail = (cp.stderr or cp.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"status": f"failed rc={cp.returncode}: {tail[0][:160]}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=["alsgls", "linearmodels"], required=True)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="als")
    ap.add_argument("--N", type=int)
    ap.add_argument("--K", type=int)
    ap.add_argument("--p", type=int)
    ap.add_argument("--k", type=int)
    ap.add_argument("--cells", default=None,
                    help="override grid: 'N,p,k,K;N,p,k,K;...'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ols-repeats", type=int, default=7)
    ap.add_argument("--fit-repeats", type=int, default=3)
    ap.add_argument("--repeat-budget-s", type=float, default=20.0,
                    help="stop repeating a fit once another would exceed this")
    ap.add_argument("--cell-timeout-s", type=float, default=180.0)
    ap.add_argument("--mem-limit-gb", type=float, default=12.0,
                    help="RLIMIT_AS for each child (0 = none)")
    ap.add_argument("--single-thread-K", default="1000",
                    help="comma list of K also run with OPENBLAS_NUM_THREADS=1 "
                         "(alsgls peer only; '' for none)")
    ap.add_argument("--save-npz", default=None)
    ap.add_argument("--save-cell", default="500,3,4,1000",
                    help="N,p,k,K of the cell whose data goes to --cell-npz")
    ap.add_argument("--cell-npz", default="/tmp/peer_cell.npz")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    if args.child:
        run_cell(args)
        return

    if args.cells:
        grid = [tuple(int(v) for v in c.split(",")) for c in args.cells.split(";")]
    else:
        grid = ALSGLS_GRID if args.peer == "alsgls" else LM_GRID
    methods = ["als"] if args.peer == "alsgls" else LM_METHODS
    single_K = {int(v) for v in args.single_thread_K.split(",") if v.strip()}
    save_cell = tuple(int(v) for v in args.save_cell.split(","))

    jobs = []
    for (N, p, k, K) in grid:
        for m in methods:
            threads = [None]
            if args.peer == "alsgls" and K in single_K:
                threads.append("1")
            for th in threads:
                jobs.append((N, p, k, K, m, th))

    results = []
    hdr = (f"{'method':<12}{'N':>6}{'p':>3}{'k':>3}{'K':>6}{'thr':>5}"
           f"{'fit_s':>10}{'ols_ms':>9}{'ratio':>9}{'rss_pre':>9}{'rss_pk':>9}"
           f"{'iters':>14}  status")
    print(hdr, flush=True)
    for (N, p, k, K, m, th) in jobs:
        base = ["--peer", args.peer, "--method", m, "--N", str(N), "--K", str(K),
                "--p", str(p), "--k", str(k), "--seed", str(args.seed),
                "--ols-repeats", str(args.ols_repeats),
                "--fit-repeats", str(args.fit_repeats),
                "--repeat-budget-s", str(args.repeat_budget_s),
                "--mem-limit-gb", str(args.mem_limit_gb)]
        if (N, p, k, K) == save_cell and th is None and m == methods[0]:
            base += ["--save-npz", args.cell_npz]
        env = {"OPENBLAS_NUM_THREADS": th} if th else {}
        r = launch(base, env, args.cell_timeout_s)
        th = th or os.environ.get("OPENBLAS_NUM_THREADS")
        r.update(dict(method=m, N=N, p=p, k=k, K=K, threads=th or "default"))
        results.append(r)
        if r["status"] == "ok":
            if args.peer == "alsgls":
                it = f"{r['sweeps']}sw/{r['cg_iters_final']}cg"
            else:
                it = f"{r['iterations']}"
            print(f"{m:<12}{N:>6}{p:>3}{k:>3}{K:>6}{th or 'def':>5}"
                  f"{r['fit_s']:>10.3f}{r['ols_s'] * 1e3:>9.2f}"
                  f"{r['ratio_fit_over_ols']:>9.0f}{r['rss_before_fit_mb']:>9.0f}"
                  f"{r['rss_peak_mb']:>9.0f}{it:>14}  ok", flush=True)
            if "build_s" in r:
                print(f"{'':<12}  (SUR(...) construction {r['build_s']:.3f} s, "
                      f"not in fit_s)", flush=True)
        else:
            print(f"{m:<12}{N:>6}{p:>3}{k:>3}{K:>6}{th or 'def':>5}"
                  f"{'':>63}  {r['status']}", flush=True)
        if (args.peer == "alsgls" and r["status"] == "ok"
                and (N, p, k, K) == save_cell and "nll_own_formula" in r):
            nll = {key: r[key] for key in
                   ("nll_own_formula", "nll_peer_reported", "nll_true_params",
                    "nll_ols_resid_diagD", "nll_trace", "sweeps",
                    "coef_rmse_vs_true", "coef_rmse_ols_vs_true", "peer_version")}
            nll["cell"] = dict(N=N, p=p, k=k, K=K, seed=args.seed,
                               npz=args.cell_npz)
            print("NLL " + json.dumps(nll), flush=True)
            with open(os.path.splitext(args.cell_npz)[0] + "_alsgls220_nll.json",
                      "w") as fh:
                json.dump(nll, fh, indent=1)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
