"""Truncated eigen-correction with a certified error bound (``method="lanczos"``).

The strategy :class:`LanczosCorrection` of
:class:`alsgls.stats.inference.GLSCovariance`; it uses only the public
operators and attributes of :class:`alsgls.stats.factors.DesignFactors`
(``apply_M``, ``M_diag``, ``tt``, ``T``, ``mask``, ``apply_T``, ``apply_Tt``,
and for :class:`MOperator` ``X``, ``E``, ``obs``, ``batches``); notation as in
:mod:`alsgls.stats.inference`.

The ``N k x N k`` Woodbury core is never formed.  In the whitened
coordinates the variance of a coefficient is ``v = x'(I - M)^-1 x`` with
``x = T_j' e_a`` and ``M = V'V`` (P x P, eigenvalues in [0, 1), applied as
``V'(V y)``: GEMMs with the designs).  Block Lanczos with full
reorthogonalisation builds a Krylov basis ``Z`` (P x s) of ``M``; with
``H = Z'MZ`` the diagonal blocks are the Galerkin form::

    (A^-1)_jj ~ T_j [I + M_jj + (MZ)_j (I - H)^-1 (MZ)_j'] T_j',

exact in ``x'x + x'Mx`` and a Galerkin projection of the rest,
``(Mx)'(I - M)^-1 (Mx)``, so it never overstates a variance.

**The bound.**  Let ``Y`` (P x r) be the leading converged Ritz vectors,
``Theta`` their Ritz values, ``R = MY - Y Theta`` their residuals,
``alpha = Y'x``, ``x_perp = x - Y alpha`` and ``lam_perp`` the largest
eigenvalue of the deflated operator ``M_perp = (I - YY') M (I - YY')``.  The
Galerkin error over ``Z`` is at most that over ``Y`` (a subspace of ``Z``),
and a Schur complement in the split ``[Y, Y_perp]`` gives::

    v - v_computed <= (lam_perp |x_perp| + |R (I - Theta)^-1 alpha|
                       + rho^2 |x_perp|)^2 / (1 - lam_perp - rho^2),
    rho^2 = || (I - Theta)^-1/2 R'R (I - Theta)^-1/2 ||,

every term computed exactly except ``lam_perp``.  That one is bounded by a
*certificate*: block Lanczos on ``M_perp`` from ``CERT_BLOCK`` fresh random
vectors.  By Kuczynski and Wozniakowski (1992, Thm. 4.2), q steps from a
uniformly random start fall short of ``(1 - eps) lam_perp`` with probability
at most ``1.648 sqrt(n) exp(-sqrt(eps) (2q - 1))``; a block contains each of
its columns' Krylov spaces, so for independent columns the probabilities
multiply.  With a union bound over every step and round that may be
examined, the reported bound holds for every coefficient at once except
with probability ``FAILURE_PROBABILITY`` (1e-9) over the random vectors,
whatever the data.  Dividing by the computed variance gives the relative
bound per coefficient (:attr:`LanczosCorrection.variance_bounds`).

Solves with ``A`` (contrasts) run PCG on ``I - M`` in the ``T`` coordinates,
started at the Galerkin solution and deflated with ``I + Z H (I - H)^-1 Z'``.
Many right-hand sides at once (the ``N`` scores of the sandwich estimators)
use the Galerkin operator itself, one product with ``M``
(:meth:`LanczosCorrection.galerkin_solve`), whose error is bounded by the
same certificate.  Memory is ``O(P s)`` beyond the factors.

Without missing responses ``M`` is applied by :class:`MOperator`
(``M y = T' U U' T y`` with ``A = Delta - U U'``, ``U = X'(E (x) I_N)``): a
column that every equation shares (an intercept) enters ``U U'`` as rank-one
terms, the other ``P_r`` columns through two GEMMs with a ``(P_r, N)`` copy
of them -- ``4 N k P_r`` flops per vector.  For the ``N`` scores at once
(:meth:`LanczosCorrection.galerkin_columns`) ``U U'`` on those columns is
``(X_r X_r') * (E_r E_r')``; formed block by block (single precision, each
block once, ``P_r^2 N`` flops) and applied to all ``N`` columns
(``2 P_r^2 N``) it is cheaper than the two GEMMs (``4 N^2 k P_r``) while
``P_r`` is below about ``4 N k / 3``.  Both apply the same operator
(rounding aside), so the certificate covers both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, eigh, eigvalsh, solve_triangular
from scipy.linalg.blas import sgemm, ssymm, ssyrk

from .._threads import single_blas_thread
from .._warnings import warn
from ..core.ops import orthonormalize
from ..core.options import check_integer, check_real
from ..exceptions import ConvergenceWarning

if TYPE_CHECKING:
    from .factors import DesignFactors

__all__ = [
    "EigenCorrectionInfo",
    "LanczosCorrection",
    "MOperator",
    "SolveInfo",
    "check_options",
    "kw_shortfall",
    "norm_bound",
    "shared_columns",
]

#: Default bound on the relative error of every model-based variance:
#: ``(1 + 1e-3)^2 - 1``, every standard error within 0.1 %.
EIGEN_TOL = 2.001e-3
#: Default cap on the number ``r`` of eigenpairs of the eigen-correction (the
#: Krylov basis holds at most ``2 max_rank`` vectors of length P).
EIGEN_MAX_RANK = 200
#: Default relative residual of the PCG solves with A in the eigen-correction path.
SOLVE_RTOL = 1e-10
#: Right-hand sides per PCG batch (bounds the ``N k x m`` temporaries).
SOLVE_BATCH = 256
#: A Ritz pair counts as converged when its residual norm is at most
#: ``CONV_FACTOR sqrt(tol) (1 - theta)``: its share of the bound, about
#: ``(res / (1 - theta))^2``, is then ``CONV_FACTOR^2 tol``.
CONV_FACTOR = 0.01
#: Probability, over the random certificate vectors, that the reported bound
#: fails for some coefficient (whatever the data).
FAILURE_PROBABILITY = 1e-9
#: Random start vectors of the certificate (independent; their failure
#: probabilities multiply).
CERT_BLOCK = 4
#: Most certificate steps per round, and most rounds (a round that fails to
#: certify ``tol`` grows the Krylov basis first); the union bound counts them all.
CERT_STEPS = 16
CERT_ROUNDS = 4
#: The basis grows until the a-posteriori estimate of the bound is below this
#: fraction of ``tol`` (the certificate's own margin takes the rest).
ESTIMATE_MARGIN = 0.5
#: The product with ``M`` inside the Galerkin operator (the sandwich bread: N
#: right-hand sides) runs its two GEMMs in single precision: twice as fast,
#: and its rounding (about 1e-6 relative, on a term that the exact part
#: ``(MZ) (I - H)^-1 (MZ)'`` dominates in the large eigendirections) is far
#: below the bread's certified error.
GALERKIN_SINGLE = True
#: ... but only when the operator's certified error ``beta`` exceeds this (a
#: basis spanning the whole space is exact: then everything runs in double).
SINGLE_MIN_ERROR = 1e-6


def shared_columns(X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Columns that every equation's design holds (an intercept in every equation,
    a regressor common to all): ``(n_s, K)`` flat indices ``j pmax + slot`` of
    each shared vector in every equation (``n_s`` may be 0).

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        The (masked, weighted) designs.
    mask : ndarray of bool, shape (K, pmax)
        True where a coefficient exists.

    Notes
    -----
    A column counts as shared only when it is bit-for-bit the same vector in
    every equation (then ``V`` restricted to it has rank one in the rows); the
    candidates are the columns of the first equation, screened on a few rows first.
    """
    K, N, pmax = X.shape
    if K < 2:
        return np.zeros((0, K), dtype=np.int64)
    head = min(N, 8)
    used = ~mask.copy()
    found = []
    eqs = np.arange(K)
    for a in np.flatnonzero(mask[0]):
        c = X[0, :, a]
        hit = np.all(X[:, :head, :] == c[None, :head, None], axis=1) & ~used
        if not hit.any(axis=1).all():
            continue
        slot = np.argmax(hit, axis=1)                       # the first match per equation
        if not np.array_equal(X[eqs, :, slot], np.broadcast_to(c, (K, N))):
            hit &= np.all(X == c[None, :, None], axis=1)    # a later slot may match
            if not hit.any(axis=1).all():
                continue
            slot = np.argmax(hit, axis=1)
        used[eqs, slot] = True
        found.append(eqs * pmax + slot)
    return np.array(found, dtype=np.int64).reshape(len(found), K)


#: Largest block side of :meth:`MOperator.gram_rest` (single-precision blocks of
#: at most 16 MiB: few, large GEMMs)
GRAM_BLOCK = 2048
#: Bytes of each (K pmax, batch) double temporary of the Gram form's passes.
PASS_BYTES = 2 * 2**20


class MOperator:
    """``M = V'V`` applied to many vectors (unmasked designs), with the columns
    every equation shares (:func:`shared_columns`) as rank-one terms.

    In ``(V z)_(l, i) = sum_j e_jl x_ij' T_j z_j`` a column ``c`` shared by every
    equation contributes ``c_i sum_j e_jl (T_j z_j)_slot``: one product with
    ``E'`` instead of a row of the GEMM, and the same on the way back.  The
    other columns go through two GEMMs with one copy of them laid out
    ``(P_rest, N)`` (double, and single precision for ``single=True``).  With an
    intercept in each of ``p`` regressors this is ``1/p`` of the flops less;
    with none shared it is :meth:`DesignFactors.apply_M`'s two GEMMs.

    Parameters
    ----------
    factors : DesignFactors
        Without a mask (``factors.obs is None``) and with ``k > 0``.
    """

    def __init__(self, factors: DesignFactors) -> None:
        f = self.factors = factors
        self.shared = shared_columns(f.X, f.mask)                      # (n_s, K)
        rest = f.mask.ravel().copy()
        rest[self.shared.ravel()] = False
        self.rest = np.flatnonzero(rest)                                # (P_rest,)
        self.E_rest = np.ascontiguousarray(f.E[self.rest // f.pmax])     # (P_rest, k)
        self.C = self._columns(self.shared[:, 0], np.float64)           # (n_s, N)

    def _columns(self, idx: np.ndarray, dtype: type) -> np.ndarray:
        """Design columns at flat indices ``idx`` as rows ``(len(idx), N)``."""
        f = self.factors
        out = np.empty((len(idx), f.N), dtype=dtype)
        for s in range(0, len(idx), 1024):                   # no temporary of the designs
            sl = idx[s:s + 1024]
            out[s:s + 1024] = f.X[sl // f.pmax, :, sl % f.pmax]
        return out

    @cached_property
    def X_rest(self) -> np.ndarray:
        """The columns not shared, ``(P_rest, N)`` contiguous, double."""
        return self._columns(self.rest, np.float64)

    # -- the Gram form, for many columns at once ------------------------------------
    def gram_cheaper(self, m: int) -> bool:
        """Whether ``U U'`` on ``m`` columns at once costs fewer flops through the
        weighted Gram matrix ``(X_r X_r') * (E_r E_r')`` of the columns not
        shared (``P_r^2 N`` to form, by blocks, ``2 P_r^2 m`` to apply) than
        through the two GEMMs of the factor form (``4 N k P_r m``): for
        ``m = N``, when ``P_r`` is below about ``4 N k / 3``."""
        f = self.factors
        P, N = len(self.rest), f.N
        gram = P * P * N + P * min(P, GRAM_BLOCK) * N + 2.0 * P * P * m
        return gram < 0.8 * (4.0 * N * f.k * P * m)

    def gram_rest(self, Zr: np.ndarray) -> np.ndarray:
        """``[(X_r X_r') * (E_r E_r')] z_r`` for Zr (P_r, m) single precision, by
        ``GRAM_BLOCK``-square blocks of the symmetric Gram matrix, each formed
        once (single precision): never ``P_r x P_r`` at once."""
        X, E = self.X_rest_single, self.E_rest.astype(np.float32)
        P = len(self.rest)
        b = -(-P // -(-P // GRAM_BLOCK))                         # equal blocks
        Y = np.zeros_like(Zr)

        def weigh(G: np.ndarray, ER: np.ndarray, EC: np.ndarray) -> None:
            for a in range(0, G.shape[0], 256):                 # G *= ER EC', by rows
                G[a:a + 256] *= ER[a:a + 256] @ EC.T

        for r in range(0, P, b):
            R = slice(r, r + b)
            # Y_R += G Z_C and Y_C += G' Z_R in place (transposed: Fortran order)
            G = ssyrk(1.0, X[R], lower=1)         # diagonal block: lower triangle, Fortran
            weigh(G.T, E[R], E[R])                              # symmetric weights
            ssymm(1.0, G, Zr[R].T, beta=1.0, c=Y[R].T, side=1, lower=1, overwrite_c=1)
            del G                                               # one block at a time
            for c in range(0, r, b):
                C = slice(c, c + b)
                G = X[R] @ X[C].T
                weigh(G, E[R], E[C])
                sgemm(1.0, Zr[C].T, G.T, beta=1.0, c=Y[R].T, overwrite_c=1)
                sgemm(1.0, Zr[R].T, G.T, beta=1.0, c=Y[C].T, overwrite_c=1, trans_b=1)
                del G
        return Y

    @cached_property
    def shared_rest(self) -> np.ndarray:
        """``E_r * (X_r c_s)`` (n_s, P_r, k): how the shared columns meet the others
        in ``U U'`` (the cross terms of the Gram form)."""
        a = self.X_rest @ self.C.T                                      # (P_r, n_s)
        return self.E_rest[None, :, :] * a.T[:, :, None]

    @cached_property
    def X_rest_single(self) -> np.ndarray:
        """:attr:`X_rest` in single precision."""
        return self._columns(self.rest, np.float32)

    def __call__(self, Y: np.ndarray, single: bool = False) -> np.ndarray:
        """``M y`` for flat padded Y (K*pmax, m) -> (K*pmax, m), in batches of
        columns; ``single``: the two GEMMs in single precision (the shared
        columns' rank-one terms stay in double)."""
        f = self.factors
        n, m = Y.shape
        out = np.empty((n, m))
        for bs in f.batches(m):
            Z = f.apply_T(Y[:, bs].reshape(f.K, f.pmax, -1)).reshape(n, -1)
            U = self.low_rank(Z, single)
            out[:, bs] = f.apply_Tt(U.reshape(f.K, f.pmax, -1)).reshape(n, -1)
        return out

    def low_rank(self, Z: np.ndarray, single: bool = False) -> np.ndarray:
        """``U U' z = [sum_l e_jl X_j' (sum_j' e_j'l X_j' z_j')]_j`` for flat Z
        (K*pmax, m), padding zero: the low-rank part of ``A = Delta - U U'``
        (so ``M y = T' U U' T y``); flat (K*pmax, m), padding zero."""
        f = self.factors
        E, k, m = f.E, f.k, Z.shape[1]
        Er, rest = self.E_rest, self.rest
        dt = np.float32 if single else np.float64
        Xr = self.X_rest_single if single else self.X_rest
        # forward: W (N, k m) = X_rest' (E_rest (x) z_rest) + sum_s c_s (E' z_s)
        Bop = np.empty((len(rest), k, m), dtype=dt)
        np.multiply(Er[:, :, None], Z[rest][:, None, :], out=Bop, casting="same_kind")
        W = (Xr.T @ Bop.reshape(len(rest), k * m)).astype(np.float64, copy=False)
        del Bop
        for c, idx in zip(self.C, self.shared):
            W += np.multiply.outer(c, (E.T @ Z[idx]).ravel())
        # backward: U_rest = sum_l e_jl X_rest W_l; U_s = E (c_s' W)
        Uop = (Xr @ W.astype(dt, copy=False)).reshape(len(rest), k, m)
        out = np.zeros((f.K * f.pmax, m))
        acc = Er[:, 0, None] * Uop[:, 0, :]
        for l in range(1, k):
            acc += Er[:, l, None] * Uop[:, l, :]
        out[rest] = acc
        for c, idx in zip(self.C, self.shared):
            out[idx] = E @ (c @ W).reshape(k, m)
        return out


def check_options(tol: Any, max_rank: Any, rtol: Any) -> tuple[float, int, float]:
    """The options of the eigen-correction, validated once (by ``GLSCovariance``).

    Parameters
    ----------
    tol : float
        Bound on the relative error of every variance, in (0, 1).
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


def kw_shortfall(n: int, steps: int, block: int, delta: float) -> float:
    """Relative shortfall ``eps`` of the largest Ritz value after ``steps`` block
    Lanczos steps from ``block`` independent uniformly random vectors in
    dimension ``n``, allowed with probability ``delta``.

    Kuczynski and Wozniakowski (1992, Thm. 4.2): one vector fails
    ``theta < (1 - eps) lam_max`` with probability at most
    ``1.648 sqrt(n) exp(-sqrt(eps) (2 q - 1))``; ``block`` independent ones all
    fail with the ``block``-th power of that.  Returns ``eps`` solving
    ``(...)^block = delta``, or ``inf`` when it is not below 1.
    """
    root = (math.log(1.648 * math.sqrt(max(n, 1))) + math.log(1.0 / delta) / block) / (
        2 * steps - 1)
    return root ** 2 if root < 1.0 else math.inf


@dataclass(frozen=True)
class EigenCorrectionInfo:
    """Outcome of the truncated eigen-correction (``method="lanczos"``).

    Attributes
    ----------
    rank : int
        Number ``r`` of leading Ritz pairs of ``M`` deflated in the bound.
    eigenvalues : ndarray, shape (r,)
        Their Ritz values.
    lambda_next : float
        Certified upper bound on every other eigenvalue of ``M`` (the largest
        of the deflated operator), with probability ``1 - failure_probability``.
    bound : float
        Largest relative variance error bound over the coefficients.
    tol : float
        Requested bound.
    subspace_dim : int
        Dimension ``s`` of the Krylov basis used in the Galerkin correction.
    n_matvecs : int
        Vectors to which ``M`` was applied (basis and certificate).
    converged : bool
        ``bound <= tol``.
    certificate_steps : int
        Block steps of the last certificate.
    failure_probability : float
        Probability over the random vectors that ``bound`` is not a bound.
    """

    rank: int
    eigenvalues: np.ndarray
    lambda_next: float
    bound: float
    tol: float
    subspace_dim: int
    n_matvecs: int
    converged: bool
    certificate_steps: int = 0
    failure_probability: float = FAILURE_PROBABILITY


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
class _Ritz:
    """Rayleigh-Ritz on the basis: ``H = Z'MZ``, eigenvalues ``theta``
    (descending, clipped at 0), eigenvectors ``W`` and the residual norms of
    the first ``len(res)`` pairs."""

    H: np.ndarray
    theta: np.ndarray
    W: np.ndarray
    res: np.ndarray


@dataclass(frozen=True)
class _Tail:
    """What the bound needs besides ``lam_perp``: per coefficient ``|x_perp|``
    (K, pmax) and ``|R (I - Theta)^-1 alpha|``, ``rho^2`` and
    ``|R (I - Theta)^-1|``."""

    x_perp: np.ndarray
    r_alpha: np.ndarray
    rho2: float
    rd_norm: float

    def normwise(self, lam: float) -> float:
        """``beta`` with ``0 <= (I - M)^-1 - G_galerkin <= beta I`` (unit ``x``)."""
        sigma = 1.0 - lam - self.rho2
        return (lam + self.rho2 + self.rd_norm) ** 2 / sigma if sigma > 0.0 else math.inf

    def absolute(self, lam: float) -> np.ndarray:
        """Bound on ``v - v_computed`` per coefficient for ``lam_perp <= lam``."""
        sigma = 1.0 - lam - self.rho2
        if not sigma > 0.0:
            return np.full(self.x_perp.shape, np.inf)
        return ((lam + self.rho2) * self.x_perp + self.r_alpha) ** 2 / sigma


@dataclass(frozen=True)
class _Krylov:
    """The eigen-correction: basis Z (P', s), MZ, H, the Cholesky factor of
    I - H, the Galerkin blocks, their relative bounds and the public info."""

    Z: np.ndarray
    MZ: np.ndarray
    H: np.ndarray
    core: tuple
    blocks: np.ndarray
    bounds: np.ndarray
    beta: float
    info: EigenCorrectionInfo


class LanczosCorrection:
    """``A^-1`` through the truncated eigen-correction, with a certified bound.

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
        Bound on the relative error of every variance.
    max_rank : int, default EIGEN_MAX_RANK
        Cap on the number of eigenpairs ``r`` (the basis holds at most
        ``2 max_rank`` vectors).
    rtol : float, default SOLVE_RTOL
        Relative residual of the PCG solves with ``A``.
    seed : int, default 0
        Seed of the random start vectors (the basis and, from an independent
        stream, the certificate).
    progress : callable, optional
        Called as ``progress(message)`` after each block of the basis and
        certificate (see :mod:`alsgls.stats._progress`).

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
                 seed: int = 0, progress: Any = None) -> None:
        self.factors = factors
        self.tol, self.max_rank, self.rtol = float(tol), int(max_rank), float(rtol)
        self.seed = seed
        self.progress = progress
        self.solve_info: SolveInfo | None = None

    def _report(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    @cached_property
    def apply_M(self) -> Any:
        """``M y`` for flat Y (K*pmax, m): :class:`MOperator` without a mask,
        else the factors' own ``apply_M``."""
        f = self.factors
        if f.obs is None and f.k > 0 and hasattr(f, "X"):
            return MOperator(f)
        return f.apply_M

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

    def _ritz(self, Z: np.ndarray, MZ: np.ndarray) -> _Ritz:
        """Rayleigh-Ritz on the basis; residuals of the first ``max_rank + 1`` pairs."""
        H = Z.T @ MZ
        H = 0.5 * (H + H.T)
        theta, W = eigh(H)
        theta, W = np.clip(theta[::-1], 0.0, None), W[:, ::-1]
        c = min(Z.shape[1], self.max_rank + 1)
        res = np.linalg.norm(MZ @ W[:, :c] - (Z @ W[:, :c]) * theta[:c], axis=0)
        return _Ritz(H, theta, W, res)

    def _estimate(self, ritz: _Ritz) -> tuple[int, float]:
        """``(r, estimated bound)``: the leading pairs converged to the bound's
        precision, and ``f(lam_(r+1))`` with ``lam_(r+1) ~ theta + res`` (an
        a-posteriori estimate; the certificate makes it a bound)."""
        theta, res = ritz.theta[: len(ritz.res)], ritz.res
        conv = res <= CONV_FACTOR * math.sqrt(self.tol) * (1.0 - theta)
        ok = np.concatenate([[True], np.cumprod(conv[:-1]).astype(bool)])
        lam = np.minimum(theta + res, 1.0 - 1e-15)
        cand = np.where(ok, lam ** 2 / (1.0 - lam), np.inf)
        r = int(np.argmin(cand))
        return min(r, self.max_rank), float(cand[r])

    def _tail(self, Z: np.ndarray, MZ: np.ndarray, ritz: _Ritz, r: int) -> _Tail:
        """The exactly computable parts of the bound for the leading ``r`` pairs."""
        f = self.factors
        Y, MY = Z @ ritz.W[:, :r], MZ @ ritz.W[:, :r]
        R = MY - Y * ritz.theta[:r]
        d = 1.0 / (1.0 - np.minimum(ritz.theta[:r], 1.0 - 1e-15))
        alpha = np.einsum("jab,jbr->jar", f.T, Y.reshape(f.K, f.pmax, r))
        RR = R.T @ R
        r_alpha = np.sqrt(np.maximum(np.einsum("jar,rs,jas->ja", alpha * d, RR, alpha * d), 0))
        x_perp = np.sqrt(np.maximum(f.tt - np.einsum("jar,jar->ja", alpha, alpha), 0.0))
        if r == 0:
            return _Tail(x_perp, r_alpha, 0.0, 0.0)
        rho2 = float(eigvalsh(np.sqrt(d)[:, None] * RR * np.sqrt(d)[None, :])[-1])
        rd2 = float(eigvalsh(d[:, None] * RR * d[None, :])[-1])
        return _Tail(x_perp, r_alpha, max(rho2, 0.0), math.sqrt(max(rd2, 0.0)))

    def _certify(self, Y: np.ndarray, tail: _Tail, var: np.ndarray, rng
                 ) -> tuple[float, int, int]:
        """Certified upper bound on ``lam_perp`` (block Lanczos on the deflated
        operator from fresh random vectors), stopping once the bounds meet
        ``tol``.  Returns ``(lam, steps, products)``."""
        f = self.factors
        fm = f.mask.ravel()[:, None]
        n_eff = int(fm.sum())
        m = min(CERT_BLOCK, max(n_eff - Y.shape[1], 1))
        delta = FAILURE_PROBABILITY / (CERT_STEPS * CERT_ROUNDS)

        def op(B):
            B = B - Y @ (Y.T @ B)
            MB = self.apply_M(B)
            return MB - Y @ (Y.T @ MB)

        blk = orthonormalize(rng.standard_normal((fm.size, m)) * fm, Y)
        basis, products = np.zeros((fm.size, 0)), np.zeros((fm.size, 0))
        lam, q = 1.0, 0
        for q in range(1, CERT_STEPS + 1):
            basis = np.hstack([basis, blk])
            products = np.hstack([products, op(blk)])
            theta = float(eigvalsh(0.5 * (basis.T @ products + products.T @ basis))[-1])
            eps = kw_shortfall(n_eff, q, m, delta)
            lam = min(max(theta, 0.0) / (1.0 - eps), 1.0) if eps < 1.0 else 1.0
            worst = float(np.max(np.where(f.mask, tail.absolute(lam) / var, 0.0)))
            self._report(f"certificate step {q}: lam_perp <= {lam:.3g}, bound {worst:.2g}")
            if worst <= self.tol or basis.shape[1] + m > n_eff:
                break
            blk = self._orth_block(products[:, -blk.shape[1]:], np.hstack([Y, basis]), rng)
            if blk.shape[1] == 0:
                break
        return lam, q, basis.shape[1]

    def _galerkin(self, Z: np.ndarray, MZ: np.ndarray, H: np.ndarray
                  ) -> tuple[tuple, np.ndarray, np.ndarray]:
        """The Cholesky factor of ``I - H``, the Galerkin blocks and variances."""
        f = self.factors
        core = cho_factor(np.eye(Z.shape[1]) - H, lower=True)   # I - H > 0 as A > 0
        Yt = solve_triangular(core[0], MZ.T, lower=True)         # L^-1 (MZ)'
        Yt = Yt.T.reshape(f.K, f.pmax, -1)
        inner = np.eye(f.pmax)[None] + f.M_diag + np.einsum("jai,jbi->jab", Yt, Yt)
        # whitened variances x'(...)x, x = T_j' e_a: the diagonal of the blocks
        blocks = f.sandwich(inner)
        var = np.einsum("jaa->ja", blocks)
        return core, blocks, np.where(f.mask, var, 1.0)

    @cached_property
    @single_blas_thread
    def _krylov(self) -> _Krylov:
        """Block Lanczos on ``M`` until the certified bound meets ``tol``.

        The basis grows until the a-posteriori estimate is below
        ``ESTIMATE_MARGIN tol`` (or stagnates below ``tol``: a flat bulk), then a
        certificate bounds the tail; if that bound misses ``tol`` the basis grows
        further (at most ``CERT_ROUNDS`` certificates, ``2 max_rank`` vectors)."""
        f = self.factors
        rng, cert_rng = (np.random.default_rng(s)
                         for s in np.random.SeedSequence(self.seed).spawn(2))
        fm = f.mask.ravel()
        n, n_eff = fm.size, int(fm.sum())
        s_max = min(n_eff, 2 * self.max_rank)
        b = min(max(2 * f.k, 8), 32, s_max)                    # blocks fit the basis
        Zb, MZ = np.zeros((n, min(s_max, 4 * b))), np.zeros((n, min(s_max, 4 * b)))
        blk = self._orth_block(rng.standard_normal((n, b)) * fm[:, None], Zb[:, :0], rng)
        s, margin, matvecs, rounds, history = 0, ESTIMATE_MARGIN, 0, 0, []
        while True:
            m = blk.shape[1]
            if s + m > Zb.shape[1]:                              # grow the basis (doubling)
                c = min(s_max, 2 * Zb.shape[1])
                Zb, MZ = (np.hstack([A[:, :s], np.zeros((n, c - s))]) for A in (Zb, MZ))
            Zb[:, s:s + m] = blk
            MZ[:, s:s + m] = self.apply_M(blk)
            s, matvecs = s + m, matvecs + m
            ritz = self._ritz(Zb[:, :s], MZ[:, :s])
            r, estimate = self._estimate(ritz)
            history.append(estimate)
            self._report(f"Krylov basis {s}: estimated bound {estimate:.2g}")
            flat = len(history) > 2 and estimate <= self.tol and estimate > 0.7 * history[-3]
            whole = s == n_eff                                   # the whole space: exact
            if whole or flat or estimate <= margin * self.tol or s >= s_max:
                core, blocks, var = self._galerkin(Zb[:, :s], MZ[:, :s], ritz.H)
                if whole:
                    r, lam, steps, bounds, beta = s, 0.0, 0, np.zeros(f.mask.shape), 0.0
                    break
                rounds += 1
                tail = self._tail(Zb[:, :s], MZ[:, :s], ritz, r)
                lam, steps, used = self._certify(Zb[:, :s] @ ritz.W[:, :r], tail, var,
                                                 cert_rng)
                matvecs += used
                bounds = np.where(f.mask, tail.absolute(lam) / var, 0.0)
                beta = tail.normwise(lam)                        # for the Galerkin solves
                if bounds.max() <= self.tol or s >= s_max or rounds >= CERT_ROUNDS:
                    break
                margin, history = margin / 4.0, []
            blk = self._orth_block(MZ[:, s - m:s], Zb[:, :s], rng)[:, : min(b, s_max - s)]
        info = EigenCorrectionInfo(r, ritz.theta[:r].copy(), lam,
                                   float(bounds.max()), self.tol, s, matvecs,
                                   bool(bounds.max() <= self.tol), steps)
        if not info.converged:
            core_gib = 8 * min(f.N * f.k, n) ** 2 / 2**30
            warn(f"standard errors: the Lanczos eigen-correction stopped (Krylov basis {s}, "
                 f"max_rank = {self.max_rank}) with a relative variance error bound "
                 f"{info.bound:.2g} > tol = {self.tol:g}; pass se_method='exact' to SUR.fit "
                 f"(its core needs {core_gib:.2g} GiB) or a larger se_tol", ConvergenceWarning)
        return _Krylov(Zb[:, :s].copy(), MZ[:, :s].copy(), ritz.H, core, blocks, bounds,
                       beta, info)

    @property
    def eigen_info(self) -> EigenCorrectionInfo:
        """Diagnostics of the eigen-correction."""
        return self._krylov.info

    # -- model-based covariance -------------------------------------------------
    def diagonal_blocks(self) -> np.ndarray:
        """Galerkin ``(A^-1)_jj`` (K, pmax, pmax): within ``truncation_bound``
        (relative, every variance) and never above the exact value."""
        return self._krylov.blocks

    @property
    def truncation_bound(self) -> float:
        """Bound on ``(exact - computed) / computed`` for every model-based variance."""
        return float(np.max(self._krylov.bounds))

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds (K, pmax)."""
        return self._krylov.bounds

    # -- solves -------------------------------------------------------------------
    @cached_property
    def _deflation(self) -> np.ndarray:
        """``H (I - H)^-1`` (s, s): the preconditioner is ``I + Z H (I - H)^-1 Z'``."""
        e = self._krylov
        return cho_solve(e.core, e.H)

    @single_blas_thread
    def galerkin_solve(self, Z: np.ndarray) -> np.ndarray:
        """``T [I + M + MZ (I - H)^-1 (MZ)'] T' Z`` for Z (K, pmax, m): the Galerkin
        approximation of ``A^-1 Z``, one product with ``M`` for all columns.

        Below the exact solve in the Loewner order, by at most :attr:`galerkin_error`
        times ``T T'`` (the whitened identity).
        """
        f, e = self.factors, self._krylov
        # single precision only where the operator's own error dominates rounding
        single = GALERKIN_SINGLE and e.beta > SINGLE_MIN_ERROR
        n, m = f.K * f.pmax, Z.shape[2]
        if isinstance(self.apply_M, MOperator):
            # T (I + M) T' = Delta^-1 + Delta^-1 U U' Delta^-1: one product with U U'
            Dinv, TMZ = self._galerkin_factors
            Y = np.matmul(Dinv, Z)
            out = self.apply_M.low_rank(Y.reshape(n, m), single).reshape(f.K, f.pmax, m)
            out += Z
            Y = np.matmul(Dinv, out, out=Y).reshape(n, m)
            Y += TMZ @ cho_solve(e.core, TMZ.T @ Z.reshape(n, m))
            return Y.reshape(f.K, f.pmax, m)
        B = f.apply_Tt(Z).reshape(n, m)
        out = self.apply_M(B, single=single)
        out += B
        out += e.MZ @ cho_solve(e.core, e.MZ.T @ B)
        return f.apply_T(out.reshape(f.K, f.pmax, -1))

    @single_blas_thread
    def galerkin_columns(self, m: int, columns: Any) -> np.ndarray:
        """:meth:`galerkin_solve` of ``m`` columns given batch by batch,
        ``columns(batch)`` returning a new (K, pmax, len(batch)) array: (K, pmax, m).

        When the Gram form of ``U U'`` is cheaper for all ``m`` columns at once
        (:meth:`MOperator.gram_cheaper`: few coefficients beside the shared
        columns for the rows), two passes over the batches: the first gathers
        ``Delta^-1 z`` of every column (single precision), one product with the
        weighted Gram matrix serves them all, the second assembles the columns.
        The same operator as :meth:`galerkin_solve`, rounding aside."""
        f, e = self.factors, self._krylov
        op = self.apply_M
        single = GALERKIN_SINGLE and e.beta > SINGLE_MIN_ERROR
        if not (single and isinstance(op, MOperator) and op.gram_cheaper(m)):
            out = np.empty((f.K, f.pmax, m))
            for bs in f.batches(m):
                out[:, :, bs] = self.galerkin_solve(columns(bs))
                self._report(f"scores {bs.stop} of {m}")
            return out
        n, K, p = f.K * f.pmax, f.K, f.pmax
        step = max(32, PASS_BYTES // (8 * n))                   # columns per pass batch
        batches = [slice(a, min(a + step, m)) for a in range(0, m, step)]
        Dinv, TMZ = self._galerkin_factors
        rest, E = op.rest, f.E
        out = np.empty((K, p, m))                             # Delta^-1 z, then H
        Zr = np.empty((len(rest), m), dtype=np.float32)
        Ys = np.empty((len(op.shared), f.k, m))                # E' (Delta^-1 z)_shared
        coef = np.empty((TMZ.shape[1], m))                     # (I - H)^-1 (T MZ)' z
        for bs in batches:
            Z = columns(bs)
            coef[:, bs] = cho_solve(e.core, TMZ.T @ Z.reshape(n, -1))
            Y = np.matmul(Dinv, Z)
            out[:, :, bs] = Y
            Y = Y.reshape(n, -1)
            Zr[:, bs] = Y[rest]
            for s, idx in enumerate(op.shared):
                Ys[s][:, bs] = E.T @ Y[idx]
        self._report(f"scores: {m} gathered")
        Yr = op.gram_rest(Zr)                                  # U U' on the rest x rest
        W = op.shared_rest
        cc = op.C @ op.C.T
        Vs = np.empty((len(op.shared), f.k, m))              # c_s' W: U U' = E (c_s' W)
        for s in range(len(op.shared)):
            Ws = W[s].T.astype(np.float32)                     # (k, P_r), Fortran order
            sgemm(1.0, Ys[s].T.astype(np.float32), Ws, beta=1.0, c=Yr.T, overwrite_c=1)
            Vs[s] = (Ws @ Zr) + np.einsum("t,tlm->lm", cc[s], Ys)
        del Zr
        self._report(f"scores: {m} through the Gram matrix")
        for bs in batches:               # H = Delta^-1 z + Delta^-1 U U' (Delta^-1 z) + ...
            D = np.zeros((n, bs.stop - bs.start))
            D[rest] = Yr[:, bs]
            for s, idx in enumerate(op.shared):
                D[idx] = E @ Vs[s][:, bs]
            H = np.matmul(Dinv, D.reshape(K, p, -1))
            H += (TMZ @ coef[:, bs]).reshape(K, p, -1)
            out[:, :, bs] += H
            self._report(f"scores {bs.stop} of {m}")
        return out

    @cached_property
    def _galerkin_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """``Delta^-1 = T T'`` (K, pmax, pmax) and ``T (MZ)`` (K*pmax, s)."""
        f, e = self.factors, self._krylov
        Dinv = np.matmul(f.T, f.T.transpose(0, 2, 1))
        TMZ = f.apply_T(e.MZ.reshape(f.K, f.pmax, -1)).reshape(f.K * f.pmax, -1)
        return Dinv, TMZ

    @property
    def galerkin_error(self) -> float:
        """``beta``: ``0 <= (I - M)^-1 - G_galerkin <= beta I`` (whitened), with the
        probability of the certificate."""
        return self._krylov.beta

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
            q = d[:, act] - self.apply_M(d[:, act])
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


def norm_bound(Y: np.ndarray, seed: int, steps: int = 12) -> float:
    """Upper bound on the spectral norm of ``Y`` (n, N), except with probability
    ``FAILURE_PROBABILITY``: block Lanczos on ``Y'Y`` from random vectors and the
    Kuczynski-Wozniakowski shortfall (:func:`alsgls.stats.lanczos.kw_shortfall`)."""
    n = Y.shape[1]
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    m = min(CERT_BLOCK, n)
    if n <= 4 * CERT_BLOCK * steps:                      # small: the exact norm
        return float(np.sqrt(np.linalg.eigvalsh(Y.T @ Y)[-1]))
    blk = orthonormalize(rng.standard_normal((n, m)))
    basis, prods = np.zeros((n, 0)), np.zeros((n, 0))
    for _ in range(steps):
        basis = np.hstack([basis, blk])
        prods = np.hstack([prods, Y.T @ (Y @ blk)])
        blk = orthonormalize(prods[:, -blk.shape[1]:], basis)
        if blk.shape[1] == 0:
            break
    theta = float(np.linalg.eigvalsh(0.5 * (basis.T @ prods + prods.T @ basis))[-1])
    eps = kw_shortfall(n, basis.shape[1] // m, m, FAILURE_PROBABILITY)
    return float(np.sqrt(theta / (1.0 - eps))) if eps < 1.0 else float(np.linalg.norm(Y))
