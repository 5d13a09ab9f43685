"""The per-equation factors of the GLS information, shared by the strategies.

With the thin QR ``X_j = Q_j R_j`` of each (masked, ``sqrt(w)``-scaled) design
and ``T_j = sqrt(D_j) R_j^-1``, the information ``A = X'(Sigma^-1 (x) I)X`` is
``T^-T (I - V'V) T^-1`` with ``V = [sqrt(D_j) (g_j (x) Q_j)]_j`` (per-row
``G_i`` with a mask); :class:`DesignFactors` holds ``Q``, ``T`` and the
Woodbury factors and applies ``V``, ``V'`` and ``M = V'V``.  The exact core
(:class:`alsgls.stats.inference.ExactCore`) and the truncated
eigen-correction (:class:`alsgls.stats.lanczos.LanczosCorrection`) use only
this record's public interface; see :mod:`alsgls.stats.inference` for the
mathematics.
"""

from __future__ import annotations

from functools import cached_property
from typing import Iterator

import numpy as np

from ..core.ops import LowRankCovariance, row_core_inverse, row_core_solve, triangular_inverse

__all__ = ["DesignFactors", "CHUNK_BYTES"]

#: Bytes of the per-chunk temporaries ``V_c`` (N k x chunk equations x pmax).
CHUNK_BYTES = 32 * 2**20


class DesignFactors:
    """The per-equation factors of the GLS information, shared by both strategies.

    Built once from the designs, ``Sigma`` and the observation pattern; each
    factor is computed on first use and cached.  Notation as in the module
    docstring.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        Zero-padded designs; entries where ``mask`` is False are ignored.
    p : ndarray of int, shape (K,)
        Number of regressors of each equation.
    cov : LowRankCovariance
        ``Sigma = F F' + diag(D)``.
    mask : ndarray of bool, shape (N, K), optional
        True where ``Y[i, j]`` is observed.  None: everything observed.
    weights : ndarray, shape (N,), optional
        Non-negative row weights.  None: unit weights.

    Attributes
    ----------
    X : ndarray, shape (K, N, pmax)
        The designs with unobserved entries zeroed and row ``i`` scaled by
        ``sqrt(w_i)`` (see :meth:`weight_rows`).
    p : ndarray of int, shape (K,)
    cov : LowRankCovariance
    obs : ndarray of bool, shape (K, N), or None
        True where observed; None when everything is.
    sqrt_weights : ndarray, shape (N,), or None
        ``sqrt(w_i)``; None for unit weights.
    K, N, pmax, k : int
        Equations, rows, widest design, factor rank.
    mask : ndarray of bool, shape (K, pmax)
        True where a coefficient exists (the padded layout).
    """

    def __init__(self, X: np.ndarray, p: np.ndarray, cov: LowRankCovariance, *,
                 mask: np.ndarray | None = None, weights: np.ndarray | None = None) -> None:
        K, N, pmax = X.shape
        self.obs: np.ndarray | None = None
        self.sqrt_weights: np.ndarray | None = None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (N, K):
                raise ValueError(f"mask must have shape (N, K) = ({N}, {K}), got {mask.shape}")
            if not mask.all():
                self.obs = np.ascontiguousarray(mask.T)                # (K, N)
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (N,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"weights must be finite, non-negative and of shape ({N},)")
            # sqrt(w_i) on rows of X and r gives w_i in A and the scores
            self.sqrt_weights = np.sqrt(w)
        self.X = self.weight_rows(X)
        self.p = np.asarray(p)
        self.cov = cov
        self.K, self.N, self.pmax, self.k = K, N, pmax, cov.k
        self.mask = np.arange(pmax)[None, :] < self.p[:, None]

    def weight_rows(self, A: np.ndarray) -> np.ndarray:
        """``A`` (K, N, ...) with unobserved entries zeroed (they may be NaN) and
        row ``i`` scaled by ``sqrt(w_i)``: what is done to ``X``, for residuals."""
        if self.obs is not None:
            A = np.where(self.obs.reshape(self.obs.shape + (1,) * (A.ndim - 2)), A, 0.0)
        if self.sqrt_weights is not None:
            A = A * self.sqrt_weights.reshape((1, -1) + (1,) * (A.ndim - 2))
        return A

    # -- factors --------------------------------------------------------------
    @cached_property
    def _qr(self) -> tuple[np.ndarray, np.ndarray]:
        """(Q, T) with padded columns neutralised (a unit diagonal in R)."""
        Q, R = np.linalg.qr(self.X)
        both = self.mask[:, :, None] & self.mask[:, None, :]
        Q = Q * self.mask[:, None, :]
        R = R * both
        R[:, np.arange(self.pmax), np.arange(self.pmax)] += ~self.mask   # unit padding
        Rinv = triangular_inverse(R)     # upper R: a batched solve, p x p and well scaled
        return Q, np.sqrt(self.cov.D)[:, None, None] * Rinv * both

    @property
    def Q(self) -> np.ndarray:
        """Thin QR factors ``Q_j`` (K, N, pmax), padded columns zero."""
        return self._qr[0]

    @property
    def T(self) -> np.ndarray:
        """``T_j = sqrt(D_j) R_j^-1`` (K, pmax, pmax), so ``Delta_j^-1 = T_j T_j'``;
        padding zero."""
        return self._qr[1]

    @property
    def gs(self) -> np.ndarray:
        """``sqrt(D_j) g_j`` (K, k), the rows of ``V`` without a mask."""
        return np.sqrt(self.cov.D)[:, None] * self.cov.G

    @cached_property
    def row_core_inverse(self) -> np.ndarray | None:
        """``L_i^-1`` of the per-row cores ``C_i = I + F_O' Psi_O^-1 F_O`` (N, k, k);
        None without a mask."""
        if self.obs is None:
            return None
        return row_core_inverse(self.cov.F, self.cov.D, self.obs.astype(np.float64))

    def gs_rows(self, sl: slice) -> np.ndarray:
        """``sqrt(D_j) G_i[j, :]`` for equations ``sl`` and every row: (N, c, k)
        (with a mask only)."""
        Fs = self.cov.F[sl] / np.sqrt(self.cov.D[sl])[:, None]
        g = np.einsum("jm,nlm->njl", Fs, self.row_core_inverse)
        return g * self.obs[sl].T[:, :, None]

    def row_solve(self, U: np.ndarray) -> np.ndarray:
        """``Sigma_{O_i}^-1 u_{i,O}`` for every row, zero where unobserved: (K, N) -> (K, N)."""
        if self.obs is None:
            return self.cov.solve(U)
        U = np.where(self.obs, U, 0.0)
        if self.k == 0:
            return U / self.cov.D[:, None]
        FD = self.cov.F / self.cov.D[:, None]
        y = row_core_solve(self.row_core_inverse, U.T @ FD)      # C_i^-1 F' Psi^-1 u_i
        return (U / self.cov.D[:, None] - FD @ y.T) * self.obs

    def chunks(self, width: int) -> Iterator[slice]:
        """Slices of equations whose ``N x width`` float64 temporaries each
        (``width = k pmax`` for columns of ``V``) fit in ``CHUNK_BYTES``."""
        c = max(1, CHUNK_BYTES // max(8 * self.N * width, 1))
        for s in range(0, self.K, c):
            yield slice(s, min(s + c, self.K))

    # -- operators --------------------------------------------------------------
    def V_columns(self, sl: slice) -> np.ndarray:
        """Columns of ``V`` for equations ``sl``: (k*N, c*pmax)."""
        if self.obs is not None:
            Vc = np.einsum("njl,jna->lnja", self.gs_rows(sl), self.Q[sl])
        else:
            Vc = np.einsum("jl,jna->lnja", self.gs[sl], self.Q[sl])
        return Vc.reshape(self.k * self.N, -1)

    def apply_V(self, Y: np.ndarray) -> np.ndarray:
        """``V y`` for Y (K, pmax, m) -> (k*N, m), in equation chunks (GEMMs)."""
        Q, m = self.Q, Y.shape[2]
        out = np.zeros((self.k, self.N * m))
        if self.obs is not None:
            out = out.reshape(self.k, self.N, m)
            for sl in self.chunks(m * (self.k + 1)):
                t = np.matmul(Q[sl], Y[sl])                       # (c, N, m)
                g = self.gs_rows(sl).transpose(0, 2, 1)            # (N, k, c)
                out += np.matmul(g, t.transpose(1, 0, 2)).transpose(1, 0, 2)
            return out.reshape(self.k * self.N, m)
        gs = self.gs
        for sl in self.chunks(m):
            t = np.matmul(Q[sl], Y[sl])                           # (c, N, m)
            out += gs[sl].T @ t.reshape(t.shape[0], -1)
        return out.reshape(self.k * self.N, m)

    def apply_Vt(self, Wv: np.ndarray) -> np.ndarray:
        """``V' w`` for w (k*N, m) -> (K, pmax, m), in equation chunks (GEMMs)."""
        Q, m = self.Q, Wv.shape[1]
        Wr = Wv.reshape(self.k, self.N * m)
        out = np.empty((self.K, self.pmax, m))
        if self.obs is not None:
            Wr = Wr.reshape(self.k, self.N, m)
            for sl in self.chunks(m * (self.k + 1)):
                u = np.matmul(self.gs_rows(sl), Wr.transpose(1, 0, 2)).transpose(1, 0, 2)
                out[sl] = np.matmul(Q[sl].transpose(0, 2, 1), u)
            return out
        gs = self.gs
        for sl in self.chunks(m):
            u = (gs[sl] @ Wr).reshape(-1, self.N, m)               # (c, N, m)
            out[sl] = np.matmul(Q[sl].transpose(0, 2, 1), u)
        return out

    @cached_property
    def _Qn(self) -> np.ndarray:
        """The QR factors side by side, ``[Q_1 ... Q_K]`` (N, K*pmax)."""
        return np.ascontiguousarray(self.Q.transpose(1, 0, 2)).reshape(self.N, -1)

    def apply_M(self, Y: np.ndarray) -> np.ndarray:
        """``M y = V'(V y)`` for flat padded Y (K*pmax, m) -> (K*pmax, m).

        ``(V y)_(l, i) = sum_j h_ijl (Q_j y_j)_i`` with ``h_ij = sqrt(D_j) G_i[j, :]``
        (common ``sqrt(D_j) g_j`` without a mask); with ``h_ij = L_i^-1 f_j/sqrt(D_j)``
        both products are GEMMs with ``[Q_1 ... Q_K]`` (inner dimension P) and a
        per-row ``C_i^-1`` in between.  Unobserved entries are zero rows of Q_j.
        The same operator as ``apply_Vt(apply_V(.))``, in the flat layout of
        the Krylov basis of :class:`LanczosCorrection`.
        """
        n, m = Y.shape
        if self.obs is None:
            h = np.repeat(self.gs, self.pmax, axis=0)                 # (n, k)
            W = self._Qn @ (h[:, :, None] * Y[:, None, :]).reshape(n, -1)
        else:
            h = np.repeat(self.cov.F / np.sqrt(self.cov.D)[:, None], self.pmax, axis=0)
            W = self._Qn @ (h[:, :, None] * Y[:, None, :]).reshape(n, -1)
            W = row_core_solve(self.row_core_inverse,               # C_i^-1 w_i
                               W.reshape(self.N, self.k, m)).reshape(self.N, -1)
        Z = (self._Qn.T @ W).reshape(n, self.k, m)
        return np.einsum("il,ilm->im", h, Z)

    @cached_property
    def M_diag(self) -> np.ndarray:
        """Exact diagonal blocks ``M_jj = V_j'V_j`` (K, pmax, pmax)."""
        Q = self.Q
        if self.obs is None:                                   # |sqrt(D_j) g_j|^2 Q_j'Q_j
            return np.einsum("j,jab->jab", np.sum(self.gs ** 2, axis=1),
                             np.einsum("jna,jnb->jab", Q, Q))
        out = np.empty((self.K, self.pmax, self.pmax))
        for sl in self.chunks(self.k + 1):
            d = np.sum(self.gs_rows(sl) ** 2, axis=2).T           # (c, N)
            out[sl] = np.einsum("jn,jna,jnb->jab", d, Q[sl], Q[sl])
        return out

    @cached_property
    def tt(self) -> np.ndarray:
        """``|t_a|^2 = (Delta_j^-1)_aa`` for ``t_a = T_j' e_a`` (K, pmax)."""
        return np.einsum("jab,jab->ja", self.T, self.T)

    def apply_Tt(self, Z: np.ndarray) -> np.ndarray:
        """``T' z`` for Z (K, pmax, m) -> (K, pmax, m): into the whitened coordinates."""
        return np.einsum("jba,jbm->jam", self.T, Z)

    def apply_T(self, Y: np.ndarray) -> np.ndarray:
        """``T y`` for Y (K, pmax, m) -> (K, pmax, m), padding zero."""
        return np.einsum("jab,jbm->jam", self.T, Y) * self.mask[:, :, None]

    def sandwich(self, inner: np.ndarray) -> np.ndarray:
        """Blocks ``T_j inner_j T_j'`` (K, pmax, pmax), padding zero."""
        blocks = np.einsum("jab,jbc,jdc->jad", self.T, inner, self.T)
        return blocks * (self.mask[:, :, None] & self.mask[:, None, :])
