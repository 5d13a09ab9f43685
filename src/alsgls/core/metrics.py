"""Prediction metrics for SUR fits."""

from __future__ import annotations

import numpy as np

from ._backend import is_lazy
from .problem import as_float_matrix
from .ops import LowRankCovariance

__all__ = ["mse", "nll_per_row"]


def mse(Y: np.ndarray, Y_hat: np.ndarray) -> float:
    """Mean squared error over all entries of ``Y`` (N, K) and ``Y_hat`` (N, K).

    Examples
    --------
    >>> mse(np.zeros((2, 2)), np.ones((2, 2)))
    1.0
    """
    Y = Y if is_lazy(Y) else as_float_matrix(Y, "Y")        # Dask: reduced lazily
    Y_hat = Y_hat if is_lazy(Y_hat) else as_float_matrix(Y_hat, "Y_hat")
    if Y.shape != Y_hat.shape:
        raise ValueError(f"Y has shape {Y.shape} but Y_hat has shape {Y_hat.shape}")
    return float(np.mean((Y - Y_hat) ** 2))


def nll_per_row(R: np.ndarray, F: np.ndarray, D: np.ndarray) -> float:
    """Gaussian negative log-likelihood per row of residuals under
    ``Sigma = F F' + diag(D)``, without forming K x K.

    Parameters
    ----------
    R : array_like, shape (N, K)
        Residuals, one row per observation.
    F : array_like, shape (K, k)
    D : array_like, shape (K,)

    Returns
    -------
    float
        ``1/2 [K log 2 pi + log|Sigma|] + 1/(2N) sum_i r_i' Sigma^-1 r_i``.

    Examples
    --------
    >>> import numpy as np
    >>> round(nll_per_row(np.zeros((3, 1)), np.zeros((1, 0)), np.ones(1)), 6)
    0.918939
    """
    lazy = is_lazy(R)                   # Dask residuals: one pass, nothing gathered
    R = R.astype(np.float64) if lazy else as_float_matrix(R, "R")
    F = np.asarray(F, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    K = R.shape[1]
    if F.ndim == 1:
        F = F[:, None]
    if F.shape[0] != K or D.shape != (K,):
        raise ValueError(f"R has K={K} columns but F is {F.shape} and D is {D.shape}")
    return LowRankCovariance(F, D).nll_per_row(R.T if lazy else np.ascontiguousarray(R.T))
