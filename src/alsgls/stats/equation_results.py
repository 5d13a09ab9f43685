"""Equation-level results of a fitted SUR system: ``res.equations[label]``.

An :class:`EquationResults` holds one equation's coefficients, standard
errors, tests, intervals, R^2, adjusted R^2 and the equation F statistic, as
linearmodels' ``res.equations[label]`` offers them.  It is a view of the
parent :class:`~alsgls.SURResults`: nothing is copied, and statistics are
computed on first use (one equation's covariance block, its residual row).
:class:`EquationMap` is the read-only mapping ``res.equations``.  The
system-wide tables (``summary_frame``, ``params_table``) are built in
:mod:`alsgls.stats.summary`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import numpy as np
from scipy import stats

from .. import _labels
from .hypothesis import TestResult, critical_value
from .summary import EquationTable, Summary, format_number, method_text

__all__ = ["EquationResults", "EquationMap", "SINGULAR_RTOL"]

#: relative eigenvalue below which a covariance block counts as singular (F statistic)
SINGULAR_RTOL = 1e-12


class EquationResults:
    """Results of one equation of a fitted SUR system (a lazy view of the system's).

    Parameters
    ----------
    results : SURResults
        The fitted system.
    position : int
        The equation's position ``j`` (0-based) among the model's equations.
    equation : Equation, optional
        The model's equation record at ``position`` (looked up if omitted).

    Attributes
    ----------
    label : str
        The equation's label (linearmodels' ``equation_label`` is an alias).
    dependent : str
        Name of the dependent variable.
    exog_names : list of str
        The regressors' names (without the ``<label>_`` prefix of the system's
        parameter names).
    position : int
    results : SURResults

    Notes
    -----
    Every statistic is the system's, restricted to the equation: ``cov_params``
    is the equation's diagonal block of the system covariance (the ``cov_type``
    and ``debiased`` of the results; never ``(A_jj)^-1``), so the standard
    errors, t statistics, p-values and intervals equal the system's ones for
    these coefficients.  With ``debiased`` the reference is Student t with
    ``n_j - p_j`` degrees of freedom.  Only this equation's block is computed
    (``p_j`` solves with the system information) unless the system's standard
    errors are already available, in which case they are sliced.

    ``rsquared_adj = 1 - (SSR / (n_j - p_j)) / (TSS / (n_j - c_j))`` with
    ``c_j = 1`` when the equation has a constant column, else 0 (TSS then is
    not centred), as linearmodels defines it.  :attr:`f_statistic` is
    linearmodels' equation F statistic (see there).
    """

    def __init__(self, results: Any, position: int, *, equation: Any = None) -> None:
        self.results = results
        self.position = int(position)
        eq = results.model.equations[self.position] if equation is None else equation
        self.label: str = eq.label
        self.dependent: str = eq.dependent
        self.exog_names: list[str] = list(eq.exog_names)
        p = results.problem.p
        start = int(p[: self.position].sum())
        self._sl = slice(start, start + int(p[self.position]))

    def __repr__(self) -> str:
        return (f"EquationResults(label={self.label!r}, dependent={self.dependent!r}, "
                f"nobs={self.nobs}, df_model={self.df_model})")

    # -- sizes ------------------------------------------------------------------
    @property
    def equation_label(self) -> str:
        """Alias of :attr:`label` (linearmodels name)."""
        return self.label

    @property
    def param_names(self) -> list[str]:
        """The system's names ``<label>_<regressor>`` of these coefficients."""
        return self.results.param_names[self._sl]

    @cached_property
    def nobs(self) -> int:
        """Observed rows ``n_j`` of the equation (``N`` when nothing is missing)."""
        d = self.results.problem
        return int(d.N if d.O is None else np.count_nonzero(d.O[self.position]))

    @property
    def df_model(self) -> int:
        """Regressors ``p_j`` (the constant included, as linearmodels counts)."""
        return self._sl.stop - self._sl.start

    @property
    def df_resid(self) -> int:
        """``n_j - p_j``: the t degrees of freedom when debiased."""
        return self.nobs - self.df_model

    @property
    def has_constant(self) -> bool:
        """Whether a column of the design is a non-zero constant over the observed rows."""
        return bool(self._constant.any())

    @property
    def debiased(self) -> bool:
        return self.results.debiased

    @property
    def cov_type(self) -> str:
        return self.results.cov_type

    # -- coefficients ------------------------------------------------------------
    @cached_property
    def _b(self) -> np.ndarray:
        return np.asarray(self.results.params)[self._sl]

    @cached_property
    def _cov(self) -> np.ndarray:
        """The equation's diagonal block of the system covariance (p_j, p_j)."""
        P = self.results.df_model
        R = np.zeros((self.df_model, P))
        R[np.arange(self.df_model), np.arange(self._sl.start, self._sl.stop)] = 1.0
        return self.results.contrast_covariance(R)

    def _system_bse_ready(self) -> bool:
        """Whether to slice the system's standard errors rather than compute this
        block alone (``p_j`` solves): when they (or the estimator's diagonal
        blocks) are cached, or for the model-based covariance with Lanczos,
        whose blocks cost nothing beyond the Krylov basis any solve needs (one
        approximation for both views).  A sandwich block alone is ``p_j``
        applications of the same bread as the system's and one pass over the
        scores, never the ``N`` solved scores."""
        res = self.results
        done = vars(res)
        if "bse" in done or "_var" in done:
            return True
        est = done.get("cov_estimator")
        if est is not None and "diagonal_blocks" in vars(est):
            return True
        return (res.cov_type == "unadjusted"
                and getattr(res.covariance, "method", "exact") != "exact")

    @cached_property
    def _se(self) -> np.ndarray:
        if self._system_bse_ready():
            return np.asarray(self.results.bse)[self._sl]
        return np.sqrt(np.diag(self._cov))

    @cached_property
    def _df(self) -> int | None:
        return self.df_resid if self.debiased else None

    def _series(self, values: np.ndarray, name: str) -> Any:
        return _labels._series(values, self.exog_names, name)

    @property
    def params(self) -> Any:
        """Coefficients (p_j,), labelled by regressor."""
        return self._series(self._b.copy(), "params")

    @property
    def bse(self) -> Any:
        """Standard errors (p_j,)."""
        return self._series(self._se.copy(), "std_errors")

    @property
    def std_errors(self) -> Any:
        """Alias of :attr:`bse` (linearmodels name)."""
        return self.bse

    @cached_property
    def _t(self) -> np.ndarray:
        return self._b / self._se

    @property
    def tvalues(self) -> Any:
        """``params / bse`` (p_j,)."""
        return self._series(self._t.copy(), "tstats")

    @property
    def tstats(self) -> Any:
        """Alias of :attr:`tvalues` (linearmodels name)."""
        return self.tvalues

    @cached_property
    def _p(self) -> np.ndarray:
        t = np.abs(self._t)
        return 2 * (stats.t.sf(t, self._df) if self.debiased else stats.norm.sf(t))

    @property
    def pvalues(self) -> Any:
        """Two-sided p-values (normal, or t(n_j - p_j) when debiased) (p_j,)."""
        return self._series(self._p.copy(), "pvalues")

    def conf_int(self, alpha: float = 0.05) -> Any:
        """Confidence intervals (p_j, 2): columns ``lower``, ``upper``.

        Parameters
        ----------
        alpha : float, default 0.05
            In (0, 1): coverage ``1 - alpha`` (Student t with ``n_j - p_j``
            degrees of freedom when debiased, else normal).

        Returns
        -------
        DataFrame or ndarray, shape (p_j, 2)
        """
        q = critical_value(alpha, self._df)
        return _labels._frame(np.column_stack([self._b - q * self._se, self._b + q * self._se]),
                              self.exog_names, ["lower", "upper"])

    def cov_params(self) -> Any:
        """The equation's diagonal block of the system covariance (p_j, p_j).

        The ``cov_type`` and ``debiased`` scaling of the results; ``p_j``
        solves with the system information (never P x P).

        Returns
        -------
        DataFrame or ndarray, shape (p_j, p_j)
        """
        return _labels._frame(self._cov.copy(), self.exog_names, self.exog_names)

    # -- fit -------------------------------------------------------------------
    @cached_property
    def _constant(self) -> np.ndarray:
        """(p_j,) bool: the column is a non-zero constant over the observed rows
        (the rule of ``Problem.constant_columns`` on this equation only)."""
        d, j = self.results.problem, self.position
        X = d.X[j, :, : self.df_model]
        if d.O is not None:
            obs = d.O[j] > 0
            X = X[obs]
        if X.shape[0] == 0:
            return np.zeros(self.df_model, dtype=bool)
        hi, lo = X.max(axis=0), X.min(axis=0)
        return (hi == lo) & (X[0] != 0) & np.isfinite(hi)

    @cached_property
    def _weights(self) -> np.ndarray | None:
        """Entry weights ``w_i o_ij`` of this equation (N,), or None when uniform."""
        d, j = self.results.problem, self.position
        if d.O is None and d.w is None:
            return None
        w = np.ones(d.N) if d.O is None else np.asarray(d.O[j], dtype=np.float64)
        return w if d.w is None else w * d.w

    @cached_property
    def _ss(self) -> tuple[float, float]:
        """``(SSR, TSS)``, weighted; TSS centred when the equation has a constant."""
        y = self.results.problem.Yt[self.position]
        r = self.results._Rt[self.position]
        w = self._weights
        if w is None:
            c = y - y.mean() if self.has_constant else y
            return float(r @ r), float(c @ c)
        c = y - (w @ y) / w.sum() if self.has_constant else y
        return float(w @ (r * r)), float(w @ (c * c))

    @property
    def resid_ss(self) -> float:
        """Residual sum of squares (weighted by the row weights)."""
        return self._ss[0]

    @property
    def total_ss(self) -> float:
        """Total sum of squares, centred when the equation has a constant."""
        return self._ss[1]

    @property
    def rsquared(self) -> float:
        """``1 - SSR / TSS`` over the equation's observed rows (weighted)."""
        ssr, tss = self._ss
        return 1.0 - ssr / tss

    @property
    def rsquared_adj(self) -> float:
        """``1 - (SSR / (n_j - p_j)) / (TSS / (n_j - c_j))``, ``c_j = 1`` with a constant."""
        ssr, tss = self._ss
        return 1.0 - (ssr / self.df_resid) / (tss / (self.nobs - int(self.has_constant)))

    def _rows(self, Z: np.ndarray, name: str) -> Any:
        """One row (N,) of a (K, N) array as a Series over the rows used, NaN where missing."""
        obs = self.results.model.observed
        z = Z if obs is None else np.where(obs[:, self.position], Z, np.nan)
        return _labels._series(np.array(z, dtype=np.float64), _row_labels(self), name)

    @property
    def resid(self) -> Any:
        """Residuals (N,) over the rows used; NaN where the response is missing."""
        return self._rows(self.results._Rt[self.position], "resid")

    @property
    def resids(self) -> Any:
        """Alias of :attr:`resid` (linearmodels name)."""
        return self.resid

    @property
    def fittedvalues(self) -> Any:
        """Fitted values ``X_j beta_j`` (N,); NaN where the response is missing."""
        j = self.position
        return self._rows(self.results.problem.Yt[j] - self.results._Rt[j], "fitted_values")

    @property
    def fitted_values(self) -> Any:
        """Alias of :attr:`fittedvalues` (linearmodels name)."""
        return self.fittedvalues

    # -- test -------------------------------------------------------------------
    @cached_property
    def f_statistic(self) -> TestResult:
        """Wald test that every coefficient but the constant is zero (linearmodels'
        equation F statistic).

        Returns
        -------
        TestResult
            ``W = b' V^-1 b`` over the ``q`` non-constant coefficients, ``V``
            their block of :meth:`cov_params` (so robust, kernel or clustered
            when ``cov_type`` is), against chi2(q); when debiased ``W / q``
            against F(q, sum_j n_j - P) (``K N - P`` with complete data, as
            linearmodels).  NaN when the equation has no coefficient to test
            or the block is singular (e.g. fixed by a restriction).

        Notes
        -----
        The constant is the first column that is a non-zero constant over the
        equation's observed rows; linearmodels also finds a constant spanned
        by several columns (a full set of dummies), which alsgls does not
        remove.
        """
        name, null = "Equation F-statistic", "all coefficients but the constant are zero"
        keep = np.ones(self.df_model, dtype=bool)
        if self._constant.any():
            keep[int(np.argmax(self._constant))] = False
        q = int(keep.sum())
        if q == 0:
            return TestResult(name, float("nan"), float("nan"), 0, "chi2",
                              "no coefficient besides the constant")
        V = self._cov[np.ix_(keep, keep)]
        b = self._b[keep]
        d = np.sqrt(np.diag(V))
        ev = np.linalg.eigvalsh(V / np.outer(d, d)) if np.all(d > 0) else np.zeros(1)
        if ev.min() <= SINGULAR_RTOL * max(ev.max(), 1.0):
            return TestResult(name, float("nan"), float("nan"), q, "chi2",
                              null + " (not available: singular covariance)")
        W = float(b @ np.linalg.solve(V, b))
        if self.debiased:
            df2 = int(self.results.df_resid)
            return TestResult(name, W / q, float(stats.f.sf(W / q, q, df2)), (q, df2), "F", null)
        return TestResult(name, W, float(stats.chi2.sf(W, q)), q, "chi2", null)

    # -- summary ---------------------------------------------------------------
    def summary(self, alpha: float = 0.05) -> Summary:
        """The equation's own summary: fit statistics and its coefficient table.

        Parameters
        ----------
        alpha : float, default 0.05
            Confidence intervals of coverage ``1 - alpha``.

        Returns
        -------
        Summary
            With ``as_text()``, ``as_html()``, ``as_latex()``.
        """
        ci = np.asarray(self.conf_int(alpha))
        f = self.f_statistic
        res = self.results
        header = [("Equation", self.label), ("Dependent", self.dependent),
                  ("Method", method_text(res)), ("Observations", str(self.nobs)),
                  ("Regressors", str(self.df_model)), ("Cov. estimator", self.cov_type),
                  ("R-squared", f"{self.rsquared:.4f}"),
                  ("Adj. R-squared", f"{self.rsquared_adj:.4f}"),
                  ("F-statistic", format_number(f.stat)),
                  ("P-value (F-stat)", format_number(f.pvalue)),
                  ("Distribution", _distribution_text(f)),
                  ("Debiased", str(self.debiased))]
        rows = [(n, self._b[i], self._se[i], self._t[i], self._p[i], ci[i, 0], ci[i, 1])
                for i, n in enumerate(self.exog_names)]
        table = EquationTable(self.label, self.dependent, self.rsquared, rows,
                              "t" if self.debiased else "z", 1 - alpha,
                              None if res.model.observed is None else self.nobs)
        notes = [(f"Equation {self.position + 1} of {res.problem.K}; standard errors from "
                  f"the system covariance (factor rank {res.rank})."),
                 "F-statistic: Wald test that all coefficients but the constant are zero."]
        return Summary(f"SUR equation results: {self.label}", header, [table], notes)


def _distribution_text(test: TestResult) -> str:
    """``"chi2(2)"`` or ``"F(2, 85)"``."""
    df = test.df if isinstance(test.df, tuple) else (test.df,)
    return f"{test.distribution}({', '.join(f'{d:g}' for d in df)})"


def _row_labels(eq: EquationResults) -> Any:
    """Row labels of the rows used (the model's ``row_index``, or positions)."""
    idx = eq.results.model.row_index
    return np.arange(eq.results.problem.N) if idx is None else idx


class EquationMap(Mapping):
    """Read-only ``{label: EquationResults}`` of a fitted system, built on access.

    Keys are the equation labels (iteration order = the model's); an integer
    position (negative from the end) also selects an equation.

    Raises
    ------
    KeyError
        For an unknown label or a position out of range (the message lists
        the labels).
    """

    def __init__(self, results: Any) -> None:
        self._results = results
        self._equations = results.model.equations
        self._labels = [e.label for e in self._equations]
        self._pos = {lab: j for j, lab in enumerate(self._labels)}
        self._cache: dict[int, EquationResults] = {}

    def _position(self, key: Any) -> int:
        K = len(self._labels)
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            if -K <= key < K:
                return int(key) % K
            raise KeyError(f"equation position {int(key)} out of range for K={K} equations "
                           f"(labels {_shown(self._labels)})")
        if isinstance(key, str) and key in self._pos:
            return self._pos[key]
        hint = ""
        if isinstance(key, str):
            import difflib

            close = difflib.get_close_matches(key, self._labels, n=3)
            hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"no equation {key!r}: labels are {_shown(self._labels)}{hint}")

    def __getitem__(self, key: Any) -> EquationResults:
        j = self._position(key)
        if j not in self._cache:
            self._cache[j] = EquationResults(self._results, j, equation=self._equations[j])
        return self._cache[j]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._pos

    def __repr__(self) -> str:
        return f"EquationMap(K={len(self._labels)}, labels={_shown(self._labels)})"


def _shown(labels: list[str], n: int = 10) -> str:
    """The first ``n`` labels, with a count of the rest."""
    head = ", ".join(repr(lab) for lab in labels[:n])
    return f"[{head}]" if len(labels) <= n else f"[{head}, ... ({len(labels) - n} more)]"
