"""Truncated eigen-correction for large Woodbury cores (``method="lanczos"``).

The strategy :class:`LanczosCorrection` of
:class:`alsgls.stats.inference.GLSCovariance`; it uses only the public
operators of :class:`alsgls.stats.factors.DesignFactors` (``apply_M``,
``M_diag``, ``tt``, ``T``, ``mask``); notation as in
:mod:`alsgls.stats.inference`.

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

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, eigh, solve_triangular

from .._threads import single_blas_thread
from .._warnings import warn
from ..core.ops import orthonormalize
from ..core.options import check_integer, check_real
from ..exceptions import ConvergenceWarning

if TYPE_CHECKING:
    from .factors import DesignFactors

__all__ = ["LanczosCorrection", "EigenCorrectionInfo", "SolveInfo", "check_options"]

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


def check_options(tol: Any, max_rank: Any, rtol: Any) -> tuple[float, int, float]:
    """The options of the eigen-correction, validated once (by ``GLSCovariance``).

    Parameters
    ----------
    tol : float
        Bound on the neglected relative variance term, in (0, 1).
    max_rank : int
        Cap on the number of eigenpairs, at least 1.
    rtol : float
        Relative residual of the PCG solves, in (0, 1).

    Returns
    -------
    tuple of (float, int, float)
        ``(tol, max_rank, rtol)``.

    Raises
    ------
    TypeError, ValueError
        Naming the option that is wrong.
    """
    return (check_real("tol", tol, upper=1.0), check_integer("max_rank", max_rank, minimum=1),
            check_real("rtol", rtol, upper=1.0))


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



class LanczosCorrection:
    """``A^-1`` through the truncated eigen-correction and deflated PCG solves.

    Uses only the public interface of the factors record (see the module
    docstring), so it runs on any object providing it.  The options are
    trusted: :class:`~alsgls.stats.inference.GLSCovariance` validates them
    once with :func:`check_options` (call it when building this directly
    from user input).

    Parameters
    ----------
    factors : DesignFactors
        The per-equation factors of the GLS information.
    tol : float, default EIGEN_TOL
        Bound on the neglected relative variance term.
    max_rank : int, default EIGEN_MAX_RANK
        Cap on the number of eigenpairs ``r``.
    rtol : float, default SOLVE_RTOL
        Relative residual of the PCG solves with ``A``.
    seed : int, default 0
        Seed of the random starting block.

    Attributes
    ----------
    method : str
        ``"lanczos"``.
    solve_info : SolveInfo or None
        Outcome of the last :meth:`solve` (None before the first).
    """

    method = "lanczos"

    def __init__(self, factors: DesignFactors, tol: float = EIGEN_TOL,
                 max_rank: int = EIGEN_MAX_RANK, rtol: float = SOLVE_RTOL,
                 seed: int = 0) -> None:
        self.factors = factors
        self.tol, self.max_rank, self.rtol = float(tol), int(max_rank), float(rtol)
        self.seed = seed
        self.solve_info: SolveInfo | None = None

    # -- the Krylov basis -------------------------------------------------------
    def _orth_block(self, W: np.ndarray, basis: np.ndarray, rng) -> np.ndarray:
        """Orthonormal columns spanning W after projecting out ``basis``; columns
        lost to deflation are replaced by random directions (a breakdown)."""
        fm = self.factors.mask.ravel()[:, None]
        U = orthonormalize(W, basis, drop=1e-10)
        if U.shape[1] < W.shape[1]:
            R = rng.standard_normal((W.shape[0], W.shape[1] - U.shape[1])) * fm
            U = np.hstack([U, orthonormalize(R, np.hstack([basis, U]), drop=0.0)])
        return U

    def _kappa(self) -> float:
        """``max |t_a|^2 / var_a`` over the coefficients, with the lower bound
        ``var_a >= t_a'(I + M_jj) t_a``: the tail bound is ``kappa f(lam_{r+1})``."""
        f = self.factors
        vlow = f.tt + np.einsum("jab,jbc,jac->ja", f.T, f.M_diag, f.T)
        return float(np.max(f.tt / np.where(vlow > 0, vlow, 1.0)))

    def _rank(self, theta: np.ndarray, res: np.ndarray, kappa: float
              ) -> tuple[int, float, float]:
        """``(r, lam_{r+1} estimate, bound)`` minimising the bound over the Ritz
        pairs ``(theta, res)`` whose predecessors have all converged."""
        # bound(r) = kappa f(lam_{r+1}), lam_{r+1} <= theta_{r+1} + |res_{r+1}|
        lam = np.minimum(theta + res, 1.0 - 1e-15)
        conv = res <= CONV_FACTOR * np.sqrt(self.tol * (1.0 - theta))
        # pairs 1..r converged; pair r+1 only needs a meaningful Ritz value
        ok = np.concatenate([[True], np.cumprod(conv[:-1]).astype(bool)])
        ok &= conv | (res <= 0.1 * theta)
        cand = np.where(ok, kappa * lam ** 2 / (1.0 - lam), np.inf)
        r = int(np.argmin(cand))
        return r, float(lam[r]), float(cand[r])

    @cached_property
    @single_blas_thread
    def _krylov(self) -> _Krylov:
        """Block Lanczos with Rayleigh-Ritz on M until the tail bound meets ``tol``."""
        rng = np.random.default_rng(self.seed)
        fm = self.factors.mask.ravel()
        n, n_eff = fm.size, int(fm.sum())
        s_max = min(n_eff, 2 * self.max_rank)
        b = min(max(2 * self.factors.k, 8), 32, s_max)          # blocks fit the basis
        Zb, MZ = np.zeros((n, s_max)), np.zeros((n, s_max))
        blk = self._orth_block(rng.standard_normal((n, b)) * fm[:, None], Zb[:, :0], rng)
        kappa = self._kappa()
        s = 0
        while True:
            m = blk.shape[1]
            Zb[:, s:s + m] = blk
            MZ[:, s:s + m] = self.factors.apply_M(blk)
            s += m
            H = Zb[:, :s].T @ MZ[:, :s]
            H = 0.5 * (H + H.T)
            theta, W = eigh(H)
            theta, W = np.clip(theta[::-1], 0.0, None), W[:, ::-1]
            c = min(s, self.max_rank + 1)
            res = np.linalg.norm(MZ[:, :s] @ W[:, :c] - (Zb[:, :s] @ W[:, :c]) * theta[:c],
                                 axis=0)
            if s == n_eff:                                     # the whole space: exact
                r, lam_next, bound = s, 0.0, 0.0
                break
            r, lam_next, bound = self._rank(theta[:c], res, kappa)
            if bound <= self.tol or s >= s_max:
                break
            blk = self._orth_block(MZ[:, s - m:s], Zb[:, :s], rng)[:, : min(b, s_max - s)]
        info = EigenCorrectionInfo(r, theta[:r].copy(), lam_next, bound, self.tol, s, s,
                                   bound <= self.tol)
        if not info.converged:
            warn(f"eigen-correction stopped at max_rank = {self.max_rank} (subspace {s}) with "
                 f"relative variance error bound {bound:.2g} > tol = {self.tol:g}; "
                 "raise max_rank or use method='exact'", ConvergenceWarning)
        core = cho_factor(np.eye(s) - H, lower=True)            # I - H > 0 as A > 0
        return _Krylov(Zb[:, :s].copy(), MZ[:, :s].copy(), H, W, core, info)

    @property
    def eigen_info(self) -> EigenCorrectionInfo:
        """Diagnostics of the eigen-correction."""
        return self._krylov.info

    # -- model-based covariance -------------------------------------------------
    @cached_property
    @single_blas_thread
    def _blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Galerkin diagonal blocks and their per-coefficient relative bounds (K, pmax)."""
        e, f = self._krylov, self.factors
        Yt = solve_triangular(e.core[0], e.MZ.T, lower=True)         # L^-1 (MZ)'
        Yt = Yt.T.reshape(f.K, f.pmax, -1)
        inner = np.eye(f.pmax)[None] + f.M_diag + np.einsum("jai,jbi->jab", Yt, Yt)
        blocks = f.sandwich(inner)
        lam = e.info.lambda_next
        var = np.einsum("jaa->ja", blocks)
        rel = lam ** 2 / (1.0 - lam) * f.tt / np.where(var > 0, var, 1.0)
        return blocks, rel

    def diagonal_blocks(self) -> np.ndarray:
        """Galerkin ``(A^-1)_jj`` (K, pmax, pmax): within ``truncation_bound``
        (relative, for every quadratic form) and never above the exact value."""
        return self._blocks[0]

    @property
    def truncation_bound(self) -> float:
        """Bound on ``(exact - computed) / computed`` for every model-based variance."""
        return float(np.max(self._blocks[1]))

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds (K, pmax)."""
        return self._blocks[1]

    # -- solves -------------------------------------------------------------------
    @cached_property
    def _deflation(self) -> np.ndarray:
        """``H (I - H)^-1`` (s, s): the preconditioner is ``I + Z H (I - H)^-1 Z'``."""
        e = self._krylov
        return cho_solve(e.core, e.H)

    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z = T (I - M)^-1 T' Z`` for Z (K, pmax, m): PCG on ``I - M`` in
        batches of SOLVE_BATCH columns; sets :attr:`solve_info`."""
        f = self.factors
        B = f.apply_Tt(Z).reshape(f.K * f.pmax, -1)
        Y = np.empty_like(B)
        its, worst = 0, 0.0
        for s in range(0, B.shape[1], SOLVE_BATCH):
            Y[:, s:s + SOLVE_BATCH], it, rr = self._pcg(B[:, s:s + SOLVE_BATCH])
            its, worst = max(its, it), max(worst, rr)
        self.solve_info = SolveInfo(its, worst, worst <= self.rtol)
        if worst > self.rtol:
            warn(f"PCG with A reached relative residual {worst:.2g} > rtol = "
                 f"{self.rtol:g} after {its} iterations", ConvergenceWarning)
        return f.apply_T(Y.reshape(f.K, f.pmax, -1))

    @single_blas_thread
    def _pcg(self, B: np.ndarray, maxiter: int = 300) -> tuple[np.ndarray, int, float]:
        """Column-wise PCG on ``(I - M) y = b`` from the Galerkin solution
        ``Z (I - H)^-1 Z'b``; returns (y, iterations, max relative residual)."""
        Zb, core, Hd = self._krylov.Z, self._krylov.core, self._deflation
        bnorm = np.linalg.norm(B, axis=0)
        bnorm[bnorm == 0] = 1.0
        a = cho_solve(core, Zb.T @ B)                           # Galerkin start y = Z a
        y = Zb @ a
        r = B - y + self._krylov.MZ @ a                         # M y = (MZ) a: no product
        z = r + Zb @ (Hd @ (Zb.T @ r))
        d, rz = z, np.einsum("nm,nm->m", r, z)
        act = np.linalg.norm(r, axis=0) > self.rtol * bnorm
        it = 0
        while act.any() and it < maxiter:
            q = d[:, act] - self.factors.apply_M(d[:, act])
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
