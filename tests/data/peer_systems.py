"""The real systems of the peer references (``peer_references.json``,
``systemfit_references.json``), shared by their generator and
``tests/test_peer_references.py``.

Each system is read from its stored CSV (``<name>_data.csv``, fingerprinted by
sha256 in the reference files) and built here, so the generator and the tests
fit exactly the same numbers.  The intercept is the regressor ``const`` (a
column of ones, not in the CSV); parameter names are ``<label>_<regressor>``.
``make_systemfit_references.R`` builds the same equations in R.

- ``french``: Fama-French portfolios (linearmodels.datasets.french), monthly
  1949-01..2017-03, N = 819, eight equations with different factor sets
  (CAPM, three-factor, four-factor), excess returns (portfolio minus RF);
  clusters: calendar year (one-way), year x calendar month (two-way).
- ``wage``: linearmodels.datasets.wage_panel (Vella-Verbeek), one wage equation
  per year 1980-1987 (K = 8), one row per man (N = 545); clusters: occupation
  in 1980 (one-way) and occupation in 1980 x occupation in 1987 (two-way; with
  9 groups per dimension and P = 64 this two-way covariance is indefinite and some
  of linearmodels' standard errors are NaN).
- ``interest``: statsmodels' interest_inflation (German quarterly inflation Dp
  and interest rate R, 1972Q2-1998Q4), a *recursive* system: R on current Dp.
  N = 106 after the lag; clusters: calendar year (one-way), year x quarter
  (two-way).
- ``kmenta``: Kmenta's supply and demand for food (R systemfit ``data(Kmenta)``,
  N = 20); both equations have the dependent variable ``consump``, so the
  unrestricted likelihood is unbounded (no ML estimate).
- ``electricity``: Nerlove's 1955 US electricity firms (R AER
  ``data(Electricity1955)``, N = 159; ``labor``, ``capital``, ``fuel`` are the
  factor prices):
  translog cost-share equations for labour and capital (fuel dropped, the shares
  sum to one), prices relative to the fuel price: identical designs, with the
  symmetry restriction ``labor_lpk = capital_lpl``.

Needs pandas.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

FRENCH_FACTORS = {
    "S1V1": ["MktRF", "SMB", "HML"],
    "S1V5": ["MktRF", "SMB", "HML"],
    "S5V1": ["MktRF", "SMB", "HML"],
    "S5V5": ["MktRF", "SMB", "HML"],
    "S3M1": ["MktRF", "SMB", "HML", "Mom"],
    "S3M5": ["MktRF", "SMB", "HML", "Mom"],
    "NoDur": ["MktRF"],
    "Enrgy": ["MktRF"],
}
WAGE_YEARS = list(range(1980, 1988))
WAGE_REGRESSORS = ["const", "educ", "black", "hisp", "exper", "expersq", "married", "union"]

# Restrictions in the wald_test string syntax; the generator turns them into (R, q).
RESTRICTIONS = {
    "french": ["S1V1_SMB = S1V5_SMB", "S5V1_SMB = S5V5_SMB", "NoDur_MktRF = 1"],
    "wage": ([f"y{y}_educ = y1980_educ" for y in WAGE_YEARS[1:]]
             + [f"y{y}_union = y1980_union" for y in WAGE_YEARS[1:]]),
    "interest": ["Dp_R_l1 = 0"],
    "kmenta": [],
    "electricity": ["labor_lpk = capital_lpl"],
}

DESCRIPTIONS = {
    "french": "Fama-French portfolios (linearmodels.datasets.french, monthly "
              "1949-01..2017-03): excess returns of 8 portfolios on CAPM, 3- and "
              "4-factor designs",
    "wage": "linearmodels.datasets.wage_panel (Vella and Verbeek 1998, NLSY men): one "
            "log-wage equation per year 1980-1987, rows = 545 men",
    "interest": "statsmodels.datasets.interest_inflation (Lutkepohl: West German "
                "quarterly inflation Dp and interest rate R, 1972Q2-1998Q4): a "
                "recursive system, R on current Dp",
    "kmenta": "Kmenta (1986) supply and demand for food, R systemfit data(Kmenta): "
              "both equations explain consump",
    "electricity": "Nerlove (1963) US electricity firms in 1955 (R AER "
                   "data(Electricity1955)): translog cost shares of "
                   "labour and capital, prices relative to fuel",
}


def sha256(path: Path) -> str:
    """The sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def csv_path(name: str) -> Path:
    return HERE / f"{name}_data.csv"


def _exog(d, cols, names=None):
    import pandas as pd

    X = pd.concat([pd.Series(1.0, index=d.index, name="const"),
                   *[d[c].astype(float) for c in cols]], axis=1)
    X.columns = ["const"] + list(names if names is not None else cols)
    return X


def _french(d):
    eqs = {}
    for port, facs in FRENCH_FACTORS.items():
        y = (d[port] - d["RF"]).rename(f"{port} - RF")
        eqs[port] = (y, _exog(d, facs))
    ym = np.column_stack([d["month"].str[:4].astype(int), d["month"].str[5:].astype(int)])
    return eqs, {"oneway": ym[:, 0], "twoway": ym}


def _wage(d):
    eqs = {}
    common = ["educ", "black", "hisp"]
    for yr in WAGE_YEARS:
        cols = common + [f"{v}_{yr}" for v in ("exper", "expersq", "married", "union")]
        eqs[f"y{yr}"] = (d[f"lwage_{yr}"].astype(float),
                         _exog(d, cols, WAGE_REGRESSORS[1:]))
    occ = d[["occupation_1980", "occupation_1987"]].to_numpy().astype(np.int64)
    return eqs, {"oneway": occ[:, 0], "twoway": occ}


def _interest(d):
    d = d.copy()
    d["Dp_l1"] = d["Dp"].shift(1)
    d["R_l1"] = d["R"].shift(1)
    for q in (2, 3, 4):
        d[f"q{q}"] = (d["quarter"] == q).astype(float)
    d = d.iloc[1:].reset_index(drop=True)
    eqs = {
        "Dp": (d["Dp"], _exog(d, ["Dp_l1", "R_l1", "q2", "q3", "q4"])),
        "R": (d["R"], _exog(d, ["Dp", "R_l1"])),
    }
    yq = d[["year", "quarter"]].to_numpy().astype(np.int64)
    return eqs, {"oneway": yq[:, 0], "twoway": yq}


def _kmenta(d):
    eqs = {
        "demand": (d["consump"], _exog(d, ["price", "income"])),
        "supply": (d["consump"], _exog(d, ["price", "farmPrice", "trend"])),
    }
    return eqs, {}


def _electricity(d):
    d = d.copy()
    d["lpl"] = np.log(d["labor"] / d["fuel"])
    d["lpk"] = np.log(d["capital"] / d["fuel"])
    d["lq"] = np.log(d["output"])
    eqs = {
        "labor": (d["laborshare"], _exog(d, ["lpl", "lpk", "lq"])),
        "capital": (d["capitalshare"], _exog(d, ["lpl", "lpk", "lq"])),
    }
    return eqs, {}


BUILDERS = {"french": _french, "wage": _wage, "interest": _interest,
            "kmenta": _kmenta, "electricity": _electricity}
CLUSTERS = {"french": ("year", "year x calendar month"),
            "wage": ("occupation_1980", "occupation_1980 x occupation_1987"),
            "interest": ("year", "year x quarter")}
TIME_SERIES = {"french": True, "wage": False, "interest": True, "kmenta": False,
               "electricity": False}
ML_EXISTS = {"french": True, "wage": True, "interest": True, "kmenta": False,
             "electricity": True}


def load(name: str):
    """``(equations, clusters)`` of a stored system.

    ``equations`` is ``{label: (dependent Series, exog DataFrame with 'const')}``;
    ``clusters`` maps ``"oneway"`` to an (N,) int array and ``"twoway"`` to an
    (N, 2) int array where the system has groups (``CLUSTERS`` names them).
    """
    import pandas as pd

    d = pd.read_csv(csv_path(name))
    return BUILDERS[name](d)


def param_names(equations) -> list[str]:
    return [f"{lab}_{c}" for lab, (_, X) in equations.items() for c in X.columns]
