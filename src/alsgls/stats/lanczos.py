"""Truncated eigen-correction for large Woodbury cores (``method="lanczos"``).

The lanczos half of :class:`alsgls.inference.GLSCovariance`, as the mixin
``EigenCorrectionMixin``; notation as in :mod:`alsgls.inference`.

When ``N k > EXACT_CORE_LIMIT`` the core is never formed.  The eigenpairs
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
from scipy.linalg import cho_factor, cho_solve, eigh, solve_triangular

from ..exceptions import ConvergenceWarning
from .._threads import single_blas_thread

__all__ = ["EigenCorrectionMixin", "EigenCorrectionInfo", "SolveInfo"]

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


class EigenCorrectionMixin:
    """Truncated eigen-correction and deflated PCG solves with ``A``.

    Mixed into :class:`alsgls.inference.GLSCovariance`, which supplies the
    shapes (``K``, ``N``, ``pmax``, ``k``), ``mask``, ``obs``, ``cov``, the
    options ``tol``, ``max_rank``, ``rtol``, ``seed``, the per-equation
    factors (``_qr``, ``_gs``, ``_gs_rows``, ``_row_Linv``), ``_col_chunks``
    and the attribute ``solve_info`` set here after each batch of solves.
    """

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
