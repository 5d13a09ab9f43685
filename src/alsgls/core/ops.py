"""Matrix-free linear algebra for Sigma = F F' + diag(D) and the SUR design.

Notation (DESIGN.md section 1): ``Psi = diag(D)``, the k x k core
``C = I + F' Psi^-1 F = L L'`` and ``G = Psi^-1 F L^-T`` (K x k), so that

* ``Sigma^-1 = Psi^-1 - G G'``                       (Woodbury, square-root form)
* ``log|Sigma| = sum_j log D_j + 2 sum log diag(L)``  (determinant lemma)

Internally every per-equation array is *equation-major*: residuals are ``(K, N)``,
designs ``(K, N, pmax)`` zero-padded to the widest equation, coefficients
``(K, pmax)``.  Per-equation products are single ``einsum`` passes (no Python
loop over K and no burst of tiny BLAS calls); everything involving F is a GEMM.
No function here allocates a K x K or P x P array except ``to_dense``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np
from scipy.linalg import eigh, solve_triangular
from scipy.linalg.blas import daxpy, dgemm, dtrsm
from scipy.linalg.lapack import dgeqrf, dorgqr
from scipy.sparse.linalg import LinearOperator

from ._backend import compute_many, gram_top_eigenpairs, is_broadcast, is_lazy, materialize

__all__ = [
    "gls_pcg",
    "LowRankCovariance",
    "triangular_inverse",
    "row_core_inverse",
    "row_core_solve",
    "covariance_parameters",
    "lawley_loadings",
    "orthonormalize",
    "top_eigenpairs",
    "CoefficientLayout",
    "design_matvec",
    "design_rmatvec",
    "BlockDesignOperator",
    "GLSNormalOperator",
    "block_jacobi_inverse",
    "pcg",
    "CGInfo",
]

LOG_2PI = float(np.log(2.0 * np.pi))


class LowRankCovariance:
    """The covariance ``Sigma = F F' + diag(D)`` held in O(K k) memory.

    Parameters
    ----------
    F : array_like, shape (K, k)
        Factor loadings (``k`` may be 0).
    D : array_like, shape (K,)
        Strictly positive idiosyncratic variances.

    Notes
    -----
    With ``C = I + F' diag(D)^-1 F = L L'`` (Cholesky) and
    ``G = diag(D)^-1 F L^-T``: ``Sigma^-1 = diag(D)^-1 - G G'`` and
    ``log|Sigma| = sum(log D) + 2 sum(log diag L)``.  All methods cost
    O(K k^2) plus O(K k m) for an argument with ``m`` columns.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import LowRankCovariance
    >>> cov = LowRankCovariance(np.ones((3, 1)), np.ones(3))
    >>> np.allclose(cov.to_dense(), np.ones((3, 3)) + np.eye(3))
    True
    >>> np.allclose(cov.solve(cov.matvec(np.eye(3))), np.eye(3))
    True
    """

    def __init__(self, F: np.ndarray, D: np.ndarray) -> None:
        F = np.asarray(F, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        if F.ndim == 1:
            F = F[:, None]
        if D.ndim != 1 or F.ndim != 2 or F.shape[0] != D.shape[0]:
            raise ValueError(f"F must be (K, k) and D (K,), got {F.shape} and {D.shape}")
        if not (np.all(np.isfinite(D)) and np.all(D > 0)):
            raise ValueError("D must be finite and strictly positive")
        if not np.all(np.isfinite(F)):
            raise ValueError("F must be finite")
        self.F = F
        self.D = D

    @classmethod
    def _trusted(cls, F: np.ndarray, D: np.ndarray) -> "LowRankCovariance":
        """The covariance of the solvers' own float64 ``F`` (K, k) and ``D`` (K,),
        finite and positive by construction: without the checks of the
        constructor (a dozen per fit, each a few passes over K numbers)."""
        cov = object.__new__(cls)
        cov.F, cov.D = F, D
        return cov

    @property
    def K(self) -> int:
        return self.F.shape[0]

    @property
    def k(self) -> int:
        return self.F.shape[1]

    @cached_property
    def chol(self) -> np.ndarray:
        """Lower Cholesky factor ``L`` (k, k) of the core ``I + F' D^-1 F``."""
        Fs = self.F / np.sqrt(self.D)[:, None]
        C = Fs.T @ Fs
        C.flat[:: C.shape[0] + 1] += 1.0
        return np.linalg.cholesky(C)

    @cached_property
    def G(self) -> np.ndarray:
        """``G = D^-1 F L^-T`` (K, k), so that ``Sigma^-1 = D^-1 - G G'``."""
        if self.k == 0:
            return np.zeros((self.K, 0))
        # a triangular solve (backward stable; multiplying by an explicit L^-1
        # instead cost Munnell at k = 2, with regions at the floor, its convergence):
        # BLAS dtrsm directly on L X = F' D^-1, the very call scipy's
        # solve_triangular makes through LAPACK dtrtrs (bit-identical), in 27
        # instead of 45 microseconds
        return dtrsm(1.0, self.chol, (self.F / self.D[:, None]).T, lower=1).T

    @cached_property
    def logdet(self) -> float:
        """``log|Sigma|`` by the determinant lemma."""
        return float(np.sum(np.log(self.D)) + 2.0 * np.sum(np.log(np.diag(self.chol))))

    @cached_property
    def inverse_diagonal(self) -> np.ndarray:
        """Diagonal of ``Sigma^-1`` (K,)."""
        return 1.0 / self.D - np.einsum("ij,ij->i", self.G, self.G)

    @property
    def diagonal(self) -> np.ndarray:
        """Diagonal of ``Sigma`` (K,)."""
        return self.D + np.einsum("ij,ij->i", self.F, self.F)

    def solve(self, V: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``Sigma^-1 V`` for ``V`` of shape (K,) or (K, m).

        ``out`` (K, m), C-contiguous float64, receives the result without any
        temporary of V's size (one scaling, then one in-place GEMM; the
        caller's workspace spares the page faults of a fresh K x N array in
        every CG iteration).  It may not overlap ``V``.
        """
        if out is not None and V.ndim == 2 and self.k and out.flags.c_contiguous:
            np.multiply(V, (1.0 / self.D)[:, None], out=out)
            # out' = -(G' V)' G' + out' in place: out' is Fortran-ordered (m, K)
            dgemm(-1.0, (self.G.T @ V).T, self.G.T, 1.0, out.T, overwrite_c=True)
            return out
        if not is_lazy(V):
            V = np.asarray(V, dtype=np.float64)
        if V.ndim == 1:
            return self.solve(V[:, None])[:, 0]
        W = V / self.D[:, None]
        if self.k:
            W -= self.G @ (self.G.T @ V)
        if out is not None:
            out[...] = W
            return out
        return W

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """Return ``Sigma V`` for ``V`` of shape (K,) or (K, m)."""
        V = np.asarray(V, dtype=np.float64)
        if V.ndim == 1:
            return self.matvec(V[:, None])[:, 0]
        return V * self.D[:, None] + self.F @ (self.F.T @ V)

    def quad_form_total(self, Rt: np.ndarray, rowsq: np.ndarray | None = None,
                        Z: np.ndarray | None = None) -> float:
        """``sum_i r_i' Sigma^-1 r_i`` for residuals ``Rt`` of shape (K, N).

        ``rowsq`` (K,), if given, is ``sum_n Rt[j, n]**2``, and ``Z`` (k, N),
        if given, is ``G' Rt`` (each saves a pass over ``Rt``).
        """
        if rowsq is None:
            rowsq = np.einsum("kn,kn->k", Rt, Rt)
        if Z is None:
            Z = self.G.T @ Rt
        return float(rowsq @ (1.0 / self.D) - np.einsum("kn,kn->", Z, Z))

    def nll_rows(self, Rt: np.ndarray) -> np.ndarray:
        """Gaussian negative log-likelihood of each row of residuals ``Rt`` (K, N):
        ``1/2 [K log 2 pi + log|Sigma| + r_i' Sigma^-1 r_i]``, shape (N,)."""
        Z = self.G.T @ Rt
        quad = np.einsum("kn,kn,k->n", Rt, Rt, 1.0 / self.D) - np.einsum("ln,ln->n", Z, Z)
        return 0.5 * (self.K * LOG_2PI + self.logdet + quad)

    def nll_per_row(self, Rt: np.ndarray, rowsq: np.ndarray | None = None,
                    Z: np.ndarray | None = None) -> float:
        """Gaussian negative log-likelihood per row of residuals ``Rt`` (K, N)
        (``rowsq`` and ``Z`` as in :meth:`quad_form_total`)."""
        N = Rt.shape[1]
        return (0.5 * (self.K * LOG_2PI + self.logdet)
                + 0.5 * self.quad_form_total(Rt, rowsq, Z) / N)

    def to_dense(self) -> np.ndarray:
        """Dense ``Sigma`` (K, K).  For tests and small K only."""
        return self.F @ self.F.T + np.diag(self.D)

    def inverse_to_dense(self) -> np.ndarray:
        """Dense ``Sigma^-1`` (K, K) through Woodbury.  For tests and small K only."""
        return np.diag(1.0 / self.D) - self.G @ self.G.T

    def __repr__(self) -> str:
        return f"LowRankCovariance(K={self.K}, k={self.k})"


# --------------------------------------------------------------------------
# Small shared kernels: one implementation of each piece of mathematics
# --------------------------------------------------------------------------

def triangular_inverse(L: np.ndarray) -> np.ndarray:
    """Inverses of triangular matrices ``L`` (..., m, m), batched (lower or upper).

    The inverse of a triangular matrix is triangular with the reciprocal
    diagonal, so ``log|C| = -2 sum log diag(L^-1)`` for ``C = L L'``.
    """
    m = L.shape[-1]
    return np.linalg.solve(L, np.broadcast_to(np.eye(m), L.shape))


def row_core_inverse(F: np.ndarray, D: np.ndarray, O: np.ndarray) -> np.ndarray:
    """``L_i^-1`` for the per-row Woodbury cores ``C_i = I + F_O' Psi_O^-1 F_O = L_i L_i'``.

    Parameters
    ----------
    F : ndarray, shape (K, k)
    D : ndarray, shape (K,)
    O : ndarray, shape (K, n)
        Observation weights of the equations in each of ``n`` rows (1.0
        observed, 0.0 missing; a row of missingness *patterns* works too).

    Returns
    -------
    ndarray, shape (n, k, k)
        Lower-triangular ``L_i^-1``; ``C_i^-1 = L_i^-T L_i^-1``.  All cores come
        from one GEMM ``O' [F_j F_j' / D_j]_j`` (n x K times K x k^2).
    """
    K, k = F.shape
    FD = F / D[:, None]
    outer = (FD[:, :, None] * F[:, None, :]).reshape(K, k * k)
    C = (O.T @ outer).reshape(O.shape[1], k, k)
    C[:, np.arange(k), np.arange(k)] += 1.0
    return triangular_inverse(np.linalg.cholesky(C))


def row_core_solve(Linv: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``C_i^-1 b_i`` for every row from ``L_i^-1`` (n, k, k) and ``b`` (n, k) or
    (n, k, m): with ``b_i = F_O' Psi_O^-1 r_i`` this is the posterior mean of
    the factors.  Two batched matmuls (``C_i^-1 = L_i^-T L_i^-1``)."""
    if b.ndim == 2:
        return row_core_solve(Linv, b[:, :, None])[:, :, 0]
    return Linv.transpose(0, 2, 1) @ (Linv @ b)


def covariance_parameters(K: int, k: int) -> int:
    """Free parameters of ``Sigma = F F' + diag(D)``: ``K k + K - k(k-1)/2``, capped
    at ``K(K+1)/2`` (the unrestricted count, reached beyond the Ledermann bound)."""
    return int(min(K * k + K - k * (k - 1) // 2, K * (K + 1) // 2))


def lawley_loadings(U: np.ndarray, lam: np.ndarray, D: np.ndarray,
                    min_excess: float = 0.0) -> np.ndarray:
    """Loadings ``F = D^1/2 U diag(max(lam - 1, min_excess))^1/2`` from the top
    eigenpairs ``(lam, U)`` of the ``D``-whitened residual covariance.

    With ``min_excess = 0`` this is the exact maximiser of the likelihood over
    F given D (Lawley & Maxwell, 1971); a positive ``min_excess`` keeps every
    factor alive in a starting point.
    """
    return np.sqrt(D)[:, None] * U * np.sqrt(np.maximum(lam - 1.0, min_excess))


def orthonormalize(W: np.ndarray, basis: np.ndarray | None = None,
                   drop: float = 0.0) -> np.ndarray:
    """Orthonormal basis of the columns of the tall ``W`` (n, m), orthogonal to the
    orthonormal columns of ``basis`` when given.

    Projects out ``basis`` and orthonormalises through the Gram matrix, twice
    (a second pass restores orthogonality to working precision).  Directions
    with singular value below ``drop`` (absolute, first pass) or 1e-7 of the
    largest (the reach of a Gram-based step) are discarded, so the result may
    have fewer than ``m`` columns.
    """
    for step in range(2):
        if basis is not None and basis.shape[1]:
            W = W - basis @ (basis.T @ W)
        s2, E = eigh(W.T @ W)
        top = float(s2[-1]) if s2.size else 0.0
        keep = (s2 > (drop if step == 0 else 0.0) ** 2) & (s2 > 1e-14 * top) & (s2 > 0)
        W = W @ (E[:, keep] / np.sqrt(s2[keep]))
    return W


def thin_q(A: np.ndarray) -> np.ndarray:
    """``Q`` of the thin QR factorisation of a tall ``A`` (n, m), ``n >= m``: LAPACK
    ``dgeqrf`` and ``dorgqr`` called directly, the Householder QR that
    ``np.linalg.qr`` runs too, in a third of its time at 1000 x 8 (32 against
    107 microseconds measured: the wrapper's copies and checks), called by
    the subspace iteration after every iteration that does not end it."""
    qr, tau, _, info = dgeqrf(A)
    if info == 0:
        q, _, info = dorgqr(qr, tau, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"QR factorisation failed (LAPACK info {info})")
    return q


#: Safety factor on the predicted accuracy of one more subspace iteration
#: (:func:`top_eigenpairs`): Ritz values of a poor basis underestimate the
#: gap ratio.
PREDICT_SAFETY = 3.0


def _predicted_pairs(T: np.ndarray, S: np.ndarray, Z: np.ndarray, lam: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """Ritz pairs of ``W W'`` on the span of ``W W' V`` from one subspace
    iteration's products (:func:`top_eigenpairs`): ``T = W' V`` (N, b),
    ``V' W W' V = S diag(lam) S'`` and ``Z = W W' V S`` (K, b).

    ``W' V S`` has orthogonal columns of norms ``sqrt(lam)``, so with
    ``Q = W' V S diag(lam)^-1/2`` (orthonormal) ``W Q = Z diag(lam)^-1/2``
    and the pairs are the SVD of that K x b matrix, from the eigenpairs of its
    b x b Gram matrix; the basis is re-orthonormalised when that lost more
    than 1e-12 (Cholesky QR).  When ``lam`` spans more than 1e8 the Gram
    route would lose digits: a QR of ``W' V S`` and an SVD instead.  Returns
    ``(eigenvalues, eigenvectors (K, b))``, decreasing, or None when
    ``W' V`` is numerically rank deficient.
    """
    if lam[-1] > 1e-8 * lam[0]:
        Y = Z / np.sqrt(lam)
        s2, E = np.linalg.eigh(Y.T @ Y)
        s2, E = s2[::-1], E[:, ::-1]
        if s2[-1] > 1e-8 * s2[0]:
            U = Y @ (E / np.sqrt(s2))
            C = U.T @ U
            if np.abs(C - np.eye(C.shape[0])).max() > 1e-12:
                U = solve_triangular(np.linalg.cholesky(C), U.T, lower=True).T
            return s2, U
    Q, Rq = np.linalg.qr(T @ S)                                # W' V S = Q Rq
    d = np.abs(np.diag(Rq))
    if not (d.size and d.min() > 1e-8 * d.max()):
        return None
    Y = solve_triangular(Rq.T, Z.T, lower=True).T              # W Q (K, b)
    U, sv, _ = np.linalg.svd(Y, full_matrices=False)
    return sv ** 2, U


def top_eigenpairs(
    Rt: np.ndarray, scale: np.ndarray, k: int, *, basis: np.ndarray | None,
    rng: np.random.Generator, maxiter: int, rtol: float, oversample: int = 8,
    dense_limit: int = 64, predicted_rtol: float = np.inf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Top-k eigenpairs of ``W W'`` for ``W = diag(scale) Rt`` (K, N), without
    forming K x K (nor W itself: ``W W' V = scale * (Rt (Rt' (scale * V)))``).

    Block subspace iteration on ``k + oversample`` columns with Rayleigh-Ritz,
    warm-started from ``basis``, until every wanted Ritz residual is below
    ``rtol * max(lam_1, 1)`` or ``maxiter`` iterations (without a warm start,
    the first block is ``W W'`` applied to a random one); a thin SVD when
    ``min(K, N)`` is small (at most ``max(dense_limit, 2 (k + oversample))``).

    When ``rtol >= predicted_rtol`` (loose accuracy, early in a fit) the
    iteration's products already span ``W W' V``, whose Ritz pairs (from the
    SVD of ``W Q = (W W' V) R^-1``, ``W' V = Q R``, no further pass over
    ``Rt``) are better than ``V``'s by about the gap ratio ``lam_b / lam_i``:
    they are returned, unverified, when ``V``'s residuals meet ``rtol`` or
    would after that gain (the residuals times :data:`PREDICT_SAFETY` times
    the ratio).  Returning them also when ``V``'s own pairs would do gives
    the factor steps loadings about 200 times more accurate at K = 1000 for
    no extra pass: over the 60 shapes of ``benchmarks/stopping_gaps.py``
    (with the rescaled warm starts of ``als_factor._whitened_eigenpairs``)
    282 sweeps instead of 319 and 317 subspace iterations instead of 770.
    (An inexact eigenvector only makes a factor step gain less; the tight
    solves near convergence are always verified.)

    Returns
    -------
    lam : ndarray (k,)
        Eigenvalues, decreasing.
    U : ndarray (K, k)
        Eigenvectors.
    basis : ndarray (K, k + oversample) or None
        Warm start for the next call (None after the dense path).
    iterations : int
        Subspace iterations performed (0 for the dense path).
    """
    K, N = Rt.shape
    b = min(k + oversample, K, N)
    if min(K, N) <= max(dense_limit, 2 * b):
        if is_lazy(Rt):
            lam, U = gram_top_eigenpairs(Rt, scale, k)
            return lam, U, None, 0
        U, s, _ = np.linalg.svd(scale[:, None] * Rt, full_matrices=False)
        return s[:k] ** 2, U[:, :k], None, 0
    sc = scale[:, None]
    if basis is None or basis.shape[1] != b:
        # no warm start: the range of W W' applied to a random block (no
        # Rayleigh-Ritz on the random block itself, which would be wasted)
        # (products oriented as (b, N) x (N, K): a third faster than K x N times N x b)
        Tt = (sc * rng.standard_normal((K, b))).T @ Rt
        basis = thin_q(materialize(sc * (Tt @ Rt.T).T))
    V = basis
    lam = np.zeros(b)
    for it in range(1, maxiter + 1):
        Tt = (sc * V).T @ Rt                                   # (W' V)' (b, N)
        Tt, Z = compute_many(Tt, sc * (Tt @ Rt.T).T)           # and W W' V (K, b)
        T = Tt.T
        lam, S = np.linalg.eigh(V.T @ Z)
        lam, S = lam[::-1], S[:, ::-1]
        V, Z = V @ S, Z @ S
        E = Z - V * lam                 # all b columns: contiguous, faster than slicing k
        res = np.sqrt(np.einsum("ij,ij->j", E, E)[:k])
        bound = rtol * max(lam[0], 1.0)
        verified = bool(np.all(res <= bound))
        if rtol >= predicted_rtol and lam[k - 1] > 0 and (verified or np.all(
                res * PREDICT_SAFETY * max(lam[-1], 0.0) / lam[:k] <= bound)):
            # the span of W W' V, better than V's pairs by about the gap ratio,
            # also when V's own residuals already meet rtol
            pred = _predicted_pairs(T, S, Z, lam)
            if pred is not None:
                return pred[0][:k], pred[1][:, :k], pred[1], it
        if verified:
            return lam[:k], V[:, :k], V, it
        V = thin_q(Z)
    return lam[:k], V[:, :k], V, maxiter


class CoefficientLayout:
    """The one map between the coefficient layouts.

    The solvers work on a padded ``(K, pmax)`` array ``theta`` (zeros past
    ``p_j``); users see a list of K ``(p_j, 1)`` arrays ``B``; the statistics
    layer a flat vector of length ``P = sum p_j``, equation by equation.

    Parameters
    ----------
    p : array_like of int, shape (K,)
        Regressors per equation.
    """

    def __init__(self, p: np.ndarray) -> None:
        self.p = np.asarray(p, dtype=np.int64)
        self.K = int(self.p.size)
        self.pmax = int(self.p.max()) if self.K else 0
        self.P = int(self.p.sum())
        #: equation and column of each flat coefficient (P,)
        self.eq = np.repeat(np.arange(self.K), self.p)
        self.col = (np.arange(self.P) - np.repeat(np.cumsum(self.p) - self.p, self.p)
                    if self.K else np.zeros(0, np.int64))

    @property
    def mask(self) -> np.ndarray:
        """Boolean (K, pmax): True where a coefficient exists."""
        return np.arange(self.pmax)[None, :] < self.p[:, None]

    def unpad(self, theta: np.ndarray) -> list:
        """(K, pmax) -> list of K (p_j, 1) arrays: views of one copy of ``theta``
        (independent of it; no Python loop when every ``p_j = pmax``)."""
        own = np.array(theta, dtype=np.float64)[:, :, None]
        if self.K and np.all(self.p == self.pmax):
            return list(own)
        return [own[j, : self.p[j]] for j in range(self.K)]

    def pad(self, B: list, name: str = "B") -> np.ndarray:
        """List of K arrays (p_j,) or (p_j, 1) -> (K, pmax), zero-padded; checks sizes."""
        if len(B) != self.K:
            raise ValueError(f"{name} has {len(B)} equations but the system has K={self.K}")
        sizes = np.array([np.size(b) for b in B])
        bad = np.flatnonzero(sizes != self.p)
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"{name}[{j}] has {sizes[j]} coefficients but equation {j} "
                             f"has {int(self.p[j])} regressors")
        flat = np.concatenate([np.asarray(b, dtype=np.float64).ravel() for b in B]) \
            if self.K else np.zeros(0)
        return self.unflatten(flat)

    def flatten(self, theta: np.ndarray) -> np.ndarray:
        """(K, pmax[, m]) -> (P[, m]) flat, equation by equation."""
        return theta[self.eq, self.col]

    def unflatten(self, v: np.ndarray) -> np.ndarray:
        """(P[, m]) flat -> (K, pmax[, m]) padded with zeros."""
        v = np.asarray(v, dtype=np.float64)
        theta = np.zeros((self.K, self.pmax) + v.shape[1:])
        theta[self.eq, self.col] = v
        return theta


# --------------------------------------------------------------------------
# Block-diagonal design X = blockdiag(X_1, ..., X_K), equation-major layout
# --------------------------------------------------------------------------

def design_matvec(X: np.ndarray, theta: np.ndarray, out: np.ndarray | None = None
                  ) -> np.ndarray:
    """Fitted values ``U[j] = X_j theta_j``: (K, N, p) x (K, p) -> (K, N).

    A stacked matmul: one pass over X (5x faster than the equivalent einsum;
    each item is far below OpenBLAS's threading threshold).  A design shared
    by every equation (a zero-stride view) is one GEMM ``theta X0'``.
    ``out`` (K, N) receives the result.
    """
    if is_broadcast(X):
        if out is None:
            return theta[:, : X.shape[2]] @ X[0].T
        return np.matmul(theta[:, : X.shape[2]], X[0].T, out=out)
    if out is not None:
        np.matmul(X, theta[:, :, None], out=out[:, :, None])
        return out
    return (X @ theta[:, :, None])[:, :, 0]


def design_rmatvec(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Adjoint ``g_j = X_j' W[j]``: (K, N, p) x (K, N) -> (K, p); one GEMM
    ``W X0`` for a design shared by every equation (a zero-stride view)."""
    if is_broadcast(X):
        return W @ X[0]
    return (W[:, None, :] @ X)[:, 0, :]


def gls_gradient(X: np.ndarray, cov: LowRankCovariance, Rt: np.ndarray,
                 work: np.ndarray | None = None, *, xr: np.ndarray | None = None,
                 Z: np.ndarray | None = None) -> np.ndarray:
    """``g_j = X_j' (Sigma^-1 R')_j`` for residuals ``Rt`` (K, N): (K, p).

    ``Sigma^-1 R'`` by Woodbury (into ``work``, a (K, N) workspace, when
    given), then one stacked pass over X.  ``-g`` is the gradient of the
    total NLL with respect to the coefficients.

    With ``xr = X' R`` (K, p) and ``Z = G' Rt`` (k, N) already known (the ALS
    beta-step keeps both up to date, :func:`split_normal_matvec`) only the
    low-rank part needs a pass: ``g = xr / D - X' (G Z)``.
    """
    if xr is not None and not is_lazy(Rt):
        return _split_apply(X, cov, xr, cov.G.T @ Rt if Z is None else Z)
    if is_lazy(Rt):
        g = design_rmatvec(X, Rt) / cov.D[:, None]
        if cov.k:
            g = g - _low_rank_adjoint(X, cov.G, cov.G.T @ Rt)
        return materialize(g)                                  # one pass, one graph
    return design_rmatvec(X, cov.solve(Rt, out=work))


def _low_rank_adjoint(X: Any, G: np.ndarray, Z: Any) -> Any:
    """``X_j' (G Z)_j = (X_j' Z') G_j'`` for every equation, ``Z`` (k, N): the
    low-rank part of the GLS operator and gradient without forming the K x N
    matrix ``G Z`` -- a batched (p, N) x (N, k) product, then K x p x k work
    (10% faster than ``G Z`` and a stacked adjoint at K = 1000, N = 500, p = 3;
    for a shared design, one p x k product).  For Dask data ``Z`` is a
    reduction over equations and this order uses each chunk of the residuals
    once, at once, reading only X again (``Sigma^-1 R`` by Woodbury would
    hold every chunk until ``G' R`` is complete)."""
    if is_broadcast(X):
        return G @ (Z @ X[0])
    Zt = Z.T if is_lazy(Z) else np.ascontiguousarray(Z.T)
    return np.einsum("kpl,kl->kp", X.transpose(0, 2, 1) @ Zt, G)


def normal_matvec(
    X: np.ndarray, cov: LowRankCovariance, V: np.ndarray,
    work: tuple[np.ndarray, np.ndarray] | None = None, gram: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """GLS normal operator ``A v = X' (Sigma^-1 (x) I_N) X v`` and ``U = X v``.

    Two stacked passes over X: ``U = X v`` (K x N), then
    ``A v = X' (Sigma^-1 U')`` with ``Sigma^-1`` by Woodbury -- fewer passes
    and flops than splitting off the diagonal part through the Gram matrices.
    ``work`` (two (K, N) workspaces) receives ``U`` and ``Sigma^-1 U'``, so a
    CG iteration allocates nothing of size K x N; ``U`` (the fitted values of
    ``v``) is returned for the caller to update residuals without another
    pass over X.  Padding columns of X are zero, so ``A v`` is zero there.
    For Dask data the diagonal part comes from the Gram matrices ``gram``
    (K, p, p) when given and the low-rank part from :func:`_low_rank_adjoint`:
    each chunk of ``U`` is then used once, in one reduction.
    """
    if work is None:
        U = design_matvec(X, V)
        if is_lazy(U):      # Dask: the diagonal part from the Gram matrices (_low_rank_adjoint)
            Av = (gram @ V[:, :, None])[:, :, 0] / cov.D[:, None] if gram is not None \
                else design_rmatvec(X, U) / cov.D[:, None]
            if cov.k:
                Av = Av - _low_rank_adjoint(X, cov.G, cov.G.T @ U)
            return materialize(Av), U
        return design_rmatvec(X, cov.solve(U)), U
    U, W = work
    design_matvec(X, V, out=U)
    return design_rmatvec(X, cov.solve(U, out=W)), U


def _split_apply(X: Any, cov: LowRankCovariance, diag: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """``diag / D - X' (G Z)``: the GLS operator or gradient from its diagonal
    part ``diag`` (K, p) -- ``X_j'X_j v_j`` or ``X_j' r_j`` -- and ``Z = G' U``
    (k, N); one pass over the designs (:func:`_low_rank_adjoint`)."""
    return diag / cov.D[:, None] - materialize(_low_rank_adjoint(X, cov.G, Z))


def _by_products(X: Any, cov: LowRankCovariance, V: np.ndarray, gram: np.ndarray,
                 U: np.ndarray | None = None) -> tuple:
    """``(U, G' U, X_j'X_j v_j)`` with ``U = X v`` (into ``U`` when given): the
    changes of the residuals, of ``G' R`` and of ``X' R`` along ``v``."""
    U = design_matvec(X, V, out=U)
    return U, materialize(cov.G.T @ U), np.einsum("kpq,kq->kp", gram, V)


def split_normal_matvec(
    X: np.ndarray, cov: LowRankCovariance, V: np.ndarray, gram: np.ndarray,
    work: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The GLS normal operator of :func:`normal_matvec` with its diagonal part
    from the Gram matrices: ``A v = (X_j'X_j v_j) / D_j - X' (G (G' U))``,
    ``U = X v``.  Also returns ``(U, G' U, X_j'X_j v_j)``, the changes of
    the residuals, of ``G' R`` and of ``X' R`` along ``v``, so that the ALS
    beta-step keeps all three current without passes of their own
    (:func:`gls_gradient` with ``xr`` and ``Z``).  ``work`` as in
    :func:`normal_matvec` (only its first array is used: ``U``); ``gram``
    (K, p, p) with a unit diagonal on padding, where ``v`` is zero."""
    aux = _by_products(X, cov, V, gram, work[0])
    return complete_normal(X, cov, V, aux), aux


def curvature(X: Any, cov: LowRankCovariance, V: np.ndarray, gram: np.ndarray,
              work: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, tuple]:
    """``v' A v`` of the GLS normal operator without applying it: with
    ``U = X v``, ``v' A v = sum_j v_j' X_j'X_j v_j / D_j - ||G' U||^2`` (one
    pass over the designs, none back; Dask data too).  Also returns the
    by-products of :func:`split_normal_matvec`, so a step along ``v`` with
    exact line search keeps the residuals, ``X' R`` and ``G' R`` current, and
    :func:`complete_normal` forms ``A v`` from them.  ``work``: as in
    :func:`normal_matvec` (``U`` goes into its first array)."""
    aux = _by_products(X, cov, V, gram, None if work is None else work[0])
    _, Zv, Gv = aux
    vav = float(np.einsum("kp,kp,k->", V, Gv, 1.0 / cov.D) - np.einsum("ln,ln->", Zv, Zv))
    return vav, aux


def complete_normal(X: Any, cov: LowRankCovariance, V: np.ndarray, aux: tuple) -> np.ndarray:
    """``A v`` from the by-products ``(U, G' U, X_j'X_j v_j)`` of
    :func:`curvature`: the adjoint pass ``(X_j'X_j v_j) / D_j - X' (G (G' U))``
    alone."""
    _, Zv, Gv = aux
    return _split_apply(X, cov, Gv, Zv)


#: Equations sampled (evenly spaced) to estimate the gap a first CG step left
#: (:func:`sampled_gap`); with at most this many, the gap is computed exactly.
GAP_SAMPLE = 32


def sampled_gap(X: Any, cov: LowRankCovariance, gram_inv: np.ndarray, alpha: float,
                aux: tuple, r: np.ndarray) -> float | None:
    """Estimate of ``1/2 r1' M^-1 r1`` after a first CG step ``alpha v`` with
    by-products ``aux = (U, G' U, X_j'X_j v_j)``: ``r1_j = r_j - alpha (A v)_j``
    on :data:`GAP_SAMPLE` evenly spaced equations (their share of the pass
    over the designs), scaled to all K.  None when K is that small (the
    exact gap then costs little: :func:`complete_normal`).  An estimate, not a
    bound: it decides whether a beta-step ends after one step, and the next
    gradient measures what it left (after the final polish, the exact gap
    before it stands).  The sample is a strided slice: views, no copies."""
    K = r.shape[0]
    if K <= GAP_SAMPLE:
        return None
    _, Zv, Gv = aux
    S = slice(0, K, K // GAP_SAMPLE)
    Av = Gv[S] / cov.D[S, None] - materialize(_low_rank_adjoint(X[S], cov.G[S], Zv))
    r1 = r[S] - alpha * Av
    scale = cov.inverse_diagonal[S]
    return 0.5 * K / r1.shape[0] * float(np.vdot(r1, apply_block(gram_inv[S], scale, r1)))


def workspace(shape: tuple[int, int], count: int = 2) -> tuple[np.ndarray, ...]:
    """``count`` (K, N) float64 workspaces: two for :func:`normal_matvec` /
    :func:`gls_gradient` (``U`` and ``Sigma^-1 U``), one for
    :func:`split_normal_matvec` and :func:`curvature` (``U`` alone)."""
    return tuple(np.empty(shape) for _ in range(count))


def subtract_scaled(A: np.ndarray, alpha: float, U: np.ndarray) -> np.ndarray:
    """``A - alpha U``, in place (BLAS axpy, no temporary) when ``A`` is a
    writeable C-contiguous float64 array; returns the result."""
    if (type(A) is np.ndarray and A.flags.c_contiguous and A.flags.writeable
            and A.dtype == np.float64 and type(U) is np.ndarray and U.flags.c_contiguous
            and U.shape == A.shape):
        daxpy(U.reshape(-1), A.reshape(-1), a=-alpha)
        return A
    return A - alpha * U


def block_jacobi_inverse(gram: np.ndarray) -> np.ndarray:
    """Inverses of the Gram blocks ``(X_j' X_j)^-1``, (K, p, p): one batched
    inverse of the column-scaled (unit-diagonal) matrices, symmetrised.

    The block-Jacobi preconditioner (whose exactness does not affect the
    solution CG converges to) and the OLS solves use it.  The diagonal block
    of the GLS normal matrix is ``(Sigma^-1)_jj X_j' X_j``, so
    ``M_j^-1 = (X_j'X_j)^-1 / (Sigma^-1)_jj``.  Column scaling leaves an error
    of about ``eps`` times the scaled condition number, as a Cholesky-based
    inverse would (and takes half its time at p = 3).
    """
    d = np.sqrt(np.einsum("kpp->kp", gram))
    inv = np.linalg.inv(gram / d[:, :, None] / d[:, None, :])
    inv = 0.5 * (inv + inv.transpose(0, 2, 1))
    return inv / (d[:, :, None] * d[:, None, :])        # one division: stays symmetric


def apply_block(Minv: np.ndarray, scale: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Batched ``z_j = Minv_j r_j / scale_j``."""
    return np.einsum("kpq,kq->kp", Minv, r) / scale[:, None]


@dataclass(frozen=True)
class CGInfo:
    """Outcome of one preconditioned CG solve.

    Attributes
    ----------
    iterations : int
        Number of operator applications.
    start_gap : float
        ``1/2 r0' M^-1 r0`` at the warm start (total-NLL units), an estimate of
        the decrease still available at the start.
    final_gap : float
        The same quantity at exit.
    decrease : float
        Exact decrease of the quadratic objective (total-NLL units).
    converged : bool
        Whether ``final_gap`` met the requested threshold.
    """

    iterations: int
    start_gap: float
    final_gap: float
    decrease: float
    converged: bool


def pcg(
    apply_A: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    apply_Minv: Callable[[np.ndarray], np.ndarray],
    theta: np.ndarray,
    r: np.ndarray,
    gap_tol: float,
    maxiter: int,
    on_step: Callable[[float, np.ndarray, Any], None] | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
    curvature: Callable[[np.ndarray], tuple[float, Any]] | None = None,
    complete: Callable[[np.ndarray, Any], np.ndarray] | None = None,
    estimate: Callable[[float, np.ndarray, Any, np.ndarray], float] | None = None,
) -> tuple[np.ndarray, CGInfo]:
    """Preconditioned conjugate gradients on ``A theta = b`` from a warm start.

    Parameters
    ----------
    apply_A : callable
        ``v -> (A v, aux)``; ``aux`` is passed to ``on_step`` (e.g. ``X v``).
    apply_Minv : callable
        Preconditioner ``r -> M^-1 r``.
    theta : ndarray
        Warm start (not modified).
    r : ndarray
        Residual ``b - A theta`` at the warm start (not modified).
    gap_tol : float
        Stop when ``1/2 r' M^-1 r`` (the quadratic decrease still available,
        up to preconditioning) falls to this value.
    maxiter : int
        Maximum number of operator applications.
    on_step : callable, optional
        ``(alpha, d, aux)`` after each step ``alpha d``, e.g. to update model
        residuals.
    project : callable, optional
        Linear constraints ``R theta = q`` (projected PCG, Gould, Hribar &
        Nocedal 2001): ``r -> r - R' (R M^-1 R')^-1 R M^-1 r``, applied to
        every residual (:meth:`alsgls.core.restriction.RestrictionMetric.project`).
        Then ``M^-1 r`` lies in the null space of ``R``, so a feasible
        ``theta`` stays feasible, and ``1/2 r' M^-1 r`` is the gap of the
        restricted problem; re-projecting each residual keeps its component
        along ``R'`` (the multipliers) from growing.
    curvature : callable, optional
        ``v -> (v' A v, aux)``: the first CG step's length without ``A v``.
        Alone, at most that one step is taken (preconditioned steepest descent
        with exact line search): the gap after it is not known (``final_gap``
        is NaN, ``converged`` False), for callers that check it at their next
        gradient.
    complete : callable, optional
        With ``curvature``: ``(v, aux) -> A v`` from the first step's
        by-products, formed only when needed -- when ``estimate`` is not given
        or estimates the gap after the first step above ``gap_tol``; CG then
        continues as usual (the same iterates as without ``curvature``, to
        round-off).
    estimate : callable, optional
        ``(alpha, v, aux, r) -> `` an estimate of ``1/2 r1' M^-1 r1`` after
        the first step (``r`` the residual before it); at most ``gap_tol``
        ends the solve after that step (``final_gap`` NaN).

    Returns
    -------
    theta : ndarray
    info : CGInfo
    """
    theta = theta.copy()
    r = r.copy() if project is None else project(r)
    z = apply_Minv(r)
    rz = float(np.vdot(r, z))
    start_gap = gap = 0.5 * rz
    decrease = 0.0
    d = z.copy()
    it = 0
    while gap > gap_tol and it < maxiter:
        lazy = curvature is not None and it == 0      # the first step's length from v'Av
        if lazy:
            dq, aux = curvature(d)
        else:
            q, aux = apply_A(d)
            dq = float(np.vdot(d, q))
        if dq <= 0:
            raise FloatingPointError("CG breakdown: the GLS normal operator is not positive definite")
        alpha = rz / dq
        theta += alpha * d
        decrease += 0.5 * alpha * rz
        if on_step is not None:
            on_step(alpha, d, aux)
        it += 1
        if lazy:
            if complete is None or (estimate is not None
                                    and estimate(alpha, d, aux, r) <= gap_tol):
                return theta, CGInfo(1, start_gap, float("nan"), decrease, False)
            q = complete(d, aux)
        r -= alpha * q
        if project is not None:
            r = project(r)
        z = apply_Minv(r)
        rz_new = float(np.vdot(r, z))
        d = z + (rz_new / rz) * d
        rz = rz_new
        gap = 0.5 * rz
    return theta, CGInfo(it, start_gap, gap, decrease, gap <= gap_tol)


# --------------------------------------------------------------------------
# scipy LinearOperator views on flat (unpadded) coefficient vectors
# --------------------------------------------------------------------------

def gls_pcg(X: np.ndarray, gram: np.ndarray, gram_inv: np.ndarray, cov: LowRankCovariance,
            theta: np.ndarray, r: np.ndarray, gap_tol: float, maxiter: int,
            on_step: Callable[[float, np.ndarray, Any], None] | None = None,
            project: Callable[[np.ndarray], np.ndarray] | None = None,
            work: tuple[np.ndarray, np.ndarray] | None = None, split: bool = False,
            single: bool = False):
    """:func:`pcg` on the GLS normal equations given ``Sigma`` (``cov``): the
    matrix-free operator :func:`normal_matvec` and the block-Jacobi
    preconditioner ``(Sigma^-1)_jj X_j'X_j`` (:func:`apply_block`); the one
    place both the ALS beta-step and the GLS solve given Sigma build it.
    ``work``: two (K, N) workspaces for :func:`normal_matvec` (allocated here
    when not given).  The other arguments and the return value are those of
    :func:`pcg`.  ``split``: the operator :func:`split_normal_matvec` (in-memory
    data), whose ``aux`` for ``on_step`` is ``(U, G' U, X_j'X_j v_j)``; with
    ``single``, the first step's length comes from ``v' A v`` alone
    (:func:`curvature`), and the solve ends there when :func:`sampled_gap`
    estimates the gap met (K above :data:`GAP_SAMPLE`, no restriction: the
    estimate does not project); otherwise ``A v`` is completed
    (:func:`complete_normal`) and CG goes on."""
    scale = cov.inverse_diagonal
    if work is None and type(X) is np.ndarray:
        work = workspace(X.shape[:2])
    split = split and work is not None
    lazy = {}
    if single:
        lazy = dict(curvature=lambda v: curvature(X, cov, v, gram, work if split else None),
                    complete=lambda v, aux: complete_normal(X, cov, v, aux))
        if project is None and r.shape[0] > GAP_SAMPLE:   # else the gap is formed exactly
            lazy["estimate"] = lambda a, v, aux, res: sampled_gap(X, cov, gram_inv, a, aux, res)
    apply_A = ((lambda v: split_normal_matvec(X, cov, v, gram, work)) if split
               else (lambda v: normal_matvec(X, cov, v, work, gram)))
    return pcg(apply_A, lambda g: apply_block(gram_inv, scale, g),
               theta, r, gap_tol, maxiter, on_step, project, **lazy)


class BlockDesignOperator(LinearOperator):
    """The stacked design ``blockdiag(X_1, ..., X_K)`` as a LinearOperator.

    Maps a flat coefficient vector of length ``P = sum p_j`` (equation by
    equation) to ``vec(X B)`` of length ``N K`` in column (equation) order.
    A view for scipy's iterative solvers on the same kernels the ALS solver
    uses (:func:`design_matvec`, :func:`design_rmatvec`, the layout of
    :class:`CoefficientLayout`); the solver itself works on the padded layout.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        Zero-padded designs (``Problem.X``).
    p : ndarray of int, shape (K,)

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import simulate_sur
    >>> from alsgls.core.problem import build_problem
    >>> Xs, Y, _ = simulate_sur(N=50, K=3, p=2, k=1, seed=0)
    >>> prob = build_problem(Xs, Y)
    >>> op = BlockDesignOperator(prob.X, prob.p)
    >>> op.shape, np.allclose(op.matvec(np.ones(6)), np.concatenate([x.sum(1) for x in Xs]))
    ((150, 6), True)
    """

    def __init__(self, X: np.ndarray, p: np.ndarray) -> None:
        self.X = X
        self.layout = CoefficientLayout(p)
        self.p = self.layout.p
        K, N, _ = X.shape
        super().__init__(dtype=np.float64, shape=(N * K, self.layout.P))

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        return design_matvec(self.X, self.layout.unflatten(np.ravel(v))).ravel()

    def _rmatvec(self, w: np.ndarray) -> np.ndarray:
        K, N, _ = self.X.shape
        return self.layout.flatten(design_rmatvec(self.X, np.reshape(w, (K, N))))


class GLSNormalOperator(BlockDesignOperator):
    """The GLS normal matrix ``A = X' (Sigma^-1 (x) I_N) X`` (P x P), matrix-free.

    The operator of the ALS beta-step (:func:`normal_matvec`) on flat vectors.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
    p : ndarray of int, shape (K,)
    cov : LowRankCovariance
    gram : ndarray, shape (K, pmax, pmax), optional
        ``X_j' X_j`` with a unit diagonal on padding (``Problem.gram``);
        formed when not given.
    """

    def __init__(self, X: np.ndarray, p: np.ndarray, cov: LowRankCovariance,
                 gram: np.ndarray | None = None) -> None:
        super().__init__(X, p)
        self.cov = cov
        if gram is None:
            gram = X.transpose(0, 2, 1) @ X
            gram[:, np.arange(self.layout.pmax), np.arange(self.layout.pmax)] += ~self.layout.mask
        self.gram = gram
        LinearOperator.__init__(self, dtype=np.float64, shape=(self.layout.P, self.layout.P))

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        Av, _ = normal_matvec(self.X, self.cov, self.layout.unflatten(np.ravel(v)))
        return self.layout.flatten(Av)

    _rmatvec = _matvec  # symmetric
