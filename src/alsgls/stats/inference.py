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

These factors (``Q``, ``T``, ``V`` and ``M = V'V`` as operators) are the
:class:`DesignFactors` record; two strategies use them to apply ``A^-1``.

:class:`ExactCore`: ``C`` is the ``N k x N k`` Woodbury core: its size does not
grow with K, it is positive definite because ``A`` is, and it is accumulated
equation-chunk by equation-chunk (``C -= V_c V_c'``).  With ``C = L L'`` and
``W = L^-1 V`` the diagonal blocks are exact::

    (A^-1)_jj = T_j (I + W_j' W_j) T_j'.

This is the eigen-correction of DESIGN.md section 4 carried to full rank
(``I + M + sum_i v_i v_i' lam_i^2 / (1 - lam_i)`` over *all* eigenpairs of
``M = V'V``), so there is no truncation error.  Cost ``O((Nk)^2 P)`` flops and
``O((Nk)^2 + N K p)`` memory.  Per-equation ``(A_jj)^-1`` would be wrong
(it ignores the correction; it understated SEs by up to 78 %).

The heteroskedasticity-robust (sandwich) covariance
``A^-1 B A^-1`` with ``B = sum_i g_i g_i'``, ``g_i = X_i' Sigma^-1 r_i``, and
any other estimator of :data:`alsgls.stats.covariance.COV_ESTIMATORS`, is
built on this class (its ``solve``, ``row_solve`` and residuals); see
:class:`alsgls.stats.covariance.Robust`.

Missing responses and row weights (DESIGN.md section 6).  Row ``i`` observes
the equations ``O_i`` and has weight ``w_i``; the observed-data information is

    A = sum_i w_i X_{i,O}' Sigma_{O_i}^-1 X_{i,O},
    Sigma_O^-1 = Psi_O^-1 - G_i G_i',  G_i = Psi_O^-1 F_O L_i^-T,

with the per-row k x k cores ``C_i = I + F_O' Psi_O^-1 F_O = L_i L_i'`` (all of
them from one masked GEMM, ``ops.row_core_inverse``).  It keeps the structure
``A = Delta - U U'``: ``Delta_j = sum_{i in rows(j)} w_i x_ij x_ij' / D_j`` and
``U`` has one k-block of columns per row,
``U_(j, (i, l)) = sqrt(w_i) o_ij x_ij G_i[j, l]``.  So the same Woodbury core
applies with the thin QR of the masked, ``sqrt(w)``-scaled designs and a
per-row ``G_i`` in place of the common ``G``; the core is still ``N k x N k``.
The robust scores become ``w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}`` (the scores of
the weighted log-likelihood).  Without a mask and weights the balanced code
runs unchanged.

Large cores (``N k > EXACT_CORE_LIMIT``, ``method="lanczos"``): the truncated
eigen-correction with deflated PCG solves, :class:`alsgls.stats.lanczos.LanczosCorrection`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Iterator, Protocol

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular

from .._threads import single_blas_thread
from ..core.ops import (
    LowRankCovariance,
    row_core_inverse,
    row_core_solve,
    triangular_inverse,
)
from .covariance import COV_ESTIMATORS, CovarianceEstimator, normalise_cov_type
from .lanczos import (  # noqa: F401  (re-exported)
    CONV_FACTOR,
    EIGEN_MAX_RANK,
    EIGEN_TOL,
    SOLVE_BATCH,
    SOLVE_RTOL,
    EigenCorrectionInfo,
    LanczosCorrection,
    SolveInfo,
    check_options,
)

__all__ = ["GLSCovariance", "DesignFactors", "ExactCore", "LanczosCorrection",
           "CovarianceStrategy", "EXACT_CORE_LIMIT", "EigenCorrectionInfo", "SolveInfo"]

#: Largest Woodbury core ``N k`` handled by the exact dense core (its memory is
#: ``8 (N k)^2`` bytes: 512 MiB at this limit).  Larger cores raise.
EXACT_CORE_LIMIT = 8192
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


class CovarianceStrategy(Protocol):
    """How ``A^-1`` is applied: :class:`ExactCore` or :class:`LanczosCorrection`.

    Attributes
    ----------
    method : str
        ``"exact"`` or ``"lanczos"``.
    truncation_bound : float
        Bound on the relative error of every model-based variance.
    variance_bounds : ndarray, shape (K, pmax)
        The same bound per coefficient.
    eigen_info : EigenCorrectionInfo or None
    solve_info : SolveInfo or None
    """

    method: str
    truncation_bound: float
    variance_bounds: np.ndarray
    eigen_info: EigenCorrectionInfo | None
    solve_info: SolveInfo | None

    def diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks ``(A^-1)_jj`` (K, pmax, pmax)."""
        ...

    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` for Z (K, pmax, m) -> (K, pmax, m)."""
        ...


class ExactCore:
    """``A^-1`` through the dense Woodbury core ``C = I - V V' = L L'`` (N k x N k).

    Parameters
    ----------
    factors : DesignFactors

    Raises
    ------
    MemoryError
        When ``N k > EXACT_CORE_LIMIT``.

    Attributes
    ----------
    method : str
        ``"exact"``.
    truncation_bound : float
        0: nothing is truncated.
    eigen_info, solve_info : None
        There is no eigen-correction and no iterative solve.
    """

    method = "exact"
    truncation_bound = 0.0
    eigen_info: EigenCorrectionInfo | None = None
    solve_info: SolveInfo | None = None

    def __init__(self, factors: DesignFactors) -> None:
        m = factors.N * factors.k
        if m > EXACT_CORE_LIMIT:
            raise MemoryError(
                f"the exact Woodbury core has size N*k = {m} > "
                f"EXACT_CORE_LIMIT = {EXACT_CORE_LIMIT}; fit on fewer rows or a lower rank, "
                "raise alsgls.stats.inference.EXACT_CORE_LIMIT if memory allows "
                f"({8 * m ** 2 / 2**30:.1f} GiB), or use method='lanczos'"
            )
        self.factors = factors

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds: zeros (K, pmax)."""
        return np.zeros((self.factors.K, self.factors.pmax))

    @cached_property
    @single_blas_thread
    def chol(self) -> np.ndarray:
        """Lower Cholesky factor of the core ``C = I - V V'`` (Nk x Nk)."""
        f = self.factors
        C = np.eye(f.k * f.N)
        for sl in f.chunks(f.k * f.pmax):
            Vc = f.V_columns(sl)
            C -= Vc @ Vc.T
        try:
            return cholesky(C, lower=True)
        except LinAlgError as exc:
            raise LinAlgError(
                "the GLS information matrix X'(Sigma^-1 (x) I)X is numerically "
                "singular (Sigma-hat nearly singular or designs nearly collinear "
                "across equations); standard errors are not available"
            ) from exc

    @single_blas_thread
    def diagonal_blocks(self) -> np.ndarray:
        """Exact ``(A^-1)_jj = T_j (I + W_j' W_j) T_j'``, ``W = L^-1 V`` (K, pmax, pmax)."""
        f = self.factors
        inner = np.broadcast_to(np.eye(f.pmax), (f.K, f.pmax, f.pmax)).copy()
        if f.k > 0:
            L = self.chol
            for sl in f.chunks(f.k * f.pmax):
                Wc = solve_triangular(L, f.V_columns(sl), lower=True)
                Wc = Wc.reshape(f.k * f.N, -1, f.pmax)
                inner[sl] += np.einsum("mja,mjb->jab", Wc, Wc)
        return f.sandwich(inner)

    @single_blas_thread
    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z = T (I + V' C^-1 V) T' Z`` for Z (K, pmax, m), direct;
        cost O(N K p k m + (Nk)^2 m)."""
        f = self.factors
        Y = f.apply_Tt(Z)
        if f.k > 0:
            L = self.chol
            Wv = solve_triangular(L, f.apply_V(Y), lower=True)
            Wv = solve_triangular(L, Wv, lower=True, trans="T")
            Y = Y + f.apply_Vt(Wv)
        return f.apply_T(Y)


class GLSCovariance:
    """Exact covariance of the GLS coefficients without forming the P x P matrix.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        Zero-padded designs (``Problem.X`` of :mod:`alsgls.core.problem`).
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
    factors : DesignFactors
        The per-equation factors (``Q``, ``T``, the operators ``V`` and ``M``).
    strategy : ExactCore or LanczosCorrection
        What applies ``A^-1``.
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
    row_core_inverse : ndarray, shape (N, k, k), or None
        Per-row ``L_i^-1`` of the masked cores (None without a mask).
    Rt : ndarray, shape (K, N), or None
        The residuals as the estimators use them (zero where unobserved,
        rows scaled by ``sqrt(w_i)``).

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
        f = self.factors = DesignFactors(X, p, cov, mask=mask, weights=weights)
        self.X, self.p, self.cov, self.obs, self.mask = f.X, f.p, f.cov, f.obs, f.mask
        self.Rt = None if Rt is None else f.weight_rows(Rt)
        self.K, self.N, self.pmax, self.k = f.K, f.N, f.pmax, f.k
        if method not in ("auto", "exact", "lanczos"):
            raise ValueError(f"method must be 'auto', 'exact' or 'lanczos', got {method!r}")
        self.tol, self.max_rank, self.rtol = check_options(tol, max_rank, rtol)
        self.seed = seed
        self._estimators: dict[str, CovarianceEstimator] = {}
        if method == "auto":
            method = "exact" if self.N * self.k <= EXACT_CORE_LIMIT else "lanczos"
        if method == "exact" or self.k == 0:                 # k = 0: no correction at all
            self.strategy: ExactCore | LanczosCorrection = ExactCore(f)
        else:
            self.strategy = LanczosCorrection(f, self.tol, self.max_rank, self.rtol, seed)

    @classmethod
    def from_problem(cls, problem: Any, cov: LowRankCovariance,
                     Rt: np.ndarray | None = None, **options: Any) -> "GLSCovariance":
        """The covariance for a problem record (``alsgls.core.problem``).

        Parameters
        ----------
        problem : object
            With ``X`` (K, N, pmax; zero where missing), ``p`` (K,), ``O``
            ((K, N) float 1.0 observed / 0.0 missing, or None when nothing is
            missing) and ``w`` ((N,) row weights or None).
        cov : LowRankCovariance
        Rt : ndarray, shape (K, N), optional
            Residuals, for the robust covariance.
        **options
            ``method``, ``tol``, ``max_rank``, ``rtol``, ``seed`` as in the constructor.

        Returns
        -------
        GLSCovariance
        """
        mask = None if problem.O is None else np.asarray(problem.O).T > 0
        return cls(problem.X, problem.p, cov, Rt, mask=mask, weights=problem.w, **options)

    # -- the strategy -----------------------------------------------------------
    @property
    def method(self) -> str:
        """The method in use, ``"exact"`` or ``"lanczos"``."""
        return self.strategy.method

    @property
    def truncation_bound(self) -> float:
        """Bound on ``(exact - computed) / computed`` for every model-based variance."""
        return self.strategy.truncation_bound

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds (K, pmax); zeros when exact."""
        return self.strategy.variance_bounds

    @property
    def eigen_info(self) -> EigenCorrectionInfo | None:
        """Diagnostics of the eigen-correction (None with the exact method)."""
        return self.strategy.eigen_info

    @property
    def solve_info(self) -> SolveInfo | None:
        """Iterations and residual of the last PCG solves (None with the exact method)."""
        return self.strategy.solve_info

    @property
    def row_core_inverse(self) -> np.ndarray | None:
        """``L_i^-1`` (N, k, k) of the per-row cores ``C_i = I + F_O' Psi_O^-1 F_O``
        (``C_i^-1 = L_i^-T L_i^-1``); None without a mask (then ``cov.chol`` serves
        every row)."""
        return self.factors.row_core_inverse

    def row_solve(self, U: np.ndarray) -> np.ndarray:
        """``Sigma_{O_i}^-1 u_{i,O}`` for every row, zero where unobserved: U (K, N) -> (K, N).

        With no mask this is ``Sigma^-1 U``.
        """
        return self.factors.row_solve(U)

    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` for Z (K, pmax) or (K, pmax, m), padded layout.

        Exact (direct) through the Woodbury core; cost O(N K p k m + (Nk)^2 m).
        With ``method="lanczos"``: deflated PCG to relative residual ``rtol``.
        """
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 2:
            return self.solve(Z[:, :, None])[:, :, 0]
        return self.strategy.solve(Z)

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """``A v`` for v (K, pmax) (for checks)."""
        U = np.einsum("knp,kp->kn", self.X, V)
        return np.einsum("knp,kn->kp", self.X, self.row_solve(U))

    # -- model-based covariance ----------------------------------------------
    @cached_property
    def diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks ``(A^-1)_jj`` (K, pmax, pmax); padding is zero.

        Exact, or with ``method="lanczos"`` within ``truncation_bound`` (relative,
        for every quadratic form ``c'(A^-1)_jj c``) and never above the exact value.
        """
        return self.strategy.diagonal_blocks()

    # -- estimators (cov_type) ---------------------------------------------------
    def estimator(self, cov_type: str) -> CovarianceEstimator:
        """The estimator of ``cov_type`` on this covariance, built once and shared.

        Parameters
        ----------
        cov_type : str
            A key (or alias) of :data:`alsgls.stats.covariance.COV_ESTIMATORS`.

        Returns
        -------
        CovarianceEstimator
            With ``diagonal_blocks`` and ``contrast_cov(L)``; results with
            different ``cov_type`` share this covariance and each estimator's work.
        """
        name = normalise_cov_type(cov_type)
        if name not in self._estimators:
            self._estimators[name] = COV_ESTIMATORS[name](self)
        return self._estimators[name]

    @property
    def scores(self) -> np.ndarray:
        """Per-row scores ``g_i = w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}`` (K, pmax, N);
        see :attr:`alsgls.stats.covariance.Robust.scores`."""
        return self.estimator("robust").scores

    @property
    def robust_diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks of the sandwich ``A^-1 B A^-1`` (K, pmax, pmax);
        see :class:`alsgls.stats.covariance.Robust`."""
        return self.estimator("robust").diagonal_blocks

    # -- contrasts -----------------------------------------------------------
    def contrast_cov(self, Lmat: np.ndarray, robust: bool = False) -> np.ndarray:
        """Covariance ``L' Cov L`` (m x m) of contrasts ``L' beta``.

        ``Lmat`` is (K, pmax, m) in padded layout.  Model-based: ``L' A^-1 L``
        (one exact solve per contrast); ``robust=True``: the sandwich.  The
        estimators of :mod:`alsgls.stats.covariance` compute both.
        """
        return self.estimator("robust" if robust else "unadjusted").contrast_cov(Lmat)


def dense_information(X: np.ndarray, p: np.ndarray, cov: LowRankCovariance) -> np.ndarray:
    """The dense P x P information ``X'(Sigma^-1 (x) I)X`` (tests and tiny problems only)."""
    K = X.shape[0]
    Sinv = cov.inverse_to_dense()
    blocks = [[Sinv[i, j] * X[i, :, : p[i]].T @ X[j, :, : p[j]] for j in range(K)]
              for i in range(K)]
    return np.block(blocks)
