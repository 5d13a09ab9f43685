"""Results of a fitted :class:`~alsgls.SUR` model.

Derived statistics are lazy ``cached_property`` chains
(``params -> bse -> tvalues -> pvalues``) on an immutable record.  Names follow
statsmodels (``params``, ``bse``, ``tvalues``, ``pvalues``, ``conf_int``,
``cov_params``), with linearmodels' names as aliases (``std_errors``,
``tstats``).  Labelled outputs are pandas objects when pandas is installed and
plain ndarrays otherwise.  Nothing here forms a K x K or P x P matrix unless
asked explicitly (``cov_params(full=True)``, ``sigma_matrix()``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Sequence

import numpy as np
from scipy import stats

from .._labels import _frame, _series
from ..core.fit_result import GLSFit
from ..core.ops import (
    LowRankCovariance,
    covariance_parameters,
    design_matvec,
    row_core_inverse,
    row_core_solve,
)
from ..core.options import check_integer
from ..core.problem import Problem
from .covariance import CovarianceEstimator, normalise_cov_type
from .hypothesis import TestResult, critical_value
from .hypothesis import breusch_pagan as _breusch_pagan
from .hypothesis import lr_test as _lr_test
from .hypothesis import wald_test as _wald_test
from .inference import GLSCovariance, SEOptions
from .prediction import PredictionResults
from .prediction import get_prediction as _get_prediction
from .summary import EquationTable, Summary

__all__ = ["SURResults", "PredictionResults", "normalise_cov_type", "check_debiased"]

#: ``cov_params()`` without a subset returns the full P x P matrix only up to this P.
FULL_COV_LIMIT = 2000
#: Default of ``SURResults(restriction=...)``: take the model's constraints.
_FROM_MODEL = object()


def check_debiased(debiased: Any) -> bool:
    """``debiased`` as a bool; ``TypeError`` naming it for anything but True or
    False (a string such as ``"no"`` would otherwise count as True)."""
    if not isinstance(debiased, (bool, np.bool_)):
        raise TypeError(f"debiased must be True or False, got {debiased!r} "
                        f"({type(debiased).__name__})")
    return bool(debiased)


class SURResults:
    """Fitted SUR system with inference.

    Parameters
    ----------
    model : SUR
        The model that was fitted.
    fit : GLSFit
        The solver's record.
    cov_type : str, default "unadjusted"
        A key (or alias) of :data:`alsgls.stats.covariance.COV_ESTIMATORS`:
        ``"unadjusted"`` or ``"robust"``.
    debiased : bool, default False
        Small-sample scaling ``N / sqrt((N - p_i)(N - p_j))`` and t/F
        reference distributions.
    residuals : ndarray, shape (K, N), optional
        ``Y - X B`` from the solver (zero where missing); computed if omitted.
    covariance : GLSCovariance, optional
        The factored coefficient covariance of this fit, to share it between
        results of the same fit (:meth:`with_cov_type` passes it); built on
        first use if omitted.  It must belong to ``fit`` and ``model.data``.
    se_options : SEOptions, optional
        How the coefficient covariance is computed (``se_method``, ``se_tol``,
        ``se_verbose`` of :meth:`SUR.fit`, :func:`alsgls.stats.inference.se_options`);
        default: automatic, standard errors within 0.1 %.

    Attributes
    ----------
    model : SUR
    fit_result : GLSFit
    problem : Problem
        The validated data the fit used (``model.data``).
    cov_type : str
        The canonical ``cov_type``.
    debiased : bool
    covariance : GLSCovariance
        The matrix-free coefficient covariance (built on first use).
    cov_estimator : CovarianceEstimator
        The estimator ``cov_type`` selects (:data:`alsgls.stats.covariance.COV_ESTIMATORS`).

    Notes
    -----
    ``Var(beta) = A^-1`` with ``A = X'(Sigma^-1 (x) I_N)X`` and
    ``Sigma = F F' + diag(D)`` at the MLE (divisor N), or the sandwich
    ``A^-1 (sum_i g_i g_i') A^-1`` with ``g_i = X_i' Sigma^-1 r_i``;
    computed exactly without forming A (:mod:`alsgls.stats.inference`).

    With missing responses and row weights ``A`` is the observed-data
    information ``sum_i w_i X_{i,O}' Sigma_{O_i}^-1 X_{i,O}`` and the scores are
    ``g_i = w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}``; residuals and fitted values are
    NaN where the response is missing, and per-equation statistics (R^2,
    degrees of freedom ``n_j - p_j``) use each equation's observed rows
    (weighted by ``w_i``).
    """

    def __init__(self, model: Any, fit: GLSFit, *, cov_type: str = "unadjusted",
                 debiased: bool = False, residuals: np.ndarray | None = None,
                 covariance: GLSCovariance | None = None,
                 cov_config: Any = None, method: str | None = None,
                 restriction: Any = _FROM_MODEL, sigma_divisor: str = "n",
                 se_options: SEOptions | None = None) -> None:
        self.model = model
        self.se_options = SEOptions() if se_options is None else se_options
        self.fit_result = fit
        self.sigma_divisor = sigma_divisor
        self.cov_type = normalise_cov_type(cov_type)
        self.debiased = check_debiased(debiased)
        self._cov_config = cov_config     # CovarianceConfig, or None: the defaults
        self.method = method if method is not None else (
            fit.method if fit.method in ("twostep", "ols") else "ml")
        self._restriction = (getattr(model, "_restriction", None)
                             if restriction is _FROM_MODEL else restriction)
        self.problem: Problem = model.data
        self._eq = self.problem.layout.eq
        self._theta = self.problem.layout.pad(fit.B)
        self._Rt = self._residuals() if residuals is None else residuals
        self._covariance = covariance

    def _residuals(self) -> np.ndarray:
        """``Y - X B`` (K, N), zero where the response is missing."""
        Rt = self.problem.Yt - design_matvec(self.problem.X, self._theta)
        return Rt if self.problem.O is None else Rt * self.problem.O

    def with_cov_type(self, cov_type: str, *, debiased: bool | None = None,
                      **cov_config: Any) -> "SURResults":
        """The same fit with another covariance estimator.

        No refit: the residuals and the factored coefficient covariance (with
        every estimator already computed on it) are shared, so switching costs
        only the new estimator's own work.

        Parameters
        ----------
        cov_type : str
            As in :meth:`SUR.fit`.
        debiased : bool, optional
            Default: as these results.
        **cov_config
            ``kernel``, ``bandwidth``, ``clusters``, ``group_debias`` as in
            :meth:`SUR.fit` (only those ``cov_type`` takes).

        Returns
        -------
        SURResults
        """
        cov_type = normalise_cov_type(cov_type)
        if "clusters" in cov_config and cov_config["clusters"] is not None:
            cov_config["clusters"] = self.model._cluster_rows(cov_config["clusters"])
        given = {k: v for k, v in cov_config.items() if v is not None}
        config = None
        if given or cov_type in ("kernel", "clustered"):
            from .covariance import covariance_config

            config = covariance_config(cov_type, self.model.nobs, **given)
        return SURResults(self.model, self.fit_result, cov_type=cov_type,
                          debiased=self.debiased if debiased is None else debiased,
                          residuals=self._Rt, covariance=self._covariance,
                          cov_config=config, method=self.method,
                          restriction=self._restriction, sigma_divisor=self.sigma_divisor,
                          se_options=getattr(self, "se_options", None))

    @property
    def solver(self) -> str | None:
        """The ML algorithm that ran (``"als"``, ``"em"``, ``"em-missing"``), or None
        for ``method="twostep"``/``"ols"``."""
        return None if self.method != "ml" else self.fit_result.method

    @property
    def cov_config(self) -> dict:
        """The covariance options in use and ``debiased``: for ``"kernel"`` the
        kernel and the bandwidth actually used (the automatic one when none was
        given, which needs the solved scores), for ``"clustered"`` the number of
        groups and ``group_debias``."""
        used = getattr(self.cov_estimator, "cov_config", None)
        if used is not None:
            out = dict(used)
        else:
            cfg = self._cov_config
            out = {} if cfg is None else {k: v for k, v in vars(cfg).items() if v is not None}
        out["debiased"] = self.debiased
        return out

    @property
    def constraints(self) -> Any:
        """The restrictions ``(R, q)`` imposed in estimation, or None
        (see :meth:`SUR.add_constraints`)."""
        if self._restriction is None:
            return None
        rows = [f"r{i}" for i in range(self._restriction.R.shape[0])]
        return (_frame(np.array(self._restriction.R), rows, self.param_names),
                _series(np.array(self._restriction.q), rows, "q"))

    @property
    def n_restrictions(self) -> int:
        """Number ``m`` of linear restrictions imposed in estimation."""
        return 0 if self._restriction is None else int(self._restriction.R.shape[0])

    # -- basic quantities ---------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        """``"<label>_<regressor>"`` for every coefficient (P,)."""
        return self.model.param_names

    @property
    def covariance(self) -> GLSCovariance:
        """The matrix-free covariance of the coefficients (:class:`GLSCovariance`),
        built on first use and shared with :meth:`with_cov_type`."""
        if self._covariance is None:
            if self.method == "ols":
                from .ols_covariance import OLSCovariance

                self._covariance = OLSCovariance.from_problem(
                    self.problem, self.fit_result.cov, self._Rt, restriction=self._restriction)
            else:
                opts = getattr(self, "se_options", None) or SEOptions()   # 0.1 pickles lack it
                self._covariance = GLSCovariance.from_problem(
                    self.problem, self.fit_result.cov, self._Rt, restriction=self._restriction,
                    method=opts.method, tol=opts.tol, verbose=opts.verbose)
        return self._covariance

    @cached_property
    def cov_estimator(self) -> CovarianceEstimator:
        """The covariance estimator of ``cov_type`` (built once per covariance)."""
        if self._cov_config is None:
            return self.covariance.estimator(self.cov_type)
        return self.covariance.estimator(self.cov_type, self._cov_config)

    @cached_property
    def _n(self) -> np.ndarray:
        """Observed rows per equation ``n_j`` (K,)."""
        return self.model.nobs_equation

    @cached_property
    def debias_factor(self) -> np.ndarray:
        """Per-equation scaling of the standard errors (K,): ``sqrt(n_j / (n_j - p_j))``
        when ``debiased``, else ones (``n_j`` the equation's observed rows).

        With ``sigma_divisor="dfk"`` the same correction is already inside the
        estimated Sigma, so the model-based covariance is not scaled again and
        ``debiased`` only selects the t and F reference distributions; the
        sandwiches (robust, kernel, clustered), which the scale of Sigma does
        not reach, are scaled -- as linearmodels' ``debiased=True`` does."""
        n, p = self._n, self.problem.p
        if self.debiased and not (self.sigma_divisor == "dfk"
                                  and self.cov_type == "unadjusted"):
            return np.sqrt(n / (n - p))
        return np.ones(len(p))

    @property
    def _scale(self) -> np.ndarray:
        """:attr:`debias_factor` per coefficient (P,)."""
        return self.debias_factor[self._eq]

    @property
    def nobs(self) -> int:
        """Rows N used (with at least one observed response)."""
        return self.problem.N

    @property
    def nobs_equation(self) -> Any:
        """Observed rows ``n_j`` per equation (K,); all ``N`` when nothing is missing."""
        return _series(self._n.copy(), self.model.labels, "nobs")

    @property
    def rank(self) -> int:
        return self.fit_result.k

    @property
    def rank_selection(self) -> Any:
        """The :class:`~alsgls.RankSelection` of a model built with ``rank="auto"``
        (or another rank method): the method, the candidates' scores and the
        chosen rank; None for a given rank."""
        return getattr(self.model, "rank_selection", None)

    @property
    def df_model(self) -> int:
        """Number of regression coefficients P (intercepts included)."""
        return int(self.problem.p.sum())

    @property
    def df_resid(self) -> int:
        """``sum_j n_j - P`` (``N K - P`` when nothing is missing)."""
        return int(self._n.sum()) - self.df_model

    @property
    def df_resid_equation(self) -> Any:
        """``n_j - p_j`` per equation: the t degrees of freedom when debiased."""
        return _series(self._n - self.problem.p, self.model.labels, "df_resid")

    @property
    def n_covariance_params(self) -> int:
        """Free parameters of Sigma: ``K k + K - k(k-1)/2``, capped at ``K(K+1)/2``
        (the unrestricted count, reached beyond the Ledermann bound)."""
        return covariance_parameters(self.problem.K, self.rank)

    @property
    def converged(self) -> bool:
        return self.fit_result.converged

    @property
    def iterations(self) -> int:
        return self.fit_result.n_iter

    @property
    def nll_trace(self) -> np.ndarray:
        return self.fit_result.nll_trace

    @cached_property
    def llf(self) -> float:
        """Gaussian log-likelihood ``-N * nll_per_row``.

        ``method="ml"``: at the MLE.  ``"twostep"``/``"ols"``: at the returned
        coefficients with Sigma profiled out in the rank-k model (at full rank
        ``Sigma = R R' / N`` of the final residuals, as systemfit's
        ``logLik``), so it never exceeds the ML value.
        """
        return -self.problem.N * self.fit_result.nll

    @property
    def n_params(self) -> int:
        """Free parameters: coefficients minus restrictions plus Sigma's parameters."""
        return self.df_model - self.n_restrictions + self.n_covariance_params

    @property
    def aic(self) -> float:
        return 2.0 * self.n_params - 2.0 * self.llf

    @property
    def bic(self) -> float:
        return np.log(self.problem.N) * self.n_params - 2.0 * self.llf

    # -- coefficients and their inference -------------------------------------
    @cached_property
    def params(self) -> Any:
        """Coefficients, labelled ``<equation>_<regressor>`` (P,)."""
        return _series(self.problem.layout.flatten(self._theta), self.param_names, "params")

    @cached_property
    def _var(self) -> np.ndarray:
        lay = self.problem.layout
        blocks = self.cov_estimator.diagonal_blocks
        var = blocks[lay.eq, lay.col, lay.col] * self._scale ** 2
        if self._restriction is not None:   # a coefficient the restrictions fix: 0 up to
            var = np.maximum(var, 0.0)       # round-off, which may fall below it
        return var

    @cached_property
    def bse(self) -> Any:
        """Standard errors (P,)."""
        return _series(np.sqrt(self._var), self.param_names, "std_errors")

    @property
    def std_errors(self) -> Any:
        """Alias of :attr:`bse` (linearmodels name)."""
        return self.bse

    @cached_property
    def tvalues(self) -> Any:
        return _series(np.asarray(self.params) / np.asarray(self.bse), self.param_names, "tstats")

    @property
    def tstats(self) -> Any:
        """Alias of :attr:`tvalues` (linearmodels name)."""
        return self.tvalues

    @cached_property
    def _df(self) -> np.ndarray | None:
        return (self._n - self.problem.p)[self._eq] if self.debiased else None

    @cached_property
    def pvalues(self) -> Any:
        t = np.abs(np.asarray(self.tvalues))
        p = 2 * (stats.t.sf(t, self._df) if self.debiased else stats.norm.sf(t))
        return _series(p, self.param_names, "pvalues")

    def conf_int(self, alpha: float = 0.05) -> Any:
        """Confidence intervals (P, 2): columns ``lower``, ``upper``.

        Parameters
        ----------
        alpha : float, default 0.05
            In (0, 1): the intervals have coverage ``1 - alpha`` (Student t
            with ``n_j - p_j`` degrees of freedom when debiased, else normal).

        Returns
        -------
        DataFrame or ndarray, shape (P, 2)
        """
        q = critical_value(alpha, self._df)
        b, se = np.asarray(self.params), np.asarray(self.bse)
        return _frame(np.column_stack([b - q * se, b + q * se]), self.param_names,
                      ["lower", "upper"])

    def _selection(self, subset: Any, equation: Any) -> np.ndarray:
        names = self.param_names
        if equation is not None:
            if equation not in self.model.labels:
                raise ValueError(f"equation {equation!r} is not one of the labels "
                                 f"{self.model.labels[:10]}")
            return np.flatnonzero(self._eq == self.model.labels.index(equation))
        pos = {n: i for i, n in enumerate(names)}
        idx = []
        for s in subset:
            if isinstance(s, (int, np.integer)):
                if not 0 <= s < len(names):
                    raise ValueError(f"parameter position {s} out of range 0..{len(names) - 1}")
                idx.append(int(s))
            elif s in pos:
                idx.append(pos[s])
            else:
                raise ValueError(f"unknown parameter {s!r}")
        return np.asarray(idx, dtype=int)

    def contrast_covariance(self, R: Any) -> np.ndarray:
        """Covariance (q, q) of ``R beta`` for ``R`` (q, P), exact and matrix-free
        (q solves with the GLS information; never P x P).

        Uses the results' ``cov_type`` and ``debiased`` scaling.
        """
        R = np.atleast_2d(np.asarray(R, dtype=np.float64))
        if R.shape[1] != self.df_model:
            raise ValueError(f"R must have P={self.df_model} columns, got shape {R.shape}")
        L = self.problem.layout.unflatten((R * self._scale[None, :]).T)
        return self.cov_estimator.contrast_cov(L)

    def cov_params(self, subset: Sequence | None = None, *, equation: str | None = None,
                   full: bool = False) -> Any:
        """Covariance of a subset of the coefficients.

        Parameters
        ----------
        subset : list of str or int, optional
            Parameter names or positions.
        equation : str, optional
            Label of one equation: its diagonal block.
        full : bool, default False
            Return the whole P x P matrix; required when ``P > FULL_COV_LIMIT``
            and neither ``subset`` nor ``equation`` is given.

        Returns
        -------
        DataFrame or ndarray, shape (m, m)
        """
        P = self.df_model
        if subset is None and equation is None:
            if P > FULL_COV_LIMIT and not full:
                raise ValueError(
                    f"P={P} coefficients: the full covariance is {P}x{P}; pass "
                    "subset=[...] or equation=label, or full=True to form it anyway"
                )
            idx = np.arange(P)
        else:
            idx = self._selection(subset, equation)
        R = np.zeros((idx.size, P))
        R[np.arange(idx.size), idx] = 1.0
        names = [self.param_names[i] for i in idx]
        return _frame(self.contrast_covariance(R), names, names)

    # -- residuals, fit --------------------------------------------------------
    def _nan_missing(self, Zt: np.ndarray) -> np.ndarray:
        """(K, N) -> (N, K) with NaN where the response is missing."""
        obs = self.model.observed
        return Zt.T if obs is None else np.where(obs, Zt.T, np.nan)

    @property
    def resid(self) -> Any:
        """Residuals (N, K) over the rows used; NaN where the response is missing."""
        return _frame(self._nan_missing(self._Rt), self.model.row_index, self.model.labels)

    @property
    def fittedvalues(self) -> Any:
        """Fitted values ``X_j beta_j`` (N, K) over the rows used; NaN where the
        response is missing (use :meth:`predict` for those)."""
        return _frame(self._nan_missing(self.problem.Yt - self._Rt), self.model.row_index,
                      self.model.labels)

    @cached_property
    def _row_w(self) -> np.ndarray | None:
        """Weights of the entries ``w_i o_ij`` (K, N), or None when uniform."""
        d = self.problem
        return None if d.O is None and d.w is None else d.observation_weights

    @cached_property
    def _tss(self) -> np.ndarray:
        Yt = self.problem.Yt
        const = self.problem.constant_columns().any(axis=1)
        Wt = self._row_w
        if Wt is None:
            centred = Yt - np.where(const, Yt.mean(axis=1), 0.0)[:, None]
            return np.einsum("kn,kn->k", centred, centred)
        mean = np.einsum("kn,kn->k", Wt, Yt) / Wt.sum(axis=1)
        centred = Yt - np.where(const, mean, 0.0)[:, None]
        return np.einsum("kn,kn,kn->k", Wt, centred, centred)

    @cached_property
    def _ssr(self) -> np.ndarray:
        Wt = self._row_w
        if Wt is None:
            return np.einsum("kn,kn->k", self._Rt, self._Rt)
        return np.einsum("kn,kn,kn->k", Wt, self._Rt, self._Rt)

    @cached_property
    def rsquared(self) -> Any:
        """Per-equation R^2 (centred when the equation has a constant column), over
        the equation's observed rows and weighted by the row weights."""
        return _series(1.0 - self._ssr / self._tss, self.model.labels, "rsquared")

    @property
    def system_rsquared(self) -> float:
        """``1 - sum_j SSR_j / sum_j TSS_j``."""
        if self._row_w is None:
            ssr = float(np.einsum("kn,kn->", self._Rt, self._Rt))
        else:
            ssr = float(self._ssr.sum())
        return 1.0 - ssr / float(self._tss.sum())

    # -- covariance of the errors ------------------------------------------
    @property
    def sigma(self) -> LowRankCovariance:
        """``Sigma = F F' + diag(D)`` as a low-rank object (never dense)."""
        return self.fit_result.cov

    def sigma_matrix(self) -> Any:
        """Dense K x K Sigma (explicit request; O(K^2) memory)."""
        lab = self.model.labels
        return _frame(self.sigma.to_dense(), lab, lab)

    @property
    def loadings(self) -> Any:
        """Factor loadings F (K, k), canonical rotation."""
        return _frame(self.fit_result.F, self.model.labels,
                      [f"factor_{i + 1}" for i in range(self.rank)])

    @property
    def noise_variance(self) -> Any:
        """Idiosyncratic variances D (K,)."""
        return _series(self.fit_result.D.copy(), self.model.labels, "noise_variance")

    @property
    def heywood(self) -> Any:
        return _series(self.fit_result.heywood.copy(), self.model.labels, "heywood")

    @cached_property
    def factor_scores(self) -> Any:
        """Posterior means of the factors ``E[z_i | r_i] = C^-1 F' D^-1 r_i`` (N, k);
        with missing responses ``C_i^-1 F_O' Psi_O^-1 r_{i,O}`` from the observed ones."""
        cov = self.sigma
        if self.rank == 0:
            Z = np.zeros((self.problem.N, 0))
        elif self.problem.O is not None:
            b = self._Rt.T @ (cov.F / cov.D[:, None])               # Rt is 0 where missing
            Z = row_core_solve(row_core_inverse(cov.F, cov.D, self.problem.O), b)
        else:
            from scipy.linalg import cho_solve

            rhs = (cov.F / cov.D[:, None]).T @ self._Rt
            Z = cho_solve((cov.chol, True), rhs).T
        return _frame(Z, self.model.row_index, [f"factor_{i + 1}" for i in range(self.rank)])

    # -- tests -------------------------------------------------------------
    def wald_test(self, restrictions: Any, value: Any = None) -> TestResult:
        """Wald test of ``R beta = r``.

        Parameters
        ----------
        restrictions : str, list of str, ndarray (q, P) or DataFrame
            Strings over the parameter names (``"GM_value = CH_value"``,
            comma-separated or a list), or a matrix R; a DataFrame's columns
            name the parameters it involves.
        value : array_like (q,), optional
            ``r`` for a matrix (default 0).

        Returns
        -------
        TestResult
            ``W = (R b - r)' (R V R')^-1 (R b - r)`` against chi2(q), or
            ``W / q`` against F(q, min_j (n_j - p_j)) when debiased.

        Raises
        ------
        ValueError
            Unknown parameter names, wrong shapes, or a singular R.
        """
        return _wald_test(self, restrictions, value)

    def lr_test(self, against: Any = "diagonal", **fit_options: Any) -> TestResult:
        """Likelihood-ratio test of the factor structure, or of two nested fits.

        Parameters
        ----------
        against : {"diagonal", "rank-1"} or SURResults
            ``"diagonal"`` / ``"rank-1"``: refit the restricted model, a
            diagonal Sigma (rank 0) or rank k - 1 (with the same constraints).
            Fitted results of the same data (``method="ml"``): the LR test of
            the nested pair, whichever of the two is the restricted one --
            constraints against none (or fewer), rank k against rank k' > k,
            or both.
        **fit_options
            Passed to the restricted ``fit`` (not with fitted results).

        Returns
        -------
        TestResult
            Its ``df`` is the difference in free parameters (coefficients
            minus restrictions plus covariance parameters), also spelled out
            in ``null``.

        Raises
        ------
        ValueError
            Fits of different data, fits that are not nested or have the same
            number of free parameters, or a fit that is not ML.

        Notes
        -----
        ``LR = 2 (llf_unrestricted - llf_restricted)`` (0 if negative, which
        only a fit short of its maximum can give) against chi2 with the
        difference in free parameters; covariance parameters count
        ``K k + K - k(k-1)/2``, capped at ``K(K+1)/2``.  The chi2 reference is
        asymptotic and unreliable near Heywood cases or when k is close to the
        Ledermann bound.
        """
        return _lr_test(self, against, **fit_options)

    def breusch_pagan(self) -> TestResult:
        """Breusch-Pagan LM test of a diagonal Sigma from OLS residuals.

        ``LM = N sum_{i<j} rho_ij^2`` against chi2(K(K-1)/2), with ``rho_ij``
        the correlations of equation-by-equation OLS residuals (divisor N).
        Computed in row or column chunks; no K x K matrix is stored.  Row
        weights make the OLS and the correlations weighted.  With missing
        responses each pair uses the rows where both are observed:
        ``LM = sum_{i<j} n_ij rho_ij^2`` over the ``m`` pairs with ``n_ij > 0``,
        against chi2(m).
        """
        return _breusch_pagan(self)

    # -- prediction ---------------------------------------------------------
    def predict(self, exog: Any = None, *, data: Any = None) -> Any:
        """Predicted means (N_new, K).

        Parameters
        ----------
        exog : mapping, list, 2-D array or DataFrame, optional
            New regressors: ``{label: (N_new, p_j)}`` (every label, no
            other key), a list of K designs in equation order, or one 2-D
            design ``(N_new, p)`` shared by every equation (only when all
            have ``p`` regressors).  pandas designs must share one index.
            Default: the estimation sample (the model's designs as given, NaN
            where one is missing; see the Notes of :class:`SUR` on modifying
            them).
        data : DataFrame, optional
            New data for a model built with :meth:`SUR.from_formula`.

        Returns
        -------
        DataFrame or ndarray, shape (N_new, K)

        Raises
        ------
        TypeError, ValueError
            For another form of ``exog``, unknown or missing labels, pandas
            designs with different indexes, or a design with the wrong shape
            or non-finite values (messages name the equation).
        """
        return self.get_prediction(exog, data=data).predicted_mean

    def get_prediction(self, exog: Any = None, *, data: Any = None) -> "PredictionResults":
        """Predictions with standard errors of the mean and of a new observation.

        ``se_mean_ij^2 = x_ij' Cov(beta_j) x_ij`` (diagonal blocks only) and
        ``se_obs_ij^2 = se_mean_ij^2 + Sigma_jj``.  ``exog`` and ``data`` as
        in :meth:`predict`.

        Returns
        -------
        PredictionResults
        """
        return _get_prediction(self, exog, data=data)

    # -- summary ------------------------------------------------------------
    def _se_method_text(self) -> str:
        """How the standard errors were computed: exact, or truncated with its bound."""
        gls = self.covariance
        if self.method == "ols":
            return "exact (per-equation QR)"
        if gls.method == "exact":
            return "exact (Woodbury core)"
        return f"Lanczos, var. bound {gls.truncation_bound:.1e}"

    def summary(self, max_equations: int | None = 10, alpha: float = 0.05) -> Summary:
        """Summary with a system header and per-equation coefficient tables.

        Parameters
        ----------
        max_equations : int or None, default 10
            Show at most this many equation tables (None: all) and say so.
            Only the shown equations' covariance blocks are computed (``p_j``
            solves each, or sliced from the system's standard errors when
            those exist or cost nothing more), so a summary of a few equations
            costs a few equations.
        alpha : float, default 0.05
            Confidence intervals of coverage ``1 - alpha``.

        Returns
        -------
        Summary
        """
        max_equations = check_integer("max_equations", max_equations, allow_none=True)
        d = self.problem
        header = [("Equations (K)", str(d.K)), ("Observations (N)", str(d.N)),
                  *self._missing_header(),
                  ("Factor rank (k)", str(self.rank)), ("Coefficients (P)", str(self.df_model)),
                  ("Log-likelihood", f"{self.llf:.6g}"), ("AIC", f"{self.aic:.6g}"),
                  ("BIC", f"{self.bic:.6g}"), ("System R-squared", f"{self.system_rsquared:.4f}"),
                  ("Method", self._method_text()), ("Cov. estimator", self.cov_type),
                  *([("Restrictions", str(self.n_restrictions))] if self.n_restrictions else []),
                  ("Debiased", str(self.debiased)), ("Converged", str(self.converged)),
                  ("Iterations", str(self.iterations)),
                  ("Heywood cases", str(int(self.fit_result.heywood.sum()))),
                  ("Std. errors", self._se_method_text())]
        show = d.K if max_equations is None else min(d.K, max_equations)
        r2 = np.asarray(self.rsquared)
        tables = []
        for j, e in enumerate(self.model.equations[:show]):
            # the equation's own statistics: its block alone unless the system's
            # standard errors exist (a summary of a few equations costs a few)
            er = self.equations[j]
            stats_j = [np.asarray(v) for v in (er.params, er.bse, er.tvalues, er.pvalues)]
            ci = np.asarray(er.conf_int(alpha))
            rows = [(name, *(float(v[i]) for v in stats_j), ci[i, 0], ci[i, 1])
                    for i, name in enumerate(e.exog_names)]
            tables.append(EquationTable(e.label, e.dependent, float(r2[j]), rows,
                                        "t" if self.debiased else "z", 1 - alpha,
                                        None if self.model.observed is None else int(self._n[j])))
        notes = [f"Sigma = F F' + diag(D) with rank {self.rank}; " + (
            "Sigma-hat uses divisor N." if self.method == "ml" else
            "Sigma-hat from the first-step OLS residuals.")]
        if show < d.K:
            notes.append(f"{d.K - show} of {d.K} equations not shown; use "
                         "summary(max_equations=None) or the params/bse attributes.")
        if not self.converged:
            notes.append("WARNING: the solver did not converge.")
        title = {"ml": "System ML (SUR)", "twostep": "System two-step FGLS (SUR)",
                 "ols": "System OLS"}[self.method]
        return Summary(f"{title} estimation results", header, tables, notes)

    def _method_text(self) -> str:
        """The estimator in words for the summary header."""
        if self.method == "ml":
            return f"ML ({self.fit_result.method.upper()})"
        return {"twostep": "Two-step FGLS", "ols": "OLS"}[self.method]

    # -- equation-level results and tables (equation_results.py, summary.py) -----
    @cached_property
    def equations(self) -> Any:
        """Per-equation results: a read-only mapping ``{label: EquationResults}``.

        ``res.equations["GE"]`` (or an integer position) gives that equation's
        params, bse, tvalues, pvalues, conf_int, cov_params, rsquared,
        rsquared_adj, f_statistic, resid, fittedvalues and summary(), built on
        access from these results (see
        :class:`alsgls.stats.equation_results.EquationResults`).  An unknown
        label raises ``KeyError`` listing the labels.
        """
        from .equation_results import EquationMap

        return EquationMap(self)

    def summary_frame(self, alpha: float = 0.05) -> Any:
        """Tidy coefficient table: one row per coefficient.

        Parameters
        ----------
        alpha : float, default 0.05
            Intervals of coverage ``1 - alpha`` (as :meth:`conf_int`).

        Returns
        -------
        DataFrame or structured ndarray, shape (P,)
            Columns ``equation, regressor, coef, std_err, z`` (``t`` when
            debiased) ``, p_value, ci_lower, ci_upper``, default index; a
            structured ndarray with these fields when pandas is absent.
        """
        from .summary import summary_frame

        return summary_frame(self, alpha)

    def params_table(self, stat: str | None = "std_err", *, stars: bool = False,
                     equations: Sequence | None = None) -> Any:
        """Side-by-side coefficient table with the equations as columns.

        Parameters
        ----------
        stat : {"std_err", "t", "p_value"} or None, default "std_err"
            The line in parentheses under each coefficient (also
            ``"std_errors"``, ``"tstats"``, ``"pvalues"``); None: none.
        stars : bool, default False
            ``*``, ``**``, ``***`` for p-values below 0.1, 0.05, 0.01.
        equations : list of str or int, optional
            Labels or positions of the columns (default: every equation).

        Returns
        -------
        ColumnTable
            ``str()``, ``as_text()``, ``as_html()`` (also shown in notebooks)
            and ``as_latex()``; R-squared, adjusted R-squared and N at the
            bottom.
        """
        from .summary import params_table

        return params_table(self, stat, stars=stars, equations=equations)

    def _missing_header(self) -> list:
        out = []
        if self.model.observed is not None:
            n = self._n
            out += [("Missing policy", self.model.missing),
                    ("Observed responses", f"{int(n.sum())} of {self.problem.N * self.problem.K}"),
                    ("Rows per equation", f"{int(n.min())}-{int(n.max())}")]
        elif self.model.missing == "drop" and self.model.row_index is not None:
            out.append(("Missing policy", "drop"))
        if self.model.weights is not None:
            out.append(("Weights", "per row, mean 1"))
        return out

    # -- pickling (the contract: alsgls.persistence) ---------------------------------
    #: Attributes rebuilt on loading rather than stored: the problem (the
    #: model's), the padded coefficients, the residuals (from the data and B)
    #: and the factored coefficient covariance (on first use).
    _DERIVED = ("problem", "_eq", "_theta", "_Rt", "_covariance")

    def __getstate__(self) -> dict:
        """The model (its data once), the fit record and the options; no caches."""
        from ..persistence import tag_state

        cached = {name for cls in type(self).__mro__ for name, v in vars(cls).items()
                  if isinstance(v, cached_property)}
        state = {name: v for name, v in self.__dict__.items()
                 if name not in cached and name not in self._DERIVED}
        return tag_state(state)

    def __setstate__(self, state: dict) -> None:
        from ..persistence import check_state

        if not check_state(state, "a SURResults"):     # alsgls 0.1: every attribute
            self.__dict__.update(state)
            return
        self.__dict__.update(state)
        self.problem = self.model.data
        self._eq = self.problem.layout.eq
        self._theta = self.problem.layout.pad(self.fit_result.B)
        self._Rt = self._residuals()
        self._covariance = None

    def save(self, path: Any) -> None:
        """Write these results to ``path`` with a version header
        (:func:`alsgls.persistence.save`; read back with :func:`alsgls.load`).

        The file holds the model's data once plus O(P + K k) state; residuals,
        standard errors and other derived statistics are recomputed after
        loading.  Loading refuses, naming both versions, a file from an alsgls
        whose pickle format differs.
        """
        from ..persistence import save

        save(self, path)

    def __repr__(self) -> str:
        return (f"SURResults(K={self.problem.K}, N={self.problem.N}, rank={self.rank}, "
                f"llf={self.llf:.6g}, cov_type={self.cov_type!r})")
