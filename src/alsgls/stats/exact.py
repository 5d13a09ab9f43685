"""The exact strategies of :class:`alsgls.stats.inference.GLSCovariance`.

:class:`ExactCore` factors the smaller of the two Woodbury cores densely --
``C = I - V V'`` (``N k x N k``, accumulated equation-chunk by
equation-chunk with SYRK) or ``I - M`` (``P x P`` padded, when ``P <= N k``:
few equations, many rows) -- so the diagonal blocks of ``A^-1`` are exact to
rounding.  :class:`KroneckerCore` is the closed form for one design shared by
every equation.  Notation as in :mod:`alsgls.stats.inference`; both use only
the public interface of :class:`alsgls.stats.factors.DesignFactors`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
from scipy.linalg import LinAlgError, cho_solve, cholesky, solve_triangular
from scipy.linalg.blas import dsyrk

from .._threads import single_blas_thread
from .factors import DesignFactors
from .lanczos import EigenCorrectionInfo, SolveInfo

__all__ = ["EXACT_CORE_LIMIT", "ExactCore", "KroneckerCore", "core_sizes"]

#: Largest dense core (side ``min(N k, P)``) of the exact strategy: its memory
#: is ``8 size^2`` bytes, 512 MiB at this limit.  ``se_method="exact"`` beyond
#: it raises ``MemoryError``; ``"auto"`` takes Lanczos.  (The value in force is
#: ``alsgls.stats.inference.EXACT_CORE_LIMIT``, passed on by ``GLSCovariance``.)
EXACT_CORE_LIMIT = 8192


def core_sizes(f: DesignFactors) -> tuple[int, int]:
    """``(N k, K pmax)``: the sides of the row-space and coefficient-space cores."""
    return f.N * f.k, f.K * f.pmax




class ExactCore:
    """``A^-1`` through a dense Cholesky factor of the smaller core: ``C = I - V V'``
    (N k x N k) or ``I - M`` (P x P, padded).

    Parameters
    ----------
    factors : DesignFactors
    limit : int, default EXACT_CORE_LIMIT
        Largest core side allowed (``GLSCovariance`` passes
        ``alsgls.stats.inference.EXACT_CORE_LIMIT``).
    progress : callable, optional
        Called with a message after each chunk of the core.

    Raises
    ------
    MemoryError
        When ``min(N k, K pmax) > limit``.

    Attributes
    ----------
    method : str
        ``"exact"``.
    space : {"rows", "coefficients"}
        Which core is factored.
    truncation_bound : float
        0: nothing is truncated.
    eigen_info, solve_info : None
        There is no eigen-correction and no iterative solve.
    """

    method = "exact"
    truncation_bound = 0.0
    eigen_info: EigenCorrectionInfo | None = None
    solve_info: SolveInfo | None = None

    def __init__(self, factors: DesignFactors, limit: int = EXACT_CORE_LIMIT,
                 progress: Callable[[str], None] | None = None) -> None:
        nk, n = core_sizes(factors)
        m = min(nk, n)
        if m > limit:
            raise MemoryError(
                f"the exact core has size min(N*k, K*pmax) = {m} > "
                f"EXACT_CORE_LIMIT = {limit}; use se_method='lanczos' (or 'auto') "
                "in SUR.fit, fit on fewer rows or a lower rank, or raise "
                "alsgls.stats.inference.EXACT_CORE_LIMIT if memory allows "
                f"({8 * m ** 2 / 2**30:.1f} GiB)"
            )
        self.factors = factors
        self.space = "coefficients" if n <= nk else "rows"
        self.progress = progress

    def _report(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds: zeros (K, pmax)."""
        return np.zeros((self.factors.K, self.factors.pmax))

    @cached_property
    @single_blas_thread
    def chol(self) -> np.ndarray:
        """Lower Cholesky factor of the core: ``C = I - V V'`` or ``I - M``."""
        f = self.factors
        if self.space == "coefficients":
            n = f.K * f.pmax
            C = -f.apply_M(np.eye(n))
            C = 0.5 * (C + C.T)
            C[np.arange(n), np.arange(n)] += 1.0
        else:
            C = np.asfortranarray(np.eye(f.k * f.N))
            for sl in f.chunks(f.k * f.pmax):
                C = dsyrk(-1.0, f.V_columns(sl).T, beta=1.0, c=C, trans=1, lower=1,
                          overwrite_c=1)
                self._report(f"core: equations {sl.stop} of {f.K}")
        try:
            return cholesky(C, lower=True, overwrite_a=True, check_finite=False)
        except LinAlgError as exc:
            raise LinAlgError(
                "the GLS information matrix X'(Sigma^-1 (x) I)X is numerically "
                "singular (Sigma-hat nearly singular or designs nearly collinear "
                "across equations); standard errors are not available"
            ) from exc

    @single_blas_thread
    def diagonal_blocks(self) -> np.ndarray:
        """Exact ``(A^-1)_jj`` (K, pmax, pmax)."""
        f = self.factors
        inner = np.broadcast_to(np.eye(f.pmax), (f.K, f.pmax, f.pmax)).copy()
        if f.k > 0 and self.space == "coefficients":
            Li = solve_triangular(self.chol, np.eye(self.chol.shape[0]), lower=True)
            Li = Li.reshape(-1, f.K, f.pmax)                 # (I - M)^-1 = Li' Li
            inner = np.einsum("mja,mjb->jab", Li, Li)
        elif f.k > 0:
            L = self.chol
            for sl in f.chunks(f.k * f.pmax):
                Wc = solve_triangular(L, f.V_columns(sl), lower=True, check_finite=False)
                Wc = Wc.reshape(f.k * f.N, -1, f.pmax)
                inner[sl] += np.einsum("mja,mjb->jab", Wc, Wc)
                self._report(f"blocks: equations {sl.stop} of {f.K}")
        return f.sandwich(inner)

    @single_blas_thread
    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` for Z (K, pmax, m), direct."""
        f = self.factors
        Y = f.apply_Tt(Z)
        if f.k > 0 and self.space == "coefficients":
            m = Y.shape[2]
            Y = cho_solve((self.chol, True), Y.reshape(-1, m)).reshape(f.K, f.pmax, m)
        elif f.k > 0:
            L = self.chol
            Wv = solve_triangular(L, f.apply_V(Y), lower=True)
            Wv = solve_triangular(L, Wv, lower=True, trans="T")
            Y = Y + f.apply_Vt(Wv)
        return f.apply_T(Y)


class KroneckerCore:
    """``A^-1 = Sigma (x) (X_0'X_0)^-1`` for one design shared by every equation.

    With nothing missing and one (weighted) design ``X_0``, ``A = Sigma^-1 (x)
    X_0'X_0`` exactly: the diagonal blocks are ``Sigma_jj (X_0'X_0)^-1`` and a
    solve is one product with ``Sigma`` along the equations.

    Parameters
    ----------
    factors : DesignFactors
        With ``factors.shared``.
    """

    method = "exact"
    truncation_bound = 0.0
    eigen_info: EigenCorrectionInfo | None = None
    solve_info: SolveInfo | None = None
    progress: Callable[[str], None] | None = None

    def __init__(self, factors: DesignFactors) -> None:
        self.factors = factors
        f = factors
        self.gram_inverse = f.T[0] @ f.T[0].T / f.cov.D[0]        # (X_0'X_0)^-1, padding 0

    @property
    def variance_bounds(self) -> np.ndarray:
        """Zeros (K, pmax)."""
        return np.zeros((self.factors.K, self.factors.pmax))

    def diagonal_blocks(self) -> np.ndarray:
        """``Sigma_jj (X_0'X_0)^-1`` (K, pmax, pmax)."""
        return self.factors.cov.diagonal[:, None, None] * self.gram_inverse[None]

    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``(Sigma (x) (X_0'X_0)^-1) z`` for Z (K, pmax, m)."""
        cov = self.factors.cov
        SZ = cov.D[:, None, None] * Z + np.einsum(
            "jl,lam->jam", cov.F, np.einsum("il,iam->lam", cov.F, Z))
        return np.einsum("ab,jbm->jam", self.gram_inverse, SZ)
