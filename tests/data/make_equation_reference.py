#!/usr/bin/env python
"""Store linearmodels' equation-level SUR results for the alsgls tests.

Not part of the test suite (its name does not start with ``test_``) and not
imported by it.  It needs linearmodels, which alsgls does not depend on.  Run
it from the repository root in a separate environment:

    python3 -m venv /tmp/lmref
    /tmp/lmref/bin/pip install linearmodels statsmodels pandas numpy scipy
    /tmp/lmref/bin/python tests/data/make_equation_reference.py

It reads ``grunfeld_data.csv`` and ``fringe_data.csv`` next to itself (the
data of ``make_reference.py``) and writes ``equation_reference.json``: for
each data set and fit, every equation's coefficients, standard errors, t
statistics, p-values, 95 % intervals, R^2, adjusted R^2, degrees of freedom
and the equation F statistic (``res.equations[label].f_statistic``), with the
package versions and the SHA-256 of each CSV.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import linearmodels
import scipy
import statsmodels
from linearmodels.system import SUR

HERE = Path(__file__).resolve().parent
ITER_LIMIT = 100_000
TOL = 1e-12

SYSTEMS = {
    "grunfeld": {
        "csv": "grunfeld_data.csv",
        "equations": {f: (f"{f}_invest", ["const", f"{f}_value", f"{f}_capital"])
                      for f in ("GM", "CH", "GE", "WE", "US")},
    },
    "fringe": {
        "csv": "fringe_data.csv",
        "equations": {
            "hrearn": ("hrearn", ["const", "educ", "exper", "expersq", "union",
                                  "nrtheast", "white"]),
            "hrbens": ("hrbens", ["const", "educ", "exper", "expersq", "tenure",
                                  "tenuresq", "union", "male"]),
        },
    },
}

#: key -> keyword arguments of linearmodels' SUR.fit
FITS = {
    "gls_iterated_unadjusted": dict(method="gls", iterate=True, iter_limit=ITER_LIMIT,
                                    tol=TOL, cov_type="unadjusted"),
    "gls_iterated_robust": dict(method="gls", iterate=True, iter_limit=ITER_LIMIT,
                                tol=TOL, cov_type="robust"),
    "gls_twostep_unadjusted": dict(method="gls", iterate=False, cov_type="unadjusted"),
    "gls_twostep_robust": dict(method="gls", iterate=False, cov_type="robust"),
    "gls_twostep_unadjusted_debiased": dict(method="gls", iterate=False,
                                            cov_type="unadjusted", debiased=True),
    "ols_unadjusted": dict(method="ols", cov_type="unadjusted"),
    "ols_unadjusted_debiased": dict(method="ols", cov_type="unadjusted", debiased=True),
}


def _equations(df: pd.DataFrame, spec: dict) -> dict:
    eqs = {}
    for label, (dep, regs) in spec["equations"].items():
        X = pd.DataFrame({(r.split("_", 1)[1] if r.startswith(label + "_") else r):
                          (1.0 if r == "const" else df[r]) for r in regs}, index=df.index)
        eqs[label] = (df[dep], X)
    return eqs


def _floats(s: pd.Series) -> dict:
    return {str(k): float(v) for k, v in s.items()}


def _equation(eq) -> dict:
    f = eq.f_statistic
    ci = eq.conf_int(0.95)
    return {
        "regressors": [str(n) for n in eq.params.index],
        "params": _floats(eq.params),
        "std_errors": _floats(eq.std_errors),
        "tstats": _floats(eq.tstats),
        "pvalues": _floats(eq.pvalues),
        "conf_int_lower": _floats(ci["lower"]),
        "conf_int_upper": _floats(ci["upper"]),
        "rsquared": float(eq.rsquared),
        "rsquared_adj": float(eq.rsquared_adj),
        "nobs": int(eq.nobs),
        "df_model": int(eq.df_model),
        "df_resid": int(eq.df_resid),
        "f_statistic": {"stat": float(f.stat), "pval": float(f.pval), "df": int(f.df),
                        "df_denom": None if f.df_denom is None else int(f.df_denom),
                        "dist_name": str(f.dist_name), "null": str(f.null)},
    }


def main() -> None:
    out = {
        "description": "linearmodels' per-equation SUR results (res.equations[label])",
        "generator": "tests/data/make_equation_reference.py",
        "versions": {"python": platform.python_version(), "linearmodels": linearmodels.__version__,
                     "statsmodels": statsmodels.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "scipy": scipy.__version__,
                     "platform": sys.platform},
        "conventions": {
            "f_statistic": "Wald statistic b' V^-1 b of every coefficient but the constant, "
                           "V the equation's diagonal block of the system covariance; chi2(q), "
                           "or stat/q against F(q, K N - P) when debiased",
            "rsquared_adj": "1 - (SSR / (N - p_j)) / (TSS / (N - c_j)), c_j = 1 with a constant",
            "pvalues": "normal, or t(N - p_j) when debiased",
        },
        "fits": FITS,
        "systems": {},
    }
    for name, spec in SYSTEMS.items():
        path = HERE / spec["csv"]
        df = pd.read_csv(path)
        eqs = _equations(df, spec)
        sysout = {"csv": spec["csv"],
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                  "equations": {lab: {"dependent": dep, "regressors": regs}
                                for lab, (dep, regs) in spec["equations"].items()},
                  "fits": {}}
        for key, kwargs in FITS.items():
            res = SUR(eqs).fit(**kwargs)
            sysout["fits"][key] = {
                "iterations": int(res.iterations),
                "equations": {lab: _equation(res.equations[lab]) for lab in res.equation_labels},
            }
        out["systems"][name] = sysout
    (HERE / "equation_reference.json").write_text(json.dumps(out, indent=1, sort_keys=False)
                                                   + "\n")


if __name__ == "__main__":
    main()
