"""The validated problem: the one boundary between user input and the solvers.

Every public entry point (``als_gls``, ``em_gls``, ``fit_missing``, ``SUR``,
``ALSGLS``, ``select_rank``) calls :func:`build_problem` once; everything
downstream -- the solvers, the statistics layer, rank selection, the
estimator -- receives the :class:`Problem` record and trusts it: finite
float64 arrays of the documented shapes, full-column-rank designs on each
equation's observed rows, weights rescaled to mean 1, the missing-data policy
applied.  Error messages name the argument and the equation (by label when
the caller has labels) and say what to do.

Input is never modified.  A ``(K, N, p)`` float64 C-contiguous design array
is used without a copy; a design shared by all equations (a 2-D ``Xs``, or a
list holding one array K times) is stored once and seen by the kernels as a
zero-stride ``(K, N, p)`` view.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from .._threads import single_blas_thread
from .._warnings import warn
from ..exceptions import IdentificationWarning, MissingDataWarning
from ._backend import is_lazy
from .ops import CoefficientLayout, block_jacobi_inverse, design_matvec, design_rmatvec

__all__ = [
    "Problem", "build_problem", "design_list", "check_missing", "check_rank", "check_weights", "as_float_matrix",
    "check_designs", "MISSING_POLICIES", "COLLINEARITY_COND", "ZERO_VARIANCE_RTOL",
    "ROUNDOFF_FACTOR", "REFINE_RTOL",
]

#: Values of ``missing=``.
MISSING_POLICIES = ("ml", "drop", "raise")
#: Designs whose column-scaled condition number exceeds this are rejected as
#: rank deficient: beyond it the coefficients are not determined by the data
#: to more than a couple of digits in float64.
COLLINEARITY_COND = 1e10
#: An equation whose OLS residual variance is below this fraction of its
#: response's total variance (about the mean when the design spans a constant,
#: about zero otherwise: :attr:`Problem.total_variances`) is fitted exactly by
#: its regressors: its residuals are then below 1e-6 of the response's spread.
ZERO_VARIANCE_RTOL = 1e-12
#: Round-off allowance of the exact-fit test.  Least-squares residuals of a
#: backward-stable solve (normal equations plus one step of iterative
#: refinement, :meth:`Problem.ols`) are exact to about ``eps kappa_j |y_j|``,
#: ``kappa_j`` the column-scaled condition number of ``X_j`` (at most
#: ``COLLINEARITY_COND ** 0.5``), so a residual variance below
#: ``(ROUNDOFF_FACTOR eps kappa_j)^2`` times the response's mean square is
#: indistinguishable from zero (a constant response with an intercept, say).
ROUNDOFF_FACTOR = 16.0
#: :meth:`Problem.ols` refines the normal-equation solution when the first
#: correction changes the residuals by more than this fraction of their norm
#: (large offsets, offset regressors such as calendar years): one step brings
#: them to the round-off of the data themselves.
REFINE_RTOL = 1e-12
#: Safety factor of the bound on the normal equations' rounding in :meth:`Problem.ols`.
REFINE_GUARD = 16.0


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


@dataclass(frozen=True, eq=False)
class Problem:
    """A validated SUR system in the solvers' layout.

    Attributes
    ----------
    X : ndarray, shape (K, N, pmax)
        Designs, zero-padded to ``pmax`` columns and zero in rows where the
        equation's response is missing; read-only (a zero-stride view when
        ``shared``).
    Yt : ndarray, shape (K, N)
        Responses, equation-major, zero where missing; read-only.
    layout : CoefficientLayout
        Regressors per equation and the coefficient layouts.
    gram : ndarray, shape (K, pmax, pmax)
        ``X_j' diag(w o_j) X_j`` over each equation's observed rows, with a
        unit diagonal on padded coordinates.
    O : ndarray of float, shape (K, N), or None
        1.0 where ``Y[i, j]`` is observed, 0.0 where missing; None when every
        response is observed.
    w : ndarray, shape (N,), or None
        Row weights rescaled to mean 1; None when unweighted.
    labels : tuple of str or None
        Equation labels (used in messages), or None for positions.
    rows : ndarray of int, shape (N,)
        Positions of the rows used among the caller's rows.
    n_rows_in : int
        Rows the caller passed.
    missing : str
        The missing-data policy applied.
    """

    X: np.ndarray
    Yt: np.ndarray
    layout: CoefficientLayout
    gram: np.ndarray
    O: np.ndarray | None = None
    w: np.ndarray | None = None
    labels: tuple | None = None
    rows: np.ndarray | None = None
    n_rows_in: int = 0
    missing: str = "ml"

    # -- shapes ----------------------------------------------------------------
    @property
    def K(self) -> int:
        return self.Yt.shape[0]

    @property
    def N(self) -> int:
        return self.Yt.shape[1]

    @property
    def p(self) -> np.ndarray:
        """Regressors per equation (K,)."""
        return self.layout.p

    @property
    def pmax(self) -> int:
        return self.layout.pmax

    @property
    def mask(self) -> np.ndarray:
        """Boolean (K, pmax): True where a coefficient exists."""
        return self.layout.mask

    @property
    def shared(self) -> bool:
        """One design serves every equation: ``X`` is a zero-stride view of it."""
        return self.K > 1 and self.X.strides[0] == 0

    @property
    def complete(self) -> bool:
        """Every response observed (no mask)."""
        return self.O is None

    @property
    def n_observed(self) -> np.ndarray:
        """Observed rows per equation (K,) int."""
        if self.O is None:
            return np.full(self.K, self.N, dtype=np.int64)
        return self.O.sum(axis=1).astype(np.int64)

    @property
    def observation_weights(self) -> np.ndarray:
        """``w_i o_ij`` (K, N): the weight of each entry in the likelihood."""
        Om = np.ones((self.K, self.N)) if self.O is None else self.O
        return Om if self.w is None else Om * self.w[None, :]

    def equation(self, j: int) -> str:
        """``"equation 'label'"`` or ``"equation j"`` for messages."""
        return f"equation {self.labels[j]!r}" if self.labels else f"equation {j}"

    def constant_columns(self) -> np.ndarray:
        """(K, pmax) bool: the column is a non-zero constant over the equation's
        observed rows (an intercept); reductions only, no copy of the data."""
        X = self.X[:1] if self.shared else self.X
        if self.O is None:
            hi, lo, first = X.max(axis=1), X.min(axis=1), X[:, 0, :]
        else:
            obs = self.O[:, :, None] > 0
            hi = np.where(obs, X, -np.inf).max(axis=1)
            lo = np.where(obs, X, np.inf).min(axis=1)
            first = hi
        out = (hi == lo) & (first != 0) & np.isfinite(hi)
        return np.broadcast_to(out, (self.K, self.pmax)) & self.mask

    # -- derived problems --------------------------------------------------------
    def scaled(self) -> "Problem":
        """The unweighted problem with ``sqrt(w_i)`` folded into the rows.

        With weights rescaled to mean 1, ``sum_i w_i l_i / N`` is the unweighted
        NLL per row of ``sqrt(w_i) (y_i, X_i)``, so a balanced solver on this
        problem is exact weighted ML.  Costs one copy of the data.
        """
        if self.w is None:
            return self
        if self.O is not None:
            raise ValueError("scaled() is for complete responses: with missing ones the "
                             "weights enter the observed-data likelihood row by row")
        sw = np.sqrt(self.w)
        X = (np.broadcast_to(self.X[0] * sw[:, None], self.X.shape) if self.shared
             else self.X * sw[None, :, None])            # a shared design stays one array
        out = dataclasses.replace(self, X=_readonly(X), Yt=_readonly(self.Yt * sw[None, :]),
                                  w=None)
        # the scaled rows' residual variances are the weighted ones, whose exact-fit
        # test is the weighted problem's (about the weighted mean, not about a
        # constant that sqrt(w) has turned into a non-constant)
        for name in ("mean_squares", "total_variances", "zero_variance_threshold"):
            out.__dict__[name] = getattr(self, name)
        return out

    def take(self, rows: np.ndarray, what: str = "the selected rows", *,
             check: bool = True) -> "Problem":
        """The sub-problem on ``rows`` (e.g. a cross-validation fold).

        The data are not coerced again; the Gram matrices of the rows are
        formed and, with ``check`` (a subset to fit on), checked: a design
        column can vanish on a subset (a rare dummy), and an equation can have
        too few observed rows.  A subset only evaluated on (a test fold)
        needs no check.  Weights are rescaled to mean 1 over the rows.
        ``what`` names the subset in messages.
        """
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.N,):
                raise ValueError(f"a boolean rows mask must have shape ({self.N},), "
                                 f"got {rows.shape}")
            rows = np.flatnonzero(rows)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer) or rows.size == 0:
            raise ValueError("rows must be a non-empty 1-D array of row positions or a "
                             f"boolean mask of length N={self.N}")
        X = (np.broadcast_to(self.X[0, rows], (self.K, rows.size, self.pmax))
             if self.shared else self.X[:, rows])
        O = None if self.O is None or self.O[:, rows].all() else self.O[:, rows]
        w = None if self.w is None else self.w[rows] * (rows.size / self.w[rows].sum())
        gram = _gram(X, self.layout, O, w, self.shared)
        if check:
            _check_counts(self.layout, rows.size if O is None else O.sum(axis=1),
                          lambda j: f"{self.equation(j)} on {what}")
            check_designs(X, gram, self.layout, lambda j: f"{self.equation(j)} on {what}")
        return dataclasses.replace(
            self, X=_readonly(X), Yt=_readonly(self.Yt[:, rows]), O=O, w=w, gram=gram,
            rows=self.rows[rows], n_rows_in=self.n_rows_in)

    # -- least squares -------------------------------------------------------------
    def solve_gram(self, rhs: np.ndarray) -> np.ndarray:
        """``(X_j' W X_j)^-1 rhs_j`` for every equation: (K, pmax) -> (K, pmax).

        One Cholesky factorisation of the column-scaled Gram matrix when the
        design is shared (``gram`` is then one matrix seen K times), a
        batched one otherwise.
        """
        if self.gram.strides[0] == 0 and self.K > 1:
            from scipy.linalg import cho_factor, cho_solve

            g = self.gram[0]
            d = np.sqrt(np.diag(g))
            factor = cho_factor(g / d[:, None] / d[None, :], lower=True)
            return cho_solve(factor, (rhs / d).T).T / d
        return (self.gram_inv @ rhs[:, :, None])[..., 0]

    @cached_property
    def gram_inv(self) -> np.ndarray:
        """``(X_j' W X_j)^-1`` (K, pmax, pmax), computed once: the OLS solves and
        the block-Jacobi preconditioner of every GLS step share it."""
        return _readonly(block_jacobi_inverse(self.gram))

    def _weighted(self, W: np.ndarray) -> np.ndarray:
        """``W`` times the observation weights (``W`` is zero where missing)."""
        return W if self.w is None else W * self.w[None, :]

    def ols(self, sumsq: bool = False, moments: bool = False) -> tuple:
        """Equation-by-equation (weighted) OLS on the observed rows:
        coefficients (K, pmax) and residuals (K, N), zero where missing, and
        with ``sumsq=True`` their (weighted) sums of squares (K,) as well;
        with ``moments=True`` then also ``X_j' W r_j`` (K, pmax), the
        residuals' moments, or None when refined residuals need a pass for them.

        The normal equations (one Gram factorisation for a shared design),
        then, when it matters, one step of iterative refinement: the
        correction ``(X'WX)^-1 X'W r`` of the first residuals ``r``.  With
        offsets (``Y + 1e7``, a regressor in calendar years) the first
        residuals can be wrong in the third digit; the refined ones are exact
        to the round-off of ``Y`` itself (:data:`REFINE_RTOL`).  The
        correction is computed only for equations where rounding could reach
        that: the normal equations err by about ``eps kappa^3 ||y||`` in the
        residuals (``kappa`` the column-scaled condition of the design), so
        an equation with ``REFINE_GUARD pmax eps kappa^3 ||y|| <= REFINE_RTOL
        ||r||`` needs no pass over the data for it.

        The moments ``X' W r`` then follow from the normal equations,
        ``X'W y - (X'WX) theta``, also without a pass: that difference errs by
        about ``eps kappa^2 ||X_j|| ||y_j||``, which the same bound puts below
        ``1e-13 ||X_j|| ||r_j||``, as accurate as forming them from ``r``.
        """
        xty = self.xty
        theta = self.solve_gram(xty)
        Rt = design_matvec(self.X, theta)
        np.subtract(self.Yt, Rt, out=Rt)
        if self.O is not None:
            Rt *= self.O
        ss = self._sumsq(Rt)
        rounding = (REFINE_GUARD * self.pmax * np.finfo(float).eps * self.condition ** 3) ** 2 \
            * self.mean_squares * self.n_weighted
        xr = None
        if np.any(rounding > REFINE_RTOL ** 2 * ss):
            g = design_rmatvec(self.X, self._weighted(Rt))
            delta = self.solve_gram(g)
            # ||X delta||^2_W = delta' g: the refinement's change to the residuals
            if np.any(np.einsum("kp,kp->k", delta, g) > REFINE_RTOL ** 2 * ss):
                theta = theta + delta
                fix = design_matvec(self.X, delta)
                Rt -= fix if self.O is None else fix * self.O
                ss = self._sumsq(Rt)
            else:
                xr = g
        elif moments:
            xr = xty - np.einsum("kpq,kq->kp", self.gram, theta)
        out = (theta, Rt, ss) if sumsq else (theta, Rt)
        return out + (xr,) if moments else out

    @cached_property
    def xty(self) -> np.ndarray:
        """The responses' moments ``X_j' W y_j`` (K, pmax), computed once
        (:func:`build_problem` forms them with the Gram matrices when it can)."""
        return _readonly(design_rmatvec(self.X, self._weighted(self.Yt)))

    def _sums(self, V: np.ndarray) -> np.ndarray:
        """Weighted sums over each equation's observed rows, ``sum_i w_i o_ij V[j, i]``
        (``V`` zero where missing)."""
        return V.sum(axis=1) if self.w is None else V @ self.w

    def _sumsq(self, V: np.ndarray) -> np.ndarray:
        """``sum_i w_i o_ij V[j, i]^2`` (``V`` zero where missing), no temporary."""
        if self.w is None:
            return np.einsum("kn,kn->k", V, V)
        return np.einsum("kn,kn,n->k", V, V, self.w)

    @cached_property
    def n_weighted(self) -> np.ndarray:
        """``n_j = sum_i w_i o_ij`` (K,): the observed rows' total weight."""
        if self.O is None:
            return np.full(self.K, float(self.N) if self.w is None else float(self.w.sum()))
        return self._sums(self.O)

    @cached_property
    def condition(self) -> np.ndarray:
        """Column-scaled condition number ``kappa_j`` of each design (K,): the
        square root of that of its Gram matrix (computed once for a shared one)."""
        return _condition(_scaled_condition(self.gram)[1], self.K)

    @cached_property
    def spans_constant(self) -> np.ndarray:
        """(K,) bool: the constant lies in the span of the equation's design on
        its observed rows (an intercept, or dummies of every level).

        ``rho_j = 1 - c' (X_j'WX_j)^-1 c / n_j`` with ``c = X_j' W 1`` is the
        share of the constant outside the span; it is zero up to round-off,
        ``eps * kappa_j^2``, when the constant is inside.
        """
        if self.O is None:      # one row of weights, seen by every equation
            X = self.X[:1] if self.shared else self.X
            ones = self._weighted(np.ones((1, self.N)))
            c = design_rmatvec(X, np.broadcast_to(ones, (X.shape[0], self.N)))
            c = np.broadcast_to(c, (self.K, self.pmax))
        else:
            c = design_rmatvec(self.X, self._weighted(self.O))
        rho = 1.0 - np.einsum("kp,kp->k", c, self.solve_gram(c)) / self.n_weighted
        return rho <= ROUNDOFF_FACTOR ** 2 * np.finfo(float).eps * self.condition ** 2

    @cached_property
    def mean_squares(self) -> np.ndarray:
        """The (weighted) mean square of each response over its observed rows (K,)."""
        return self._sumsq(self.Yt) / self.n_weighted

    @cached_property
    def total_variances(self) -> tuple[np.ndarray, np.ndarray]:
        """``(total, msq)`` (K,) each: the weighted variance of each response
        about its mean when its design spans a constant (its centred total sum
        of squares over ``n_j``), about zero otherwise; and its mean square.
        A response whose offset dominates its spread is summed about its mean
        (a second pass), so an offset costs no digits."""
        n = self.n_weighted
        msq = self.mean_squares
        mean = self._sums(self.Yt) / n
        total = np.where(self.spans_constant, msq - mean * mean, msq)
        # msq - mean^2 keeps 10 digits where it is above 1e-6 msq; below, the
        # offset dominates: a second pass about the mean, in blocks of equations
        redo = np.flatnonzero(self.spans_constant & (total < 1e-6 * msq))
        step = max(1, min(2 ** 16 // self.N, self.K // 8))      # no K x N temporary
        for j in (redo[a:a + step] for a in range(0, redo.size, step)):
            Yc = self.Yt[j] - mean[j, None]
            if self.O is not None:
                Yc *= self.O[j]
            total[j] = (np.einsum("kn,kn->k", Yc, Yc) if self.w is None
                        else np.einsum("kn,kn,n->k", Yc, Yc, self.w)) / n[j]
        return total, msq

    @cached_property
    def zero_variance_threshold(self) -> np.ndarray:
        """Residual variance (K,) at or below which an equation is fitted exactly:
        ``max(ZERO_VARIANCE_RTOL * total_j, (ROUNDOFF_FACTOR eps kappa_j)^2 msq_j)``
        (see :data:`ZERO_VARIANCE_RTOL`, :data:`ROUNDOFF_FACTOR`), at least the
        smallest positive float; relative to the data's scale, offsets excluded."""
        return self._zero_variance_bound(*self.total_variances)

    def _zero_variance_bound(self, total: np.ndarray, msq: np.ndarray) -> np.ndarray:
        """``max(ZERO_VARIANCE_RTOL total, (ROUNDOFF_FACTOR eps kappa)^2 msq, tiny)``."""
        roundoff = (ROUNDOFF_FACTOR * np.finfo(float).eps * self.condition) ** 2 * msq
        return np.maximum(np.maximum(ZERO_VARIANCE_RTOL * total, roundoff),
                          np.finfo(float).tiny)

    def exact_fits(self, Rt: np.ndarray, sumsq: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Residual variances ``s`` (K,) of residuals ``Rt`` (zero where missing)
        over each equation's observed (weighted) rows, and the equations their
        regressors fit exactly: ``s`` at or below :attr:`zero_variance_threshold`
        (a relative test: ``Y -> a Y + b`` with ``b`` in the designs' span
        leaves the answer unchanged, up to round-off).  ``sumsq``: the
        residuals' sums of squares when known (``ols(sumsq=True)``)."""
        s = (self._sumsq(Rt) if sumsq is None else sumsq) / self.n_weighted
        if "zero_variance_threshold" not in self.__dict__:
            # the threshold with the mean square for the total variance (which is
            # at most it) bounds the threshold: above it, no equation is fitted
            # exactly, and the centred variances (a pass over the designs, for
            # the constant's span) are not needed
            msq = self.mean_squares
            if not np.any(s <= self._zero_variance_bound(msq, msq)):
                return s, np.zeros(0, dtype=np.intp)
        return s, np.flatnonzero(s <= self.zero_variance_threshold)

    def residual_variances(self, Rt: np.ndarray, sumsq: np.ndarray | None = None
                           ) -> np.ndarray:
        """Residual variances (K,) as :meth:`exact_fits` computes them;
        ``ValueError`` for an equation its regressors fit exactly."""
        s, bad = self.exact_fits(Rt, sumsq)
        if bad.size:
            j = int(bad[0])
            more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
            where = " on its observed rows" if self.O is not None else ""
            raise ValueError(
                f"{self.equation(j)}{more} has zero residual variance{where}: its response "
                "is an exact linear combination of its regressors (residual variance "
                f"{s[j]:.3g}, at most {ZERO_VARIANCE_RTOL:g} of its total variance "
                f"{self.total_variances[0][j]:.3g} or within round-off); remove that equation")
        return s

    # -- pickling (the contract: alsgls.persistence) -----------------------------------
    def __getstate__(self) -> dict:
        """The fields and the O(K) cached values, every zero-stride array (the
        shared design, its Gram matrix) as its base -- numpy pickles a
        broadcast view as a full copy, K times the design -- and the mask
        as booleans; tagged with the pickle format."""
        from ..persistence import tag_state

        state = {name: _Broadcast.pack(v) for name, v in self.__dict__.items()}
        if self.O is not None:
            state["O"] = self.O > 0
        return tag_state(state)

    def __setstate__(self, state: dict) -> None:
        from ..persistence import check_state

        check_state(state, "a Problem")
        state = {name: _Broadcast.unpack(v) for name, v in state.items()}
        if state.get("O") is not None and state["O"].dtype == bool:
            state["O"] = state["O"].astype(np.float64)
        for name in ("X", "Yt", "gram"):
            state[name] = _readonly(state[name])
        self.__dict__.update(state)


@dataclass(frozen=True)
class _Broadcast:
    """A pickled zero-stride array: its base and its shape (see ``Problem.__getstate__``)."""

    base: np.ndarray
    shape: tuple

    @staticmethod
    def pack(value: Any) -> Any:
        if (isinstance(value, np.ndarray) and value.ndim and value.shape[0] > 1
                and value.strides[0] == 0):
            return _Broadcast(value[0], value.shape)
        return value

    @staticmethod
    def unpack(value: Any) -> Any:
        if isinstance(value, _Broadcast):
            return _readonly(np.broadcast_to(value.base, value.shape))
        return value


def problem_data_state(problem: Problem) -> dict:
    """The pickled state of ``problem`` without its data ``X``, ``Yt``, ``O``:
    for an owner that stores the designs and responses itself (a SUR model
    pickles its equations' arrays once) and rebuilds them with
    :func:`restore_problem`."""
    state = problem.__getstate__()
    for name in ("X", "Yt", "O"):
        del state[name]
    return state


def restore_problem(state: dict, Xs: list, Y: np.ndarray, shared: bool) -> Problem:
    """The :class:`Problem` of ``state`` (:func:`problem_data_state`) with ``X``,
    ``Yt`` and ``O`` rebuilt from the designs ``Xs`` (K arrays (n_rows_in,
    p_j); one array K times when ``shared``) and responses ``Y`` (n_rows_in,
    K) it was built from, exactly as :func:`build_problem` builds them; no
    checks (the data were validated when the problem was first built)."""
    rows, layout = state["rows"], state["layout"]
    Yr = Y if rows.size == Y.shape[0] else Y[rows]
    obs = ~np.isnan(Yr.T)
    O = None if obs.all() else obs.astype(np.float64)
    X = _stack(Xs, None, rows, None if O is None else obs, shared, layout)
    Yt = np.ascontiguousarray(Yr.T) if O is None else np.where(obs, Yr.T, 0.0)
    problem = object.__new__(Problem)
    problem.__setstate__({**state, "X": X, "Yt": Yt, "O": O})
    return problem


# ---------------------------------------------------------------------------------
# Coercion
# ---------------------------------------------------------------------------------

def as_float_matrix(a: Any, name: str, ndim: int = 2, *, allow_nan: bool = False,
                    check_finite: bool = True) -> np.ndarray:
    """Coerce ``a`` to a float64 array with ``ndim`` dimensions (no copy when it
    already is one).

    Raises ``TypeError`` for non-numeric or complex input and ``ValueError`` for
    the wrong dimensionality, inf, or NaN unless ``allow_nan``; messages name
    ``name``.  ``check_finite=False`` leaves the values to the caller
    (:func:`has_nan`).  Never modifies ``a``.
    """
    if type(a) is np.ndarray and a.dtype == np.float64:     # the common case, no dtype checks
        arr = a
    else:
        arr = _numeric_array(a, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {arr.shape}")
    if check_finite:
        bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} contains NaN or inf (first at index "
                             f"{tuple(int(i) for i in np.argwhere(bad)[0])})")
    return arr


def _numeric_array(a: Any, name: str) -> np.ndarray:
    """``a`` as a float64 array; ``TypeError`` for non-numeric or complex input."""
    if hasattr(a, "to_numpy"):
        a = a.to_numpy()
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def has_nan(arr: np.ndarray, name: str) -> bool:
    """Whether the float array ``arr`` holds NaN (missing values); ``ValueError``
    naming ``name`` for inf.  One pass when every value is finite."""
    if np.isfinite(arr).all():
        return False
    as_float_matrix(arr, name, arr.ndim, allow_nan=True)      # raises for inf
    return True


class _DesignNames:
    """How messages name each of K designs: the caller's names, or ``Xs[j]``
    (``Xs`` alone for one design shared by every equation), formed on demand."""

    def __init__(self, K: int, given: Sequence[str] | None = None) -> None:
        self.K, self.given, self.shared = K, None if given is None else list(given), False

    def __len__(self) -> int:
        return self.K

    def __getitem__(self, j: int) -> str:
        if self.given is not None:
            return str(self.given[j]) if j < len(self.given) else f"Xs[{j}]"
        return "Xs (the design shared by every equation)" if self.shared else f"Xs[{j}]"


def check_missing(missing: Any) -> str:
    """The missing-data policy, one of :data:`MISSING_POLICIES` (``ValueError`` otherwise)."""
    if not isinstance(missing, str) or missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    return missing


def check_rank(k: Any, K: int, name: str = "k", warn_ledermann: bool = True) -> int:
    """Check the factor rank ``k`` against ``K`` equations and return it as int."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {k!r}")
    k = int(k)
    if k < 0:
        raise ValueError(f"{name} must be non-negative, got {k}")
    if k >= K and not (k == 0 and K == 0):
        raise ValueError(
            f"{name}={k} must be smaller than the number of equations K={K} "
            f"(k = K - 1 already represents any positive-definite Sigma)")
    if warn_ledermann and k > 0 and (K - k) ** 2 < K + k:
        warn(f"{name}={k} exceeds the Ledermann bound for K={K} equations "
             f"((K-k)^2 = {(K - k) ** 2} < K+k = {K + k}): F and D are not "
             "identified, although beta and Sigma = F F' + diag(D) still are",
             IdentificationWarning)
    return k


def check_weights(weights: Any, N: int) -> np.ndarray | None:
    """Observation weights as float64 (not rescaled): 1-D of length ``N``,
    finite, non-negative, not all zero.  ``None`` means unit weights."""
    if weights is None:
        return None
    if np.ndim(weights) != 1:
        raise ValueError(f"weights must be 1-D of length N={N}, got shape {np.shape(weights)}")
    w = as_float_matrix(weights, "weights", 1, allow_nan=True)
    if w.shape[0] != N:
        raise ValueError(f"weights has length {w.shape[0]} but Y has N={N} rows")
    if np.isnan(w).any():
        raise ValueError(f"weights contains NaN (first at row {int(np.flatnonzero(np.isnan(w))[0])})")
    if (w < 0).any():
        i = int(np.flatnonzero(w < 0)[0])
        raise ValueError(f"weights must be non-negative; weights[{i}] = {w[i]:g}")
    if not (w > 0).any():
        raise ValueError("weights are all zero")
    return w


def _same_array(a: Any, b: Any) -> bool:
    """The same object, or ndarrays viewing the same memory the same way (e.g.
    the per-equation views a SUR model holds of one shared design)."""
    if a is b:
        return True
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def design_list(Xs: Any, N: int, names: _DesignNames) -> tuple[list, bool, np.ndarray | None]:
    """The designs as a list of 2-D float arrays (views where possible), whether
    one design is shared by every equation, and the caller's 3-D array if any
    (then the list is empty: the caller reads the array, whose values it
    checks with :func:`has_nan`)."""
    if (isinstance(Xs, np.ndarray) or hasattr(Xs, "to_numpy")) and np.ndim(Xs) == 2:
        x = as_float_matrix(Xs, "Xs", 2, allow_nan=True)      # one design (a DataFrame too)
        names.shared = True
        return [x] * len(names), True, None
    if isinstance(Xs, np.ndarray) and Xs.ndim == 3:
        X3 = np.ascontiguousarray(as_float_matrix(Xs, "Xs", 3, check_finite=False))
        return [], False, X3
    if isinstance(Xs, (str, bytes)) or not isinstance(Xs, Sequence):
        raise TypeError("Xs must be a list of K 2-D arrays (N, p_j), a 3-D array (K, N, p) "
                        f"or one 2-D design (N, p) shared by all equations; got {type(Xs).__name__}")
    if len(Xs) > 1 and all(_same_array(x, Xs[0]) for x in Xs[1:]):
        x = as_float_matrix(Xs[0], names[0], 2, allow_nan=True)
        return [x] * len(Xs), True, None
    return [as_float_matrix(x, names[j] if j < len(names) else f"Xs[{j}]", 2, allow_nan=True)
            for j, x in enumerate(Xs)], False, None


#: Elements of the transposed copy of a block of designs in :func:`_gram` (1 MiB:
#: the block stays in a core's L2 cache while its column pairs are summed;
#: 20-35% faster than 8 MiB blocks at K = 200..4000, N = 500..2000, p = 3..20).
GRAM_BLOCK = 1 << 17
#: Up to this many columns :func:`_gram` forms each pair of columns' products
#: by its own einsum (faster measured up to p = 12; beyond, one einsum's
#: call overhead is less than p (p + 1) / 2 calls').
GRAM_PAIRS = 16


def _gram(X: np.ndarray, layout: CoefficientLayout, O: np.ndarray | None,
          w: np.ndarray | None, shared: bool,
          moments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``X_j' diag(w o_j) X_j`` with a unit diagonal on padded coordinates.

    ``moments = (Yt, xty, yy)``, for complete unweighted designs that are not
    shared: ``xty`` (K, pmax) and ``yy`` (K,) receive ``X_j' y_j`` and
    ``y_j' y_j`` from the same blocks, while they are in cache (a third of a
    pass over the designs instead of one)."""
    if O is None and shared:
        x = X[0] if w is None else X[0] * np.sqrt(w)[:, None]
        return _readonly(np.broadcast_to(x.T @ x, (layout.K, layout.pmax, layout.pmax)))
    if O is None and w is None:
        # dot products along the rows of contiguous transposed copies of blocks
        # of equations (the copy is at most GRAM_BLOCK elements), one einsum per
        # pair of columns, each pair once: 35% faster than one einsum over all
        # pairs and 20-50% faster than the stacked matmul on X at p = 3..5
        K, N, pm = X.shape
        gram = np.empty((K, pm, pm))
        step = max(1, GRAM_BLOCK // max(N * pm, 1))
        for a in range(0, K, step):
            Xt = np.ascontiguousarray(X[a:a + step].transpose(0, 2, 1))
            g = gram[a:a + step]
            if moments is not None:
                Yt, xty, yy = moments
                np.einsum("kpn,kn->kp", Xt, Yt[a:a + step], out=xty[a:a + step])
                np.einsum("kn,kn->k", Yt[a:a + step], Yt[a:a + step], out=yy[a:a + step])
            if pm > GRAM_PAIRS:
                np.einsum("kpn,kqn->kpq", Xt, Xt, out=g)
                continue
            for i in range(pm):
                for j in range(i, pm):
                    np.einsum("kn,kn->k", Xt[:, i], Xt[:, j], out=g[:, i, j])
                    g[:, j, i] = g[:, i, j]
    else:
        Om = (np.ones(X.shape[:2]) if O is None else O) * (1.0 if w is None else w[None, :])
        gram = np.einsum("knp,kn,knq->kpq", X, Om, X)
    pm = layout.pmax
    gram[:, np.arange(pm), np.arange(pm)] += ~layout.mask
    return _readonly(gram)


def _collinear_column(x: np.ndarray) -> int:
    """Index of the column that pivoted QR finds (nearly) dependent on the others."""
    from scipy.linalg import qr

    scale = np.linalg.norm(x, axis=0)
    scale[scale == 0] = 1.0
    _, _, piv = qr(x / scale, mode="economic", pivoting=True)
    return int(piv[-1])


def _condition(cond: np.ndarray, K: int) -> np.ndarray:
    """``Problem.condition`` from the condition numbers of the distinct Gram matrices."""
    return np.broadcast_to(np.sqrt(cond), (K,))


def _scaled_condition(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest eigenvalue and condition number of each column-scaled Gram
    matrix (one matrix for a shared design): :func:`_unit_diagonal_extremes`
    where every column is nonzero, a batched ``eigvalsh`` elsewhere."""
    g = gram[:1] if gram.strides[0] == 0 else gram
    d = np.sqrt(np.einsum("kpp->kp", g))
    full = np.all(d > 0, axis=1)
    d = np.where(d > 0, d, 1.0)
    C = g / d[:, :, None] / d[:, None, :]
    lo, hi = _unit_diagonal_extremes(C) if full.all() else _with_zero_columns(C, full)
    return lo, hi / np.maximum(lo, np.finfo(float).tiny)


def _with_zero_columns(C: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_unit_diagonal_extremes` where ``full`` (every column nonzero, so
    the diagonal is one), ``eigvalsh`` for the rest (a test fold's rare dummy)."""
    lo, hi = np.empty(len(C)), np.empty(len(C))
    lo[full], hi[full] = _unit_diagonal_extremes(C[full])
    ev = np.linalg.eigvalsh(C[~full])
    lo[~full], hi[~full] = ev[:, 0], ev[:, -1]
    return lo, hi


#: :func:`_unit_diagonal_extremes` takes ``eigvalsh`` for matrices whose smallest
#: eigenvalue the closed form puts below this (its absolute error, a few eps,
#: is then at most ~1e-9 of it): the nearly collinear designs, where the
#: condition number decides a refusal or a refinement, get the exact ones.
CLOSED_FORM_MIN_EIG = 1e-6


def _unit_diagonal_extremes(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest eigenvalues of unit-diagonal symmetric matrices
    ``C`` (K, p, p): in closed form for p <= 3 (a tenth of a batched
    ``eigvalsh``'s time), else by ``eigvalsh``.

    At p = 3, ``det(C - (1 - mu) I) = mu^3 - q mu + 2 abc`` with ``a, b, c``
    the off-diagonal entries and ``q = a^2 + b^2 + c^2``: the trigonometric
    roots ``mu_j = 2 sqrt(q/3) cos(phi - 2 pi j / 3)``, ``cos 3 phi =
    -3 sqrt(3) abc / q^(3/2)``; the eigenvalues are ``1 - mu``.  At p = 2
    they are ``1 -+ |a|``.  The largest root ``mu_0`` (the smallest
    eigenvalue) is well conditioned in ``cos 3 phi``, so its absolute error is
    a few eps; matrices where that is not small against it go to ``eigvalsh``
    (:data:`CLOSED_FORM_MIN_EIG`).
    """
    K, p, _ = C.shape
    if p > 3 or K == 0:
        ev = np.linalg.eigvalsh(C)
        return ev[:, 0], ev[:, -1]
    if p == 1:
        return np.ones(K), np.ones(K)
    if p == 2:
        a = np.abs(C[:, 0, 1])
        lo, hi = 1.0 - a, 1.0 + a
    else:
        a, b, c = C[:, 0, 1], C[:, 0, 2], C[:, 1, 2]
        q = a * a + b * b + c * c
        qs = np.where(q > 0, q, 1.0)
        cos3 = np.clip(-3.0 * np.sqrt(3.0) * a * b * c / qs ** 1.5, -1.0, 1.0)
        phi = np.arccos(cos3) / 3.0
        r = 2.0 * np.sqrt(q / 3.0)
        lo = 1.0 - r * np.cos(phi)
        hi = 1.0 - r * np.cos(phi + 2.0 * np.pi / 3.0)
    exact = lo < CLOSED_FORM_MIN_EIG
    if exact.any():
        ev = np.linalg.eigvalsh(C[exact])
        lo[exact], hi[exact] = ev[:, 0], ev[:, -1]
    return lo, hi


def check_designs(X: np.ndarray, gram: np.ndarray, layout: CoefficientLayout,
                  name: Any = lambda j: f"Xs[{j}]") -> np.ndarray:
    """Reject designs with a zero column or (nearly) collinear columns, from the
    Gram matrices (one batched ``eigvalsh``; one per distinct design).

    Returns the scaled condition number of each distinct Gram matrix (as
    ``_scaled_condition``), so that the caller need not compute it again."""
    p = layout.p
    g = gram[:1] if gram.strides[0] == 0 else gram
    d = np.sqrt(np.einsum("kpp->kp", g))
    pad = ~layout.mask[: g.shape[0]]
    huge = ~np.isfinite(d)
    if huge.any():
        j, c = (int(i) for i in np.argwhere(huge)[0])
        raise ValueError(f"{name(j)} column {c} is too large: its sum of squares overflows "
                         "float64 (values beyond about 1e154); rescale that column")
    zero_col = (d == 0) & ~pad
    if zero_col.any():
        j, c = (int(i) for i in np.argwhere(zero_col)[0])
        raise ValueError(f"{name(j)} column {c} is identically zero (on the observed rows); "
                         "drop that column")
    ev0, cond = _scaled_condition(g)
    bad = np.flatnonzero((ev0 <= 0) | (cond > COLLINEARITY_COND))
    if bad.size:
        j = int(bad[0])
        c = _collinear_column(X[j, :, : p[j]])
        more = f" (and {bad.size - 1} more equations)" if bad.size > 1 else ""
        cj = f"{cond[j]:.3g}" if ev0[j] > 0 else "inf"
        raise ValueError(
            f"{name(j)} is rank deficient{more}: column {c} is (nearly) a linear "
            f"combination of the others (scaled condition number {cj}); drop that column")
    return cond


def _nan_policy(Ya: np.ndarray, mats: list, shared: bool, w: np.ndarray | None,
                missing: str, name: Any, eq: Any, notes: bool, hint: str) -> np.ndarray:
    """Rows kept under the missing-data policy (raises, or notes what it drops)."""
    note = warn if notes else (lambda *args: None)
    N0 = Ya.shape[0]
    obs = ~np.isnan(Ya)
    xbad = np.column_stack([np.isnan(x).any(axis=1) for x in (mats[:1] if shared else mats)])
    if missing in ("raise", "drop"):
        bad = ~obs.all(axis=1) | xbad.any(axis=1)
        if missing == "raise" and bad.any():
            _refuse_nan(obs, xbad, eq, hint)
        if bad.any():
            note(f"missing='drop': removed {int(bad.sum())} of {N0} rows with a missing "
                 "value (listwise deletion)", MissingDataWarning)
        keep = ~bad
        if not keep.any():
            raise ValueError("missing='drop' leaves no rows: every row has a missing value")
    else:
        for j in range(len(mats)):
            badx = obs[:, j] & xbad[:, 0 if shared else j]
            if badx.any():
                i = int(np.flatnonzero(badx)[0])
                what = (f"{name(j)} has NaN in row {i} where Y[{i}, {j}] is observed"
                        if name(j) == f"Xs[{j}]" else
                        f"{eq(j)} has NaN in row {i} of its exog where its dependent is observed")
                raise ValueError(f"{what}; NaN in a design is allowed only where its response "
                                 "is missing")
        keep = obs.any(axis=1)
        n_empty = int((~keep).sum())
        if n_empty:
            note(f"dropped {n_empty} row(s) with every response missing; they carry no "
                 "information", MissingDataWarning)
    if w is not None and (keep & (w == 0)).any():
        note(f"dropped {int((keep & (w == 0)).sum())} row(s) with zero weight",
             MissingDataWarning)
        keep &= w > 0
    return np.flatnonzero(keep)


def _check_counts(layout: CoefficientLayout, n_obs: Any, eq: Any) -> None:
    """Every equation needs ``p_j + 1`` observed rows (coefficients and a variance)."""
    n_obs = np.broadcast_to(n_obs, layout.p.shape)
    few = np.flatnonzero(n_obs < layout.p + 1)
    if few.size:
        j = int(few[0])
        raise ValueError(
            f"{eq(j)} has {int(n_obs[j])} observed rows but needs at least p_j + 1 = "
            f"{int(layout.p[j]) + 1} to estimate its {int(layout.p[j])} coefficients and "
            "its variance; drop that equation or some of its regressors")


#: What a refusal of NaN suggests, unless the entry point says otherwise.
NAN_HINT = ("pass missing='ml' (maximum likelihood on the observed responses) or "
            "missing='drop' (listwise deletion)")


def _refuse_nan(obs: np.ndarray, xbad: np.ndarray, eq: Any, hint: str) -> None:
    """``missing="raise"``: name the first equation with a missing value."""
    for j in range(obs.shape[1]):
        for what, bad in (("dependent", ~obs[:, j]), ("exog", xbad[:, min(j, xbad.shape[1] - 1)])):
            if bad.any():
                raise ValueError(
                    f"{eq(j)}: {what} has missing values (NaN, first at row "
                    f"{int(np.flatnonzero(bad)[0])}) and missing='raise'; {hint}")


def _stack(mats: list, X3: np.ndarray | None, rows: np.ndarray, obs: np.ndarray | None,
           shared: bool, layout: CoefficientLayout) -> np.ndarray:
    """The (K, n, pmax) design array: a view when possible, one copy otherwise."""
    K, n = layout.K, rows.size
    full = rows.size == (X3.shape[1] if X3 is not None else mats[0].shape[0])
    if shared and obs is None:
        x = mats[0] if full else mats[0][rows]
        return np.broadcast_to(x, (K, n, layout.pmax))
    if X3 is not None and obs is None and full:
        return X3                                     # the caller's (K, N, p) array
    if X3 is not None and obs is None:
        return X3[:, rows]
    X = np.zeros((K, n, layout.pmax))
    for j, x in enumerate(mats):  # one copy per equation, outside any hot path
        xj = x if full else x[rows]
        X[j, :, : xj.shape[1]] = xj if obs is None else np.where(obs[j][:, None], xj, 0.0)
    return X


def _refuse_lazy(Xs: Any, Y: Any) -> None:
    """Dask data are fitted by ``als_gls`` only (``alsgls.core.lazy_problem``);
    everywhere else refuse them rather than gather them silently."""
    first = Xs[0] if isinstance(Xs, (list, tuple)) and len(Xs) else Xs
    if is_lazy(Y) or is_lazy(Xs) or is_lazy(first):
        raise TypeError("Dask arrays are fitted by als_gls (see alsgls.dask), with the "
                        "designs as one (K, N, p) Dask array and Y as an (N, K) one; this "
                        "entry point needs NumPy arrays: compute them first (x.compute())")


@single_blas_thread  # many tiny batched products: see alsgls._threads
def build_problem(Xs: Any, Y: Any, *, weights: Any = None, missing: str = "ml",
                  labels: Sequence[str] | None = None,
                  design_names: Sequence[str] | None = None, notes: bool = True,
                  nan_hint: str = NAN_HINT) -> Problem:
    """Validate a SUR system once and return its :class:`Problem`.

    Parameters
    ----------
    Xs : list of K array_like (N, p_j), ndarray (K, N, p), or ndarray (N, p)
        Designs; a 2-D array (or a list holding one array K times) is one
        design shared by every equation.  May be NaN in rows where that
        equation's response is missing (``missing="ml"``).
    Y : array_like, shape (N, K)
        Responses; NaN marks a missing response.
    weights : array_like, shape (N,), optional
        Non-negative row weights, rescaled to mean 1 over the rows used;
        zero-weight rows are dropped with a :class:`MissingDataWarning`.
    missing : {"ml", "drop", "raise"}, default "ml"
        ``"ml"``: keep every observed response (rows with none are dropped
        with a note); ``"drop"``: listwise deletion of rows with any NaN;
        ``"raise"``: ``ValueError`` on any NaN.
    labels : list of K str, optional
        Equation labels for messages (default: positions).
    design_names : list of K str, optional
        How messages name each design (default ``Xs[j]``).
    notes : bool, default True
        Emit a :class:`MissingDataWarning` for the rows dropped.
    nan_hint : str
        What the ``missing="raise"`` refusal suggests (entry points without a
        ``missing=`` argument say what to use instead).

    Returns
    -------
    Problem

    Raises
    ------
    TypeError, ValueError
        Non-numeric or mis-shaped input, inf, NaN where not allowed, bad
        weights, an equation with fewer than ``p_j + 1`` observed rows, a
        zero or collinear design column.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((50, 2))                  # one design, shared
    >>> prob = build_problem(X, rng.standard_normal((50, 4)))
    >>> prob.K, prob.N, prob.shared, prob.X.shape, prob.X.strides[0]
    (4, 50, True, (4, 50, 2), 0)
    >>> build_problem([X, X[:, :1]], np.full((50, 2), 1.0), missing="raise").p
    array([2, 1])
    """
    check_missing(missing)
    _refuse_lazy(Xs, Y)
    Ya = as_float_matrix(Y, "Y", 2, check_finite=False)
    N0, K = Ya.shape
    if K == 0 or N0 == 0:
        raise ValueError(f"Y must have at least one row and one column, got {Ya.shape}")
    labels = tuple(str(lab) for lab in labels) if labels is not None else None
    names = _DesignNames(K, design_names)
    mats, shared, X3 = design_list(Xs, N0, names)
    if X3 is not None:
        if X3.shape[0] != K:
            raise ValueError(f"Xs has {X3.shape[0]} equations but Y has K={K} columns")
        shapes = [X3.shape[1:]]
    elif len(mats) != K:
        raise ValueError(f"Xs has {len(mats)} equations but Y has K={K} columns")
    else:
        shapes = [x.shape for x in (mats[:1] if shared else mats)]
    eq = (lambda j: f"equation {labels[j]!r}") if labels else (lambda j: f"equation {j}")
    for j, (n, p) in enumerate(shapes):
        name = "Xs" if X3 is not None else names[j]
        if n != N0:
            raise ValueError(f"{name} has {n} rows but Y has {N0}")
        if p == 0:
            raise ValueError(f"{name} has no columns; every equation needs a regressor")
    w = check_weights(weights, N0)
    gram = None
    layout = None if X3 is None else CoefficientLayout(np.full(K, X3.shape[2], dtype=np.int64))
    moments = None
    if X3 is not None and w is None:
        # the Gram matrices first: a finite diagonal (sums of squares) proves every
        # value of the designs finite, sparing a pass over them; the responses'
        # moments and sums of squares come from the same blocks, and finite sums
        # of squares prove the responses finite (a NaN or inf is then looked for)
        moments = (np.ascontiguousarray(Ya.T), np.empty((K, X3.shape[2])), np.empty(K))
        gram = _gram(X3, layout, None, None, False, moments)
        y_nan = False if np.all(np.isfinite(moments[2])) else has_nan(Ya, "Y")
        if y_nan or not np.all(np.isfinite(np.einsum("kpp->kp", gram))):
            gram = moments = None
    else:
        y_nan = has_nan(Ya, "Y")
    x_nan = (False if gram is not None
             else has_nan(X3, "Xs") if X3 is not None      # one pass over a (K, N, p) array
             else any(np.isnan(x).any() for x in (mats[:1] if shared else mats)))
    complete = not (y_nan or x_nan) and (w is None or (w > 0).all())
    if not complete and X3 is not None:
        mats = list(X3)
    rows = (np.arange(N0) if complete
            else _nan_policy(Ya, mats, shared, w, missing, names.__getitem__, eq, notes,
                             nan_hint))
    Yr = Ya if rows.size == N0 else Ya[rows]
    obs = None if not y_nan else ~np.isnan(Yr.T)
    O = None if obs is None or obs.all() else obs.astype(np.float64)
    if layout is None:
        layout = CoefficientLayout(np.array([x.shape[1] for x in mats], dtype=np.int64))
    _check_counts(layout, rows.size if obs is None else obs.sum(axis=1), eq)
    X = _stack(mats, X3, rows, obs if O is not None else None, shared, layout)
    wr = None if w is None else w[rows] * (rows.size / w[rows].sum())
    if gram is None:
        gram = _gram(X, layout, O, wr, shared and O is None)
    cond = check_designs(X, gram, layout, names.__getitem__)
    Yt = (moments[0] if moments is not None
          else np.ascontiguousarray(Yr.T) if O is None else np.where(obs, Yr.T, 0.0))
    problem = Problem(X=_readonly(X), Yt=_readonly(Yt), layout=layout, gram=gram, O=O, w=wr,
                      labels=labels, rows=rows, n_rows_in=N0, missing=missing)
    problem.__dict__["condition"] = _condition(cond, K)    # the cached_properties, filled
    if moments is not None:
        problem.__dict__["xty"] = _readonly(moments[1])
        problem.__dict__["mean_squares"] = moments[2] / problem.n_weighted
    return problem


def check_fit_rank(problem: Problem, k: Any, *, warn_ledermann: bool = True) -> int:
    """Check the factor rank for this problem: ``0 <= k < K`` and ``N > k + pmax``."""
    k = check_rank(k, problem.K, warn_ledermann=warn_ledermann)
    if problem.N <= k + problem.pmax:
        j = int(np.argmax(problem.p))
        raise ValueError(
            f"N={problem.N} rows is too few: the likelihood is unbounded unless "
            f"N > k + max p_j = {k} + {problem.pmax} ({problem.equation(j)})")
    return k
