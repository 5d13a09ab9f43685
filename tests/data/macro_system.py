"""The five-equation recursive macro system on statsmodels' ``macrodata``
(``macro_data.csv``), shared by its reference generator and the tests.

A Taylor rule with *current* inflation and growth, consumption on current
growth, investment on the current bill rate: dependent variables of some
equations are regressors of others (a recursive system), whose unrestricted
SUR likelihood has a finite maximum.  Needs pandas.
"""

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "macro_data.csv"


def equations():
    """``{label: (dependent Series, exog DataFrame)}`` on the 201 complete quarters."""
    import pandas as pd

    d = pd.read_csv(DATA)
    d["gdpg"] = 400 * np.log(d["realgdp"]).diff()
    d["cg"] = 400 * np.log(d["realcons"]).diff()
    d["ig"] = 400 * np.log(d["realinv"]).diff()
    for c in ["infl", "gdpg", "tbilrate", "unemp", "cg", "ig"]:
        d[c + "_l1"] = d[c].shift(1)
    d = d.dropna().reset_index(drop=True)

    def exog(cols):
        return pd.concat([pd.Series(1.0, index=d.index, name="const"), d[cols]], axis=1)

    return {
        "infl": (d["infl"], exog(["infl_l1", "unemp_l1"])),
        "gdpg": (d["gdpg"], exog(["gdpg_l1", "tbilrate_l1"])),
        "taylor": (d["tbilrate"], exog(["tbilrate_l1", "infl", "gdpg"])),
        "cons": (d["cg"], exog(["cg_l1", "gdpg"])),
        "inv": (d["ig"], exog(["ig_l1", "tbilrate"])),
    }
