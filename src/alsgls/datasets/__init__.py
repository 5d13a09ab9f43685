"""Small real data sets shipped with alsgls, for examples and documentation.

=========  ======================================================================
grunfeld   Grunfeld (1958) investment data, 5 firms x 20 years (1935-1954), as
           shipped by statsmodels: columns ``<FIRM>_invest``, ``_value``,
           ``_capital`` for GM, CH, GE, WE, US.  The classic SUR example
           (Zellner 1962; Greene, *Econometric Analysis*, ch. 10).
fringe     Vella (1993) fringe-benefit data, 616 workers (``hrearn``,
           ``hrbens`` and regressors), as in linearmodels' SUR examples.
munnell    Munnell (1990) public capital data aggregated to 9 regions x 17
           years (Greene, Example 10.1): ``<REG>_lnGSP``, ``_lnPC``, ``_lnHWY``,
           ``_lnWATER``, ``_lnUTIL``, ``_lnEMP``, ``_UNEMP``.
=========  ======================================================================
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from .._labels import require_pandas

__all__ = ["load", "grunfeld_equations", "NAMES"]

NAMES = ("grunfeld", "fringe", "munnell")
GRUNFELD_FIRMS = ("GM", "CH", "GE", "WE", "US")


def load(name: str) -> Any:
    """Load a shipped data set as a pandas DataFrame.

    Parameters
    ----------
    name : {"grunfeld", "fringe", "munnell"}

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> from alsgls import datasets
    >>> datasets.load("grunfeld").shape
    (20, 16)
    """
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; choose one of {NAMES}")
    pd = require_pandas("alsgls.datasets")
    with resources.files(__name__).joinpath(f"{name}.csv").open("r") as fh:
        return pd.read_csv(fh)


def grunfeld_equations() -> dict:
    """The five-firm Grunfeld SUR as ``{firm: (invest, [const, value, capital])}``.

    Examples
    --------
    >>> from alsgls import SUR, datasets
    >>> res = SUR(datasets.grunfeld_equations(), rank=2).fit()
    >>> list(res.params.index[:3])
    ['GM_const', 'GM_value', 'GM_capital']
    """
    pd = require_pandas("alsgls.datasets")
    df = load("grunfeld")
    eqs = {}
    for firm in GRUNFELD_FIRMS:
        exog = pd.DataFrame({"const": 1.0, "value": df[f"{firm}_value"],
                             "capital": df[f"{firm}_capital"]})
        eqs[firm] = (df[f"{firm}_invest"], exog)
    return eqs
