"""Input checks for unbalanced systems (NaN-marked missing responses) and weights.

The balanced path (:func:`alsgls._validation.validate_system`) rejects NaN; this
module is the single place where NaN in ``Y`` (and in ``Xs`` where the response
is missing) is accepted, where observation weights are checked and rescaled,
and where the ``missing=`` policy ("ml" | "drop" | "raise") is applied.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..exceptions import MissingDataWarning

from .problem import (
    SystemData,
    as_float_matrix,
    check_designs,
    check_rank,
    check_residual_variance,
)

__all__ = [
    "MissingDataWarning",
    "MissingData",
    "MISSING_POLICIES",
    "validate_missing_system",
    "check_weights",
    "apply_missing_policy",
]

MISSING_POLICIES = ("ml", "drop", "raise")



@dataclass(frozen=True)
class MissingData(SystemData):
    """Validated unbalanced SUR data in the solver's internal layout.

    Attributes
    ----------
    X : ndarray, shape (K, N, pmax)
        Designs, zero-padded to ``pmax`` columns and set to zero in rows where
        the equation's response is missing.
    Yt : ndarray, shape (K, N)
        Responses, equation-major, zero where missing.
    O : ndarray of float, shape (K, N)
        Observation mask: 1.0 where ``Y[i, j]`` is observed, else 0.0.
    w : ndarray, shape (N,)
        Row weights rescaled to mean 1 over the retained rows (ones if none).
    p : ndarray of int, shape (K,)
        Regressors per equation.
    rows : ndarray of int, shape (N,)
        Indices of the retained rows in the caller's ``Y``.
    n_rows_in : int
        Number of rows the caller passed.
    """

    O: np.ndarray
    w: np.ndarray
    rows: np.ndarray
    n_rows_in: int

    @property
    def n_observed(self) -> np.ndarray:
        """Observed (retained) rows of each equation, (K,) int."""
        return self.O.sum(axis=1).astype(np.int64)


def _as_float_nan_ok(a: Any, name: str, ndim: int) -> np.ndarray:
    """Coerce to float64 with ``ndim`` dimensions; NaN allowed, inf rejected (a copy)."""
    return as_float_matrix(a, name, ndim, allow_nan=True)


def _designs(Xs: Any, N: int) -> list:
    if isinstance(Xs, np.ndarray) and Xs.ndim == 3:
        X3 = _as_float_nan_ok(Xs, "Xs", 3)
        return [X3[j] for j in range(X3.shape[0])]
    if isinstance(Xs, (str, bytes)) or not isinstance(Xs, Sequence):
        raise TypeError(
            "Xs must be a list of K 2-D arrays (N, p_j) or a 3-D array (K, N, p); "
            f"got {type(Xs).__name__}"
        )
    mats = [_as_float_nan_ok(x, f"Xs[{j}]", 2) for j, x in enumerate(Xs)]
    for j, x in enumerate(mats):
        if x.shape[0] != N:
            raise ValueError(f"Xs[{j}] has {x.shape[0]} rows but Y has {N}")
        if x.shape[1] == 0:
            raise ValueError(f"Xs[{j}] has no columns; every equation needs a regressor")
    return mats


def check_weights(weights: Any, N: int) -> np.ndarray | None:
    """Check observation weights; return them as float64 (not yet rescaled).

    Weights must be a 1-D array of length ``N``, finite, non-negative and not
    all zero.  ``None`` means unit weights.
    """
    if weights is None:
        return None
    w = _as_float_nan_ok(weights, "weights", 1) if np.ndim(weights) == 1 else None
    if w is None:
        raise ValueError(f"weights must be 1-D of length N={N}, got shape {np.shape(weights)}")
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


def validate_missing_system(
    Xs: Any, Y: Any, k: Any, weights: Any = None
) -> tuple[MissingData, int, np.ndarray]:
    """Validate an unbalanced system for maximum likelihood under MAR.

    Parameters
    ----------
    Xs : list of K array_like (N, p_j), or ndarray (K, N, p)
        Designs; may be NaN in rows where that equation's response is missing.
    Y : array_like, shape (N, K)
        Responses; NaN marks a missing response.
    k : int
        Number of factors, ``0 <= k < K``.
    weights : array_like, shape (N,), optional
        Non-negative row weights.

    Returns
    -------
    data : MissingData
    k : int
    s : ndarray, shape (K,)
        Weighted OLS residual variance of each equation on its observed rows.

    Notes
    -----
    Rows with every response missing, or with zero weight, carry no
    information and are dropped with a :class:`MissingDataWarning`.  Raises
    ``ValueError`` for NaN in ``Xs[j]`` where ``Y[:, j]`` is observed, and for an
    equation with fewer than ``p_j + 1`` observed rows.
    """
    Ya = _as_float_nan_ok(Y, "Y", 2)
    N0, K = Ya.shape
    if K == 0 or N0 == 0:
        raise ValueError(f"Y must have at least one row and one column, got {Ya.shape}")
    mats = _designs(Xs, N0)
    if len(mats) != K:
        raise ValueError(f"Xs has {len(mats)} equations but Y has K={K} columns")
    k = check_rank(k, K, warn_ledermann=True)
    w = check_weights(weights, N0)
    obs = ~np.isnan(Ya)                                       # (N0, K)
    for j, x in enumerate(mats):
        bad = obs[:, j] & np.isnan(x).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"Xs[{j}] has NaN in row {i} where Y[{i}, {j}] is observed; NaN in a "
                "design is allowed only where the equation's response is missing"
            )
    keep = obs.any(axis=1) & (w > 0 if w is not None else True)
    n_empty = int((~obs.any(axis=1)).sum())
    n_zero_w = int(N0 - keep.sum() - n_empty)
    if n_empty or n_zero_w:
        parts = [f"{n_empty} row(s) with every response missing"] if n_empty else []
        parts += [f"{n_zero_w} row(s) with zero weight"] if n_zero_w else []
        warnings.warn(f"dropped {' and '.join(parts)}; they carry no information",
                      MissingDataWarning, stacklevel=3)
    rows = np.flatnonzero(keep)
    obs = obs[rows]
    N = rows.size
    p = np.array([x.shape[1] for x in mats], dtype=np.int64)
    X = np.zeros((K, N, int(p.max())))
    Oj = np.ascontiguousarray(obs.T)                           # (K, N)
    for j, x in enumerate(mats):  # one copy per equation, outside any hot path
        X[j, :, : p[j]] = np.where(Oj[j][:, None], x[rows], 0.0)
    n_obs = Oj.sum(axis=1)
    few = np.flatnonzero(n_obs < p + 1)
    if few.size:
        j = int(few[0])
        raise ValueError(
            f"equation {j} has {int(n_obs[j])} observed rows but needs at least "
            f"p_j + 1 = {int(p[j]) + 1} to estimate its {int(p[j])} coefficients and "
            "its variance; drop that equation or its regressors"
        )
    check_designs(X, p)  # rank of each design on its own observed rows
    Yt = np.where(Oj, Ya[rows].T, 0.0)
    w = np.ones(N) if w is None else w[rows] * (N / w[rows].sum())
    data = MissingData(X=X, Yt=np.ascontiguousarray(Yt), O=Oj.astype(np.float64),
                       w=w, p=p, rows=rows, n_rows_in=N0)
    return data, k, _ols_variance(data)


def _ols_variance(data: MissingData) -> np.ndarray:
    """Weighted OLS residual variances on observed rows; reject exact fits."""
    X, Yt = data.X, data.Yt
    Om = data.O * data.w
    K, N, pm = X.shape
    gram = np.einsum("knp,kn,knq->kpq", X, Om, X)
    gram[:, np.arange(pm), np.arange(pm)] += np.arange(pm)[None, :] >= data.p[:, None]
    theta = np.linalg.solve(gram, np.einsum("knp,kn->kp", X, Om * Yt)[..., None])[..., 0]
    R = Yt - np.einsum("knp,kp->kn", X, theta)
    return check_residual_variance(R, Yt, Om)


def apply_missing_policy(
    Xs: Any, Y: Any, missing: str, weights: Any = None
) -> tuple[list, np.ndarray, np.ndarray | None, np.ndarray]:
    """Apply ``missing="drop"`` or ``"raise"`` and return balanced inputs.

    Parameters
    ----------
    Xs : list of K array_like (N, p_j), or ndarray (K, N, p)
    Y : array_like, shape (N, K)
    missing : {"drop", "raise"}
        ``"drop"``: listwise deletion -- remove every row with a NaN anywhere in
        ``Y`` or in any ``Xs[j]`` (what linearmodels and Stata do).
        ``"raise"``: raise ``ValueError`` if ``Y`` or ``Xs`` has any NaN.
    weights : array_like, shape (N,), optional

    Returns
    -------
    Xs : list of K ndarray (n, p_j)
    Y : ndarray (n, K)
    weights : ndarray (n,) or None
        The caller's weights for the retained rows (not rescaled).
    rows : ndarray of int (n,)
        Retained row indices.
    """
    if missing not in ("drop", "raise"):
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    Ya = _as_float_nan_ok(Y, "Y", 2)
    mats = _designs(Xs, Ya.shape[0])
    w = check_weights(weights, Ya.shape[0])
    bad = np.isnan(Ya).any(axis=1)
    for x in mats:
        bad |= np.isnan(x).any(axis=1)
    if missing == "raise" and bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Y or Xs has NaN (first in row {i}); pass missing='ml' for maximum "
            "likelihood on the observed responses or missing='drop' for listwise deletion"
        )
    rows = np.flatnonzero(~bad)
    if bad.any():
        warnings.warn(f"missing='drop': removed {int(bad.sum())} of {Ya.shape[0]} rows "
                      "with a missing value (listwise deletion)", MissingDataWarning,
                      stacklevel=3)
    if rows.size == 0:
        raise ValueError("missing='drop' leaves no rows: every row has a missing value")
    return [x[rows] for x in mats], Ya[rows], (None if w is None else w[rows]), rows
