"""The single path through which public entry points check and coerce inputs.

Kernels trust what these functions hand them: contiguous float64 arrays of the
documented shapes, finite, with full-column-rank designs.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..exceptions import IdentificationWarning

__all__ = ["SystemData", "validate_system", "check_rank", "as_float_matrix"]

#: Designs whose column-scaled condition number exceeds this are rejected as
#: rank deficient: beyond it the coefficients are not determined by the data
#: to more than a couple of digits in float64.
COLLINEARITY_COND = 1e10
#: An equation whose OLS residual variance is below this fraction of
#: ``mean(y_j**2)`` is fitted exactly by its regressors and has no error term.
ZERO_VARIANCE_RTOL = 1e-12


@dataclass(frozen=True)
class SystemData:
    """Validated SUR data in the solver's internal layout.

    Attributes
    ----------
    X : ndarray, shape (K, N, pmax)
        Designs, zero-padded to ``pmax`` columns (float64, C-contiguous).
    Yt : ndarray, shape (K, N)
        Responses transposed (equation-major), float64.
    p : ndarray of int, shape (K,)
        Number of regressors ``p_j`` of each equation.
    """

    X: np.ndarray
    Yt: np.ndarray
    p: np.ndarray

    @property
    def K(self) -> int:
        return self.Yt.shape[0]

    @property
    def N(self) -> int:
        return self.Yt.shape[1]

    @property
    def pmax(self) -> int:
        return self.X.shape[2]

    @property
    def mask(self) -> np.ndarray:
        """Boolean (K, pmax): True where a coefficient exists."""
        return np.arange(self.pmax)[None, :] < self.p[:, None]


def as_float_matrix(a: Any, name: str, ndim: int = 2, *, allow_nan: bool = False) -> np.ndarray:
    """Coerce ``a`` to a finite float64 array with ``ndim`` dimensions.

    Raises ``TypeError`` for non-numeric input and ``ValueError`` for wrong
    dimensionality or non-finite values, naming ``name``.  Never modifies ``a``.
    With ``allow_nan`` NaN (a missing value) passes, inf does not, and the
    result is always a copy (callers fill the NaN).
    """
    if hasattr(a, "to_numpy"):
        a = a.to_numpy()
    arr = np.asarray(a)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == bool
    ):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {arr.shape}")
    if allow_nan:
        arr = np.array(arr, dtype=np.float64)  # always a copy: inputs are never modified
        if np.isinf(arr).any():
            bad = np.argwhere(np.isinf(arr))[0]
            raise ValueError(f"{name} contains inf (first at index {tuple(int(i) for i in bad)})")
        return arr
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)})"
        )
    return arr


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
            f"(k = K - 1 already represents any positive-definite Sigma)"
        )
    if warn_ledermann and k > 0 and (K - k) ** 2 < K + k:
        warnings.warn(
            f"{name}={k} exceeds the Ledermann bound for K={K} equations "
            f"((K-k)^2 = {(K - k) ** 2} < K+k = {K + k}): F and D are not "
            "identified, although beta and Sigma = F F' + diag(D) still are",
            IdentificationWarning,
            stacklevel=3,
        )
    return k


def _stack_designs(Xs: Any, N: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(Xs, np.ndarray) and Xs.ndim == 3:
        X3 = as_float_matrix(Xs, "Xs", ndim=3)
        if X3.shape[1] != N:
            raise ValueError(f"Xs has {X3.shape[1]} rows per equation but Y has {N}")
        p = np.full(X3.shape[0], X3.shape[2], dtype=np.int64)
        return np.ascontiguousarray(X3), p
    if isinstance(Xs, (str, bytes)) or not isinstance(Xs, Sequence):
        raise TypeError(
            "Xs must be a list of K 2-D arrays (N, p_j) or a 3-D array (K, N, p); "
            f"got {type(Xs).__name__}"
        )
    mats = [as_float_matrix(x, f"Xs[{j}]") for j, x in enumerate(Xs)]
    for j, x in enumerate(mats):
        if x.shape[0] != N:
            raise ValueError(f"Xs[{j}] has {x.shape[0]} rows but Y has {N}")
        if x.shape[1] == 0:
            raise ValueError(f"Xs[{j}] has no columns; every equation needs a regressor")
    p = np.array([x.shape[1] for x in mats], dtype=np.int64)
    X = np.zeros((len(mats), N, int(p.max()) if len(p) else 0))
    for j, x in enumerate(mats):  # one copy per equation, outside any hot path
        X[j, :, : x.shape[1]] = x
    return X, p


def _collinear_column(x: np.ndarray) -> int:
    """Index of the column that pivoted QR finds (nearly) dependent on the others."""
    from scipy.linalg import qr

    scale = np.linalg.norm(x, axis=0)
    scale[scale == 0] = 1.0
    _, r, piv = qr(x / scale, mode="economic", pivoting=True)
    return int(piv[-1])


def check_designs(X: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Reject rank-deficient designs; return the Gram matrices (K, pmax, pmax).

    Padded coordinates get a unit diagonal so that every Gram matrix is
    positive definite and the padded coefficients stay exactly zero.
    """
    K, N, pmax = X.shape
    gram = X.transpose(0, 2, 1) @ X
    d = np.sqrt(np.einsum("kpp->kp", gram))
    pad = np.arange(pmax)[None, :] >= p[:, None]
    zero_col = (d == 0) & ~pad
    if zero_col.any():
        j, c = np.argwhere(zero_col)[0]
        raise ValueError(
            f"Xs[{j}] column {c} is identically zero; drop it from equation {j}"
        )
    d[pad] = 1.0
    gram[:, np.arange(pmax), np.arange(pmax)] += pad
    scaled = gram / d[:, :, None] / d[:, None, :]
    ev = np.linalg.eigvalsh(scaled)
    cond = ev[:, -1] / np.maximum(ev[:, 0], np.finfo(float).tiny)
    bad = np.flatnonzero((ev[:, 0] <= 0) | (cond > COLLINEARITY_COND))
    if bad.size:
        j = int(bad[0])
        c = _collinear_column(X[j, :, : p[j]])
        more = f" (and {bad.size - 1} more equations)" if bad.size > 1 else ""
        raise ValueError(
            f"Xs[{j}] is rank deficient{more}: column {c} is (nearly) a linear "
            f"combination of the others (scaled condition number {cond[j]:.3g}); "
            f"drop that column from equation {j}"
        )
    return gram


def validate_system(Xs: Any, Y: Any, k: Any) -> tuple[SystemData, int, np.ndarray]:
    """Validate ``(Xs, Y, k)`` and return data, rank and Gram matrices.

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), or ndarray (K, N, p)
        Per-equation designs.
    Y : array_like, shape (N, K)
        Responses, one column per equation.
    k : int
        Number of latent factors, ``0 <= k < K``.

    Returns
    -------
    data : SystemData
    k : int
    gram : ndarray, shape (K, pmax, pmax)
        ``X_j' X_j`` (padded with a unit diagonal).
    """
    Ya = as_float_matrix(Y, "Y")
    N, K = Ya.shape
    if K == 0 or N == 0:
        raise ValueError(f"Y must have at least one row and one column, got {Ya.shape}")
    X, p = _stack_designs(Xs, N)
    if X.shape[0] != K:
        raise ValueError(f"Xs has {X.shape[0]} equations but Y has K={K} columns")
    k = check_rank(k, K)
    if N <= k + int(p.max()):
        j = int(np.argmax(p))
        raise ValueError(
            f"N={N} rows is too few: the likelihood is unbounded unless "
            f"N > k + max p_j = {k} + {int(p.max())} (equation {j})"
        )
    gram = check_designs(X, p)
    data = SystemData(X=X, Yt=np.ascontiguousarray(Ya.T), p=p)
    return data, k, gram


def check_residual_variance(Rt: np.ndarray, Yt: np.ndarray, O: np.ndarray | None = None
                            ) -> np.ndarray:
    """Residual variances ``s_j`` (K,) of OLS residuals ``Rt`` (K, N); raise for
    an equation that its regressors fit exactly (no error term to model).

    With an observation mask ``O`` (K, N) (1.0 observed, 0.0 missing) the
    variances are over each equation's observed rows.
    """
    if O is None:
        n = Rt.shape[1]
        s = np.einsum("kn,kn->k", Rt, Rt) / n
        ref = np.einsum("kn,kn->k", Yt, Yt) / n
    else:
        n = O.sum(axis=1)
        s = np.einsum("kn,kn->k", O * Rt, Rt) / n
        ref = np.einsum("kn,kn->k", O * Yt, Yt) / n
    bad = np.flatnonzero(s <= ZERO_VARIANCE_RTOL * np.maximum(ref, np.finfo(float).tiny))
    if bad.size:
        j = int(bad[0])
        where = " on its observed rows" if O is not None else ""
        raise ValueError(
            f"equation {j} has zero residual variance{where}: Y[:, {j}] is an exact "
            f"linear combination of Xs[{j}]; remove that equation"
        )
    return s


def has_nan(Y: Any) -> bool:
    """True if ``Y`` is a float array containing NaN (a missing value); anything
    else is left for validation to report."""
    try:
        Ya = np.asarray(Y.to_numpy() if hasattr(Y, "to_numpy") else Y)
        return bool(np.issubdtype(Ya.dtype, np.floating) and np.isnan(Ya).any())
    except (TypeError, ValueError):
        return False
