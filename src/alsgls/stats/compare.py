"""Several fitted SUR systems side by side: :func:`compare`.

``alsgls.compare({"rank 1": res1, "full": res2})`` lines the coefficients of
the fits up by parameter name (``<label>_<regressor>``; a parameter a fit
lacks is left blank) with one column per fit, and adds the rows users report
for a system: the estimation method, the factor rank, the covariance
estimator, N and the log-likelihood.  Like linearmodels' ``compare`` for its
IV and panel results (linearmodels has none for systems), the second line of
each coefficient is a standard error, t statistic or p-value, stars are
optional, and the table renders as text, HTML and LaTeX.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from .. import _labels
from .results import SURResults
from .summary import ColumnTable, _table_notes, coefficient_cells, method_text, normalise_stat

__all__ = ["compare", "SystemComparison"]


class SystemComparison:
    """Fitted SUR systems side by side (build it with :func:`compare`).

    Parameters
    ----------
    results : mapping of str to SURResults, or sequence of SURResults
        The fits; a sequence is named ``"Model 0"``, ``"Model 1"``, ...
    stat : {"std_err", "t", "p_value"} or None, default "std_err"
        The line under each coefficient (linearmodels' spellings
        ``"std_errors"``, ``"tstats"``, ``"pvalues"`` are accepted); None: none.
    stars : bool, default False
        Append ``*``, ``**``, ``***`` for p-values below 0.1, 0.05, 0.01.

    Attributes
    ----------
    results : dict of str to SURResults
    stat : str or None
    stars : bool

    Raises
    ------
    TypeError
        When a result is not a :class:`~alsgls.SURResults` (the message names
        it), or ``stars`` is not a bool.
    ValueError
        For no results, duplicate names or an unknown ``stat``.
    """

    def __init__(self, results: Mapping | Sequence, *, stat: str | None = "std_err",
                 stars: bool = False) -> None:
        if isinstance(results, Mapping):
            named = {str(k): v for k, v in results.items()}
            if len(named) != len(results):
                raise ValueError("results has names that coincide as strings; rename them")
        elif isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
            named = {f"Model {i}": r for i, r in enumerate(results)}
        else:
            raise TypeError("results must be a mapping {name: SURResults} or a list of "
                            f"SURResults, got {type(results).__name__}")
        if not named:
            raise ValueError("results is empty: give at least one fitted SURResults")
        for name, r in named.items():
            if not isinstance(r, SURResults):
                raise TypeError(f"results[{name!r}] is a {type(r).__name__}, not a fitted "
                                "SURResults")
        if not isinstance(stars, (bool, np.bool_)):
            raise TypeError(f"stars must be True or False, got {stars!r}")
        self.results: dict[str, SURResults] = named
        self.stat = normalise_stat(stat)
        self.stars = bool(stars)

    @property
    def models(self) -> list[str]:
        """The column names."""
        return list(self.results)

    @property
    def param_names(self) -> list[str]:
        """Every parameter of any fit, in order of first appearance."""
        seen: dict[str, None] = {}
        for r in self.results.values():
            seen.update(dict.fromkeys(r.param_names))
        return list(seen)

    def _aligned(self, attr: str) -> np.ndarray:
        """``getattr(res, attr)`` of every fit on :attr:`param_names` (P_all, M), NaN gaps."""
        names = self.param_names
        pos = {n: i for i, n in enumerate(names)}
        out = np.full((len(names), len(self.results)), np.nan)
        for m, r in enumerate(self.results.values()):
            rows = [pos[n] for n in r.param_names]
            out[rows, m] = np.asarray(getattr(r, attr), dtype=np.float64)
        return out

    def _frame(self, attr: str) -> Any:
        return _labels._frame(self._aligned(attr), self.param_names, self.models)

    @property
    def params(self) -> Any:
        """Coefficients (P_all, M): parameters as rows, fits as columns; NaN where absent."""
        return self._frame("params")

    @property
    def std_errors(self) -> Any:
        """Standard errors (P_all, M)."""
        return self._frame("bse")

    bse = std_errors

    @property
    def tstats(self) -> Any:
        """t (or z) statistics (P_all, M)."""
        return self._frame("tvalues")

    @property
    def pvalues(self) -> Any:
        """p-values (P_all, M)."""
        return self._frame("pvalues")

    def _series(self, values: list, name: str) -> Any:
        arr = np.asarray(values, dtype=object if isinstance(values[0], str) else None)
        return _labels._series(arr, self.models, name)

    @property
    def llf(self) -> Any:
        """Log-likelihood of each fit (M,)."""
        return self._series([float(r.llf) for r in self.results.values()], "llf")

    @property
    def nobs(self) -> Any:
        """Rows N of each fit (M,)."""
        return self._series([int(r.nobs) for r in self.results.values()], "nobs")

    @property
    def rank(self) -> Any:
        """Factor rank k of each fit (M,)."""
        return self._series([int(r.rank) for r in self.results.values()], "rank")

    @property
    def method(self) -> Any:
        """Estimation method of each fit (M,)."""
        return self._series([method_text(r) for r in self.results.values()], "method")

    @property
    def cov_type(self) -> Any:
        """Covariance estimator of each fit (M,), ``" (debiased)"`` appended when debiased."""
        return self._series([r.cov_type + (" (debiased)" if r.debiased else "")
                             for r in self.results.values()], "cov_type")

    @property
    def system_rsquared(self) -> Any:
        """System R^2 of each fit (M,)."""
        return self._series([float(r.system_rsquared) for r in self.results.values()],
                            "system_rsquared")

    def summary(self) -> ColumnTable:
        """The comparison table: coefficients (with the :attr:`stat` line), then
        method, rank, covariance estimator, N, log-likelihood and system R^2."""
        b, se, t, p = (self._aligned(a) for a in ("params", "bse", "tvalues", "pvalues"))
        body = []
        for i, name in enumerate(self.param_names):
            cells = [coefficient_cells(b[i, m], se[i, m], t[i, m], p[i, m], self.stat,
                                       self.stars) if np.isfinite(b[i, m]) else ("", "")
                     for m in range(len(self.results))]
            body.append((name, [c[0] for c in cells]))
            if self.stat is not None:
                body.append(("", [c[1] or "" for c in cells]))
        res = list(self.results.values())
        K = [r.problem.K for r in res]
        fit_rows = [("Method", [method_text(r) for r in res]),
                    ("Factor rank", [f"{r.rank} (full)" if r.rank == k - 1 else str(r.rank)
                                     for r, k in zip(res, K)]),
                    ("Cov. estimator", [r.cov_type + (" (debiased)" if r.debiased else "")
                                        for r in res]),
                    ("Equations (K)", [str(k) for k in K]),
                    ("N", [str(r.nobs) for r in res]),
                    ("Log-likelihood", [f"{r.llf:.6g}" for r in res]),
                    ("System R-squared", [f"{r.system_rsquared:.4f}" for r in res])]
        stat_name = "t" if any(r.debiased for r in res) else "z"
        notes = _table_notes(self.stat, self.stars, stat_name)
        return ColumnTable("Model comparison", self.models, [body, fit_rows], notes)

    def as_text(self) -> str:
        return self.summary().as_text()

    def as_html(self) -> str:
        return self.summary().as_html()

    def as_latex(self) -> str:
        return self.summary().as_latex()

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def _repr_html_(self) -> str:
        return self.as_html()


def compare(results: Mapping | Sequence, *, stat: str | None = "std_err",
            stars: bool = False) -> SystemComparison:
    """Put several fitted SUR systems side by side.

    Parameters
    ----------
    results : mapping of str to SURResults, or sequence of SURResults
        The fits (e.g. ranks, methods or covariance estimators to compare);
        a sequence is named ``"Model 0"``, ``"Model 1"``, ...
    stat : {"std_err", "t", "p_value"} or None, default "std_err"
        The line under each coefficient; None: coefficients only.
    stars : bool, default False
        Significance stars at 10 %, 5 % and 1 %.

    Returns
    -------
    SystemComparison
        ``params``, ``std_errors``, ``tstats``, ``pvalues`` (parameters as
        rows, fits as columns, NaN where a fit lacks a parameter), ``llf``,
        ``nobs``, ``rank``, ``method``, ``cov_type``; ``summary()`` and
        ``str()``, ``as_html()``, ``as_latex()`` render the table.

    Notes
    -----
    linearmodels' ``compare`` (IV and panel models) prints t statistics by
    default; here the default is standard errors, the usual line of a
    published table.

    Examples
    --------
    >>> from alsgls import SUR, compare, datasets
    >>> mod = SUR(datasets.grunfeld_equations(), rank="full")
    >>> cmp = compare({"ML": mod.fit(), "robust": mod.fit(cov_type="robust")})
    >>> cmp.params.shape
    (15, 2)
    """
    return SystemComparison(results, stat=stat, stars=stars)
