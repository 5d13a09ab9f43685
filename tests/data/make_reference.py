#!/usr/bin/env python
"""Generate stored SUR reference values from linearmodels for the alsgls tests.

This script is NOT part of the test suite and is not imported by it. It needs
linearmodels and statsmodels, which alsgls does not depend on. Run it in a
separate environment, from the repository root:

    python3 -m venv /tmp/lmref
    /tmp/lmref/bin/pip install linearmodels statsmodels pandas numpy scipy
    /tmp/lmref/bin/python tests/data/make_reference.py

It writes, next to itself, for each data set <name> in {grunfeld, fringe, munnell}:

    <name>_data.csv        the data needed to refit (one row per observation)
    <name>_reference.json  linearmodels results + independent numpy checks

Every model is fitted on the data *as read back from the CSV*, so the stored
numbers correspond exactly to the stored data (no hidden preprocessing).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import linearmodels
import scipy
import statsmodels
from linearmodels.system import SUR

OUT_DIR = Path(__file__).resolve().parent

# Tightest practical settings for iterated GLS. linearmodels stops when the
# RMS of the change in the stacked parameter vector falls below ``tol`` (or
# after ``iter_limit`` GLS steps).
ITER_LIMIT = 100_000
TOL = 1e-12

CONST = "const"  # name of the intercept regressor (column of ones, not in CSV)


# ---------------------------------------------------------------------------
# Data sets. Each builder returns (wide DataFrame, spec, meta)
#   spec: list of dicts {label, dependent: csv column,
#                        regressors: [(name, csv column or None for const)]}
# ---------------------------------------------------------------------------


def build_grunfeld():
    from statsmodels.datasets import grunfeld

    raw = grunfeld.load_pandas().data
    firms = [
        ("GM", "General Motors"),
        ("CH", "Chrysler"),
        ("GE", "General Electric"),
        ("WE", "Westinghouse"),
        ("US", "US Steel"),
    ]
    cols = {}
    years = None
    for short, firm in firms:
        sub = raw[raw["firm"] == firm].sort_values("year").reset_index(drop=True)
        assert len(sub) == 20, firm
        if years is None:
            years = sub["year"].astype(int).to_numpy()
        else:
            assert np.array_equal(years, sub["year"].astype(int).to_numpy())
        for v in ("invest", "value", "capital"):
            cols[f"{short}_{v}"] = sub[v].to_numpy(dtype=float)
    df = pd.DataFrame({"year": years, **cols})
    spec = [
        {
            "label": short,
            "dependent": f"{short}_invest",
            "regressors": [
                (CONST, None),
                ("value", f"{short}_value"),
                ("capital", f"{short}_capital"),
            ],
        }
        for short, _ in firms
    ]
    meta = {
        "description": (
            "Grunfeld investment data, 5 firms x 20 years (1935-1954), one SUR "
            "equation per firm: invest ~ 1 + value + capital (Zellner 1962 / "
            "Greene's Grunfeld SUR example)."
        ),
        "source": (
            "statsmodels.datasets.grunfeld (the 11-firm data of Grunfeld's thesis as "
            "recreated by Kleiber and Zeileis 2010, 'The Grunfeld Data at 50')"
        ),
        "firm_names": {short: firm for short, firm in firms},
        "index_column": "year",
    }
    return df, spec, meta


def build_fringe():
    from linearmodels.datasets import fringe

    raw = fringe.load()
    earn = ["educ", "exper", "expersq", "union", "nrtheast", "white"]
    bens = ["educ", "exper", "expersq", "tenure", "tenuresq", "union", "male"]
    used = ["hrearn", "hrbens"] + sorted(set(earn) | set(bens), key=(earn + bens).index)
    df = raw[used].astype(float).reset_index(drop=True)
    df.insert(0, "obs", np.arange(len(df)))
    spec = [
        {
            "label": "hrearn",
            "dependent": "hrearn",
            "regressors": [(CONST, None)] + [(v, v) for v in earn],
        },
        {
            "label": "hrbens",
            "dependent": "hrbens",
            "regressors": [(CONST, None)] + [(v, v) for v in bens],
        },
    ]
    meta = {
        "description": (
            "Fringe benefits data (Vella 1993, Wooldridge), 616 workers, 2 equations "
            "with different regressors, exactly as in the 'Iterative GLS' section of "
            "linearmodels' examples/system_examples.ipynb."
        ),
        "source": "linearmodels.datasets.fringe",
        "index_column": "obs",
    }
    return df, spec, meta


MUNNELL_REGIONS = {
    # Greene, Econometric Analysis (7th ed.), Example 10.1 / linearmodels'
    # system_examples.ipynb. Greene's list puts "AK" in CN; AK is not in the data
    # (48 contiguous states), so CN has 5 states and AR is in SO.
    "GF": ["AL", "FL", "LA", "MS"],
    "MW": ["IL", "IN", "KY", "MI", "MN", "OH", "WI"],
    "MA": ["DE", "MD", "NJ", "NY", "PA", "VA"],
    "MT": ["CO", "ID", "MT", "ND", "SD", "WY"],
    "NE": ["CT", "ME", "MA", "NH", "RI", "VT"],
    "SO": ["GA", "NC", "SC", "TN", "WV", "AR"],
    "SW": ["AZ", "NV", "NM", "TX", "UT"],
    "CN": ["IA", "KS", "MO", "NE", "OK"],
    "WC": ["CA", "OR", "WA"],
}
MUNNELL_ORDER = ["GF", "SW", "WC", "MT", "NE", "MA", "SO", "MW", "CN"]


def build_munnell():
    from linearmodels.datasets import munnell

    data = munnell.load()
    st2r = {s: r for r, states in MUNNELL_REGIONS.items() for s in states}
    data["REGION"] = data["ST_ABB"].map(st2r)
    assert data["REGION"].notna().all()
    assert data["ST_ABB"].nunique() == 48
    data["TOTAL_EMP"] = data.groupby(["REGION", "YR"])["EMP"].transform("sum")
    data["W_UNEMP"] = data["EMP"] / data["TOTAL_EMP"] * data["UNEMP"]
    agg = data.groupby(["REGION", "YR"])[
        ["GSP", "PC", "HWY", "WATER", "UTIL", "EMP", "W_UNEMP"]
    ].sum()
    cols = {}
    years = None
    regs = ["lnPC", "lnHWY", "lnWATER", "lnUTIL", "lnEMP", "UNEMP"]
    for r in MUNNELL_ORDER:
        rd = agg.loc[r].sort_index()
        if years is None:
            years = rd.index.to_numpy(dtype=int)
        cols[f"{r}_lnGSP"] = np.log(rd["GSP"].to_numpy(dtype=float))
        for v in ("PC", "HWY", "WATER", "UTIL", "EMP"):
            cols[f"{r}_ln{v}"] = np.log(rd[v].to_numpy(dtype=float))
        cols[f"{r}_UNEMP"] = rd["W_UNEMP"].to_numpy(dtype=float)
    df = pd.DataFrame({"YR": years, **cols})
    spec = [
        {
            "label": r,
            "dependent": f"{r}_lnGSP",
            "regressors": [(CONST, None)] + [(v, f"{r}_{v}") for v in regs],
        }
        for r in MUNNELL_ORDER
    ]
    meta = {
        "description": (
            "Munnell (1990) state production data aggregated to 9 regions x 17 years "
            "(1970-1986); one equation per region: lnGSP ~ 1 + lnPC + lnHWY + lnWATER "
            "+ lnUTIL + lnEMP + UNEMP (Greene 7th ed. Example 10.1, Tables 10.1-10.3)."
        ),
        "source": "linearmodels.datasets.munnell",
        "aggregation": (
            "GSP, PC, HWY, WATER, UTIL, EMP summed over the states of a region, then "
            "logged; UNEMP is the employment-weighted mean of the state rates."
        ),
        "regions": MUNNELL_REGIONS,
        "index_column": "YR",
    }
    return df, spec, meta


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def design(df: pd.DataFrame, spec):
    """Return (ys: list of (N,) arrays, xs: list of (N, k_i) arrays, lm_dict)."""
    ys, xs, eqs = [], [], {}
    n = len(df)
    for eq in spec:
        y = df[eq["dependent"]].to_numpy(dtype=float)
        names = [name for name, _ in eq["regressors"]]
        x = np.column_stack(
            [np.ones(n) if col is None else df[col].to_numpy(dtype=float)
             for _, col in eq["regressors"]]
        )
        ys.append(y)
        xs.append(x)
        eqs[eq["label"]] = {
            "dependent": pd.Series(y, name=eq["dependent"]),
            "exog": pd.DataFrame(x, columns=names),
        }
    return ys, xs, eqs


def block_diag(xs):
    n = xs[0].shape[0]
    ktot = sum(x.shape[1] for x in xs)
    out = np.zeros((n * len(xs), ktot))
    c = 0
    for i, x in enumerate(xs):
        out[i * n:(i + 1) * n, c:c + x.shape[1]] = x
        c += x.shape[1]
    return out


def resid_matrix(ys, xs, beta):
    cols, c = [], 0
    for y, x in zip(ys, xs):
        k = x.shape[1]
        cols.append(y - x @ beta[c:c + k])
        c += k
    return np.column_stack(cols)


def gls_beta(ys, xs, sigma):
    n = len(ys[0])
    X = block_diag(xs)
    Y = np.concatenate(ys)
    W = np.kron(np.linalg.inv(sigma), np.eye(n))
    A = X.T @ W @ X
    return np.linalg.solve(A, X.T @ W @ Y), A


def gaussian_llf(E):
    """llf = -(N/2) [K log(2 pi) + log det(Sigma) + K], Sigma = E'E / N (MLE)."""
    n, k = E.shape
    S = E.T @ E / n
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        return float("nan"), float(logdet), S
    return float(-0.5 * n * (k * math.log(2 * math.pi) + logdet + k)), float(logdet), S


def per_eq(values: np.ndarray, spec):
    out, c = {}, 0
    for eq in spec:
        names = [name for name, _ in eq["regressors"]]
        out[eq["label"]] = {nm: float(values[c + j]) for j, nm in enumerate(names)}
        c += len(names)
    return out


def mat(a):
    return [[float(v) for v in row] for row in np.asarray(a)]


def rel_diff(a, b):
    """max |a - b| / max |b| (normwise, robust to near-zero entries)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def lm_fit(mod, **kw):
    """Fit and capture warnings/exceptions."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = mod.fit(**kw)
            exc = None
        except Exception as e:  # noqa: BLE001 - record whatever happens
            res = None
            exc = f"{type(e).__name__}: {e}"
    msgs = [f"{w.category.__name__}: {w.message}" for w in caught]
    return res, exc, msgs


def call_str(kw):
    return "SUR(equations).fit(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"


def summarize_fit(res, kw, spec, ys, xs, exc, msgs, with_cov=False):
    out = {"call": call_str(kw), "exception": exc, "warnings": msgs}
    if res is None:
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _summarize(out, res, kw, spec, ys, xs, with_cov)
    msgs.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    return out


def _summarize(out, res, kw, spec, ys, xs, with_cov):
    beta = res.params.to_numpy()
    E = resid_matrix(ys, xs, beta)
    llf, logdet, S = gaussian_llf(E)
    out.update(
        {
            "method_reported": res.method,
            "iterations": int(res.iterations),
            "debiased": bool(res.debiased),
            "cov_estimator": str(res.cov_estimator),
            "params": per_eq(beta, spec),
            "std_errors": per_eq(res.std_errors.to_numpy(), spec),
            "param_order": list(res.params.index),
            "sigma_linearmodels": mat(res.sigma.to_numpy()),
            "sigma_mle_final_resid": mat(S),
            "logdet_sigma_mle": logdet,
            "llf_numpy": llf,
            "llf_linearmodels": None,
            "nobs_per_equation": int(E.shape[0]),
        }
    )
    if with_cov:
        out["cov_params"] = mat(res.cov.to_numpy())
    if kw.get("iterate"):
        out["converged"] = bool(res.iterations < kw["iter_limit"])


# ---------------------------------------------------------------------------
# Independent numpy checks of linearmodels' conventions
# ---------------------------------------------------------------------------


def numpy_checks(results, ys, xs):
    """Recompute linearmodels' numbers from the formulas in CONVENTIONS.

    Values are normwise relative differences max|a-b|/max|b| unless named
    otherwise; ~1e-13 means the formula is the one linearmodels uses.
    """
    checks = {}
    n = len(ys[0])
    X = block_diag(xs)

    # OLS: equation-by-equation LS, sigma = E'E/N, cov = (X'X)^-1 X'(S kron I)X (X'X)^-1
    b_ols = np.concatenate([np.linalg.lstsq(x, y, rcond=None)[0] for y, x in zip(ys, xs)])
    E0 = resid_matrix(ys, xs, b_ols)
    S0 = E0.T @ E0 / n
    xtxi = np.linalg.inv(X.T @ X)
    cov_ols = xtxi @ X.T @ np.kron(S0, np.eye(n)) @ X @ xtxi
    r = results["ols_unadjusted"]
    checks["ols_params"] = rel_diff(r.params, b_ols)
    checks["ols_sigma_vs_EtE_over_N"] = rel_diff(r.sigma, S0)
    checks["ols_unadjusted_cov_formula"] = rel_diff(r.cov, cov_ols)
    # OLS robust: scores x_it * e_it stacked per observation, divisor N, no df corr.
    scores = np.column_stack([x * E0[:, [i]] for i, x in enumerate(xs)])
    checks["ols_robust_cov_formula"] = rel_diff(
        results["ols_robust"].cov, xtxi @ (scores.T @ scores) @ xtxi
    )

    def robust(beta, S):
        E = resid_matrix(ys, xs, beta)
        _, A = gls_beta(ys, xs, S)
        Ai = np.linalg.inv(A)
        SE = E @ np.linalg.inv(S)  # row t is (S^-1 e_t)'
        g = np.column_stack([x * SE[:, [i]] for i, x in enumerate(xs)])
        return Ai @ (g.T @ g) @ Ai

    # two-step FGLS: S0 from OLS residuals, cov = (X'(S0^-1 kron I)X)^-1
    r = results["gls_twostep_unadjusted"]
    if r is not None:
        b2, A2 = gls_beta(ys, xs, S0)
        checks["twostep_params"] = rel_diff(r.params, b2)
        checks["twostep_sigma_linearmodels_vs_OLS_EtE_over_N"] = rel_diff(r.sigma, S0)
        checks["twostep_unadjusted_cov_vs_inv_XtS0invX"] = rel_diff(r.cov, np.linalg.inv(A2))
        if results["gls_twostep_robust"] is not None:
            checks["twostep_robust_cov_formula"] = rel_diff(
                results["gls_twostep_robust"].cov, robust(b2, S0)
            )

    r = results["gls_iterated_unadjusted"]
    if r is None:
        return checks
    beta = r.params.to_numpy()
    E = resid_matrix(ys, xs, beta)
    S = E.T @ E / n
    # fixed point: GLS with Sigma = E'E/N at the final residuals reproduces beta
    b_fp, A = gls_beta(ys, xs, S)
    checks["iterated_fixed_point_max_abs_param_step"] = float(np.max(np.abs(b_fp - beta)))
    checks["iterated_fixed_point_rms_param_step"] = float(np.sqrt(np.mean((b_fp - beta) ** 2)))
    checks["iterated_unadjusted_cov_vs_inv_XtSinvX_final_resid"] = rel_diff(
        r.cov, np.linalg.inv(A)
    )
    checks["iterated_sigma_linearmodels_vs_EtE_over_N_final_resid"] = rel_diff(r.sigma, S)
    if results["gls_iterated_robust"] is not None:
        checks["iterated_robust_cov_formula"] = rel_diff(
            results["gls_iterated_robust"].cov, robust(beta, S)
        )

    # independent numpy iterated FGLS from the OLS start, same stopping rule
    b = b_ols.copy()
    it = 0
    while it < ITER_LIMIT:
        Ei = resid_matrix(ys, xs, b)
        b_new, _ = gls_beta(ys, xs, Ei.T @ Ei / n)
        it += 1
        step = float(np.sqrt(np.mean((b_new - b) ** 2)))
        b = b_new
        if step < TOL:
            break
    checks["numpy_iterated_gls_iterations"] = it
    checks["numpy_iterated_gls_max_abs_param_diff_vs_linearmodels"] = float(
        np.max(np.abs(b - beta))
    )
    return checks


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

CONVENTIONS = {
    "sigma_divisor": (
        "linearmodels (debiased=False, the default) estimates Sigma = E'E / N with "
        "N = observations per equation (MLE divisor, no degrees-of-freedom "
        "correction). With debiased=True it would scale Sigma_ij by "
        "N / sqrt((N-k_i)(N-k_j)) and use that in the GLS weights; NOT used here."
    ),
    "iteration": (
        "iterate=True: start from equation-by-equation OLS residuals; each GLS step "
        "uses Sigma from the previous step's residuals. Stops when "
        "sqrt(mean((beta_new - beta_old)**2)) < tol or after iter_limit GLS steps. "
        "'iterations' counts GLS steps (1 = classic two-step FGLS). At convergence "
        "this is the Gaussian ML estimator (Oberhofer-Kmenta)."
    ),
    "reported_sigma": (
        "res.sigma is the Sigma used as GLS weight in the LAST step, i.e. E'E/N "
        "from the residuals of the previous iterate; sigma_mle_final_resid is E'E/N "
        "at the reported params. They agree to ~tol at convergence."
    ),
    "unadjusted_cov_gls": (
        "cov = A^-1 [X'(S^-1 F S^-1 kron I)X] A^-1, A = X'(S^-1 kron I)X, S = "
        "weighting Sigma, F = E'E/N at the final residuals. At convergence S = F, "
        "so cov = (X'(Sigma^-1 kron I)X)^-1 with Sigma = E'E/N. No df correction, "
        "std errors use normal (not t) reference."
    ),
    "robust_cov_gls": (
        "cov = A^-1 B A^-1 with B = sum_t g_t g_t', g_t = sum_i x_it' (S^-1 e_t)_i "
        "(per-observation stacked scores; heteroskedasticity-robust across t, "
        "arbitrary cross-equation correlation within t). No df correction "
        "(debiased=False)."
    ),
    "unadjusted_cov_ols": (
        "method='ols': cov = (X'X)^-1 X'(Sigma kron I)X (X'X)^-1, Sigma = E'E/N of "
        "OLS residuals; the diagonal blocks are (e_i'e_i/N)(X_i'X_i)^-1, i.e. no "
        "N-k_i correction (differs from statsmodels OLS bse by sqrt((N-k_i)/N))."
    ),
    "robust_cov_ols": (
        "method='ols': cov = (X'X)^-1 (sum_t s_t s_t') (X'X)^-1 with s_t the stacked "
        "x_it * e_it (HC0 plus cross-equation covariance). No df correction."
    ),
    "log_likelihood": (
        "linearmodels reports no log-likelihood for SUR (llf_linearmodels = null). "
        "llf_numpy = -(N/2)[K log(2 pi) + log det(Sigma) + K], Sigma = E'E/N at the "
        "reported params, K = number of equations, N = observations per equation "
        "(the concentrated Gaussian log-likelihood)."
    ),
    "parameter_layout": (
        "param_order / cov_params follow linearmodels: equations in 'equation_labels' "
        "order, regressors in the listed order within each equation, names "
        "'<label>_<regressor>'."
    ),
}


def run_dataset(name, builder):
    df, spec, meta = builder()
    csv_path = OUT_DIR / f"{name}_data.csv"
    df.to_csv(csv_path, index=False)  # shortest round-trip repr: exact on reload
    # refit from what was written
    df = pd.read_csv(csv_path)
    ys, xs, eqs = design(df, spec)
    mod = SUR(eqs)

    fits = {}
    kw_it = dict(method="gls", iterate=True, iter_limit=ITER_LIMIT, tol=TOL,
                 cov_type="unadjusted", debiased=False)
    kw_it_rob = dict(kw_it, cov_type="robust")
    kw_2s = dict(method="gls", iterate=False, cov_type="unadjusted", debiased=False)
    kw_2s_rob = dict(kw_2s, cov_type="robust")
    kw_ols = dict(method="ols", cov_type="unadjusted", debiased=False)
    kw_ols_rob = dict(kw_ols, cov_type="robust")

    results = {}
    for key, kw in [
        ("gls_iterated_unadjusted", kw_it),
        ("gls_iterated_robust", kw_it_rob),
        ("gls_twostep_unadjusted", kw_2s),
        ("gls_twostep_robust", kw_2s_rob),
        ("ols_unadjusted", kw_ols),
        ("ols_robust", kw_ols_rob),
    ]:
        res, exc, msgs = lm_fit(mod, **kw)
        results[key] = res
        fits[key] = summarize_fit(res, kw, spec, ys, xs, exc, msgs,
                                  with_cov=(key == "gls_iterated_unadjusted"))
    if results["gls_iterated_unadjusted"] is not None:
        fits["gls_iterated_unadjusted"]["iterations_by_tol"] = iterations_by_tol(mod)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = numpy_checks(results, ys, xs)

    extra = {
        "design_condition_numbers": {
            eq["label"]: float(np.linalg.cond(x)) for eq, x in zip(spec, xs)
        }
    }
    if name == "grunfeld":
        extra["published_check_theil_ge_we"] = theil_check(df, spec)
        extra["published_check_systemfit_5firm_twostep"] = systemfit_check(
            fits["gls_twostep_unadjusted"])
    if results["gls_iterated_unadjusted"] is None:
        extra["iterated_gls_trace"] = trace_iterations(mod, spec, ys, xs)

    ref = {
        "name": name,
        **meta,
        "csv": csv_path.name,
        "nobs_per_equation": len(df),
        "equation_labels": [eq["label"] for eq in spec],
        "equations": [
            {
                "label": eq["label"],
                "dependent": eq["dependent"],
                "regressor_names": [nm for nm, _ in eq["regressors"]],
                "regressor_columns": [col for _, col in eq["regressors"]],
            }
            for eq in spec
        ],
        "intercept_note": (
            f"regressor '{CONST}' is a column of ones (regressor_columns entry null); "
            "it is not stored in the CSV"
        ),
        "fits": fits,
        "numpy_checks": checks,
        **extra,
        "conventions": CONVENTIONS,
        "settings": {"iter_limit": ITER_LIMIT, "tol": TOL},
        "versions": versions(),
        "generated_by": "tests/data/make_reference.py",
    }
    json_path = OUT_DIR / f"{name}_reference.json"
    json_path.write_text(json.dumps(ref, indent=1, allow_nan=True) + "\n")
    return ref


# Two-equation GE / Westinghouse SUR of Theil (1971, p. 300); the same numbers are
# printed by SAS, TSP and R systemfit (SUR, residual covariance divisor T). The GE
# and Westinghouse series are identical in Greene's and Kleiber-Zeileis' versions
# of the Grunfeld data, so this subset is a textbook check of the data + setup.
THEIL_PUBLISHED_TWOSTEP = {
    "GE": {"const": -27.7193, "value": 0.0383, "capital": 0.1390},
    "WE": {"const": -1.2520, "value": 0.0576, "capital": 0.0640},
}


# R systemfit, SUR with methodResidCov="noDfCor" (residual covariance divisor T),
# two-step, on the SAME statsmodels Grunfeld data (5 firms); printed to ~7
# significant digits in statsmodels' old sysreg test results
# (sysreg/tests/results/grunfeld-sur.R -> results_sysreg.py, class GrunfeldSUR).
SYSTEMFIT_5FIRM_TWOSTEP = {
    "params": {
        "CH": {"const": 0.9979992, "value": 0.06886083, "capital": 0.3083878},
        "GE": {"const": -21.1374, "value": 0.03705313, "capital": 0.1286866},
        "GM": {"const": -168.1134, "value": 0.1219063, "capital": 0.3821666},
        "US": {"const": 62.25631, "value": 0.1214024, "capital": 0.3691114},
        "WE": {"const": 1.407487, "value": 0.05635611, "capital": 0.04290209},
    },
    "variances": {
        "CH": {"const": 133.7852, "value": 0.0002886686, "capital": 0.0006704354},
        "GE": {"const": 635.1519, "value": 0.0001458083, "capital": 0.0004741078},
        "GM": {"const": 8026.788, "value": 0.0004695548, "capital": 0.001079986},
        "US": {"const": 11369.52, "value": 0.002739435, "capital": 0.0134136},
        "WE": {"const": 39.2104, "value": 0.0001316823, "capital": 0.001730147},
    },
}


def systemfit_check(fit_twostep):
    p, se = fit_twostep["params"], fit_twostep["std_errors"]
    ref = SYSTEMFIT_5FIRM_TWOSTEP
    rp = max(abs(p[e][v] - x) / abs(x) for e, d in ref["params"].items() for v, x in d.items())
    rv = max(abs(se[e][v] ** 2 - x) / abs(x)
             for e, d in ref["variances"].items() for v, x in d.items())
    return {
        "reference": ref,
        "max_rel_diff_params": rp,
        "max_rel_diff_variances": rv,
        "matches_to_printed_precision": bool(rp < 1e-5 and rv < 1e-5),
    }


def theil_check(df, spec):
    sub = [eq for eq in spec if eq["label"] in ("GE", "WE")]
    ys, xs, eqs = design(df, sub)
    mod = SUR(eqs)
    out = {"published_twostep_params": THEIL_PUBLISHED_TWOSTEP}
    for key, kw in [
        ("twostep", dict(method="gls", iterate=False, cov_type="unadjusted")),
        ("iterated", dict(method="gls", iterate=True, iter_limit=ITER_LIMIT, tol=TOL,
                          cov_type="unadjusted")),
    ]:
        res = mod.fit(**kw)
        out[key] = {
            "call": call_str(kw),
            "iterations": int(res.iterations),
            "params": per_eq(res.params.to_numpy(), sub),
            "std_errors": per_eq(res.std_errors.to_numpy(), sub),
            "llf_numpy": gaussian_llf(resid_matrix(ys, xs, res.params.to_numpy()))[0],
        }
    got = out["twostep"]["params"]
    out["twostep_matches_published_to_4_decimals"] = bool(all(
        abs(round(got[e][v], 4) - p) < 1e-9
        for e, d in THEIL_PUBLISHED_TWOSTEP.items() for v, p in d.items()
    ))
    return out


def iterations_by_tol(mod):
    """GLS steps linearmodels needs for a range of tolerances (OLS start)."""
    out = {}
    for tol in (1e-4, 1e-6, 1e-8, 1e-10, 1e-11, 1e-12):
        res, exc, _ = lm_fit(mod, method="gls", iterate=True, iter_limit=ITER_LIMIT,
                             tol=tol, cov_type="unadjusted", debiased=False)
        out[f"{tol:.0e}"] = None if res is None else int(res.iterations)
    return out


def trace_iterations(mod, spec, ys, xs):
    """When iterated GLS fails, record the path: one fit per iter_limit value."""
    trace = []
    for lim in range(1, 40):
        kw = dict(method="gls", iterate=True, iter_limit=lim, tol=TOL,
                  cov_type="unadjusted", debiased=False)
        res, exc, msgs = lm_fit(mod, **kw)
        row = {"iter_limit": lim, "exception": exc, "warnings": msgs}
        if res is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                beta = res.params.to_numpy()
                E = resid_matrix(ys, xs, beta)
                llf, logdet, S = gaussian_llf(E)
                ev = np.linalg.eigvalsh(S)
                row.update(
                    {
                        "iterations": int(res.iterations),
                        "llf_numpy": llf,
                        "logdet_sigma_mle": logdet,
                        "sigma_min_eig": float(ev[0]),
                        "sigma_max_eig": float(ev[-1]),
                        "max_abs_param": float(np.max(np.abs(beta))),
                        "any_nan_std_error": bool(np.isnan(res.std_errors).any()),
                    }
                )
            msgs.extend(f"{w.category.__name__}: {w.message}" for w in caught)
        trace.append(row)
        if exc is not None:
            break
    return trace


def versions():
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "statsmodels": statsmodels.__version__,
        "linearmodels": linearmodels.__version__,
        "platform": platform.platform(),
    }


def main():
    for name, builder in [
        ("grunfeld", build_grunfeld),
        ("fringe", build_fringe),
        ("munnell", build_munnell),
    ]:
        ref = run_dataset(name, builder)
        it = ref["fits"]["gls_iterated_unadjusted"]
        print(
            f"{name}: N={ref['nobs_per_equation']} K={len(ref['equation_labels'])} "
            f"iterated: iterations={it.get('iterations')} converged={it.get('converged')} "
            f"exception={it['exception']} llf={it.get('llf_numpy')}"
        )
        for k, v in ref["numpy_checks"].items():
            print(f"    {k}: {v}")
    print("written to", OUT_DIR, file=sys.stderr)


if __name__ == "__main__":
    main()
