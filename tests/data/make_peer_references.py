"""Stored linearmodels SUR references on five real systems -> ``peer_references.json``.

Not part of the test suite (its name does not start with ``test_``). Needs
linearmodels and statsmodels, which alsgls does not depend on. From the
repository root, in the reference environment of README.md here:

    python tests/data/make_peer_references.py --export-data   # (re)write the CSVs of
                                                                # french, wage, interest
    Rscript tests/data/make_systemfit_references.R --export-data   # kmenta, electricity
    python tests/data/make_peer_references.py

The systems are defined once, in ``peer_systems.py``; every model is fitted on the
data as read back from the stored CSVs, whose sha256 is recorded. Besides
linearmodels' numbers the file holds ``numpy_checks``: the formulas written in
``conventions`` recomputed independently in numpy from the data and the stored
params, as normwise relative differences (about 1e-12 or below confirms each).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peer_systems as ps

# linearmodels' iterated GLS stops when the RMS change of the stacked params < tol.
# The wage system's rounding floor is about 3e-12 (at 1e-12 its restricted
# iteration wanders to the iteration limit), so it uses 1e-11.
TOL = {"wage": 1e-11}
DEFAULT_TOL = 1e-12
ITER_LIMIT = 10_000
# explicit bandwidths per time-series system: (bartlett, parzen, qs)
BANDWIDTHS = {"french": (6, 8, 3.5), "interest": (4, 5, 2.5)}

CONVENTIONS = {
    "sigma": "Sigma-hat = E'E/N (divisor N). debiased=True multiplies Sigma_ij by "
             "N/sqrt((N-p_i)(N-p_j)) (p_i regressors of equation i) for EVERY Sigma "
             "linearmodels forms: the first-step Sigma that weights the GLS solve (so "
             "the two-step coefficients change), every iteration's Sigma, the Sigma of "
             "the final residuals used in the unadjusted covariance, and res.sigma. "
             "debiased=True thus equals Stata's sureg, dfk and systemfit's default "
             "methodResidCov='geomean' for the weights.",
    "res_sigma": "res.sigma is the Sigma that weighted the last GLS solve: the "
                 "first-step (OLS-residual) Sigma for two-step, the previous iterate's "
                 "Sigma for iterated GLS (equal to E'E/N at the final params up to the "
                 "convergence tolerance), and E'E/N at the OLS params for method='ols' "
                 "(scaled as above when debiased).",
    "twostep": "fit() (method='gls', iterate=False): equation-by-equation OLS (with "
               "constraints: the restricted LS with Sigma = I), Sigma from its "
               "residuals, then one GLS solve. iterated (iterate=True) repeats the "
               "GLS solve with Sigma from the latest residuals until the RMS change "
               "of the stacked params < tol; at the fixed point with debiased=False "
               "it is the Gaussian ML estimate (restricted ML with constraints).",
    "unadjusted": "GLS: A^-1 X'(S^-1 F S^-1 (x) I)X A^-1, A = X'(S^-1 (x) I)X, S = "
                  "the weighting Sigma (res.sigma), F = Sigma of the final residuals for "
                  "iterated GLS and F = S for two-step; so two-step unadjusted = A^-1 "
                  "with the first-step Sigma. No further scaling: with debiased=True "
                  "the dfk scaling acts only through S and F. OLS: (X'X)^-1 X'(S (x) "
                  "I)X (X'X)^-1 with S = E'E/N at the OLS params (dfk-scaled when "
                  "debiased), whose diagonal blocks are s_ii (X_i'X_i)^-1.",
    "scores": "robust/kernel/clustered use the scores g_t (one row per observation, "
              "P columns): block i of g_t = x_it' (S^-1 e_t)_i for GLS, with e_t the "
              "residuals at the reported params and S the weighting Sigma; x_it' e_ti "
              "for OLS. cov = A^-1 (N Omega) A^-1 with Omega the (N-divided) "
              "covariance of the scores: robust Omega = G'G/N.",
    "debiased_sandwich": "robust, kernel and clustered with debiased=True: the "
                         "covariance element (a, b), a in equation i and b in equation "
                         "j, is multiplied by sqrt(N/(N-p_i)) sqrt(N/(N-p_j)) (besides "
                         "the dfk Sigma in the weights). unadjusted has no such "
                         "factor.",
    "kernel": "Omega = (Gamma_0 + sum_{l>=1} w_l (Gamma_l + Gamma_l')), Gamma_l = "
              "sum_t g_t g_{t-l}'/N (no centering). bartlett w_l = 1 - l/(int(bw)+1); "
              "parzen z = l/(int(bw)+1), w = 1-6z^2+6z^3 (z<=0.5), 2(1-z)^3 (z>0.5); "
              "qs (all lags, bw used as a float) z = 6 pi (l/bw)/5, w = 3(sin z/z - "
              "cos z)/z^2. bartlett and parzen truncate the bandwidth to an integer.",
    "kernel_bandwidth": "automatic bandwidth (Newey-West 1994) from the scalar series "
                        "x_t = sum_c g_tc/sd_c, sd_c = the (ddof 0) standard deviation "
                        "of score column c: sigma_j = sum_{t>j} x_t x_{t-j}/N for j = "
                        "0..n, n = ceil(4 (N/100)^a); s0 = sigma_0 + 2 sum_{j>=1} "
                        "sigma_j, sq = 2 sum_{j>=1} j^q sigma_j; bw = min(ceil(c "
                        "((sq/s0)^2)^(1/(2q+1)) N^(1/(2q+1))), N-1); (q, c, a) = (1, "
                        "1.1447, 2/9) bartlett, (2, 2.6614, 4/25) parzen, (2, 1.3221, "
                        "2/25) qs. The scores (and thus the bandwidth) are the "
                        "unrestricted P columns even with constraints, and depend on "
                        "the weighting Sigma and the residuals of the fit.",
    "clustered": "one-way: Omega = sum_g s_g s_g'/N, s_g = sum of g_t over group g; "
                 "group_debias=True multiplies it by G/(G-1) (N-1)/N. two-way: Omega_1 "
                 "+ Omega_2 - Omega_12 with Omega_12 over the intersection groups, each "
                 "term scaled by its own G/(G-1) (N-1)/N when group_debias. debiased "
                 "adds the per-equation sqrt(N/(N-p_i)) sqrt(N/(N-p_j)) factor of the "
                 "sandwich.",
    "constraints": "R beta = q enters through a null-space basis T of R and a "
                   "particular solution a: beta = T gamma + a. Restricted estimates "
                   "minimise the (S-weighted) LS criterion over gamma; the first step "
                   "of two-step and iterated GLS is the restricted LS with Sigma = I "
                   "(numpy_checks.restricted_first_step). Every covariance becomes T "
                   "(T'AT)^-1 T' [T'..T-projected meat] (T'AT)^-1 T', which equals the "
                   "bread A^-1 - A^-1 R'(R A^-1 R')^-1 R A^-1 around the unprojected "
                   "meat (numpy_checks.restricted_bread). SEs of parameters that a "
                   "restriction fixes are 0 up to rounding.",
    "llf": "linearmodels reports no log-likelihood for SUR. llf_profiled = -(N/2)(K "
           "log 2 pi + log det Sigma_r + K) with Sigma_r = E'E/N at the params; "
           "llf_at_sigma_used = the Gaussian log-likelihood at (params, res.sigma). "
           "They agree at the ML estimate.",
    "standard_errors": "normal reference distribution; std_errors = sqrt(diag(cov)).",
}


# -- data export (once) -------------------------------------------------------

def export_data() -> None:
    """Write french, wage and interest CSVs from the packages' shipped data sets."""
    import statsmodels.api as sm
    from linearmodels.datasets import french, wage_panel

    f = french.load()
    cols = ["MktRF", "SMB", "HML", "Mom", "RF", *ps.FRENCH_FACTORS]
    out = f[cols].copy()
    out.insert(0, "month", f["dates"].dt.strftime("%Y-%m"))
    out.to_csv(ps.csv_path("french"), index=False)

    w = wage_panel.load().sort_values(["nr", "year"])
    fixed = w.groupby("nr")[["educ", "black", "hisp"]]
    assert (fixed.nunique() == 1).all().all()
    wide = fixed.first().astype(int)
    for v in ("lwage", "exper", "expersq", "married", "union", "occupation"):
        p = w.pivot(index="nr", columns="year", values=v)
        p.columns = [f"{v}_{y}" for y in p.columns]
        wide = wide.join(p)
    wide = wide.reset_index()
    assert len(wide) == 545 and not wide.isna().any().any()
    wide.to_csv(ps.csv_path("wage"), index=False)

    ii = sm.datasets.interest_inflation.load_pandas().data
    ii = ii.astype({"year": int, "quarter": int})
    ii.to_csv(ps.csv_path("interest"), index=False)


# -- restrictions ---------------------------------------------------------------

_TERM = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*$|^\s*(?P<num>[-+]?\d+(\.\d*)?)\s*$")


def restriction_matrix(strings, names):
    """``R`` (DataFrame, columns = names) and ``q`` (Series) of 'a = b' / 'a = 1'."""
    R = np.zeros((len(strings), len(names)))
    q = np.zeros(len(strings))
    for i, s in enumerate(strings):
        lhs, rhs = s.split("=")
        for side, sign in ((lhs, 1.0), (rhs, -1.0)):
            m = _TERM.match(side)
            if m is None:
                raise ValueError(f"cannot parse {s!r}")
            if m.group("name"):
                R[i, names.index(m.group("name"))] += sign
            else:
                q[i] -= sign * float(m.group("num"))
    return pd.DataFrame(R, columns=names), pd.Series(q)


# -- numpy formulas (independent of linearmodels) --------------------------------

def _blocks(Xs):
    p = [X.shape[1] for X in Xs]
    return p, np.concatenate([[0], np.cumsum(p)])


def bread_matrix(Xs, W):
    """sum_ij W_ij X_i'X_j as a P x P matrix."""
    _, c = _blocks(Xs)
    A = np.zeros((c[-1], c[-1]))
    for i, Xi in enumerate(Xs):
        for j, Xj in enumerate(Xs):
            A[c[i]:c[i + 1], c[j]:c[j + 1]] = W[i, j] * Xi.T @ Xj
    return A


def scores(Xs, E, W):
    """(N, P) scores: block i = X_i * (E W)[:, i]."""
    EW = E @ W
    return np.hstack([X * EW[:, [i]] for i, X in enumerate(Xs)])


def kernel_weights(kernel, bw, N):
    lags = np.arange(N)
    if kernel == "bartlett":
        m = int(bw)
        w = np.where(lags <= m, 1 - lags / (m + 1), 0.0)
    elif kernel == "parzen":
        z = lags / (int(bw) + 1)
        w = np.where(z <= 0.5, 1 - 6 * z**2 + 6 * z**3, np.where(z < 1, 2 * (1 - z)**3, 0.0))
    else:
        z = 6 * np.pi * (lags / bw) / 5
        w = np.ones(N)
        w[1:] = 3 / z[1:]**2 * (np.sin(z[1:]) / z[1:] - np.cos(z[1:]))
    return w


def auto_bandwidth(G, kernel):
    q, c, a = {"bartlett": (1, 1.1447, 2 / 9), "parzen": (2, 2.6614, 4 / 25),
               "qs": (2, 1.3221, 2 / 25)}[kernel]
    x = (G / G.std(0)).sum(1)
    N = len(x)
    n = int(np.ceil(4 * (N / 100) ** a))
    s = np.array([x[j:] @ x[:N - j] / N for j in range(n + 1)])
    s0 = s[0] + 2 * s[1:].sum()
    sq = 2 * np.sum(np.arange(1, n + 1) ** q * s[1:])
    return min(int(np.ceil(c * ((sq / s0) ** 2) ** (1 / (2 * q + 1)) * N ** (1 / (2 * q + 1)))),
               N - 1)


def omega(G, cov_type, *, kernel=None, bw=None, clusters=None, group_debias=False):
    N = G.shape[0]
    if cov_type == "robust":
        return G.T @ G / N
    if cov_type == "kernel":
        w = kernel_weights(kernel, bw, N)
        S = G.T @ G
        for lag in range(1, N):
            if w[lag] != 0:
                Gl = G[lag:].T @ G[:-lag]
                S += w[lag] * (Gl + Gl.T)
        return S / N

    def one(g):
        _, inv = np.unique(g, return_inverse=True)
        Sg = np.zeros((inv.max() + 1, G.shape[1]))
        np.add.at(Sg, inv, G)
        n_groups = Sg.shape[0]
        scale = n_groups / (n_groups - 1) * (N - 1) / N if group_debias else 1.0
        return scale * Sg.T @ Sg / N

    if clusters.ndim == 1:
        return one(clusters)
    both = np.unique(clusters, axis=0, return_inverse=True)[1].ravel()
    return one(clusters[:, 0]) + one(clusters[:, 1]) - one(both)


def restricted_bread(A, R):
    """A^-1 - A^-1 R'(R A^-1 R')^-1 R A^-1."""
    Ai = np.linalg.inv(A)
    AiR = Ai @ R.T
    return Ai - AiR @ np.linalg.solve(R @ AiR, AiR.T)


def dfk(N, p):
    s = np.sqrt(N / (N - np.asarray(p, float)))
    return np.outer(s, s)


def gls_solve(Xs, Y, W, R=None, q=None):
    """argmin of the W-weighted LS criterion, subject to R b = q (KKT system)."""
    A = bread_matrix(Xs, W)
    YW = Y @ W
    b = np.concatenate([X.T @ YW[:, i] for i, X in enumerate(Xs)])
    if R is None:
        return np.linalg.solve(A, b)
    m = R.shape[0]
    KKT = np.block([[A, R.T], [R, np.zeros((m, m))]])
    return np.linalg.solve(KKT, np.concatenate([b, q]))[:A.shape[0]]


def residuals(Xs, Y, beta):
    _, c = _blocks(Xs)
    return np.column_stack([Y[:, i] - X @ beta[c[i]:c[i + 1]] for i, X in enumerate(Xs)])


def llf_profiled(E):
    N, K = E.shape
    S = E.T @ E / N
    return float(-N / 2 * (K * np.log(2 * np.pi) + np.linalg.slogdet(S)[1] + K))


def llf_at(E, S):
    N, K = E.shape
    return float(-N / 2 * (K * np.log(2 * np.pi) + np.linalg.slogdet(S)[1])
                 - 0.5 * np.trace(np.linalg.solve(S, E.T @ E)))


def rel(a, b):
    """Normwise relative difference over the finite entries (NaN where a variance is
    negative must be NaN in both, else inf)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# -- linearmodels fits -----------------------------------------------------------

def cov_variants(name, clusters, restricted=False):
    """``{key: (cov_type, cov_config)}`` for a system."""
    out = {"unadjusted": ("unadjusted", {}), "robust": ("robust", {})}
    if ps.TIME_SERIES[name]:
        bb, bp, bq = BANDWIDTHS[name]
        out[f"kernel_bartlett_bw{bb}"] = ("kernel", {"kernel": "bartlett", "bandwidth": bb})
        out["kernel_bartlett_auto"] = ("kernel", {"kernel": "bartlett"})
        if not restricted:
            out[f"kernel_parzen_bw{bp}"] = ("kernel", {"kernel": "parzen", "bandwidth": bp})
            out["kernel_parzen_auto"] = ("kernel", {"kernel": "parzen"})
            out[f"kernel_qs_bw{bq}"] = ("kernel", {"kernel": "qs", "bandwidth": bq})
            out["kernel_qs_auto"] = ("kernel", {"kernel": "qs"})
    for way in ("oneway", "twoway"):
        if way in clusters:
            out[f"clustered_{way}"] = ("clustered", {"clusters": way})
            if not restricted:
                out[f"clustered_{way}_gd"] = ("clustered", {"clusters": way,
                                                            "group_debias": True})
    return out


def estimators(name):
    """``{key: (fit kwargs, restricted)}``."""
    it = dict(method="gls", iterate=True, tol=TOL.get(name, DEFAULT_TOL), iter_limit=ITER_LIMIT)
    out = {"ols": (dict(method="ols"), False),
           "ols_debiased": (dict(method="ols", debiased=True), False),
           "twostep": (dict(method="gls"), False),
           "twostep_debiased": (dict(method="gls", debiased=True), False)}
    if ps.ML_EXISTS[name]:
        out["iterated"] = (it, False)
    if ps.RESTRICTIONS[name]:
        out["restricted_ols"] = (dict(method="ols"), True)
        out["restricted_twostep"] = (dict(method="gls"), True)
        if ps.ML_EXISTS[name]:
            out["restricted_iterated"] = (it, True)
    return out


def _call_text(kw, cov_type, cfg):
    parts = [f"{k}={v!r}" for k, v in kw.items()] + [f"cov_type={cov_type!r}"]
    parts += [f"{k}={v!r}" if k != "clusters" else f"clusters=<{v}>" for k, v in cfg.items()]
    return "fit(" + ", ".join(parts) + ")"


def fit_system(name):
    from linearmodels.system import SUR

    eqs, clusters = ps.load(name)
    names = ps.param_names(eqs)
    Xs = [X.to_numpy(float) for _, X in eqs.values()]
    Y = np.column_stack([y.to_numpy(float) for y, _ in eqs.values()])
    N, K = Y.shape
    p = [X.shape[1] for X in Xs]
    R = q = None
    if ps.RESTRICTIONS[name]:
        R, q = restriction_matrix(ps.RESTRICTIONS[name], names)

    def model(restricted):
        m = SUR({k: {"dependent": y, "exog": X} for k, (y, X) in eqs.items()})
        assert list(m.param_names) == names, (m.param_names, names)
        if restricted:
            m.add_constraints(R, q)
        return m

    fits, checks = {}, {}
    for est, (kw, restricted) in estimators(name).items():
        entry = {"fit_kwargs": kw, "restricted": restricted, "cov": {}}
        params = None
        for ckey, (cov_type, cfg) in cov_variants(name, clusters, restricted).items():
            cfg_run = dict(cfg)
            if "clusters" in cfg_run:
                cfg_run["clusters"] = clusters[cfg["clusters"]]
            if kw.get("debiased"):
                cfg_run["debiased"] = True
            call_kw = {k: v for k, v in kw.items() if k != "debiased"}
            with warnings.catch_warnings(record=True) as wrec:
                warnings.simplefilter("always")
                res = model(restricted).fit(cov_type=cov_type, **call_kw, **cfg_run)
            b = res.params.to_numpy()
            if params is None:
                params = b
                E = res.resids.to_numpy()
                S_used = np.asarray(res.sigma, float)
                entry.update({
                    "params": b.tolist(),
                    "sigma_used": S_used.tolist(),
                    "sigma_final_resid": (E.T @ E / N).tolist(),
                    "llf_profiled": llf_profiled(E),
                    "llf_at_sigma_used": llf_at(E, S_used),
                    "iterations": int(res.iterations),
                    "method_reported": res.method,
                })
            else:
                assert np.array_equal(b, params), (name, est, ckey)
            c = {"cov_type": cov_type,
                 "cov_config": {k: v for k, v in cfg.items()},
                 "debiased": bool(kw.get("debiased", False)),
                 "call": _call_text(kw, cov_type, cfg),
                 "std_errors": res.std_errors.to_numpy().tolist(),
                 "warnings": [str(w.message) for w in wrec]}
            if cov_type == "kernel":
                c["bandwidth_used"] = float(res.cov_config["bandwidth"])
            entry["cov"][ckey] = c
        fits[est] = entry

    checks = numpy_checks(name, fits, Xs, Y, p, clusters, R, q)
    return {
        "name": name,
        "description": ps.DESCRIPTIONS[name],
        "csv": ps.csv_path(name).name,
        "csv_sha256": ps.sha256(ps.csv_path(name)),
        "nobs": N,
        "n_equations": K,
        "time_series": ps.TIME_SERIES[name],
        "ml_exists": ps.ML_EXISTS[name],
        "equations": [{"label": lab, "dependent": y.name, "regressors": list(X.columns)}
                      for lab, (y, X) in eqs.items()],
        "param_names": names,
        "clusters": {k: ps.CLUSTERS[name][k == "twoway"] for k in clusters},
        "restrictions": ps.RESTRICTIONS[name],
        "restriction_R": None if R is None else R.to_numpy().tolist(),
        "restriction_q": None if q is None else q.to_numpy().tolist(),
        "fits": fits,
        "numpy_checks": checks,
    }


def numpy_checks(name, fits, Xs, Y, p, clusters, R, q):
    """Recompute linearmodels' numbers from the formulas in CONVENTIONS."""
    N, K = Y.shape
    I = np.eye(K)
    out = {}
    # debiased two-step: dfk Sigma from OLS residuals weights the GLS solve
    b_ols = gls_solve(Xs, Y, I)
    E0 = residuals(Xs, Y, b_ols)
    S_dfk = E0.T @ E0 / N * dfk(N, p)
    f = fits["twostep_debiased"]
    b = gls_solve(Xs, Y, np.linalg.inv(S_dfk))
    out["twostep_debiased_params"] = rel(f["params"], b)
    out["twostep_debiased_sigma_used"] = rel(f["sigma_used"], S_dfk)
    A = bread_matrix(Xs, np.linalg.inv(S_dfk))
    out["twostep_debiased_unadjusted_se"] = rel(f["cov"]["unadjusted"]["std_errors"],
                                                np.sqrt(np.diag(np.linalg.inv(A))))
    E = residuals(Xs, Y, b)
    G = scores(Xs, E, np.linalg.inv(S_dfk))
    adj = np.repeat(np.repeat(dfk(N, p), p, 0), p, 1)
    Ai = np.linalg.inv(A)
    V = adj * (N * Ai @ omega(G, "robust") @ Ai)
    out["twostep_debiased_robust_se"] = rel(f["cov"]["robust"]["std_errors"],
                                            np.sqrt(np.diag(V)))
    # plain two-step and OLS
    f = fits["twostep"]
    S0 = E0.T @ E0 / N
    W0 = np.linalg.inv(S0)
    b = gls_solve(Xs, Y, W0)
    out["twostep_params"] = rel(f["params"], b)
    E = residuals(Xs, Y, b)
    A = bread_matrix(Xs, W0)
    Ai = np.linalg.inv(A)
    G = scores(Xs, E, W0)
    for ckey, c in f["cov"].items():
        if c["cov_type"] == "unadjusted":
            V = Ai
        else:
            cfg = dict(c["cov_config"])
            if "clusters" in cfg:
                cfg["clusters"] = clusters[cfg["clusters"]]
            if c["cov_type"] == "kernel":
                bw = cfg.pop("bandwidth", None)
                if bw is None:
                    bw = auto_bandwidth(G, cfg["kernel"])
                    out[f"twostep_{ckey}_bandwidth"] = rel(c["bandwidth_used"], bw)
                cfg["bw"] = bw
            V = N * Ai @ omega(G, c["cov_type"], **cfg) @ Ai
        out[f"twostep_{ckey}_se"] = rel(c["std_errors"], np.sqrt(np.diag(V)))
    f = fits["ols"]
    out["ols_params"] = rel(f["params"], b_ols)
    XtXi = np.linalg.inv(bread_matrix(Xs, I))
    V = XtXi @ bread_matrix(Xs, S0) @ XtXi
    out["ols_unadjusted_se"] = rel(f["cov"]["unadjusted"]["std_errors"], np.sqrt(np.diag(V)))
    V = N * XtXi @ omega(scores(Xs, E0, I), "robust") @ XtXi
    out["ols_robust_se"] = rel(f["cov"]["robust"]["std_errors"], np.sqrt(np.diag(V)))
    # iterated: the fixed point of the GLS step (ML)
    if "iterated" in fits:
        f = fits["iterated"]
        bi = np.asarray(f["params"])
        Ei = residuals(Xs, Y, bi)
        Wi = np.linalg.inv(Ei.T @ Ei / N)
        out["iterated_fixed_point_step"] = rel(gls_solve(Xs, Y, Wi), bi)
        se = np.sqrt(np.diag(np.linalg.inv(bread_matrix(Xs, Wi))))
        out["iterated_unadjusted_se"] = rel(f["cov"]["unadjusted"]["std_errors"], se)
    if R is not None:
        Rn, qn = R.to_numpy(), q.to_numpy()
        f = fits["restricted_ols"]
        br = gls_solve(Xs, Y, I, Rn, qn)
        out["restricted_ols_params"] = rel(f["params"], br)
        # first step of restricted two-step: restricted (Sigma = I) LS, not plain OLS
        Er = residuals(Xs, Y, br)
        Wr = np.linalg.inv(Er.T @ Er / N)
        b_r = gls_solve(Xs, Y, Wr, Rn, qn)
        b_u = gls_solve(Xs, Y, W0, Rn, qn)
        f = fits["restricted_twostep"]
        out["restricted_first_step"] = {"restricted_ls": rel(f["params"], b_r),
                                        "unrestricted_ols": rel(f["params"], b_u)}
        A = bread_matrix(Xs, Wr)
        B = restricted_bread(A, Rn)
        out["restricted_bread"] = rel(f["cov"]["unadjusted"]["std_errors"],
                                      np.sqrt(np.abs(np.diag(B))))
        Eb = residuals(Xs, Y, b_r)
        V = N * B @ omega(scores(Xs, Eb, Wr), "robust") @ B
        out["restricted_twostep_robust_se"] = rel(f["cov"]["robust"]["std_errors"],
                                                  np.sqrt(np.abs(np.diag(V))))
        if "restricted_iterated" in fits:
            f = fits["restricted_iterated"]
            bi = np.asarray(f["params"])
            Ei = residuals(Xs, Y, bi)
            out["restricted_iterated_fixed_point_step"] = rel(
                gls_solve(Xs, Y, np.linalg.inv(Ei.T @ Ei / N), Rn, qn), bi)
    return out


def main(argv) -> None:
    if "--export-data" in argv:
        export_data()
        print("wrote", *(ps.csv_path(n).name for n in ("french", "wage", "interest")))
        return
    systems = {}
    for name in ps.BUILDERS:
        if not ps.csv_path(name).exists():
            print(f"skip {name}: {ps.csv_path(name).name} missing")
            continue
        systems[name] = fit_system(name)
        worst = max(v for k, v in systems[name]["numpy_checks"].items()
                    if k != "restricted_first_step")
        print(f"{name}: {len(systems[name]['fits'])} estimators, worst numpy check "
              f"{worst:.2e}")
    out = {
        "description": "linearmodels SUR on five real systems (tests/data/peer_systems.py); "
                       "param order = param_names; std_errors per cov variant",
        "generator": "tests/data/make_peer_references.py",
        "settings": {"iterated_tol": {n: TOL.get(n, DEFAULT_TOL) for n in systems},
                     "iter_limit": ITER_LIMIT,
                     "bandwidths": BANDWIDTHS},
        "conventions": CONVENTIONS,
        "versions": {"python": platform.python_version(),
                     **{k: md.version(k) for k in ("linearmodels", "statsmodels", "numpy",
                                                   "pandas", "scipy")}},
        "systems": systems,
    }
    path = HERE / "peer_references.json"
    text = json.dumps(out, indent=1)
    # one line per array of numbers
    text = re.sub(r"\[\s*([-0-9.eE+,\sNa]+?)\s*\]",
                  lambda m: "[" + re.sub(r"\s+", "", m.group(1)).replace(",", ", ") + "]", text)
    json.loads(text)
    path.write_text(text + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
