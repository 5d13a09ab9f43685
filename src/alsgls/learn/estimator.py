"""A scikit-learn regressor for multi-output regression with factor-structured errors.

``ALSGLS`` fits ``Y = X B + E``, rows of ``E`` i.i.d. ``N(0, F F' + diag(D))``,
by exact maximum likelihood (:func:`alsgls.als_gls`), choosing the number of
factors automatically (:func:`alsgls.select_rank`).  Besides the usual
``predict(X)`` it offers the *conditional* prediction of unobserved outputs
given the observed outputs of the same row.

scikit-learn is an optional dependency.  This module imports it at the top, so
``import alsgls.learn.estimator`` fails with a clear message when it is missing; the
package's ``__init__`` exposes ``ALSGLS`` through a module-level
``__getattr__`` so that ``import alsgls`` never imports scikit-learn.  The
class itself is an ordinary module-level class (picklable, ``clone``-able).
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # pragma: no cover - exercised only without sklearn
    raise ImportError(
        "alsgls.ALSGLS needs scikit-learn (>= 1.3), which is not installed. "
        "Install it with `pip install 'alsgls[sklearn]'`, or use the functional "
        "API (alsgls.als_gls, alsgls.select_rank), which does not need it."
    ) from exc

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

from .._warnings import warn
from ..core.dispatch import fit_problem
from ..core.fit_result import fitted_means
from ..core.ops import LOG_2PI, LowRankCovariance, row_core_inverse, row_core_solve
from ..core.options import SolverOptions, check_integer, solver_options
from ..core.problem import (
    COLLINEARITY_COND, Problem, as_float_matrix, build_problem, check_missing,
)
from .rank import (
    RANK_METHODS, SELECTION_TOL, RankSelection, check_n_folds, max_identifiable_rank,
    select_rank_problem,
)

__all__ = ["ALSGLS", "LowRankPrecision", "ExactFitWarning"]

#: How messages name a shared design.  The intercept column, when added, is the
#: last one, so column numbers in messages are the user's; columns exactly
#: collinear with the intercept are set aside (:func:`_independent_columns`),
#: nearly collinear ones refused naming the user's columns
#: (:func:`_explain_intercept`, :meth:`ALSGLS._explain_reduced`).
_SHARED_NAME = "X"


class ExactFitWarning(UserWarning):
    """An output has zero residual variance: its regressors fit it exactly."""


class LowRankPrecision:
    """The precision ``Sigma^-1 = diag(D)^-1 - G G'`` held in O(K k) memory.

    Parameters
    ----------
    cov : LowRankCovariance
        The covariance it inverts.

    Attributes
    ----------
    D_inv : ndarray, shape (K,)
        ``1 / D``.
    G : ndarray, shape (K, k)
        Woodbury factor, ``G = D^-1 F L^-T`` with ``L L' = I + F' D^-1 F``.
    """

    def __init__(self, cov: LowRankCovariance) -> None:
        self.cov = cov
        self.D_inv = 1.0 / cov.D
        self.G = cov.G

    @property
    def K(self) -> int:
        """Number of outputs."""
        return self.cov.K

    @property
    def logdet(self) -> float:
        """``log|Sigma^-1| = -log|Sigma|``."""
        return -self.cov.logdet

    @property
    def diagonal(self) -> np.ndarray:
        """Diagonal of ``Sigma^-1`` (K,)."""
        return self.cov.inverse_diagonal

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """``Sigma^-1 V`` for ``V`` (K,) or (K, m), in O(K k m)."""
        return self.cov.solve(V)

    def solve(self, V: np.ndarray) -> np.ndarray:
        """``Sigma V`` (the inverse of the precision applied to ``V``)."""
        return self.cov.matvec(V)

    def to_dense(self) -> np.ndarray:
        """Dense ``Sigma^-1`` (K, K).  For small K only."""
        return self.cov.inverse_to_dense()

    def __repr__(self) -> str:
        return f"LowRankPrecision(K={self.cov.K}, k={self.cov.k})"


def _is_system(X: Any, Y: Any = None) -> bool:
    """True for the SUR form: a 3-D array, or a list/tuple of per-output designs.

    A list is read as designs when its first entry is 2-D, or (given ``Y``)
    when it has one entry per output of ``Y`` and not one per row; every entry
    must then be 2-D ``(N, p_j)`` (``ValueError`` naming the first that is
    not).  Otherwise a list is a scikit-learn ``X``: a list of rows.
    """
    if isinstance(X, np.ndarray):
        return X.ndim == 3
    if not isinstance(X, (list, tuple)) or len(X) == 0:
        return False
    shape_y = np.shape(Y) if Y is not None else ()
    per_output = len(shape_y) == 2 and len(X) == shape_y[1] != shape_y[0]
    if np.ndim(X[0]) != 2 and not per_output:
        return False
    for j, x in enumerate(X):
        if np.ndim(x) != 2:
            raise ValueError(
                f"X[{j}] has shape {np.shape(x)}: X is a list of per-output designs (SUR "
                "form), and each design must be 2-D (N, p_j); use X[j].reshape(-1, 1) for a "
                "single regressor, or pass one 2-D X (N, p) shared by all outputs")
    return True


def _constant_combination(X: np.ndarray) -> np.ndarray:
    """Columns of ``X`` that combine to a (nearly) constant vector; empty if the
    constant is farther than ``COLLINEARITY_COND ** -0.5`` (relative) from
    their span."""
    ones = np.ones(X.shape[0])
    c = np.linalg.lstsq(X, ones, rcond=None)[0]
    if np.linalg.norm(X @ c - ones) > COLLINEARITY_COND ** -0.5 * np.sqrt(X.shape[0]):
        return np.zeros(0, dtype=int)
    weight = np.abs(c) * np.linalg.norm(X, axis=0)
    return np.flatnonzero(weight > 1e-8 * weight.max())


def _column_list(cols: np.ndarray, most: int = 10) -> str:
    """``column 3`` or ``columns [1, 4, 7]`` for messages (the first ``most``,
    then a count)."""
    cols = [int(c) for c in cols]
    if len(cols) == 1:
        return f"column {cols[0]}"
    if len(cols) <= most:
        return f"columns {cols}"
    return f"columns [{', '.join(map(str, cols[:most]))}, ... ({len(cols)} in all)]"


def _explain_intercept(designs: list, names: list, exc: ValueError) -> None:
    """After ``build_problem`` refused designs that carry an appended intercept:
    if some design's own columns combine to a constant (dummies of every
    level, say), raise a ``ValueError`` naming those columns instead of the
    intercept.  Runs on the failure path only; reads no message text."""
    for x, name in zip(designs, names):
        own = x[:, :-1]
        const = (np.flatnonzero((np.ptp(own, axis=0) == 0) & (own[0] != 0))
                 if own.shape[0] > 1 else [])
        if len(const):
            c = int(const[0])
            raise ValueError(
                f"{name} is rank deficient: column {c} is constant (every value "
                f"{own[0, c]:g}), collinear with the intercept that fit_intercept=True "
                "adds; drop that column or pass fit_intercept=False") from exc
        cols = _constant_combination(own)
        if cols.size:
            raise ValueError(
                f"{name} is rank deficient: columns {cols.tolist()} combine to a constant, "
                "collinear with the intercept that fit_intercept=True adds (dummies of "
                "every level, for instance); drop one of them or pass fit_intercept=False"
            ) from exc


class _Columns:
    """The independent columns of one design, found by :func:`_independent_columns`.

    Attributes
    ----------
    p : int
        The user's columns (the intercept that ``fit_intercept`` appends is
        not among them).
    keep, dropped : ndarray of int
        Sorted positions of the columns the solver uses and of those it sets
        aside (each a linear combination of kept ones, or constant when the
        design is centred).
    null : ndarray, shape (p, p - rank)
        Orthonormal basis of the null space of the design as the solver sees
        it (centred when ``mean`` is not None), in the coefficients' metric.
    mean : ndarray (p,) or None
        Column means on the rows used (``fit_intercept=True``), else None.
    n : int
        Rows used.
    """

    def __init__(self, p: int, keep: np.ndarray, null: np.ndarray,
                 mean: np.ndarray | None, n: int) -> None:
        self.p, self.null, self.mean, self.n = p, null, mean, n
        self.keep = np.sort(keep).astype(np.intp)
        self.dropped = np.setdiff1d(np.arange(p), self.keep).astype(np.intp)

    @property
    def rank(self) -> int:
        """Rank of the (centred) design: the number of kept columns."""
        return int(self.keep.size)

    def expand(self, B: np.ndarray) -> np.ndarray:
        """Coefficients of the kept columns (m, rank [+ 1], the intercept last)
        -> the minimum-norm coefficients of every column (m, p [+ 1]) with the
        same fitted values on the rows used.

        The solution that is zero on the dropped columns is projected onto the
        row space of the (centred) design, ``b - U U' b`` with ``U`` the null
        space basis; the part removed, ``d``, has ``X_c d = 0``, so ``X d`` is
        the constant ``mean . d``, which moves into the intercept.  This is
        ``LinearRegression``'s solution (minimum-norm least squares on the
        centred data).
        """
        icpt = self.mean is not None
        out = np.zeros((B.shape[0], self.p + icpt))
        out[:, self.keep] = B[:, : self.rank]
        if icpt:
            out[:, -1] = B[:, -1]
        if self.null.shape[1]:
            d = (out[:, : self.p] @ self.null) @ self.null.T
            out[:, : self.p] -= d
            if icpt:
                out[:, -1] += d @ self.mean
        return out


def _independent_columns(x: np.ndarray, intercept: bool) -> _Columns:
    """A maximal set of independent columns of ``x`` (n, p), the user's columns
    on the rows used, by pivoted QR of the design as the solver sees it:
    centred when ``intercept`` (the intercept column, kept always, is then
    orthogonal to the rest).

    Tolerance: each column is first divided by its norm *before* centring, so
    ``|R_ii|`` is the distance of pivot column ``i`` from the span of the
    earlier pivots (and of the constant), relative to the column's own
    magnitude, the scale of the round-off in the data and in the centring.
    Columns with ``|R_ii| <= max(n, p) * eps`` (at least that relative to
    ``|R_11| <= 1``) are dropped: dependent to round-off, like the
    ``eps * sigma_max`` cut-off of ``scipy.linalg.lstsq`` behind
    ``LinearRegression``.  A constant column, under ``intercept``, and a zero
    column are dropped that way too.  Columns nearer to collinear than
    :data:`~alsgls.core.problem.COLLINEARITY_COND` but above this cut-off are
    kept, and the design is refused (:meth:`ALSGLS._problem`).
    """
    from scipy.linalg import qr, solve_triangular

    n, p = x.shape
    norm = np.linalg.norm(x, axis=0)
    norm[norm == 0] = 1.0
    mean = x.mean(axis=0) if intercept else None
    z = (x - mean if intercept else x) / norm
    _, R, piv = qr(z, mode="raw", pivoting=True, overwrite_a=True, check_finite=False)
    d = np.abs(np.diag(R))
    small = d <= max(n, p) * np.finfo(float).eps
    r = int(np.argmax(small)) if small.any() else d.size
    # null space of z[:, piv]: [-R11^-1 R12; I]; of the unscaled design: rows / norm
    V = np.zeros((p, p - r))
    if r and p > r:
        V[piv[:r]] = -solve_triangular(R[:r, :r], R[:r, r:p], check_finite=False)
    V[piv[r:], np.arange(p - r)] = 1.0
    null = np.linalg.qr(V / norm[:, None])[0] if p > r else V
    return _Columns(p, piv[:r], null, mean, n)


class ALSGLS(RegressorMixin, BaseEstimator):
    """Multi-output linear regression with a low-rank-plus-diagonal error covariance.

    Fits ``Y[:, j] = X_j b_j + intercept_j + e_j`` with rows of ``E``
    i.i.d. ``N(0, F F' + diag(D))`` by exact maximum likelihood (SUR / feasible
    GLS).  ``F`` (K x k) carries what the outputs share; ``rank`` picks ``k``.

    Parameters
    ----------
    rank : int or {"auto", "onatski", "bic", "aic", "cv"}, default "auto"
        Number of latent factors ``k``, or the method that chooses it (see
        :func:`alsgls.select_rank`).  An integer must not exceed the largest
        identifiable rank (Ledermann bound ``(K - k)^2 >= K + k`` and
        ``N > k + p``).
    fit_intercept : bool, default True
        Append an intercept column to every design.  A column of ``X`` that is
        constant, or columns that combine to a constant, are then collinear
        with it and set aside as in ``LinearRegression`` (see Notes).
    max_rank : int, optional
        Largest rank a selection method considers: default
        ``min(12, largest identifiable rank)``; a larger value is capped at
        the largest identifiable rank.
    n_folds : int, default 5
        Folds for ``rank="cv"`` (at least 2).
    tol : float, default 1e-10
        Tolerance of the final fit: on the NLL gap per row and equation for
        the ALS solver (:func:`alsgls.als_gls`), relative to the NLL for the
        missing-data solver (:func:`alsgls.fit_missing`).  The candidate fits
        of a rank method use ``1e-6``.
    max_iter : int, optional
        Iteration limit of the final fit: ALS sweeps (default 200), or
        iterations of the missing-data solver (default 1000) when ``Y`` has
        missing outputs and ``missing="ml"``.  The candidate fits of a rank
        method use these defaults.
    random_state : int, default 0
        Seed of the eigen-solvers and of the CV split.
    missing : {"raise", "ml", "drop"}, default "raise"
        NaN in ``Y`` (a missing output).  ``"raise"`` refuses it (the
        scikit-learn convention); ``"ml"`` fits by exact maximum likelihood of
        every observed output under missing-at-random
        (:func:`alsgls.fit_missing`; a rank *method* is then chosen on
        the rows with every output observed); ``"drop"`` drops rows with any
        NaN.  ``X`` must be complete.
    max_sweeps : int, optional
        Deprecated spelling of ``max_iter`` (a ``DeprecationWarning`` at
        ``fit``; passing both is a ``TypeError``).

    Attributes
    ----------
    coef_ : ndarray, shape (K, p)
        Coefficients (2-D ``X`` only), as in ``LinearRegression``; for a
        rank-deficient design the minimum-norm ones (see Notes).
    coef_list_ : list of K ndarray, each (p_j,)
        Coefficients of each equation (both forms), intercept excluded.
    design_rank_ : int, or ndarray of int, shape (K,)
        Rank of ``X`` as the solver sees it, centred when ``fit_intercept``
        (the intercept not counted), as ``LinearRegression.rank_``; one per
        equation for per-equation designs.  (``rank_`` is the number of
        factors.)
    dropped_columns_ : ndarray of int, or list of K such arrays
        Columns of ``X`` (the user's numbering) set aside by the solver as
        linear combinations of the others, or constant under
        ``fit_intercept``; empty for a design of full rank.  One array per
        equation for per-equation designs.  Their entries of ``coef_`` are
        those of the minimum-norm solution, not zero.
    intercept_ : ndarray, shape (K,), or 0.0
        Intercepts (0.0 when ``fit_intercept=False``).
    loadings_ : ndarray, shape (K, k)
        Factor loadings ``F`` (Lawley rotation; only ``F F'`` is identified).
    noise_variance_ : ndarray, shape (K,)
        Idiosyncratic variances ``D``.  At rank 0 these are the OLS residual
        variances (divisor N); an output its regressors fit exactly (rank 0
        only, see :class:`ExactFitWarning`) gets the exact-fit threshold:
        ``1e-12`` of its variance about its mean, or its round-off level if
        larger (relative to the data, like every floor).
    rank_ : int
        Number of factors used.
    rank_selection_ : RankSelection or None
        The selection record when ``rank`` is a method (None when no rank
        above 0 is identifiable, or when an output is fitted exactly and
        rank 0 is used, see :class:`ExactFitWarning`); None for an integer.
    n_iter_ : int
        Iterations of the final fit: ALS sweeps, or iterations of the
        missing-data solver when ``Y`` has missing outputs and
        ``missing="ml"``; 0 for the closed-form rank-0 fit used when the
        regressors fit some output exactly.
    nll_history_ : ndarray, shape (``n_iter_ + 1``,)
        NLL per row at the start and after each iteration (the observed-data
        NLL with missing outputs); never increases.
    converged_ : bool
        Whether the final fit met ``tol``.
    n_outputs_ : int
        K.
    n_features_in_ : int
        Number of columns of a 2-D ``X``.

    Notes
    -----
    With a 2-D ``X`` every output has the same regressors and GLS equals OLS
    (Zellner): the coefficients are those of ``LinearRegression``, and the
    factor model adds the covariance, the likelihood and conditional
    prediction.  With a list of per-equation designs (SUR form) the GLS
    coefficients differ from OLS and are more efficient.

    A rank-deficient design (duplicated or exactly collinear columns, or
    under ``fit_intercept`` a constant column or columns that combine to a
    constant, as ``PolynomialFeatures`` makes) is fitted as
    ``LinearRegression`` fits it: a pivoted QR of the design as the solver
    sees it (centred under ``fit_intercept``) finds the columns that are
    combinations of the others to round-off, ``max(N, p) * eps`` relative
    to their norms (``dropped_columns_``); the model is fitted on the rest,
    so the fitted values are least squares on the column space, and the
    coefficients are reported as the minimum-norm solution with those
    fitted values (``coef_`` and ``intercept_`` are then
    ``LinearRegression``'s with a 2-D ``X``).  The likelihood, the factors
    and the covariance do not depend on this choice.  A design with no
    column left, or with no more rows than coefficients of its independent
    columns, is refused, and so are columns nearly but not exactly
    collinear (beyond a condition number of 1e10): the message names the
    design and the column.  A full-rank design costs nothing extra: the QR
    runs only when the fast check refuses a design.

    ``Y`` must be 2-D ``(N, K)``.  A 1-D ``Y`` is refused: the model is about
    the covariance between outputs.  ``Y.reshape(-1, 1)`` fits a single output
    (``k = 0``, plain least squares).

    Examples
    --------
    >>> from alsgls import ALSGLS, simulate_gls
    >>> Xs, Y, _ = simulate_gls(N=300, K=30, p=3, k=2, seed=0)
    >>> est = ALSGLS().fit(Xs[0], Y)
    >>> est.rank_, est.coef_.shape
    (2, (30, 3))
    """

    def __init__(
        self,
        *,
        rank: int | str = "auto",
        fit_intercept: bool = True,
        max_rank: int | None = None,
        n_folds: int = 5,
        tol: float = 1e-10,
        max_iter: int | None = None,
        random_state: int = 0,
        missing: str = "raise",
        max_sweeps: int | None = None,
    ) -> None:
        self.missing = missing
        self.rank = rank
        self.fit_intercept = fit_intercept
        self.max_rank = max_rank
        self.n_folds = n_folds
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.max_sweeps = max_sweeps

    def __setstate__(self, state: dict) -> None:
        """Unpickle, also an estimator pickled by alsgls 0.1 (``max_sweeps``, no
        ``max_iter``): its sweep limit becomes ``max_iter``."""
        if "max_iter" not in state:
            state["max_iter"], state["max_sweeps"] = state.pop("max_sweeps", None), None
        super().__setstate__(state)

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self) -> Any:
        """Multi-output only; ``Y`` required (scikit-learn >= 1.6)."""
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.target_tags.required = True
        return tags

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"multioutput": True, "multioutput_only": True, "requires_y": True}

    # ------------------------------------------------------------------- fit
    def fit(self, X: Any, Y: Any) -> "ALSGLS":
        """Fit by exact maximum likelihood, choosing the rank if asked.

        Parameters
        ----------
        X : array_like (N, p), or list of K array_like (N, p_j), or ndarray (K, N, p)
            A design shared by all outputs (stored once), or one design per
            output (SUR form).
        Y : array_like, shape (N, K)
            Outputs; must be 2-D (see Notes of the class).

        Returns
        -------
        self
        """
        options = self._check_params()
        problem, columns = self._problem(X, Y)
        k, selection = self._check_rank(problem), None
        if k == 0:
            # rank 0 or a rank method: one OLS, for the exact-fit check, the
            # selection and a closed-form rank-0 fit.  (A fixed rank k > 0 goes
            # straight to the solver, whose OLS refuses outputs fitted exactly.)
            theta, Rt, ss = problem.ols(sumsq=True)
            s, exact = problem.exact_fits(Rt, ss)
            if isinstance(self.rank, str):
                k, selection = self._select(problem, options, exact, Rt)
            if exact.size and k == 0:
                self._store(*self._rank0(problem, theta, s), 0, selection, columns)
                return self
        fit, _ = fit_problem(problem, k, options, missing_fit=False)
        self._store([b[:, 0] for b in fit.B], fit.F, fit.D, fit.nll_trace, fit.n_iter,
                    fit.converged, k, selection, columns)
        return self

    def _check_params(self) -> SolverOptions:
        """Validate the hyper-parameters; return the solver options."""
        check_missing(self.missing)
        if isinstance(self.rank, str):
            if self.rank not in RANK_METHODS:
                raise ValueError(f"rank must be a non-negative integer or one of "
                                 f"{RANK_METHODS}, got {self.rank!r}")
        else:
            check_integer("rank", self.rank, minimum=0)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise TypeError(f"fit_intercept must be True or False, got {self.fit_intercept!r}")
        check_integer("max_rank", self.max_rank, minimum=0, allow_none=True)
        check_n_folds(self.n_folds)
        kw = {"tol": self.tol, "max_iter": self.max_iter, "random_state": self.random_state}
        if self.max_sweeps is not None:     # the deprecated spelling
            kw["max_sweeps"] = self.max_sweeps
        return solver_options(None, "ALSGLS", **kw)

    def _problem(self, X: Any, Y: Any) -> tuple[Problem, list | None]:
        """Validate ``(X, Y)`` once: the one problem every later step uses, and
        the independent columns of each design (None on the fast path, where
        ``build_problem`` accepts every design as it is).

        A design that ``build_problem`` refuses is examined by pivoted QR
        (:meth:`_independent`): columns dependent on the others to round-off
        (duplicates, exact combinations, constants under ``fit_intercept``)
        are set aside and the problem is built on the rest, whose fitted
        values are those of least squares on the full column space.
        """
        if _is_system(X, Y):
            Xs, Ya = self._system_data(X, Y)
            names = [f"X[{j}]" for j in range(len(Xs))]
        else:
            Xs, Ya = self._shared_data(X, Y)
            names = [_SHARED_NAME] * Ya.shape[1]
        designs = [Xs] if self._shared else Xs
        try:
            with np.errstate(over="ignore"):    # the condition number of a singular design
                return build_problem(Xs, Ya, missing=self.missing, design_names=names), None
        except ValueError as exc:
            columns = self._independent(designs, Ya, names)
            if columns is None:     # nothing to set aside: the refusal stands
                if self.fit_intercept:
                    _explain_intercept(designs, names, exc)
                raise
        reduced = [x if not c.dropped.size else
                   x[:, np.r_[c.keep, [c.p] if self.fit_intercept else []].astype(np.intp)]
                   for x, c in zip(designs, columns)]
        try:
            problem = build_problem(reduced[0] if self._shared else reduced, Ya,
                                    missing=self.missing, design_names=names, notes=False)
        except ValueError as exc:
            self._explain_reduced(reduced, columns, Ya, names, exc)
            raise
        return problem, columns

    def _rows_used(self, designs: list, Ya: np.ndarray) -> list:
        """Rows of each design the fit uses (boolean masks, None for all), as
        ``build_problem`` chooses them under ``missing``."""
        obs = ~np.isnan(Ya)
        if obs.all() or self.missing == "raise":     # NaN is refused anyway
            return [None] * len(designs)
        if self.missing == "drop":
            ok = obs.all(axis=1)
            for x in designs:
                ok &= np.isfinite(x).all(axis=1)
            return [ok] * len(designs)
        if self._shared:
            return [obs.any(axis=1)]
        return [obs[:, j] for j in range(len(designs))]

    def _independent(self, designs: list, Ya: np.ndarray, names: list) -> list | None:
        """After ``build_problem`` refused the designs: the independent columns of
        each (:func:`_independent_columns`, on the rows the fit uses; one pivoted
        QR per design, on this failure path only), or None when no design has a
        column to set aside (or non-finite values on those rows: the refusal
        was about something else).  Raises ``ValueError``, naming the design
        and the fix, when a design has no column left or too few rows for its
        independent columns."""
        columns = []
        for x, rows in zip(designs, self._rows_used(designs, Ya)):
            xr = x if rows is None else x[rows]
            if not np.isfinite(xr).all():
                return None
            columns.append(_independent_columns(xr[:, :-1] if self.fit_intercept else xr,
                                                self.fit_intercept))
        if not any(c.dropped.size for c in columns) and not self._shared:
            return None    # build_problem's own message names the equation
        for c, name in zip(columns, names):
            q = c.rank + bool(self.fit_intercept)
            aside = (f"; {_column_list(c.dropped)} set aside, being exact combinations of "
                     "the other columns" + (" and the intercept" if self.fit_intercept else "")
                     if c.dropped.size else "")
            if q == 0:
                raise ValueError(
                    f"{name} has no non-zero column on the rows used and fit_intercept=False "
                    "adds no intercept: nothing is left to fit; pass a design with a "
                    "non-zero column, or fit_intercept=True to fit the means")
            if c.n <= q:
                what = (f"{c.rank} independent column(s) of {name}"
                        + (" and the intercept" if self.fit_intercept else "") + aside)
                who = (f"n_samples={c.n} is too few for {q} regression coefficients per output"
                       if self._shared else
                       f"{name} has {c.n} rows used, too few for its {q} regression coefficients")
                raise ValueError(
                    f"{who} ({what}): need more than {q} rows, to estimate them and a "
                    f"variance; add rows or drop columns of {name}")
        return columns if any(c.dropped.size for c in columns) else None

    def _explain_reduced(self, reduced: list, columns: list, Ya: np.ndarray, names: list,
                         exc: ValueError) -> None:
        """After ``build_problem`` refused the designs left by :meth:`_independent`
        (columns nearly, not exactly, collinear; or collinear on one output's
        observed rows): raise a ``ValueError`` naming the column in the user's
        numbering.  Returns when it finds no such design."""
        units = list(zip(reduced, columns, self._rows_used(reduced, Ya), names))
        obs = ~np.isnan(Ya)
        if self._shared and not obs.all() and self.missing == "ml":
            units = [(reduced[0], columns[0], obs[:, j],
                      f"{_SHARED_NAME} (output {j}, on its observed rows)")
                     for j in range(Ya.shape[1])]
        for x, c, rows, name in units:
            xr = x if rows is None else x[rows]
            norm = np.linalg.norm(xr, axis=0)
            z = xr / np.where(norm > 0, norm, 1.0)
            sv = np.linalg.svd(z, compute_uv=False)     # the Gram's condition: sv ratio ** 2
            if sv.size == z.shape[1] and sv[-1] > 0 and (sv[0] / sv[-1]) ** 2 <= COLLINEARITY_COND:
                continue
            from scipy.linalg import qr

            last = int(qr(z, mode="r", pivoting=True)[1][-1])
            cond = f"{(sv[0] / sv[-1]) ** 2:.3g}" if sv[-1] > 0 else "inf"
            aside = (f"; {_column_list(c.dropped)}, exact combinations of the others, "
                     "set aside" if c.dropped.size else "")
            near = (_constant_combination(xr[:, :-1]) if last >= c.rank
                     else np.zeros(0, dtype=int))
            if near.size:       # the intercept: user columns nearly combine to a constant
                cols = _column_list(c.keep[near])
                raise ValueError(
                    f"{name} is rank deficient: {cols} nearly combine to a constant, "
                    "collinear with the intercept that fit_intercept=True adds (scaled "
                    f"condition number {cond}){aside}; drop one of them or pass "
                    "fit_intercept=False") from exc
            col = f"column {int(c.keep[last])}" if last < c.rank else "the intercept"
            raise ValueError(
                f"{name} is rank deficient: {col} is nearly, though not "
                f"exactly, a linear combination of the others (scaled condition number "
                f"{cond}, above {COLLINEARITY_COND:.0e}: its coefficient is not determined "
                f"by the data){aside}; drop that column") from exc

    def _system_data(self, X: Any, Y: Any) -> tuple[list, np.ndarray]:
        """SUR form: the designs (intercept appended) and ``Y``."""
        if Y is None:
            raise ValueError("ALSGLS requires Y to be passed, but the target Y is None")
        if np.ndim(Y) == 1:
            raise ValueError("Y must be 2-D (N, K), one column per equation; got a 1-D array")
        self._shared = False
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_
        Ya = as_float_matrix(Y, "Y", 2, allow_nan=True)
        return [self._with_intercept(as_float_matrix(x, f"X[{j}]", 2))
                for j, x in enumerate(X)], Ya

    def _shared_data(self, X: Any, Y: Any) -> tuple[np.ndarray, np.ndarray]:
        """One design shared by every output (scikit-learn's validation): the
        design (intercept appended) and ``Y``."""
        self._shared = True
        nan_ok = self.missing != "raise" and Y is not None and np.ndim(Y) == 2
        Ya = as_float_matrix(Y, "Y", 2, allow_nan=True) if nan_ok else None
        X, Yv = _validate_data(self, X, np.nan_to_num(Ya) if nan_ok else Y,
                               multi_output=True, y_numeric=True, dtype=np.float64)
        if np.ndim(Yv) == 1:
            raise ValueError(
                "Y is 1-D (a single output). ALSGLS models the covariance between "
                "K >= 2 outputs; pass Y.reshape(-1, 1) to fit one output as plain "
                "least squares (rank 0), or use sklearn.linear_model.LinearRegression")
        # too few rows for the columns (N <= p) is refused, or fitted when the
        # design's rank allows, by _independent once build_problem refuses it
        Ya = Ya if nan_ok else np.asarray(Yv, dtype=np.float64)
        return self._with_intercept(X), Ya

    def _with_intercept(self, X: np.ndarray) -> np.ndarray:
        """The design with an intercept column appended last (if asked); columns
        collinear with it are set aside by :meth:`_independent`."""
        if not self.fit_intercept:
            return X
        return np.hstack([X, np.ones((X.shape[0], 1))])

    def _check_rank(self, problem: Problem) -> int:
        """A fixed rank checked against the problem (0 for a rank method)."""
        if isinstance(self.rank, str):
            return 0
        N, K, pmax = problem.N, problem.K, problem.pmax
        kmax = max_identifiable_rank(K, N, pmax)
        if self.rank > kmax:
            raise ValueError(
                f"rank={self.rank} exceeds the largest identifiable rank {kmax} for "
                f"K={K} outputs, N={N} rows and {pmax} coefficients per output "
                "(need (K-k)^2 >= K+k and N > k + p)")
        return int(self.rank)

    def _select(self, problem: Problem, options: SolverOptions, exact: np.ndarray,
                Rt: np.ndarray) -> tuple[int, RankSelection | None]:
        """Run the rank method; ``exact`` are the outputs the regressors fit
        exactly and ``Rt`` the OLS residuals of ``problem`` (reused)."""
        N, K, pmax = problem.N, problem.K, problem.pmax
        kmax = max_identifiable_rank(K, N, pmax)
        sub = problem
        if not problem.complete:   # a rank *method* runs on the complete rows
            rows = np.flatnonzero(problem.O.all(axis=0))
            if rows.size <= pmax + 2:
                raise ValueError(
                    f"rank={self.rank!r} with missing outputs selects the rank on the "
                    f"{rows.size} rows with every output observed, too few for {pmax} "
                    "coefficients per output; pass an integer rank")
            sub = problem.take(rows, "the rows with every output observed")
            kmax = max_identifiable_rank(K, sub.N, pmax)
        if kmax == 0 or exact.size:
            if exact.size:
                warn(f"{exact.size} output(s) are fitted exactly by their regressors (zero "
                     f"residual variance), e.g. output {int(exact[0])}; using rank 0",
                     ExactFitWarning)
            return 0, None
        max_rank = self.max_rank if self.max_rank is None else min(self.max_rank, kmax)
        sel = select_rank_problem(sub, method=self.rank, max_rank=max_rank,
                                  n_folds=self.n_folds,
                                  options=options.replace(tol=SELECTION_TOL, max_iter=None),
                                  ols_residuals=Rt if sub is problem else None)
        return sel.rank, sel

    @staticmethod
    def _rank0(problem: Problem, theta: np.ndarray, s: np.ndarray) -> tuple:
        """k = 0 with outputs fitted exactly: Sigma is diagonal, so GLS = the OLS
        ``theta``, and ``D`` the OLS residual variances ``s``; an output fitted
        exactly gets the exact-fit threshold
        (:attr:`~alsgls.core.problem.Problem.zero_variance_threshold`: relative
        to the output's variance about its mean, so offsets and scale leave it
        unchanged; every other output keeps ``D_j = s_j``).  The NLL per row
        counts each output's observed rows."""
        n = problem.n_weighted
        D = np.maximum(s, problem.zero_variance_threshold)
        nll = 0.5 * float(np.sum(n / problem.N * (LOG_2PI + np.log(D) + s / D)))
        B = [b[:, 0] for b in problem.layout.unpad(theta)]
        return B, np.zeros((problem.K, 0)), D, np.array([nll]), 0, True

    def _store(self, B: list, F: np.ndarray, D: np.ndarray, trace: np.ndarray, n_iter: int,
               converged: bool, k: int, selection: RankSelection | None,
               columns: list | None = None) -> None:
        """Set the fitted attributes (``B``: per-equation coefficients, the
        intercept last when ``fit_intercept``; of the independent columns
        ``columns`` when some were set aside, mapped back to every column by
        :meth:`_Columns.expand`)."""
        K = len(B)
        self._store_columns(B, columns)
        if columns is not None:
            if self._shared:
                B = list(columns[0].expand(np.vstack(B)))
            else:
                B = [b if not c.dropped.size else c.expand(b[None, :])[0]
                     for b, c in zip(B, columns)]
        if self.fit_intercept:
            self.intercept_ = np.array([b[-1] for b in B])
            B = [b[:-1] for b in B]
        else:
            self.intercept_ = 0.0
        self.coef_list_ = [np.asarray(b, dtype=np.float64) for b in B]
        if self._shared:
            self.coef_ = np.vstack(self.coef_list_) if K else np.zeros((0, 0))
        elif hasattr(self, "coef_"):
            del self.coef_
        self.loadings_ = np.asarray(F)
        self.noise_variance_ = np.asarray(D)
        self.rank_ = int(k)
        self.rank_selection_ = selection
        self.nll_history_ = np.asarray(trace)
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        self.n_outputs_ = K

    def _store_columns(self, B: list, columns: list | None) -> None:
        """``design_rank_`` and ``dropped_columns_`` (see the class docstring)."""
        icpt = bool(self.fit_intercept)
        if columns is None:        # every design has full column rank
            ranks = [b.size - icpt for b in (B[:1] if self._shared else B)]
            dropped = [np.zeros(0, dtype=np.intp)] * len(ranks)
        else:
            ranks = [c.rank for c in columns]
            dropped = [c.dropped for c in columns]
        if self._shared:
            self.design_rank_, self.dropped_columns_ = int(ranks[0]), dropped[0]
        else:
            self.design_rank_, self.dropped_columns_ = np.array(ranks, dtype=np.intp), dropped

    # --------------------------------------------------------------- predict
    def _mean(self, X: Any) -> np.ndarray:
        """``X B`` (+ intercept) for designs in the form used in ``fit`` (N, K)."""
        check_is_fitted(self)
        if self._shared:
            if _is_system(X):
                raise ValueError("the model was fitted on a 2-D X; predict with a 2-D X")
            X = _validate_data(self, X, reset=False, dtype=np.float64)
            return X @ self.coef_.T + self.intercept_
        if not _is_system(X):
            raise ValueError(
                "the model was fitted on a list of per-equation designs; predict with "
                f"a list of {self.n_outputs_} designs"
            )
        return fitted_means(X, self.coef_list_, name="X") + self.intercept_

    def predict(self, X: Any, Y_partial: Any = None) -> np.ndarray:
        """Predict all outputs, optionally conditioning on observed ones.

        Parameters
        ----------
        X : array_like (N, p), or list of K array_like (N, p_j)
            Designs, in the form used in ``fit``.
        Y_partial : array_like, shape (N, K), optional
            Observed outputs of the same rows with NaN where unknown.  When
            given, the unknown outputs are predicted by the Gaussian
            conditional mean given the known ones.

        Returns
        -------
        ndarray, shape (N, K)
            ``X B`` (+ intercept); with ``Y_partial``, observed entries are
            returned unchanged and the others are conditional means.

        Notes
        -----
        For a row with observed set ``O``, residual ``r_O = y_O - mu_O``::

            E[y_U | y_O] = mu_U + F_U m,   m = C_O^-1 F_O' D_O^-1 r_O,
            C_O = I + F_O' D_O^-1 F_O

        (``m`` is the posterior mean of the latent factors).  Cost: O(K k + k^2)
        per row plus O(K k^2 + k^3) per distinct missingness pattern; no K x K
        matrix is formed.
        """
        mean = self._mean(X)
        if Y_partial is None:
            return mean
        return self._conditional(mean, Y_partial)

    def _conditional(self, mean: np.ndarray, Y_partial: Any) -> np.ndarray:
        """Observed entries of ``Y_partial``, conditional means elsewhere (see
        :meth:`predict`)."""
        Yp = np.asarray(Y_partial.to_numpy() if hasattr(Y_partial, "to_numpy") else Y_partial,
                        dtype=np.float64)
        if Yp.ndim != 2 or Yp.shape != mean.shape:
            raise ValueError(
                f"Y_partial must have shape (n_samples, n_outputs) = {mean.shape}, "
                f"got {Yp.shape}; use NaN for the outputs that are not observed"
            )
        if np.any(np.isinf(Yp)):
            raise ValueError("Y_partial contains inf; use NaN for unobserved outputs")
        obs = ~np.isnan(Yp)
        F, D = self.loadings_, self.noise_variance_
        k = F.shape[1]
        if k == 0:
            return np.where(obs, Yp, mean)
        b = np.where(obs, Yp - mean, 0.0) @ (F / D[:, None])     # F_O' D_O^-1 r_O
        patterns, inv = np.unique(obs, axis=0, return_inverse=True)
        Linv = row_core_inverse(F, D, patterns.T.astype(np.float64))
        m = row_core_solve(Linv[np.ravel(inv)], b)                # C_O^-1 b
        return np.where(obs, Yp, mean + m @ F.T)

    # ------------------------------------------------------- likelihood etc.
    def log_likelihood_samples(self, X: Any, Y: Any) -> np.ndarray:
        """Gaussian log-density of each row of ``Y`` given ``X`` (N,).

        ``-1/2 [K log 2 pi + log|Sigma| + r_i' Sigma^-1 r_i]``, O(K k) per row.
        """
        mean = self._mean(X)
        Ya = as_float_matrix(Y, "Y")
        if Ya.shape != mean.shape:
            raise ValueError(f"Y must have shape {mean.shape}, got {Ya.shape}")
        return -self.get_covariance().nll_rows((Ya - mean).T)

    def log_likelihood(self, X: Any, Y: Any) -> float:
        """Total Gaussian log-likelihood of ``Y`` given ``X`` (sum over rows).

        ``score`` is R^2, as scikit-learn expects of a regressor; use this for
        likelihood-based model comparison.
        """
        return float(np.sum(self.log_likelihood_samples(X, Y)))

    def get_covariance(self, dense: bool = False) -> LowRankCovariance | np.ndarray:
        """Error covariance ``F F' + diag(D)``: a ``LowRankCovariance`` (O(K k)
        memory), or a dense (K, K) array when ``dense=True``."""
        check_is_fitted(self)
        cov = LowRankCovariance(self.loadings_, self.noise_variance_)
        return cov.to_dense() if dense else cov

    def get_precision(self, dense: bool = False) -> LowRankPrecision | np.ndarray:
        """Error precision ``Sigma^-1 = diag(D)^-1 - G G'``: a
        ``LowRankPrecision``, or a dense (K, K) array when ``dense=True``."""
        prec = LowRankPrecision(self.get_covariance())
        return prec.to_dense() if dense else prec
