"""The per-equation factors of the GLS information, shared by the strategies.

With the Gram matrices ``X_j'X_j`` of the (masked, ``sqrt(w)``-scaled) designs
and any ``T_j`` with ``T_j T_j' = D_j (X_j'X_j)^-1`` (here from a Cholesky
factor of the column-scaled Gram matrix), the information
``A = X'(Sigma^-1 (x) I)X`` is ``T^-T (I - V'V) T^-1`` with the ``N k x P``
operator ``V = [g_j (x) X_j T_j]_j`` (``g_j`` the row ``j`` of ``G``; a per-row
``G_i`` with a mask).  ``X_j T_j = sqrt(D_j) Q_j`` for the thin QR
``X_j = Q_j R_j``, so ``V`` is the operator of the module docstring of
:mod:`alsgls.stats.inference`; ``Q`` itself is never formed.
:class:`DesignFactors` holds ``T`` and applies ``V``, ``V'`` and ``M = V'V``
with GEMMs over one copy of the designs laid out ``(pmax, K, N)`` (inner
dimension K).  The strategies (:class:`alsgls.stats.inference.ExactCore`,
:class:`alsgls.stats.lanczos.LanczosCorrection`) use only this record's public
interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import numpy as np

from ..core.ops import (
    LowRankCovariance,
    row_core_inverse,
    row_core_solve,
    triangular_inverse,
)

__all__ = ["CHUNK_BYTES", "DesignFactors"]

#: Bytes of the per-chunk temporaries (columns of ``V``, products with ``M``).
CHUNK_BYTES = 32 * 2**20


class DesignFactors:
    """The per-equation factors of the GLS information, shared by the strategies.

    Built once from the designs, ``Sigma`` and the observation pattern; each
    factor is computed on first use and cached.  Notation as in the module
    docstring.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        Zero-padded designs; entries where ``mask`` is False are ignored.  A
        zero-stride view (one design shared by every equation) stays one array.
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
    shared : bool
        One design for every equation and nothing missing: the information is
        the Kronecker product ``Sigma^-1 (x) X_0'X_0``.
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
        self.p = np.asarray(p)
        self.mask = np.arange(pmax)[None, :] < self.p[:, None]
        self.shared = bool(K > 1 and X.strides[0] == 0 and self.obs is None
                           and np.all(self.p == self.p[0]))
        self.X = self.weight_rows(X)
        self.cov = cov
        self.K, self.N, self.pmax, self.k = K, N, pmax, cov.k

    def weight_rows(self, A: np.ndarray) -> np.ndarray:
        """``A`` (K, N, ...) with unobserved entries zeroed (they may be NaN) and
        row ``i`` scaled by ``sqrt(w_i)``: what is done to ``X``, for residuals.
        A zero-stride view stays one (a shared design is scaled once)."""
        if self.obs is not None:
            A = np.where(self.obs.reshape(self.obs.shape + (1,) * (A.ndim - 2)), A, 0.0)
        if self.sqrt_weights is not None:
            sw = self.sqrt_weights.reshape((-1,) + (1,) * (A.ndim - 2))
            if A.shape[0] > 1 and A.strides[0] == 0:
                return np.broadcast_to(A[0] * sw, A.shape)
            A = A * sw[None]
        return A

    # -- factors --------------------------------------------------------------
    @cached_property
    def gram(self) -> np.ndarray:
        """``X_j'X_j`` (K, pmax, pmax) of the scaled designs; unit diagonal in the
        padding.  One matrix (a zero-stride view) for a shared design."""
        if self.shared:
            g = self.X[0].T @ self.X[0]
            g[np.arange(self.pmax), np.arange(self.pmax)] += ~self.mask[0]
            return np.broadcast_to(g, (self.K, self.pmax, self.pmax))
        g = np.matmul(self.X.transpose(0, 2, 1), self.X)
        g[:, np.arange(self.pmax), np.arange(self.pmax)] += ~self.mask
        return g

    @cached_property
    def _gram_factor(self) -> np.ndarray:
        """``S^-1 L^-T`` with ``L L'`` the Cholesky factor of the column-scaled Gram
        matrix ``S^-1 X'X S^-1`` (so ``(X'X)^-1 = (S^-1 L^-T)(S^-1 L^-T)'``)."""
        g = self.gram[:1] if self.shared else self.gram
        s = np.sqrt(np.einsum("kpp->kp", g))
        try:
            L = np.linalg.cholesky(g / s[:, :, None] / s[:, None, :])
        except np.linalg.LinAlgError as exc:
            raise np.linalg.LinAlgError(
                "a design is numerically rank deficient on its observed (weighted) rows; "
                "standard errors are not available: drop the collinear column") from exc
        return triangular_inverse(L).transpose(0, 2, 1) / s[:, :, None]

    @cached_property
    def T(self) -> np.ndarray:
        """``T_j`` (K, pmax, pmax) with ``T_j T_j' = Delta_j^-1 = D_j (X_j'X_j)^-1``;
        padding zero."""
        both = self.mask[:, :, None] & self.mask[:, None, :]
        return np.sqrt(self.cov.D)[:, None, None] * self._gram_factor * both

    @property
    def E(self) -> np.ndarray:
        """The equation weights of ``V`` (K, k): ``G`` without a mask, else
        ``F / D`` (the per-row ``L_i^-1`` is applied on the row side)."""
        if self.obs is None:
            return self.cov.G
        return self.cov.F / self.cov.D[:, None]

    @cached_property
    def row_core_inverse(self) -> np.ndarray | None:
        """``L_i^-1`` of the per-row cores ``C_i = I + F_O' Psi_O^-1 F_O`` (N, k, k);
        None without a mask."""
        if self.obs is None:
            return None
        return row_core_inverse(self.cov.F, self.cov.D, self.obs.astype(np.float64))

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

    def batches(self, m: int) -> Iterator[slice]:
        """Slices of ``m`` right-hand sides whose products with ``V`` (``N k`` and
        ``K pmax k`` rows each) fit in ``CHUNK_BYTES`` (at least 16 at a time)."""
        c = max(16, CHUNK_BYTES // max(8 * max(self.N, self.K * self.pmax) * max(self.k, 1), 1))
        for s in range(0, m, c):
            yield slice(s, min(s + c, m))

    # -- operators --------------------------------------------------------------
    @cached_property
    def _Xa(self) -> np.ndarray:
        """The designs as ``(pmax, K, N)``, contiguous: ``X[:, :, a]`` is a GEMM
        operand with inner dimension K or N.  The one copy of the data the
        operators make."""
        return np.ascontiguousarray(np.moveaxis(self.X, 2, 0))

    @cached_property
    def _Xa_single(self) -> np.ndarray:
        """:attr:`_Xa` in single precision (``apply_M(..., single=True)``)."""
        return self._Xa.astype(np.float32)

    def _row_weights(self, sl: slice) -> np.ndarray:
        """``V``'s weights ``h_(i, j, l)`` for equations ``sl`` (with a mask):
        ``sum_m (L_i^-1)_lm F_jm / D_j``, (N, c, k)."""
        return np.einsum("nlm,jm->njl", self.row_core_inverse, self.E[sl])

    def V_columns(self, sl: slice) -> np.ndarray:
        """Columns of ``V`` for equations ``sl``: (k*N, c*pmax), rows ordered (l, i)."""
        Xt = np.matmul(self.X[sl], self.T[sl])                        # X_j T_j (c, N, pmax)
        if self.obs is not None:
            Vc = np.einsum("njl,jna->lnja", self._row_weights(sl), Xt)
        else:
            Vc = np.einsum("jl,jna->lnja", self.E[sl], Xt)
        return Vc.reshape(self.k * self.N, -1)

    def _forward(self, Z: np.ndarray, single: bool = False) -> np.ndarray:
        """``sum_j e_j (x) X_j z_j`` for Z (K, pmax, m) (already through T): (N, k, m).

        One GEMM ``[X_1 ... X_K] (N x P)`` times ``(e_jl z_ja)`` (P x k m)."""
        K, m, k = self.K, Z.shape[2], self.k
        Xa = self._Xa_single if single else self._Xa
        B = np.empty((self.pmax, K, k, m), dtype=Xa.dtype)
        np.multiply(self.E[None, :, :, None], Z.transpose(1, 0, 2)[:, :, None, :], out=B,
                    casting="same_kind")
        W = Xa.reshape(-1, self.N).T @ B.reshape(-1, k * m)
        return W.reshape(self.N, k, m)

    def _backward(self, W: np.ndarray, single: bool = False) -> np.ndarray:
        """``[sum_l e_jl X_j' w_l]_j`` for W (N, k, m): (K, pmax, m) (before T').

        One GEMM ``[X_1 ... X_K]' (P x N)`` times W (N x k m), then the sum over l."""
        K, m, k = self.K, W.shape[2], self.k
        Xa = self._Xa_single if single else self._Xa
        W2 = np.ascontiguousarray(W, dtype=Xa.dtype).reshape(self.N, k * m)
        U = (Xa.reshape(-1, self.N) @ W2).reshape(self.pmax, K, k, m)
        out = np.zeros((self.pmax, K, m))
        for l in range(k):
            out += self.E[None, :, l, None] * U[:, :, l, :]
        return out.transpose(1, 0, 2)

    def apply_V(self, Y: np.ndarray) -> np.ndarray:
        """``V y`` for Y (K, pmax, m) -> (k*N, m), rows ordered (l, i)."""
        m = Y.shape[2]
        out = np.empty((self.k, self.N, m))
        for bs in self.batches(m):
            W = self._forward(self.apply_T(Y[:, :, bs]))
            if self.obs is not None:
                W = self.row_core_inverse @ W
            out[:, :, bs] = W.transpose(1, 0, 2)
        return out.reshape(self.k * self.N, m)

    def apply_Vt(self, Wv: np.ndarray) -> np.ndarray:
        """``V' w`` for w (k*N, m) -> (K, pmax, m)."""
        m = Wv.shape[1]
        Wr = Wv.reshape(self.k, self.N, m).transpose(1, 0, 2)        # (N, k, m)
        out = np.empty((self.K, self.pmax, m))
        for bs in self.batches(m):
            W = Wr[:, :, bs]
            if self.obs is not None:
                W = self.row_core_inverse.transpose(0, 2, 1) @ W
            out[:, :, bs] = self.apply_Tt(self._backward(W))
        return out

    def apply_M(self, Y: np.ndarray, single: bool = False) -> np.ndarray:
        """``M y = V'(V y)`` for flat padded Y (K*pmax, m) -> (K*pmax, m).

        ``(V y)_(l, i) = sum_j e_jl x_ij' T_j y_j`` (then ``L_i^-1`` per row
        with a mask): ``pmax`` GEMMs ``X[:, :, a]' (K x N)`` with inner
        dimension K, the same back, in batches of right-hand sides.  With
        ``single=True`` the two GEMMs run in single precision (about twice as
        fast; relative rounding about ``1e-6`` instead of ``1e-15``), the
        rest in double.
        """
        n, m = Y.shape
        Y3 = Y.reshape(self.K, self.pmax, m)
        out = np.empty((self.K, self.pmax, m))
        for bs in self.batches(m):
            W = self._forward(self.apply_T(Y3[:, :, bs]), single)
            if self.obs is not None:                                 # C_i^-1 w_i
                W = row_core_solve(self.row_core_inverse, W.astype(np.float64))
            out[:, :, bs] = self.apply_Tt(self._backward(W, single))
        return out.reshape(n, m)

    @cached_property
    def M_diag(self) -> np.ndarray:
        """Exact diagonal blocks ``M_jj = V_j'V_j`` (K, pmax, pmax)."""
        T = self.T
        if self.obs is None:                                   # |g_j|^2 T_j' X_j'X_j T_j
            TgT = np.einsum("jba,jbc,jcd->jad", T, self.gram, T)
            return np.sum(self.E ** 2, axis=1)[:, None, None] * TgT
        out = np.empty((self.K, self.pmax, self.pmax))
        for sl in self.chunks(self.k + 1):
            d = np.sum(self._row_weights(sl) ** 2, axis=2).T       # (c, N)
            G = np.einsum("jn,jna,jnb->jab", d, self.X[sl], self.X[sl])
            out[sl] = np.einsum("jba,jbc,jcd->jad", T[sl], G, T[sl])
        return out

    @cached_property
    def tt(self) -> np.ndarray:
        """``|t_a|^2 = (Delta_j^-1)_aa`` for ``t_a = T_j' e_a`` (K, pmax)."""
        return np.einsum("jab,jab->ja", self.T, self.T)

    def apply_Tt(self, Z: np.ndarray) -> np.ndarray:
        """``T' z`` for Z (K, pmax, m) -> (K, pmax, m): into the whitened coordinates."""
        return np.matmul(self.T.transpose(0, 2, 1), Z)

    def apply_T(self, Y: np.ndarray) -> np.ndarray:
        """``T y`` for Y (K, pmax, m) -> (K, pmax, m), padding zero (T's padding is)."""
        return np.matmul(self.T, Y)

    def sandwich(self, inner: np.ndarray) -> np.ndarray:
        """Blocks ``T_j inner_j T_j'`` (K, pmax, pmax), padding zero."""
        blocks = np.einsum("jab,jbc,jdc->jad", self.T, inner, self.T)
        return blocks * (self.mask[:, :, None] & self.mask[:, None, :])
