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
from typing import Any, Protocol

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular

from .._threads import single_blas_thread
from ..core.ops import (
    LowRankCovariance,
)
from .covariance import COV_ESTIMATORS, CovarianceEstimator, normalise_cov_type
from .factors import CHUNK_BYTES, DesignFactors  # noqa: F401  (re-exported)
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
    restriction : LinearRestriction or ndarray (K, pmax, m), optional
        Linear restrictions ``R beta = q`` the estimate satisfies (a
        :class:`~alsgls.core.restriction.LinearRestriction`, or ``R'`` in the
        padded layout): :meth:`solve` and :meth:`diagonal_blocks` then apply
        the restricted bread ``A^-1 - W S^-1 W'``, ``W = A^-1 R'``,
        ``S = R W`` (m solves with ``A``, never P x P), and so does every
        estimator built on this covariance.

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
    restriction : LinearRestriction, ndarray or None
        The restriction as given (None: unrestricted bread ``A^-1``).

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
                 rtol: float = SOLVE_RTOL, seed: int = 0, restriction: Any = None) -> None:
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
        self.restriction = restriction
        self._restriction_Rt = self._restriction_rt(restriction)

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
            ``method``, ``tol``, ``max_rank``, ``rtol``, ``seed``, ``restriction``
            as in the constructor.

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
        """``A^-1 Z`` for Z (K, pmax) or (K, pmax, m), padded layout; under a
        restriction the restricted bread ``(A^-1 - W S^-1 W') Z``.

        Exact (direct) through the Woodbury core; cost O(N K p k m + (Nk)^2 m).
        With ``method="lanczos"``: deflated PCG to relative residual ``rtol``.
        """
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 2:
            return self.solve(Z[:, :, None])[:, :, 0]
        out = self.strategy.solve(Z)
        if self._restriction_Rt is not None:     # C_r Z = A^-1 Z - W S^-1 R A^-1 Z
            W, L = self._restricted_core
            lam = solve_triangular(L, np.einsum("kpm,kpn->mn", self._restriction_Rt, out),
                                   lower=True)
            out -= W @ solve_triangular(L, lam, lower=True, trans="T")
        return out

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
        Under a restriction: the blocks of ``A^-1 - W S^-1 W'`` (the bounds
        then refer to the ``A^-1`` part).
        """
        blocks = self.strategy.diagonal_blocks()
        if self._restriction_Rt is not None:
            W, L = self._restricted_core
            Ws = solve_triangular(L, W.reshape(-1, W.shape[2]).T, lower=True).T
            Ws = Ws.reshape(W.shape)
            blocks = blocks - np.einsum("kam,kbm->kab", Ws, Ws)
        return blocks

    # -- linear restrictions --------------------------------------------------
    def _restriction_rt(self, restriction: Any) -> np.ndarray | None:
        """``R'`` (K, pmax, m) of a LinearRestriction or a padded array; checked."""
        if restriction is None:
            return None
        Rt = np.asarray(getattr(restriction, "Rt", restriction), dtype=np.float64)
        if Rt.ndim != 3 or Rt.shape[:2] != (self.K, self.pmax) or Rt.shape[2] == 0:
            raise ValueError(f"restriction must be a LinearRestriction or R' as (K, pmax, m) = "
                             f"({self.K}, {self.pmax}, m), got shape {Rt.shape}")
        return Rt

    @cached_property
    def _restricted_core(self) -> tuple[np.ndarray, np.ndarray]:
        """``W = A^-1 R'`` (K, pmax, m) and the lower Cholesky factor of
        ``S = R A^-1 R'`` (m x m): m solves with ``A``."""
        W = self.strategy.solve(self._restriction_Rt)
        S = np.einsum("kpm,kpn->mn", self._restriction_Rt, W)
        try:
            L = cholesky(0.5 * (S + S.T), lower=True)
        except LinAlgError as exc:
            raise LinAlgError("R A^-1 R' is not positive definite: the restrictions are "
                              "(numerically) linearly dependent") from exc
        return W, L

    # -- estimators (cov_type) ---------------------------------------------------
    def estimator(self, cov_type: str, config: Any = None) -> CovarianceEstimator:
        """The estimator of ``cov_type`` on this covariance, built once per
        ``(cov_type, config)`` and shared.

        Parameters
        ----------
        cov_type : str
            A key (or alias) of :data:`alsgls.stats.covariance.COV_ESTIMATORS`.
        config : CovarianceConfig, optional
            Its options (:func:`alsgls.stats.covariance.covariance_config`);
            None: the defaults.

        Returns
        -------
        CovarianceEstimator
            With ``diagonal_blocks`` and ``contrast_cov(L)``; results with
            different ``cov_type`` or options share this covariance and each
            estimator's work (the sandwich estimators also share the solved
            scores ``A^-1 Gamma'``).
        """
        name = normalise_cov_type(cov_type)
        key = (name, config)
        if key not in self._estimators:
            cls = COV_ESTIMATORS[name]
            self._estimators[key] = cls(self) if config is None else cls(self, config)
        return self._estimators[key]

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
