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

Large cores (``N k > EXACT_CORE_LIMIT``, ``method="lanczos"``): the truncated
eigen-correction with deflated PCG solves, in :mod:`alsgls._eigencorrection`.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular

from .lanczos import (  # noqa: F401  (re-exported)
    CONV_FACTOR, EIGEN_MAX_RANK, EIGEN_TOL, SOLVE_BATCH, SOLVE_RTOL, EigenCorrectionInfo,
    EigenCorrectionMixin, SolveInfo,
)
from .._threads import single_blas_thread
from ..core.ops import LowRankCovariance

__all__ = ["GLSCovariance", "EXACT_CORE_LIMIT", "EigenCorrectionInfo", "SolveInfo"]

#: Largest Woodbury core ``N k`` handled by the exact dense core (its memory is
#: ``8 (N k)^2`` bytes: 512 MiB at this limit).  Larger cores raise.
EXACT_CORE_LIMIT = 8192
#: Bytes of the per-chunk temporaries ``V_c`` (N k x chunk equations x pmax).
CHUNK_BYTES = 32 * 2**20


class GLSCovariance(EigenCorrectionMixin):
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

