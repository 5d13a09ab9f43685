"""The SUR system model: equations in, a fitted :class:`~alsgls.SURResults` out.

``SUR({label: (dependent, exog)}, rank=k)`` follows linearmodels' convention
(arrays, pandas Series/DataFrames; labels and column names flow into every
output); :meth:`SUR.from_formula` takes ``{label: "y ~ 1 + x1 + x2"}`` strings
(formulaic, optional) and :meth:`SUR.from_arrays` the solver's ``(Xs, Y)``.
The error covariance is ``Sigma = F F' + diag(D)`` with ``F`` of rank ``k``;
``rank = K - 1`` (or ``"full"``) is the unrestricted SUR.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from .._labels import _frame, _series
from .._labels import require_pandas as import_pandas
from .._warnings import warn
from ..core.dispatch import SOLVERS, fit_problem
from ..core.fgls import ESTIMATORS, check_sigma_divisor, fit_fgls
from ..core.options import solver_options
from ..core.problem import (
    Problem,
    as_float_matrix,
    build_problem,
    check_missing,
    check_rank,
    check_weights,
    problem_data_state,
    restore_problem,
)
from ..persistence import check_state, tag_state
from .covariance import normalise_cov_type
from .inference import se_options
from .equations import (
    Equation,
    build_equations,
    check_observed_together,
    pack_equations,
    unpack_equations,
)
from .hypothesis import restriction_matrix

__all__ = ["SUR", "Equation", "import_pandas", "import_formulaic", "FULL_RANK_DEFAULT_LIMIT"]

#: Largest K for which ``SUR(equations)`` without ``rank`` means ``rank="full"``.
FULL_RANK_DEFAULT_LIMIT = 1000


def import_formulaic():
    """Import formulaic or raise an ImportError that says how to install it."""
    try:
        import formulaic
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "SUR.from_formula needs formulaic: pip install 'alsgls[formula]'"
        ) from exc
    return formulaic


def _stack_columns(ys: list) -> np.ndarray:
    """The (N, K) matrix of the responses ``ys``: a read-only view of the one
    array they are consecutive columns of (``SUR.from_arrays``' ``Y``), else a
    copy.  The view spares a copy of all responses, 1/6 of the boundary's
    cost at K = 2000, N = 1000."""
    y0 = ys[0]
    K = len(ys)
    if (isinstance(y0, np.ndarray) and y0.ndim == 1 and y0.dtype == np.float64
            and y0.strides[0] == K * y0.itemsize
            and all(isinstance(y, np.ndarray) and y.shape == y0.shape and y.strides == y0.strides
                    and y.dtype == y0.dtype and y.__array_interface__["data"][0]
                    == y0.__array_interface__["data"][0] + j * y0.itemsize
                    for j, y in enumerate(ys))):
        return np.lib.stride_tricks.as_strided(y0, (y0.shape[0], K),
                                               (y0.strides[0], y0.itemsize), writeable=False)
    return np.column_stack(ys)


def _named_designs(Xs: Sequence, exog_names: Any, labels: list[str]) -> list:
    """``Xs`` as DataFrames with the columns ``exog_names`` (one list per equation);
    ``ValueError`` naming ``exog_names`` and the equation when the counts differ."""
    K = len(labels)
    if isinstance(exog_names, (str, bytes)) or not isinstance(exog_names, Sequence) \
            or len(exog_names) != K:
        got = (f"{len(exog_names)} entries" if isinstance(exog_names, Sequence)
               and not isinstance(exog_names, (str, bytes)) else type(exog_names).__name__)
        raise ValueError(f"exog_names must hold one list of names per equation (K={K}), "
                         f"got {got}")
    pd = import_pandas()
    out = []
    for lab, x, names in zip(labels, Xs, exog_names):
        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
            raise ValueError(f"exog_names for equation {lab!r} must be a list of names, "
                             f"got {names!r}")
        arr = np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x)
        if arr.ndim == 2 and len(names) != arr.shape[1]:
            raise ValueError(f"exog_names for equation {lab!r} has {len(names)} names but its "
                             f"exog has {arr.shape[1]} columns")
        out.append(pd.DataFrame(arr, columns=[str(n) for n in names], copy=False))
    return out


class SUR:
    """Seemingly unrelated regressions with a low-rank-plus-diagonal error covariance.

    ``y_j = X_j beta_j + e_j`` for equations ``j = 1..K`` on ``N`` rows; rows
    of ``E = [e_1 ... e_K]`` are i.i.d. ``N(0, Sigma)`` with
    ``Sigma = F F' + diag(D)``, ``F`` (K x rank).  Responses may be missing
    (unbalanced systems, ``docs/missing.md``).

    Parameters
    ----------
    equations : mapping
        ``{label: (dependent, exog)}`` (or ``{label: {"dependent": y, "exog": X}}``).
        ``dependent`` is a 1-D array or pandas Series (N,), ``exog`` a 2-D array
        or DataFrame (N, p_j).  No intercept is added: include a column of ones.
        As in linearmodels, a third element ``(dependent, exog, weights)`` or
        the key ``"weights"`` gives observation weights; alsgls needs them to
        be the same for every equation observed in a row (one weight per
        row; equations without weights count as weight 1).  pandas objects
        whose indexes differ are aligned on the union of their indexes; the
        gaps become missing responses.  Two equations never observed in the
        same row are an error at full rank (their covariance is not
        identified) and a ``MissingDataWarning`` at a rank ``0 < k < K - 1``
        (the factor structure implies it).
    rank : int, "full" or "auto", optional
        Number of factors ``k``, ``0 <= k < K``; ``"full"`` means ``K - 1``,
        the unrestricted SUR (any positive-definite Sigma) -- the model
        linearmodels, Stata's ``sureg`` and systemfit fit, and the default
        up to ``FULL_RANK_DEFAULT_LIMIT`` (1000) equations.  Beyond that a
        rank must be given: at full rank Sigma is K x K.  ``"auto"`` (or
        ``"onatski"``, ``"bic"``, ``"aic"``, ``"cv"``) chooses ``k`` from the
        validated data with :func:`alsgls.learn.rank.select_rank_problem`
        (on the rows with every response observed when some are missing);
        the record is :attr:`rank_selection`, also on the results.
    missing : {"ml", "drop", "raise"}, default "ml"
        What to do with NaN in a dependent (a missing response; NaN in the
        same row of that equation's exog is then allowed).  ``"ml"``: exact
        maximum likelihood on every observed response under missing at
        random (:func:`alsgls.fit_missing`); rows with nothing
        observed are dropped with a note.  ``"drop"``: listwise deletion of
        every row with a NaN anywhere (what linearmodels and Stata do).
        ``"raise"``: ``ValueError``.
    weights : array_like or pandas Series, shape (N,), optional
        Non-negative row weights, rescaled to mean 1 over the rows used (as
        linearmodels does); each row's log-likelihood counts ``w_i`` times.
        With complete data this equals linearmodels' weighted SUR (data
        scaled by ``sqrt(w_i)``).  A Series is aligned on the equations' index.
    constraints : str, list of str, or tuple (R, q), optional
        Linear restrictions ``R beta = q`` imposed in estimation (every
        ``method``), in the string syntax of :meth:`SURResults.wald_test`
        (``"eqA_x1 = eqB_x1, eqA_x2 = 0"``) or as a matrix ``R`` (m, P)
        (array, or DataFrame whose columns name parameters) with ``q`` (m,);
        see :meth:`add_constraints`.

    Raises
    ------
    ValueError, TypeError
        For mismatched lengths, duplicate labels, non-numeric columns,
        rank-deficient designs, NaN in an exog where its dependent is
        observed, an equation with fewer than ``p_j + 1`` observed rows, or
        bad weights; messages name the equation.

    Notes
    -----
    Like statsmodels, the model keeps references to the data rather than
    copies (float64 arrays are used as read-only views; nothing is copied for
    memory's sake), and the validated problem (:attr:`data`) is built once
    at construction.  Modifying the arrays after constructing the model is
    not supported: the results and in-sample predictions would mix old and
    new data.  An exog shared by every equation (the same array) is stored
    and validated once.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import simulate_sur
    >>> from alsgls import SUR
    >>> Xs, Y, _ = simulate_sur(N=100, K=4, p=2, k=1, seed=0)
    >>> mod = SUR({f"eq{j}": (Y[:, j], Xs[j]) for j in range(4)}, rank=1)
    >>> res = mod.fit()
    >>> res.params.shape
    (8,)
    """

    def __init__(self, equations: Mapping, *, rank: int | str | None = None, missing: str = "ml",
                 weights: Any = None, constraints: Any = None) -> None:
        check_missing(missing)
        self.missing = missing
        self._equations, self._index, spec_w = build_equations(equations)
        self._formulas = None
        self._restriction = None
        self.rank_selection = None
        self.rank = self._resolve_rank(rank)   # a rank method: None until the data are valid
        Xs = [e.X for e in self._equations]   # views of one array: a shared design
        Y = _stack_columns([e.y for e in self._equations])
        w = self._row_weights(weights, spec_w, Y)
        labels = [e.label for e in self._equations]
        self._problem = build_problem(Xs, Y, weights=w, missing=missing, labels=labels,
                                      design_names=[f"equation {lab!r}: exog" for lab in labels])
        self._check_observed_together()
        if self.rank is None:
            self.rank = self._resolve_rank(rank)
        names = self.param_names
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"parameter names {dup} are ambiguous; rename labels or columns")
        if constraints is not None:
            r, q = (constraints if isinstance(constraints, tuple) and len(constraints) == 2
                    and not all(isinstance(c, str) for c in constraints) else (constraints, None))
            self.add_constraints(r, q)

    # -- construction ------------------------------------------------------
    def _row_weights(self, weights: Any, spec_w: np.ndarray | None,
                     Y: np.ndarray) -> np.ndarray | None:
        """One weight per row from ``weights=`` or the equations' weights (N,)."""
        if weights is not None and spec_w is not None:
            raise ValueError("weights are given both in the equations and as weights=; "
                             "give them once")
        if weights is not None:
            if hasattr(weights, "index") and self._index is not None and hasattr(weights, "reindex"):
                if not weights.index.equals(self._index):
                    weights = weights.reindex(self._index)   # absent rows become NaN: an error
            return check_weights(weights, Y.shape[0])
        if spec_w is None:
            return None
        obs = ~np.isnan(Y)
        Wo = np.where(obs, spec_w, np.nan)
        none = ~obs.any(axis=1)                               # rows with nothing observed
        hi = np.where(none, np.nan, np.where(obs, spec_w, -np.inf).max(axis=1))
        lo = np.where(none, np.nan, np.where(obs, spec_w, np.inf).min(axis=1))
        bad = np.flatnonzero(np.abs(hi - lo) > 1e-12 * np.abs(hi))
        if bad.size:
            i = int(bad[0])
            js = np.flatnonzero(obs[i])
            a = js[np.argmax(Wo[i, js])]
            b = js[np.argmin(Wo[i, js])]
            raise ValueError(
                f"equations {self._equations[a].label!r} and {self._equations[b].label!r} "
                f"have different weights in row {i} ({Wo[i, a]:g} vs {Wo[i, b]:g}); alsgls "
                "supports one weight per row, shared by every equation observed in it "
                "(pass weights=... or equal weights in every equation)")
        return check_weights(np.where(np.isnan(hi) & ~obs.any(axis=1), 1.0, hi), Y.shape[0])

    def _resolve_rank(self, rank: Any) -> int | None:
        """The factor rank; a rank method (``"auto"``, ...) runs on the validated
        problem and records :attr:`rank_selection` (None before it exists)."""
        K = len(self._equations)
        if rank is None:                       # the default: the peers' unrestricted SUR
            if K > FULL_RANK_DEFAULT_LIMIT:
                raise ValueError(
                    f"rank is required for K={K} > {FULL_RANK_DEFAULT_LIMIT} equations: the "
                    f"unrestricted Sigma (rank='full', the default) has {K * (K + 1) // 2} "
                    "parameters and needs K x K memory; pass rank='auto' (chosen from the "
                    "data), rank=k with k much smaller than K, or rank='full' explicitly")
            rank = "full"
        if isinstance(rank, str):
            from ..learn.rank import RANK_METHODS  # learn.rank imports only alsgls.core

            if rank == "full":
                return K - 1
            if rank not in RANK_METHODS:
                raise ValueError(f"rank must be an integer, 'full' or one of {RANK_METHODS}, "
                                 f"got {rank!r}")
            if getattr(self, "_problem", None) is None:
                return None
            self.rank_selection = self._select_rank(rank)
            return self.rank_selection.rank
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
            raise TypeError(f"rank must be an integer, 'full' or 'auto', got {rank!r}")
        return check_rank(int(rank), K, name="rank", warn_ledermann=False)

    def _select_rank(self, method: str) -> Any:
        """:func:`alsgls.learn.rank.select_rank_problem` on the validated problem
        (no re-validation): on the rows with every response observed when some
        are missing, with the row weights folded in (``Problem.scaled``)."""
        from ..learn.rank import select_rank_problem

        data = self._problem
        if not data.complete:
            rows = np.flatnonzero(data.O.all(axis=0))
            if rows.size <= data.pmax + 2:
                raise ValueError(
                    f"rank={method!r} with missing responses chooses the rank on the rows "
                    f"where every response is observed; there are {rows.size}, too few for "
                    f"{data.pmax} coefficients per equation; pass an integer rank")
            data = data.take(rows, "the rows with every response observed")
        return select_rank_problem(data.scaled(), method=method)

    def _check_observed_together(self) -> None:
        """Equations never observed in the same row: an error at full rank, a
        warning below (:func:`~alsgls.stats.equations.check_observed_together`)."""
        if self._problem.O is not None:
            check_observed_together(self._problem.O.T > 0, self.labels, self.rank,
                                    self.row_index if self._index is not None else None)

    @classmethod
    def from_arrays(cls, Xs: Sequence, Y: Any, *, rank: int | str | None = None,
                    labels: Sequence[str] | None = None,
                    exog_names: Sequence[Sequence[str]] | None = None,
                    missing: str = "ml", weights: Any = None,
                    constraints: Any = None) -> "SUR":
        """Build a model from the solver's layout.

        Parameters
        ----------
        Xs : list of K array_like (N, p_j), ndarray (K, N, p), or one 2-D design (N, p)
            Designs; one 2-D array (or DataFrame) is shared by every equation
            (stored once, not copied per equation).
        Y : array_like, shape (N, K)
            NaN marks a missing response.
        rank : int or "full", optional
            As in :class:`SUR` (default: full up to 1000 equations).
        labels : list of K str, optional
            Equation labels (default ``eq0, eq1, ...`` or Y's columns).
        exog_names : list of K lists of str, optional
            Regressor names per equation (default ``x0, x1, ...`` or the
            DataFrame's columns); each list has one name per column.
        missing, weights, constraints
            As in :class:`SUR`.

        Raises
        ------
        ValueError, TypeError
            As :class:`SUR`, and when ``Xs``, ``labels`` or ``exog_names`` do
            not match Y's K columns (messages name the argument and equation).
        """
        cols = list(getattr(Y, "columns", []))
        Ya = as_float_matrix(Y, "Y", 2, allow_nan=True)
        K = Ya.shape[1]
        if hasattr(Xs, "columns") or (isinstance(Xs, np.ndarray) and Xs.ndim == 2):
            Xs = [Xs] * K                           # one shared design: K references
        if isinstance(Xs, np.ndarray) and Xs.ndim == 3:
            Xs = list(Xs)
        if not isinstance(Xs, Sequence) or len(Xs) != K:
            n = len(Xs) if isinstance(Xs, Sequence) else type(Xs).__name__
            raise ValueError(f"Xs has {n} equations but Y has K={K} columns")
        labels = list(labels) if labels is not None else (
            [str(c) for c in cols] if cols else [f"eq{j}" for j in range(K)])
        if len(labels) != K:
            raise ValueError(f"labels has {len(labels)} entries but Y has K={K} columns")
        if exog_names is not None:
            Xs = _named_designs(Xs, exog_names, labels)
        eqs = [(lab, (Ya[:, j], x)) for j, (lab, x) in enumerate(zip(labels, Xs))]
        if len(set(labels)) != len(labels):
            dup = sorted({lab for lab in labels if labels.count(lab) > 1})
            raise ValueError(f"duplicate equation labels {dup}; labels must be unique")
        return cls(dict(eqs), rank=rank, missing=missing, weights=weights,
                   constraints=constraints)

    @classmethod
    def from_formula(cls, formulas: Mapping[str, str], data: Any, *,
                     rank: int | str | None = None, missing: str = "ml", weights: Any = None,
                     constraints: Any = None) -> "SUR":
        """Build a model from ``{label: "y ~ 1 + x1 + x2"}`` formulas.

        Parameters
        ----------
        formulas : mapping of str to str
            One formula per equation.  As in linearmodels, an intercept is
            included only when the formula says ``1 +``; categorical columns
            are dummy-encoded by formulaic.
        data : pandas.DataFrame
            Holds every variable named in the formulas.  NaN is handled by
            ``missing`` (a NaN response is a missing response).
        rank : int or "full", optional
            As in :class:`SUR` (default: full up to 1000 equations).
        missing : {"ml", "drop", "raise"}, default "ml"
            As in :class:`SUR`.
        weights : array_like (N,) or mapping {label: array_like (N,)}, optional
            Row weights, or linearmodels' per-equation mapping (which must
            agree across the equations observed in each row).
        constraints : optional
            As in :class:`SUR`.

        Raises
        ------
        ValueError
            When a formula names a column absent from ``data`` or has no ``~``.
        """
        formulaic = import_formulaic()
        from formulaic.parser import DefaultFormulaParser

        if not isinstance(formulas, Mapping):
            raise TypeError("formulas must be a mapping {label: 'y ~ x1 + x2'}")
        parser = DefaultFormulaParser(include_intercept=False)
        eqs, specs = {}, {}
        for label, f in formulas.items():
            if not isinstance(f, str) or "~" not in f:
                raise ValueError(f"equation {label!r}: formula {f!r} must look like 'y ~ x1 + x2'")
            try:
                mm = formulaic.model_matrix(formulaic.Formula(f, _parser=parser), data,
                                            na_action="ignore")
            except Exception as exc:  # formulaic raises its own error classes
                raise ValueError(f"equation {label!r}: cannot evaluate formula {f!r}: {exc}") from exc
            lhs, rhs = mm.lhs, mm.rhs
            if lhs.shape[1] != 1:
                raise ValueError(f"equation {label!r}: the left side of {f!r} must be one column")
            if rhs.shape[1] == 0:
                raise ValueError(f"equation {label!r}: formula {f!r} has no regressors")
            eqs[label] = (lhs.iloc[:, 0].rename(lhs.columns[0]), rhs)
            if isinstance(weights, Mapping) and label in weights:
                eqs[label] = eqs[label] + (weights[label],)
            specs[label] = rhs.model_spec
        if isinstance(weights, Mapping):
            unknown = sorted(set(map(str, weights)) - set(map(str, formulas)))
            if unknown:
                raise ValueError(f"weights names unknown equations {unknown}")
            weights = None
        mod = cls(eqs, rank=rank, missing=missing, weights=weights, constraints=constraints)
        mod._formulas = {"formulas": dict(formulas), "specs": specs}
        return mod

    # -- properties --------------------------------------------------------
    @property
    def equations(self) -> list[Equation]:
        return list(self._equations)

    @property
    def labels(self) -> list[str]:
        """Equation labels (K,)."""
        return [e.label for e in self._equations]

    @property
    def K(self) -> int:
        return len(self._equations)

    @property
    def nobs(self) -> int:
        """Rows N used in the fit (rows with at least one observed response)."""
        return self._problem.N

    @property
    def nobs_equation(self) -> np.ndarray:
        """Observed rows ``n_j`` used by each equation (K,) int."""
        return self._problem.n_observed

    @property
    def observed(self) -> np.ndarray | None:
        """Observation mask (N, K) over the rows used, or None when nothing is missing."""
        O = self._problem.O
        return None if O is None else O.T > 0

    @property
    def weights(self) -> np.ndarray | None:
        """Row weights over the rows used, rescaled to mean 1 (N,), or None."""
        return self._problem.w

    @property
    def rows(self) -> np.ndarray:
        """Positions of the rows used among the (aligned) input rows (N,)."""
        return self._problem.rows

    @property
    def row_index(self) -> Any:
        """Labels of the rows used: the pandas index subset, the positions when
        rows were dropped from array input, else None."""
        rows = self._problem.rows
        full = rows.size == self._problem.n_rows_in
        if self._index is not None:
            return self._index if full else self._index[rows]
        return None if full else rows

    @property
    def formulas(self) -> dict | None:
        """The formulas of a model built by :meth:`from_formula` (label -> formula), or None."""
        return None if self._formulas is None else dict(self._formulas["formulas"])

    def design_matrices(self, data: Any) -> list:
        """New designs (N_new, p_j) evaluated from ``data`` with the formulas of a
        model built by :meth:`from_formula` (for prediction).

        Raises
        ------
        ValueError
            When the model has no formulas, or ``data`` lacks a column a
            formula needs (the message names the equation).
        """
        if self._formulas is None:
            raise ValueError("data= is only for models built with SUR.from_formula; "
                             "pass exog={label: array} instead")
        out = []
        for e in self._equations:
            spec = self._formulas["specs"][e.label]
            try:
                mm = spec.get_model_matrix(data, na_action="ignore")
            except Exception as exc:  # formulaic raises its own error classes
                raise ValueError(f"equation {e.label!r}: cannot evaluate its formula "
                                 f"{self._formulas['formulas'][e.label]!r} on data: {exc}"
                                 ) from exc
            out.append(as_float_matrix(mm, f"equation {e.label!r}: exog from data", 2,
                                       allow_nan=True))
        return out

    def with_rank(self, rank: int | str) -> "SUR":
        """The same model (same validated data, no re-validation) at another rank."""
        new = copy.copy(self)
        new.rank_selection = None
        new.rank = new._resolve_rank(rank)
        new._check_observed_together()
        return new

    # -- pickling (the contract: alsgls.persistence) ------------------------------
    def __getstate__(self) -> dict:
        """The equations' arrays once (a shared design once,
        :func:`~alsgls.stats.equations.pack_equations`) and the problem's small
        records; the problem's ``X``, ``Yt`` and mask are rebuilt from them on
        loading, without re-validation."""
        state = dict(self.__dict__)
        state["_equations"] = pack_equations(self._equations)
        state["_problem"] = problem_data_state(self._problem)
        return tag_state(state)

    def __setstate__(self, state: dict) -> None:
        if check_state(state, "a SUR model"):       # else alsgls 0.1: every attribute
            eqs, Y, shared = unpack_equations(state["_equations"])
            state["_equations"] = eqs
            state["_problem"] = restore_problem(state["_problem"], [e.X for e in eqs], Y, shared)
        self.__dict__.update(state)

    def __copy__(self) -> "SUR":
        """A shallow copy sharing the validated data (:meth:`with_rank`)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    @property
    def param_names(self) -> list[str]:
        """``"<label>_<regressor>"`` for every coefficient, equation by equation."""
        return [f"{e.label}_{n}" for e in self._equations for n in e.exog_names]

    @property
    def data(self) -> Problem:
        """The validated problem (:class:`alsgls.core.problem.Problem`)."""
        return self._problem

    @property
    def index(self) -> Any:
        """The pandas index of the rows, or None for array input."""
        return self._index

    def __repr__(self) -> str:
        extra = "" if self.observed is None else f", missing={self.missing!r}"
        return (f"SUR(K={self.K}, N={self.nobs}, rank={self.rank}, "
                f"P={int(self._problem.p.sum())}{extra})")

    # -- fitting -----------------------------------------------------------
    def fit(self, *, method: str | None = None, solver: str = "als", sigma: Any = None,
            sigma_divisor: str = "n", cov_type: str = "unadjusted", debiased: bool = False,
            kernel: str | None = None, bandwidth: float | None = None, clusters: Any = None,
            group_debias: bool | None = None, se_method: str = "auto",
            se_tol: float | None = None, se_verbose: bool = False, tol: float = 1e-10,
            max_iter: int | None = None, **solver_options_: Any):
        """Fit the system and return a :class:`~alsgls.SURResults`.

        Parameters
        ----------
        method : {"ml", "twostep", "ols"}, default "ml"
            ``"ml"``: maximum likelihood (iterated GLS to convergence; Stata's
            ``sureg, isure``, linearmodels' ``iterate=True``).  ``"twostep"``:
            Sigma from equation-by-equation OLS residuals, then one exact GLS
            solve -- the default of linearmodels, Stata's ``sureg`` and
            systemfit; at a rank below ``K - 1`` the first-step Sigma is the
            maximum-likelihood factor analysis ``F F' + diag(D)`` of the OLS
            residuals.  ``"ols"``: equation by equation (restricted least
            squares with ``Sigma = I`` under constraints), with the full
            cross-equation covariance of the estimates.  Default ``"twostep"``
            when ``sigma`` is given.  ``"als"``/``"em"`` (the 0.1 meaning,
            now ``solver``) are deprecated.
        solver : {"als", "em"}, default "als"
            The ML algorithm: the matrix-free ALS solver, or the dense EM reference
            (K x K memory; small systems).  With missing responses both run the
            exact missing-data EM (:func:`alsgls.fit_missing`).
        sigma : ndarray (K, K), DataFrame, tuple (F, D) or LowRankCovariance, optional
            A known Sigma: one GLS solve with it (``method="twostep"``).
        sigma_divisor : {"n", "dfk"}, default "n"
            Divisor of the estimated Sigma of ``"twostep"`` and ``"ols"``:
            ``N``, or ``sqrt((N - p_i)(N - p_j))`` (``"dfk"``, alias
            ``"geomean"``: Stata's ``dfk``, systemfit's default; linearmodels'
            ``debiased=True`` applies it too).  ML uses ``N``.
        cov_type : {"unadjusted", "robust", "kernel", "clustered"}, default "unadjusted"
            Model-based ``A^-1``, the heteroskedasticity-robust sandwich, a
            HAC (kernel) sandwich for time-ordered rows, or a one- or two-way
            clustered sandwich (aliases: see
            :data:`alsgls.stats.covariance.COV_ALIASES`).
        debiased : bool, default False
            Scale the covariance of coefficients in equations i, j by
            ``N / sqrt((N - p_i)(N - p_j))`` and use Student t (and F)
            reference distributions with ``N - p_j`` degrees of freedom
            (``n_j``, the equation's observed rows, in place of ``N`` when
            responses are missing).  With ``sigma_divisor="dfk"`` the
            correction is already in Sigma-hat, so only the reference
            distributions change (linearmodels' ``debiased=True`` is
            ``sigma_divisor="dfk", debiased=True``).  True or False; anything
            else is a ``TypeError``.
        kernel : {"bartlett", "parzen", "qs"}, optional
            ``cov_type="kernel"`` only (default "bartlett").
        bandwidth : float, optional
            ``cov_type="kernel"`` only (default: automatic, as linearmodels).
        clusters : array_like (N,) or (N, 2), optional
            ``cov_type="clustered"`` only: one or two columns of group codes
            over the model's rows (all input rows, or only the rows used).
        group_debias : bool, optional
            ``cov_type="clustered"`` only: the ``G / (G - 1)`` correction.
        se_method : {"auto", "exact", "lanczos"}, default "auto"
            How the coefficient covariance is computed (on first use):
            ``"exact"``, a dense core of side ``min(N k, P)`` (exact to
            rounding; ``MemoryError`` beyond
            ``alsgls.stats.inference.EXACT_CORE_LIMIT``); ``"lanczos"``, the
            truncated eigen-correction, every model-based standard error
            within ``se_tol`` (a certified bound) and never above the exact
            one; ``"auto"``, exact when that is cheap, else Lanczos.  The
            summary header says which ran, with its bound.
        se_tol : float, optional
            Lanczos only: bound on the relative error of every model-based
            standard error, in (0, 0.4); default 1e-3.
        se_verbose : bool, default False
            Show the progress of the standard-error computation (a tqdm bar
            when tqdm is installed); it is always logged to the ``"alsgls"``
            logger.
        tol : float, default 1e-10
            Tolerance of the solver (see :func:`alsgls.als_gls`).
        max_iter : int, optional
            Sweeps (ALS) or iterations (EM) limit.
        **solver_options_
            Further solver options (:class:`alsgls.SolverOptions`:
            ``cg_maxiter, eig_maxiter, d_floor, random_state, blas_threads,
            accelerate``), validated; an unknown name is a ``TypeError``.

        Raises
        ------
        ValueError
            For an invalid option, a covariance option that ``cov_type`` does
            not take, or when ``rank = K - 1``, ``method="ml"`` and the
            unrestricted likelihood is unbounded (no finite MLE).
        """
        from .results import SURResults, check_debiased

        method, solver = self._fit_method(method, solver, sigma)
        cov_type = normalise_cov_type(cov_type)
        se = se_options(se_method, se_tol, se_verbose)
        debiased = check_debiased(debiased)
        given = self._cov_options(kernel, bandwidth, clusters, group_debias)
        config = None
        if given or cov_type in ("kernel", "clustered"):
            from .covariance import covariance_config

            config = covariance_config(cov_type, self.nobs, **given)
        if "iterate" in solver_options_:        # linearmodels' SUR.fit(iterate=True)
            raise TypeError("alsgls has no iterate=: method='ml' is iterated GLS to "
                            "convergence, method='twostep' linearmodels' default")
        options = solver_options(None, "SUR.fit", tol=tol, max_iter=max_iter,
                                 **solver_options_)
        restriction = self._restriction
        if method == "ml":
            if sigma is not None:
                raise ValueError("sigma= fixes Sigma, so there is nothing to maximise over: "
                                 "use method='twostep' (one GLS solve with that Sigma)")
            if check_sigma_divisor(sigma_divisor) != "n":
                raise ValueError("sigma_divisor applies to the estimated Sigma of "
                                 "method='twostep' and 'ols'; the MLE uses divisor N")
            extra = {} if restriction is None else {"restriction": restriction}
            fit, Rt = fit_problem(self._problem, self.rank, options, solver=solver,
                                  ledermann_warning=False, **extra)
        else:
            fit, Rt = fit_fgls(self._problem, self.rank, options, method=method, sigma=sigma,
                               sigma_divisor=sigma_divisor, restriction=restriction)
        return SURResults(self, fit, cov_type=cov_type, debiased=debiased, residuals=Rt,
                          cov_config=config, method=method,
                          sigma_divisor=("n" if sigma is not None
                                         else check_sigma_divisor(sigma_divisor)),
                          se_options=se)

    def _fit_method(self, method: Any, solver: Any, sigma: Any) -> tuple[str, str]:
        """``(method, solver)`` validated; the 0.1 spelling ``method="als"|"em"``
        warns and moves to ``solver``."""
        if method in SOLVERS[:2]:
            warn(f"fit(method={method!r}) is deprecated: the algorithm is now "
                 f"solver={method!r}, and method chooses the estimator "
                 "('ml', 'twostep' or 'ols')", DeprecationWarning)
            method, solver = "ml", method
        if method is None:
            method = "ml" if sigma is None else "twostep"
        if method not in ("ml",) + ESTIMATORS:
            raise ValueError(f"method must be 'ml', 'twostep' or 'ols', got {method!r}")
        if solver not in SOLVERS[:2]:
            raise ValueError(f"solver must be 'als' or 'em', got {solver!r}")
        return method, solver

    def _cov_options(self, kernel: Any, bandwidth: Any, clusters: Any,
                     group_debias: Any) -> dict:
        """The covariance options that were given, clusters over the rows used."""
        out = {}
        if kernel is not None:
            out["kernel"] = kernel
        if bandwidth is not None:
            out["bandwidth"] = bandwidth
        if group_debias is not None:
            out["group_debias"] = group_debias
        if clusters is not None:
            out["clusters"] = self._cluster_rows(clusters)
        return out

    def _cluster_rows(self, clusters: Any) -> Any:
        """Cluster codes over the rows used: a pandas object is aligned on the
        model's index; an array over all input rows is subset to the rows used."""
        if hasattr(clusters, "index") and self._index is not None and hasattr(clusters, "loc"):
            if not clusters.index.equals(self._index):
                missing = self._index.difference(clusters.index)
                if len(missing):
                    raise ValueError(f"clusters has no entry for {len(missing)} row(s) of "
                                     f"the model, e.g. {missing[0]!r}")
                clusters = clusters.loc[self._index]
            clusters = clusters.to_numpy()
        arr = np.asarray(clusters)
        n_in, rows = self._problem.n_rows_in, self._problem.rows
        if arr.ndim >= 1 and arr.shape[0] == n_in and rows.size != n_in:
            arr = arr[rows]
        return arr

    # -- constraints -------------------------------------------------------
    def add_constraints(self, r: Any, q: Any = None) -> None:
        """Impose linear restrictions ``r beta = q`` in estimation (linearmodels' name).

        Replaces any constraints set before (as linearmodels does); give every
        restriction in one call.

        Parameters
        ----------
        r : str, list of str, ndarray (m, P) or DataFrame
            Strings in the syntax of :meth:`SURResults.wald_test`
            (``"eqA_x1 = eqB_x1, eqA_x2 = 0"``), or a matrix over the
            parameters (a DataFrame's columns name them).
        q : array_like (m,), optional
            Right-hand side for a matrix (default 0).

        Raises
        ------
        ValueError
            Unknown parameter names, wrong shapes, redundant or inconsistent
            restrictions (messages name them).
        """
        from ..core.restriction import build_restriction

        R, value = restriction_matrix(r, q, self.param_names)
        self._restriction = build_restriction(R, value, self._problem.layout,
                                              names=self.param_names)

    def reset_constraints(self) -> None:
        """Remove the constraints."""
        self._restriction = None

    @property
    def constraints(self) -> Any:
        """The restrictions ``(R, q)`` as a DataFrame (m, P) over the parameter
        names and a Series (m,) (arrays without pandas), or None."""
        res = self._restriction
        if res is None:
            return None
        rows = [f"r{i}" for i in range(res.R.shape[0])]
        return (_frame(np.array(res.R), rows, self.param_names),
                _series(np.array(res.q), rows, "q"))
