"""Matrix-free covariance of the GLS coefficients (DESIGN.md section 4).

The model-based covariance of the stacked coefficients is ``A^-1`` with the
GLS information ``A = X' (Sigma^-1 (x) I_N) X`` (P x P, never formed).  With
``Sigma^-1 = Psi^-1 - G G'`` (``ops.LowRankCovariance``) it splits into a
block-diagonal part and a correction of rank at most ``N k``::

    A = Delta - U U',   Delta_j = X_j' X_j / D_j,   U = X' (G (x) I_N).

With the thin QR ``X_j = Q_j R_j`` and ``T_j = sqrt(D_j) R_j^-1`` (so that
``Delta_j^-1 = T_j T_j'``) the correction becomes
``T' U = V' = [sqrt(D_j) (g_j (x) Q_j)]_j`` (an ``N k x P`` operator whose
columns are orthonormal within an equation, scaled by ``sqrt(D_j)|g_j|``), and

    A^-1 = T (I - V'V)^-1 T' = T (I + V' C^-1 V) T',   C = I_{Nk} - V V'.

``C`` is the ``N k x N k`` Woodbury core: its size does not grow with K, it is
positive definite because ``A`` is, and it is accumulated equation-chunk by
equation-chunk (``C -= V_c V_c'``).  With ``C = L L'`` and ``W = L^-1 V`` the
diagonal blocks are exact::

    (A^-1)_jj = T_j (I + W_j' W_j) T_j'.

This is the eigen-correction of DESIGN.md section 4 carried to full rank
(``I + M + sum_i v_i v_i' lam_i^2 / (1 - lam_i)`` over *all* eigenpairs of
``M = V'V``), so there is no truncation error.  Cost ``O((Nk)^2 P)`` flops and
``O((Nk)^2 + N K p)`` memory.  Per-equation ``(A_jj)^-1`` would be wrong
(it ignores the correction; it understated SEs by up to 78 %).

The heteroskedasticity-robust (sandwich) covariance is
``A^-1 B A^-1`` with ``B = sum_i g_i g_i'``, ``g_i = X_i' Sigma^-1 r_i``; we
apply ``A^-1`` to the ``N`` score vectors at once.

Missing responses and row weights (DESIGN.md section 6).  Row ``i`` observes
the equations ``O_i`` and has weight ``w_i``; the observed-data information is

    A = sum_i w_i X_{i,O}' Sigma_{O_i}^-1 X_{i,O},
    Sigma_O^-1 = Psi_O^-1 - G_i G_i',  G_i = Psi_O^-1 F_O L_i^-T,

with the per-row k x k cores ``C_i = I + F_O' Psi_O^-1 F_O = L_i L_i'`` (all of
them from one masked GEMM).  It keeps the structure ``A = Delta - U U'``:
``Delta_j = sum_{i in rows(j)} w_i x_ij x_ij' / D_j`` and ``U`` has one k-block
of columns per row, ``U_(j, (i, l)) = sqrt(w_i) o_ij x_ij G_i[j, l]``.  So the
same Woodbury core applies with the thin QR of the masked, ``sqrt(w)``-scaled
designs and a per-row ``G_i`` in place of the common ``G``; the core is still
``N k x N k``.  The robust scores become ``w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}``
(the scores of the weighted log-likelihood).  Without a mask and weights the
balanced code runs unchanged.

Large cores: the truncated eigen-correction (``method="lanczos"``).  When
``N k > EXACT_CORE_LIMIT`` the core is never formed.  The eigenpairs
``(lam_i, v_i)`` of ``M = V'V`` (P x P, eigenvalues in [0, 1), applied as
``V'(V y)``: two GEMMs with ``[Q_1 ... Q_K]``) are approximated by block
Lanczos with full reorthogonalisation and Rayleigh-Ritz on the Krylov basis
``Z`` (P x s, ``s <= 2 max_rank``).  With ``H = Z'MZ`` the diagonal blocks
become the Galerkin form of the eigen-correction::

    (A^-1)_jj ~ T_j [I + M_jj + (MZ)_j (I - H)^-1 (MZ)_j'] T_j',

which equals ``T_j [I + M + sum_{i<=r} v_i v_i' lam_i^2/(1 - lam_i)]_jj T_j'``
when ``Z`` spans the top r eigenvectors, is at least as accurate when it
contains them, and never overstates a variance (a Galerkin projection of
``x'(I - M)^-1 x``).  ``M_jj`` is exact and cheap.  The neglected tail
``sum_{i>r} f(lam_i) v_i v_i'``, ``f(l) = l^2/(1 - l)``, is at most
``f(lam_{r+1}) |t|^2`` for ``t = T_j' e_a``, ``|t|^2 = (Delta_j^-1)_aa``, so at
most ``f(lam_{r+1})`` relative to the variance (which is at least ``|t|^2``).
``lam_{r+1}`` is replaced by the upper estimate ``theta_{r+1} + |res_{r+1}|``
of the (r+1)-th converged Ritz pair (a posteriori: it assumes the Krylov space
has not missed an eigenvalue, which a random start makes improbable).  ``r``
grows until the largest relative bound is below ``tol``; the bound achieved is
reported (``truncation_bound``) and a ``ConvergenceWarning`` is raised when
``max_rank`` stops it first.  Solves with ``A`` (contrasts, the robust
sandwich) run PCG on ``I - M`` in the ``T`` coordinates (block-Jacobi on
``A``), started at the Galerkin solution and deflated with
``I + Z H (I - H)^-1 Z'``.  Memory is ``O(P s + N K p)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, cholesky, eigh, solve_triangular

from .exceptions import ConvergenceWarning
from ._threads import single_blas_thread
from .ops import LowRankCovariance

__all__ = ["GLSCovariance", "EXACT_CORE_LIMIT", "EigenCorrectionInfo", "SolveInfo"]

#: Largest Woodbury core ``N k`` handled by the exact dense core (its memory is
#: ``8 (N k)^2`` bytes: 512 MiB at this limit).  Larger cores raise.
EXACT_CORE_LIMIT = 8192
#: Bytes of the per-chunk temporaries ``V_c`` (N k x chunk equations x pmax).
CHUNK_BYTES = 32 * 2**20
#: Default bound on the neglected relative variance term of the eigen-correction.
EIGEN_TOL = 1e-3
#: Default cap on the number ``r`` of eigenpairs of the eigen-correction (the
#: Krylov basis holds at most ``2 max_rank`` vectors of length P).
EIGEN_MAX_RANK = 200
#: Default relative residual of the PCG solves with A in the eigen-correction path.
SOLVE_RTOL = 1e-10
#: Right-hand sides per PCG batch (bounds the ``N k x m`` temporaries).
SOLVE_BATCH = 256
#: A Ritz pair counts as converged when its residual norm is at most
#: ``CONV_FACTOR sqrt(tol (1 - theta))``: an eigenvector error ``eps ~ res / gap``
#: costs about ``eps^2 / (1 - lam)`` of a variance in the Galerkin form, so this
#: keeps it near ``tol / 100`` for gaps down to 0.1.
CONV_FACTOR = 0.01


@dataclass(frozen=True)
class EigenCorrectionInfo:
    """Outcome of the truncated eigen-correction (``method="lanczos"``).

    Attributes
    ----------
    rank : int
        Number ``r`` of leading eigenpairs of ``M`` the bound relies on.
    eigenvalues : ndarray, shape (r,)
        Their Ritz values.
    lambda_next : float
        Upper estimate of ``lam_{r+1}`` (Ritz value plus residual norm).
    bound : float
        Largest relative variance error bound over the coefficients.
    tol : float
        Requested bound.
    subspace_dim : int
        Dimension ``s`` of the Krylov basis used in the Galerkin correction.
    n_matvecs : int
        Vectors to which ``M`` was applied.
    converged : bool
        ``bound <= tol``.
    """

    rank: int
    eigenvalues: np.ndarray
    lambda_next: float
    bound: float
    tol: float
    subspace_dim: int
    n_matvecs: int
    converged: bool


@dataclass(frozen=True)
class SolveInfo:
    """Outcome of the last batch of PCG solves with ``A``.

    Attributes
    ----------
    iterations : int
        Largest number of iterations over the right-hand sides.
    relative_residual : float
        Largest final ``|b - A x| / |b|`` (in the ``T`` coordinates).
    converged : bool
        ``relative_residual <= rtol`` for every right-hand side.
    """

    iterations: int
    relative_residual: float
    converged: bool


@dataclass(frozen=True)
class _Krylov:
    """Rayleigh-Ritz state: basis Z (P', s), MZ, H = Z'MZ and its eigenvectors W
    (descending), the Cholesky factor of I - H, and the public diagnostics."""

    Z: np.ndarray
    MZ: np.ndarray
    H: np.ndarray
    W: np.ndarray
    core: tuple
    info: EigenCorrectionInfo


def _orthonormal(W: np.ndarray, basis: np.ndarray, drop: float) -> np.ndarray:
    """Orthonormal basis of the columns of the tall W (n, m) orthogonal to the
    orthonormal ``basis``: project, orthonormalise through the Gram matrix,
    twice.  Directions with singular value below ``drop`` (absolute) or 1e-7 of
    the largest (the reach of a Gram-based step) are discarded."""
    for step in range(2):
        W = W - basis @ (basis.T @ W)
        s2, E = eigh(W.T @ W)
        top = float(s2[-1]) if s2.size else 0.0
        keep = (s2 > (drop if step == 0 else 0.0) ** 2) & (s2 > 1e-14 * top) & (s2 > 0)
        W = W @ (E[:, keep] / np.sqrt(s2[keep]))
    return W


class GLSCovariance:
    """Exact covariance of the GLS coefficients without forming the P x P matrix.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        Zero-padded designs (``SystemData.X``).
    p : ndarray of int, shape (K,)
        Number of regressors of each equation.
    cov : LowRankCovariance
        The estimated ``Sigma = F F' + diag(D)``.
    Rt : ndarray, shape (K, N), optional
        Residuals at the estimate; needed only for the robust covariance.
    mask : ndarray of bool, shape (N, K), optional
        Observation mask, True where ``Y[i, j]`` is observed (the layout of
        ``Y``).  Entries of ``X`` and ``Rt`` where it is False are ignored (they
        may be NaN).  None: everything observed.
    weights : ndarray, shape (N,), optional
        Non-negative row weights ``w_i`` multiplying each row's log-likelihood
        (use them as the fit did, e.g. rescaled to mean 1).  None: unit weights.
    method : {"auto", "exact", "lanczos"}, default "auto"
        ``"exact"``: the dense ``N k x N k`` Woodbury core (raises MemoryError
        beyond ``EXACT_CORE_LIMIT``); ``"lanczos"``: the truncated
        eigen-correction with PCG solves; ``"auto"``: exact when
        ``N k <= EXACT_CORE_LIMIT``, else lanczos.
    tol : float, default EIGEN_TOL
        Lanczos only: bound on the neglected relative variance term.
    max_rank : int, default EIGEN_MAX_RANK
        Lanczos only: cap on the number of eigenpairs ``r``.
    rtol : float, default SOLVE_RTOL
        Lanczos only: relative residual of the PCG solves with ``A``.
    seed : int, default 0
        Lanczos only: seed of the random starting block.

    Attributes
    ----------
    method : str
        The method in use, ``"exact"`` or ``"lanczos"``.
    truncation_bound : float
        Bound on the relative error of every model-based variance (0 when exact).
    variance_bounds : ndarray, shape (K, pmax)
        The same bound per coefficient.
    eigen_info : EigenCorrectionInfo or None
        Rank, eigenvalues, ``lam_{r+1}`` estimate and cost of the eigen-correction.
    solve_info : SolveInfo or None
        Iterations and residual of the last PCG solves (lanczos only).

    Notes
    -----
    Vectors of coefficients use the padded layout ``(K, pmax)`` (or
    ``(K, pmax, m)`` for ``m`` of them); padded entries are zero on input and
    output.  See the module docstring for the formulas.
    """

    def __init__(self, X: np.ndarray, p: np.ndarray, cov: LowRankCovariance,
                 Rt: np.ndarray | None = None, *, mask: np.ndarray | None = None,
                 weights: np.ndarray | None = None, method: str = "auto",
                 tol: float = EIGEN_TOL, max_rank: int = EIGEN_MAX_RANK,
                 rtol: float = SOLVE_RTOL, seed: int = 0) -> None:
        K, N, pmax = X.shape
        obs = None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (N, K):
                raise ValueError(f"mask must have shape (N, K) = ({N}, {K}), got {mask.shape}")
            if not mask.all():
                obs = np.ascontiguousarray(mask.T)                # (K, N)
                X = np.where(obs[:, :, None], X, 0.0)
                Rt = None if Rt is None else np.where(obs, Rt, 0.0)
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (N,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"weights must be finite, non-negative and of shape ({N},)")
            sw = np.sqrt(w)   # sqrt(w_i) on rows of X and r gives w_i in A and the scores
            X = X * sw[None, :, None]
            Rt = None if Rt is None else Rt * sw[None, :]
        self.X = X
        self.p = np.asarray(p)
        self.cov = cov
        self.Rt = Rt
        self.obs = obs
        self.K, self.N, self.pmax, self.k = K, N, pmax, cov.k
        if method not in ("auto", "exact", "lanczos"):
            raise ValueError(f"method must be 'auto', 'exact' or 'lanczos', got {method!r}")
        if not (0 < tol < 1 and 0 < rtol < 1) or int(max_rank) < 1:
            raise ValueError("tol and rtol must lie in (0, 1) and max_rank be >= 1")
        self.tol, self.max_rank, self.rtol, self.seed = float(tol), int(max_rank), float(rtol), seed
        self.solve_info: SolveInfo | None = None
        if method == "auto":
            method = "exact" if N * self.k <= EXACT_CORE_LIMIT else "lanczos"
        self.method = "exact" if self.k == 0 else method   # k = 0: no correction at all
        if self.method == "exact" and N * self.k > EXACT_CORE_LIMIT:
            raise MemoryError(
                f"the exact Woodbury core has size N*k = {N * self.k} > "
                f"EXACT_CORE_LIMIT = {EXACT_CORE_LIMIT}; fit on fewer rows or a lower rank, "
                "raise alsgls.inference.EXACT_CORE_LIMIT if memory allows "
                f"({8 * (N * self.k) ** 2 / 2**30:.1f} GiB), or use method='lanczos'"
            )
        self.mask = np.arange(pmax)[None, :] < self.p[:, None]

    # -- per-equation factors ---------------------------------------------
    @cached_property
    def _qr(self) -> tuple[np.ndarray, np.ndarray]:
        """Thin QR per equation with padded columns neutralised: Q (K,N,pmax), T (K,pmax,pmax)."""
        Q, R = np.linalg.qr(self.X)
        pad = ~self.mask
        Q = Q * self.mask[:, None, :]
        R = R * (self.mask[:, :, None] & self.mask[:, None, :])
        R[:, np.arange(self.pmax), np.arange(self.pmax)] += pad
        eye = np.broadcast_to(np.eye(self.pmax), R.shape)
        Rinv = np.linalg.solve(R, eye)        # batched; R_j is p x p and well scaled per QR
        T = np.sqrt(self.cov.D)[:, None, None] * Rinv
        T = T * (self.mask[:, :, None] & self.mask[:, None, :])
        return Q, T

    @property
    def _gs(self) -> np.ndarray:
        """``sqrt(D_j) g_j`` (K, k)."""
        return np.sqrt(self.cov.D)[:, None] * self.cov.G

    @cached_property
    def _row_Linv(self) -> np.ndarray:
        """``L_i^-1`` of the per-row cores ``C_i = I + F_O' Psi_O^-1 F_O`` (N, k, k)."""
        F, D, k = self.cov.F, self.cov.D, self.k
        FD = F / D[:, None]
        outer = (FD[:, :, None] * F[:, None, :]).reshape(self.K, k * k)
        C = (self.obs.T.astype(np.float64) @ outer).reshape(self.N, k, k)  # masked GEMM
        C[:, np.arange(k), np.arange(k)] += 1.0
        L = np.linalg.cholesky(C)
        return np.linalg.solve(L, np.broadcast_to(np.eye(k), C.shape))

    def _gs_rows(self, sl: slice) -> np.ndarray:
        """``sqrt(D_j) G_i[j, :]`` for equations ``sl`` and every row: (N, c, k)."""
        Fs = self.cov.F[sl] / np.sqrt(self.cov.D[sl])[:, None]
        g = np.einsum("jm,nlm->njl", Fs, self._row_Linv)
        return g * self.obs[sl].T[:, :, None]

    def row_solve(self, U: np.ndarray) -> np.ndarray:
        """``Sigma_{O_i}^-1 u_{i,O}`` for every row, zero where unobserved: U (K, N) -> (K, N).

        With no mask this is ``Sigma^-1 U``.
        """
        if self.obs is None:
            return self.cov.solve(U)
        U = np.where(self.obs, U, 0.0)
        if self.k == 0:
            return U / self.cov.D[:, None]
        FD = self.cov.F / self.cov.D[:, None]
        Linv = self._row_Linv
        z = np.einsum("nlm,nm->nl", Linv, U.T @ FD)
        y = np.einsum("nlm,nl->nm", Linv, z)                      # C_i^-1 F' Psi^-1 u_i
        return (U / self.cov.D[:, None] - FD @ y.T) * self.obs

    def _chunks(self):
        per_eq = max(self.k * self.N * self.pmax * 8, 1)
        c = max(1, CHUNK_BYTES // per_eq)
        for s in range(0, self.K, c):
            yield slice(s, min(s + c, self.K))

    def _V_chunk(self, sl: slice) -> np.ndarray:
        """Columns of ``V`` for equations ``sl``: (k*N, c*pmax)."""
        Q, _ = self._qr
        if self.obs is not None:
            Vc = np.einsum("njl,jna->lnja", self._gs_rows(sl), Q[sl])
        else:
            Vc = np.einsum("jl,jna->lnja", self._gs[sl], Q[sl])
        return Vc.reshape(self.k * self.N, -1)

    @cached_property
    @single_blas_thread
    def _chol(self) -> np.ndarray:
        """Lower Cholesky factor of the core ``C = I - V V'`` (Nk x Nk)."""
        m = self.k * self.N
        C = np.eye(m)
        for sl in self._chunks():
            Vc = self._V_chunk(sl)
            C -= Vc @ Vc.T
        try:
            return cholesky(C, lower=True)
        except LinAlgError as exc:
            raise LinAlgError(
                "the GLS information matrix X'(Sigma^-1 (x) I)X is numerically "
                "singular (Sigma-hat nearly singular or designs nearly collinear "
                "across equations); standard errors are not available"
            ) from exc

    # -- operators ----------------------------------------------------------
    def _col_chunks(self, m: int):
        c = max(1, CHUNK_BYTES // max(8 * self.N * m, 1))
        for s in range(0, self.K, c):
            yield slice(s, min(s + c, self.K))

    def _apply_V(self, Y: np.ndarray) -> np.ndarray:
        """``V y`` for Y (K, pmax, m) -> (k*N, m), in equation chunks (GEMMs)."""
        Q, _ = self._qr
        m = Y.shape[2]
        out = np.zeros((self.k, self.N * m))
        if self.obs is not None:
            out = out.reshape(self.k, self.N, m)
            for sl in self._col_chunks(m * (self.k + 1)):
                t = np.matmul(Q[sl], Y[sl])                   # (c, N, m)
                g = self._gs_rows(sl).transpose(0, 2, 1)         # (N, k, c)
                out += np.matmul(g, t.transpose(1, 0, 2)).transpose(1, 0, 2)
            return out.reshape(self.k * self.N, m)
        gs = self._gs
        for sl in self._col_chunks(m):
            t = np.matmul(Q[sl], Y[sl])                       # (c, N, m)
            out += gs[sl].T @ t.reshape(t.shape[0], -1)
        return out.reshape(self.k * self.N, m)

    def _apply_Vt(self, Wv: np.ndarray) -> np.ndarray:
        """``V' w`` for w (k*N, m) -> (K, pmax, m), in equation chunks (GEMMs)."""
        Q, _ = self._qr
        m = Wv.shape[1]
        Wr = Wv.reshape(self.k, self.N * m)
        out = np.empty((self.K, self.pmax, m))
        if self.obs is not None:
            Wr = Wr.reshape(self.k, self.N, m)
            for sl in self._col_chunks(m * (self.k + 1)):
                u = np.matmul(self._gs_rows(sl), Wr.transpose(1, 0, 2)).transpose(1, 0, 2)
                out[sl] = np.matmul(Q[sl].transpose(0, 2, 1), u)
            return out
        gs = self._gs
        for sl in self._col_chunks(m):
            u = (gs[sl] @ Wr).reshape(-1, self.N, m)           # (c, N, m)
            out[sl] = np.matmul(Q[sl].transpose(0, 2, 1), u)
        return out

    @single_blas_thread
    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` for Z (K, pmax) or (K, pmax, m), padded layout.

        Exact (direct) through the Woodbury core; cost O(N K p k m + (Nk)^2 m).
        With ``method="lanczos"``: deflated PCG to relative residual ``rtol``.
        """
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 2:
            return self.solve(Z[:, :, None])[:, :, 0]
        if self.method == "lanczos":
            return self._pcg_solve(Z)
        _, T = self._qr
        Y = np.einsum("jba,jbm->jam", T, Z)           # T' Z
        if self.k > 0:
            L = self._chol
            Wv = solve_triangular(L, self._apply_V(Y), lower=True)
            Wv = solve_triangular(L, Wv, lower=True, trans="T")
            Y = Y + self._apply_Vt(Wv)
        return np.einsum("jab,jbm->jam", T, Y) * self.mask[:, :, None]

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """``A v`` for v (K, pmax) (for checks)."""
        U = np.einsum("knp,kp->kn", self.X, V)
        return np.einsum("knp,kn->kp", self.X, self.row_solve(U))

    # -- model-based covariance ----------------------------------------------
    @cached_property
    @single_blas_thread
    def diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks ``(A^-1)_jj`` (K, pmax, pmax); padding is zero.

        Exact, or with ``method="lanczos"`` within ``truncation_bound`` (relative,
        for every quadratic form ``c'(A^-1)_jj c``) and never above the exact value.
        """
        if self.method == "lanczos":
            return self._eigen_blocks[0]
        _, T = self._qr
        inner = np.broadcast_to(np.eye(self.pmax), (self.K, self.pmax, self.pmax)).copy()
        if self.k > 0:
            L = self._chol
            for sl in self._chunks():
                Wc = solve_triangular(L, self._V_chunk(sl), lower=True)
                Wc = Wc.reshape(self.k * self.N, -1, self.pmax)
                inner[sl] += np.einsum("mja,mjb->jab", Wc, Wc)
        blocks = np.einsum("jab,jbc,jdc->jad", T, inner, T)
        return blocks * (self.mask[:, :, None] & self.mask[:, None, :])

    # -- truncated eigen-correction (method="lanczos") -------------------------
    @cached_property
    def _Qn(self) -> np.ndarray:
        """The QR factors side by side, ``[Q_1 ... Q_K]`` (N, K*pmax)."""
        Q, _ = self._qr
        return np.ascontiguousarray(Q.transpose(1, 0, 2)).reshape(self.N, -1)

    def _apply_M(self, Y: np.ndarray) -> np.ndarray:
        """``M y = V'(V y)`` for flat padded Y (K*pmax, m) -> (K*pmax, m).

        ``(V y)_(l, i) = sum_j h_ijl (Q_j y_j)_i`` with ``h_ij = sqrt(D_j) G_i[j, :]``
        (common ``sqrt(D_j) g_j`` without a mask); with ``h_ij = L_i^-1 f_j/sqrt(D_j)``
        both products are GEMMs with ``[Q_1 ... Q_K]`` (inner dimension P) and a
        per-row ``C_i^-1`` in between.  Unobserved entries are zero rows of Q_j.
        """
        n, m = Y.shape
        if self.obs is None:
            h = np.repeat(self._gs, self.pmax, axis=0)                # (n, k)
            W = self._Qn @ (h[:, :, None] * Y[:, None, :]).reshape(n, -1)
        else:
            h = np.repeat(self.cov.F / np.sqrt(self.cov.D)[:, None], self.pmax, axis=0)
            W = self._Qn @ (h[:, :, None] * Y[:, None, :]).reshape(n, -1)
            Linv = self._row_Linv
            W = np.einsum("nlq,nlm->nqm", Linv, np.einsum(
                "nlq,nqm->nlm", Linv, W.reshape(self.N, self.k, m))).reshape(self.N, -1)
        Z = (self._Qn.T @ W).reshape(n, self.k, m)
        return np.einsum("il,ilm->im", h, Z)

    @cached_property
    def _M_diag(self) -> np.ndarray:
        """Exact diagonal blocks ``M_jj = V_j'V_j`` (K, pmax, pmax)."""
        Q, _ = self._qr
        if self.obs is None:                                   # |sqrt(D_j) g_j|^2 Q_j'Q_j
            return np.einsum("j,jab->jab", np.sum(self._gs ** 2, axis=1),
                             np.einsum("jna,jnb->jab", Q, Q))
        out = np.empty((self.K, self.pmax, self.pmax))
        for sl in self._col_chunks(self.k + 1):
            d = np.sum(self._gs_rows(sl) ** 2, axis=2).T           # (c, N)
            out[sl] = np.einsum("jn,jna,jnb->jab", d, Q[sl], Q[sl])
        return out

    def _orth_block(self, W: np.ndarray, basis: np.ndarray, rng) -> np.ndarray:
        """Orthonormal columns spanning W after projecting out ``basis``; columns
        lost to deflation are replaced by random directions (a breakdown)."""
        fm = self.mask.ravel()[:, None]
        U = _orthonormal(W, basis, drop=1e-10)
        if U.shape[1] < W.shape[1]:
            R = rng.standard_normal((W.shape[0], W.shape[1] - U.shape[1])) * fm
            U = np.hstack([U, _orthonormal(R, np.hstack([basis, U]), drop=0.0)])
        return U

    @cached_property
    def _tt(self) -> np.ndarray:
        """``|t_a|^2 = (Delta_j^-1)_aa`` for ``t_a = T_j' e_a`` (K, pmax): the scale of
        the tail term ``t_a' [sum_{i>r} f(lam_i) v_i v_i'] t_a <= f(lam_{r+1}) |t_a|^2``."""
        _, T = self._qr
        return np.einsum("jab,jab->ja", T, T)

    @cached_property
    @single_blas_thread
    def _eigen(self) -> _Krylov:
        """Block Lanczos with Rayleigh-Ritz on M until the tail bound meets ``tol``."""
        rng = np.random.default_rng(self.seed)
        fm = self.mask.ravel()
        n, n_eff = fm.size, int(fm.sum())
        b = min(max(2 * self.k, 8), 32, n_eff)
        s_max = min(n_eff, 2 * self.max_rank)
        Zb = np.zeros((n, s_max))
        MZ = np.zeros((n, s_max))
        blk = self._orth_block(rng.standard_normal((n, b)) * fm[:, None], Zb[:, :0], rng)
        _, T = self._qr
        vlow = self._tt + np.einsum("jab,jbc,jac->ja", T, self._M_diag, T)  # var >= t'(I+M_jj)t
        kappa = float(np.max(self._tt / np.where(vlow > 0, vlow, 1.0)))
        s, nmv = 0, 0
        while True:
            m = blk.shape[1]
            Zb[:, s:s + m] = blk
            MZ[:, s:s + m] = self._apply_M(blk)
            s, nmv = s + m, nmv + m
            H = Zb[:, :s].T @ MZ[:, :s]
            H = 0.5 * (H + H.T)
            theta, W = eigh(H)
            theta, W = np.clip(theta[::-1], 0.0, None), W[:, ::-1]
            c = min(s, self.max_rank + 1)
            Zr = Zb[:, :s] @ W[:, :c]
            res = np.linalg.norm(MZ[:, :s] @ W[:, :c] - Zr * theta[:c], axis=0)
            if s == n_eff:                                     # the whole space: exact
                r, lam_next, bound = s, 0.0, 0.0
                break
            # bound(r) = kappa f(lam_{r+1}), lam_{r+1} <= theta_{r+1} + |res_{r+1}|
            lam = np.minimum(theta[:c] + res, 1.0 - 1e-15)
            conv = res <= CONV_FACTOR * np.sqrt(self.tol * (1.0 - theta[:c]))
            # pairs 1..r converged; pair r+1 only needs a meaningful Ritz value
            ok = np.concatenate([[True], np.cumprod(conv[:-1]).astype(bool)])
            ok &= conv | (res <= 0.1 * theta[:c])
            cand = np.where(ok, kappa * lam ** 2 / (1.0 - lam), np.inf)
            r = int(np.argmin(cand))
            lam_next, bound = float(lam[r]), float(cand[r])
            if bound <= self.tol or s >= s_max:
                break
            blk = self._orth_block(MZ[:, s - m:s], Zb[:, :s], rng)[:, : min(b, s_max - s)]
        Zb, MZ = Zb[:, :s].copy(), MZ[:, :s].copy()
        info = EigenCorrectionInfo(r, theta[:r].copy(), lam_next, bound, self.tol, s, nmv,
                                   bound <= self.tol)
        if not info.converged:
            warnings.warn(
                f"eigen-correction stopped at max_rank = {self.max_rank} (subspace {s}) with "
                f"relative variance error bound {bound:.2g} > tol = {self.tol:g}; "
                "raise max_rank or use method='exact'", ConvergenceWarning, stacklevel=3)
        core = cho_factor(np.eye(s) - H, lower=True)            # I - H > 0 as A > 0
        return _Krylov(Zb, MZ, H, W, core, info)

    @property
    def eigen_info(self) -> EigenCorrectionInfo | None:
        """Diagnostics of the eigen-correction (None with the exact method)."""
        return self._eigen.info if self.method == "lanczos" else None

    @cached_property
    def _eigen_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Galerkin diagonal blocks and their per-coefficient relative bounds (K, pmax)."""
        e, (_, T) = self._eigen, self._qr
        Yt = solve_triangular(e.core[0], e.MZ.T, lower=True)         # L^-1 (MZ)'
        Yt = Yt.T.reshape(self.K, self.pmax, -1)
        inner = np.eye(self.pmax)[None] + self._M_diag + np.einsum("jai,jbi->jab", Yt, Yt)
        blocks = np.einsum("jab,jbc,jdc->jad", T, inner, T)
        blocks *= self.mask[:, :, None] & self.mask[:, None, :]
        lam = e.info.lambda_next
        var = np.einsum("jaa->ja", blocks)
        rel = lam ** 2 / (1.0 - lam) * self._tt / np.where(var > 0, var, 1.0)
        return blocks, rel

    @property
    def truncation_bound(self) -> float:
        """Bound on ``(exact - computed) / computed`` for every model-based variance."""
        if self.method == "exact":
            return 0.0
        return float(np.max(self._eigen_blocks[1]))

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds (K, pmax); zeros when exact."""
        if self.method == "exact":
            return np.zeros((self.K, self.pmax))
        return self._eigen_blocks[1]

    @cached_property
    def _deflation(self) -> np.ndarray:
        """``H (I - H)^-1`` (s, s): the preconditioner is ``I + Z H (I - H)^-1 Z'``."""
        e = self._eigen
        return cho_solve(e.core, e.H)

    def _pcg_solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` by PCG on ``(I - M) y = T'Z`` in batches of SOLVE_BATCH columns."""
        _, T = self._qr
        B = np.einsum("jba,jbm->jam", T, Z).reshape(self.K * self.pmax, -1)
        Y = np.empty_like(B)
        its, worst = 0, 0.0
        for s in range(0, B.shape[1], SOLVE_BATCH):
            Y[:, s:s + SOLVE_BATCH], it, rr = self._pcg(B[:, s:s + SOLVE_BATCH])
            its, worst = max(its, it), max(worst, rr)
        self.solve_info = SolveInfo(its, worst, worst <= self.rtol)
        if worst > self.rtol:
            warnings.warn(f"PCG with A reached relative residual {worst:.2g} > rtol = "
                          f"{self.rtol:g} after {its} iterations", ConvergenceWarning,
                          stacklevel=3)
        Y = Y.reshape(self.K, self.pmax, -1)
        return np.einsum("jab,jbm->jam", T, Y) * self.mask[:, :, None]

    @single_blas_thread
    def _pcg(self, B: np.ndarray, maxiter: int = 300) -> tuple[np.ndarray, int, float]:
        """Column-wise PCG on ``(I - M) y = b`` from the Galerkin solution
        ``Z (I - H)^-1 Z'b``; returns (y, iterations, max relative residual)."""
        Zb, core, Hd = self._eigen.Z, self._eigen.core, self._deflation
        bnorm = np.linalg.norm(B, axis=0)
        bnorm[bnorm == 0] = 1.0
        a = cho_solve(core, Zb.T @ B)                           # Galerkin start y = Z a
        y = Zb @ a
        r = B - y + self._eigen.MZ @ a                            # M y = (MZ) a: no product
        z = r + Zb @ (Hd @ (Zb.T @ r))
        d, rz = z, np.einsum("nm,nm->m", r, z)
        act = np.linalg.norm(r, axis=0) > self.rtol * bnorm
        it = 0
        while act.any() and it < maxiter:
            q = d[:, act] - self._apply_M(d[:, act])
            dq = np.einsum("nm,nm->m", d[:, act], q)
            if np.any(dq <= 0):
                raise FloatingPointError(
                    "PCG breakdown: the GLS information is not positive definite")
            alpha = rz[act] / dq
            y[:, act] += alpha * d[:, act]
            r[:, act] -= alpha * q
            ra = r[:, act]
            z = ra + Zb @ (Hd @ (Zb.T @ ra))
            rz_new = np.einsum("nm,nm->m", ra, z)
            d[:, act] = z + (rz_new / rz[act]) * d[:, act]
            rz[act] = rz_new
            act = np.linalg.norm(r, axis=0) > self.rtol * bnorm
            it += 1
        return y, it, float(np.max(np.linalg.norm(r, axis=0) / bnorm))

    # -- robust (sandwich) -----------------------------------------------------
    @cached_property
    @single_blas_thread
    def scores(self) -> np.ndarray:
        """Per-row scores ``g_i = w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}`` as (K, pmax, N)."""
        if self.Rt is None:
            raise ValueError("residuals are required for the robust covariance")
        W = self.row_solve(self.Rt)                    # (K, N)
        return np.einsum("knp,kn->kpn", self.X, W)

    @cached_property
    def _robust_factor(self) -> np.ndarray:
        """``H = A^-1 Gamma'`` (K, pmax, N): robust cov = H H'."""
        return self.solve(self.scores)

    @cached_property
    @single_blas_thread
    def robust_diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks of ``A^-1 B A^-1`` (K, pmax, pmax)."""
        H = self._robust_factor
        return np.einsum("jan,jbn->jab", H, H)

    # -- contrasts -----------------------------------------------------------
    @single_blas_thread
    def contrast_cov(self, Lmat: np.ndarray, robust: bool = False) -> np.ndarray:
        """Covariance ``L' Cov L`` (m x m) of contrasts ``L' beta``.

        ``Lmat`` is (K, pmax, m) in padded layout.  Model-based: ``L' A^-1 L``
        (one exact solve per contrast); robust: ``(L' A^-1 Gamma')(...)'``.
        """
        if robust:
            Hl = np.einsum("jam,jan->mn", Lmat, self._robust_factor)
            return Hl @ Hl.T
        S = self.solve(Lmat)
        out = np.einsum("jam,jan->mn", Lmat, S)
        return 0.5 * (out + out.T)


def dense_information(X: np.ndarray, p: np.ndarray, cov: LowRankCovariance) -> np.ndarray:
    """The dense P x P information ``X'(Sigma^-1 (x) I)X`` (tests and tiny problems only)."""
    K = X.shape[0]
    Sinv = cov.inverse_to_dense()
    blocks = [[Sinv[i, j] * X[i, :, : p[i]].T @ X[j, :, : p[j]] for j in range(K)]
              for i in range(K)]
    return np.block(blocks)

