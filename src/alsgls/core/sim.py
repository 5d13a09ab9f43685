"""Seeded simulators of SUR systems that also return the true parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ops import LowRankCovariance

__all__ = ["SimTruth", "simulate_sur", "simulate_gls"]


@dataclass(frozen=True)
class SimTruth:
    """True parameters of a simulated system.

    Attributes
    ----------
    B : list of K ndarray, each (p_j, 1)
    F : ndarray, shape (K, k)
    D : ndarray, shape (K,)
    """

    B: list
    F: np.ndarray
    D: np.ndarray

    @property
    def cov(self) -> LowRankCovariance:
        """True ``Sigma = F F' + diag(D)``."""
        return LowRankCovariance(self.F, self.D)


def _factor_truth(rng: np.random.Generator, K: int, k: int, strength: float,
                  noise_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    F = strength * rng.standard_normal((K, k))
    D = rng.uniform(noise_range[0], noise_range[1], size=K)
    return F, D


def _errors(rng: np.random.Generator, N: int, F: np.ndarray, D: np.ndarray) -> np.ndarray:
    Z = rng.standard_normal((N, F.shape[1]))
    return Z @ F.T + rng.standard_normal((N, F.shape[0])) * np.sqrt(D)


def simulate_sur(
    N: int,
    K: int,
    p: int = 3,
    k: int = 2,
    *,
    seed: int | None = None,
    factor_strength: float = 1.0,
    noise_range: tuple[float, float] = (0.5, 1.5),
    intercept: bool = False,
    x_common: float = 0.0,
) -> tuple[list, np.ndarray, SimTruth]:
    """Simulate a SUR system with ``Sigma = F F' + diag(D)``.

    Parameters
    ----------
    N, K : int
        Rows and equations.
    p : int, default 3
        Regressors per equation (including the intercept when ``intercept``).
    k : int, default 2
        True number of factors.
    seed : int, optional
        Seed of ``numpy.random.default_rng``.
    factor_strength : float, default 1.0
        Loadings are ``factor_strength * N(0, 1)``; the signal eigenvalues of
        the whitened covariance grow like ``factor_strength**2 * K``.
    noise_range : (float, float), default (0.5, 1.5)
        ``D_j ~ Uniform(noise_range)``.
    intercept : bool, default False
        Make the first column of every ``X_j`` a column of ones.
    x_common : float in [0, 1), default 0
        Share of each regressor's variance common to all equations (regressors
        correlated across equations).

    Returns
    -------
    Xs : list of K ndarray (N, p)
    Y : ndarray (N, K)
    truth : SimTruth

    Examples
    --------
    >>> Xs, Y, truth = simulate_sur(N=50, K=4, p=2, k=1, seed=1)
    >>> len(Xs), Xs[0].shape, Y.shape, truth.F.shape
    (4, (50, 2), (50, 4), (4, 1))
    """
    if not 0 <= x_common < 1:
        raise ValueError(f"x_common must lie in [0, 1), got {x_common}")
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((N, p))
    X = (np.sqrt(x_common) * common[None] +
         np.sqrt(1 - x_common) * rng.standard_normal((K, N, p)))
    if intercept:
        X[:, :, 0] = 1.0
    B = rng.standard_normal((K, p))
    F, D = _factor_truth(rng, K, k, factor_strength, noise_range)
    Y = np.einsum("knp,kp->nk", X, B) + _errors(rng, N, F, D)
    Xs = [X[j] for j in range(K)]
    return Xs, Y, SimTruth([b.reshape(-1, 1) for b in B], F, D)


def simulate_gls(
    N: int,
    K: int,
    p: int = 3,
    k: int = 2,
    *,
    seed: int | None = None,
    factor_strength: float = 1.0,
    noise_range: tuple[float, float] = (0.5, 1.5),
) -> tuple[list, np.ndarray, SimTruth]:
    """Simulate a multivariate regression: one design shared by all K equations.

    This is the case where GLS equals OLS (Zellner), whatever Sigma is.
    Parameters and returns are as in :func:`simulate_sur`; every entry of
    ``Xs`` is the same (N, p) array.

    Examples
    --------
    >>> Xs, Y, truth = simulate_gls(N=40, K=3, p=2, k=1, seed=0)
    >>> Xs[0] is Xs[2], Y.shape
    (True, (40, 3))
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, p))
    B = rng.standard_normal((K, p))
    F, D = _factor_truth(rng, K, k, factor_strength, noise_range)
    Y = X @ B.T + _errors(rng, N, F, D)
    return [X] * K, Y, SimTruth([b.reshape(-1, 1) for b in B], F, D)
