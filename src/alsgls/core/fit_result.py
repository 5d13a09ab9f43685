"""The typed record returned by both solvers (``als_gls`` and ``em_gls``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ops import LowRankCovariance

__all__ = ["GLSFit"]


@dataclass(frozen=True)
class GLSFit:
    """Result of a maximum-likelihood fit of a SUR system with
    ``Sigma = F F' + diag(D)``.

    Attributes
    ----------
    B : list of K ndarray, each (p_j, 1)
        Coefficients of each equation.
    F : ndarray, shape (K, k)
        Loadings in the canonical rotation: ``F' diag(D)^-1 F`` diagonal and
        decreasing, largest-magnitude entry of each column positive.  Only
        ``F F'`` is identified; compare that, never ``F`` itself.
    D : ndarray, shape (K,)
        Idiosyncratic (noise) variances.
    nll_trace : ndarray, shape (n_iter + 1,)
        Negative log-likelihood per row of the training data: entry 0 at the
        initial point, then one entry per sweep (ALS) or iteration (EM).
        Never increases.
    n_iter : int
        Number of sweeps (ALS) or EM iterations performed.
    converged : bool
        Whether the stopping rule was met (otherwise a ``ConvergenceWarning``
        was emitted).
    heywood : ndarray of bool, shape (K,)
        Equations whose ``D_j`` sits at the floor ``d_floor * s_j`` (Heywood
        cases); their loadings absorb all of the residual variance.
    method : str
        ``"als"`` or ``"em"``.
    cg_iterations : ndarray of int, shape (n_iter,)
        Conjugate-gradient iterations in each sweep's beta-step (ALS; zeros for
        the direct EM solve).
    beta_gap : ndarray, shape (n_iter + 1,)
        ``1/2 g' M^-1 g / N`` at the start of each beta-step: the NLL-per-row
        decrease still available from beta (preconditioned estimate).  The
        last entry is the gap at exit (after the final polish of beta given
        the returned Sigma) and certifies the returned beta.
    eig_iterations : ndarray of int, shape (n_iter,)
        Subspace iterations in each sweep's factor step (ALS only).
    backtracks : ndarray of int, shape (n_iter,)
        Step halvings of the D update in each sweep (ALS only).
    tol : float
        The relative tolerance the fit was run with.
    """

    B: list
    F: np.ndarray
    D: np.ndarray
    nll_trace: np.ndarray
    n_iter: int
    converged: bool
    heywood: np.ndarray
    method: str
    cg_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    beta_gap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eig_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    backtracks: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    tol: float = float("nan")

    @property
    def nll(self) -> float:
        """Final negative log-likelihood per row."""
        return float(self.nll_trace[-1])

    @property
    def k(self) -> int:
        """Number of factors."""
        return self.F.shape[1]

    @property
    def K(self) -> int:
        """Number of equations."""
        return self.F.shape[0]

    @property
    def cov(self) -> LowRankCovariance:
        """``Sigma = F F' + diag(D)`` as a low-rank object (never dense)."""
        return LowRankCovariance(self.F, self.D)

    def predict(self, Xs: list) -> np.ndarray:
        """Fitted means ``X_j B_j`` for new designs: returns (N_new, K)."""
        cols = [np.asarray(x, dtype=np.float64) @ b for x, b in zip(Xs, self.B)]
        return np.hstack(cols)

    def __repr__(self) -> str:
        return (
            f"GLSFit(method={self.method!r}, K={self.K}, k={self.k}, "
            f"nll={self.nll:.10g}, n_iter={self.n_iter}, converged={self.converged})"
        )


def canonical_loadings(F: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Rotate ``F`` so that ``F' D^-1 F`` is diagonal and decreasing (Lawley form)
    with the largest-magnitude entry of each column positive.  ``F F'`` is unchanged."""
    if F.shape[1] == 0:
        return F.copy()
    Fs = F / np.sqrt(D)[:, None]
    w, V = np.linalg.eigh(Fs.T @ Fs)
    Fr = F @ V[:, ::-1]
    idx = np.argmax(np.abs(Fr), axis=0)
    signs = np.sign(Fr[idx, np.arange(Fr.shape[1])])
    signs[signs == 0] = 1.0
    return Fr * signs


def unpad_coefficients(theta: np.ndarray, p: np.ndarray) -> list:
    """(K, pmax) padded coefficients -> list of (p_j, 1) arrays."""
    return [theta[j, : p[j]].reshape(-1, 1).copy() for j in range(len(p))]


def pad_coefficients(B: list, pmax: int) -> np.ndarray:
    """List of K coefficient arrays (p_j,) or (p_j, 1) -> (K, pmax), zero-padded
    (the inverse of :func:`unpad_coefficients`)."""
    theta = np.zeros((len(B), pmax))
    for j, b in enumerate(B):  # K small copies, outside any hot path
        b = np.asarray(b, dtype=np.float64).ravel()
        theta[j, : b.size] = b
    return theta
