"""Matrix-free covariance of the GLS coefficients (DESIGN.md section 4).

The model-based covariance of the stacked coefficients is ``A^-1`` with the
GLS information ``A = X' (Sigma^-1 (x) I_N) X`` (P x P, never formed).  With
``Sigma^-1 = Psi^-1 - G G'`` (``ops.LowRankCovariance``) it splits into a
block-diagonal part and a correction of rank at most ``N k``::

    A = Delta - U U',   Delta_j = X_j' X_j / D_j,   U = X' (G (x) I_N).

With ``T_j T_j' = Delta_j^-1`` (:class:`~alsgls.stats.factors.DesignFactors`)
the correction becomes ``T'U = V' = [g_j (x) X_j T_j]_j`` (an ``N k x P``
operator) and, with ``M = V'V`` (P x P, eigenvalues in [0, 1)),

    A^-1 = T (I - M)^-1 T' = T (I + V' C^-1 V) T',   C = I_{Nk} - V V'.

Three strategies apply ``A^-1`` from these factors (``se_method``):

:class:`ExactCore` (``"exact"``): a dense Cholesky factor of the smaller of
the two cores, ``C`` (``N k x N k``, accumulated equation-chunk by
equation-chunk with SYRK) or ``I - M`` (``P x P``, when ``P <= N k``: few
equations, many rows).  The diagonal blocks are exact,
``(A^-1)_jj = T_j (I + W_j' W_j) T_j'`` with ``W = L^-1 V`` (or
``T_j [(I - M)^-1]_jj T_j'``): cost ``O(min(Nk, P)^2 max(Nk, P))`` flops,
``8 min(Nk, P)^2`` bytes.

:class:`KroneckerCore`: one design shared by every equation (and nothing
missing): ``A = Sigma^-1 (x) X_0'X_0`` exactly, so
``Cov(beta_i, beta_j) = Sigma_ij (X_0'X_0)^-1`` -- O(K p^2).

:class:`alsgls.stats.lanczos.LanczosCorrection` (``"lanczos"``): a Krylov
basis of ``M`` and the Galerkin form of the eigen-correction, every variance
within a certified relative bound ``se_tol`` (see that module), never above
the exact value.  Cost ``O(s N P k)`` for a basis of ``s`` vectors (typically
60-150), memory one copy of the designs plus ``O(P s)``.

``"auto"`` takes the exact strategy when its predicted cost is below
``EXACT_AUTO_FLOPS`` or below that of the Lanczos strategy, and its core fits
``EXACT_CORE_LIMIT``; otherwise Lanczos.  An explicit ``"exact"`` beyond
``EXACT_CORE_LIMIT`` raises ``MemoryError``.  Per-equation ``(A_jj)^-1``
would be wrong (it ignores the correction; it understated SEs by up to 78 %).

The heteroskedasticity-robust (sandwich) covariance
``A^-1 B A^-1`` with ``B = sum_i g_i g_i'``, ``g_i = X_i' Sigma^-1 r_i``, and
any other estimator of :data:`alsgls.stats.covariance.COV_ESTIMATORS`, is
built on this class: the sandwich estimators apply :meth:`GLSCovariance.bread`
to the ``N`` scores (:meth:`GLSCovariance.score_bread` builds them batch by
batch from the row-solved residuals; with Lanczos one product with ``M`` for
all of them, through the weighted Gram matrix of the designs when that is
cheaper: :mod:`alsgls.stats.lanczos`).

Missing responses and row weights (DESIGN.md section 6).  Row ``i`` observes
the equations ``O_i`` and has weight ``w_i``; the observed-data information is

    A = sum_i w_i X_{i,O}' Sigma_{O_i}^-1 X_{i,O},
    Sigma_O^-1 = Psi_O^-1 - G_i G_i',  G_i = Psi_O^-1 F_O L_i^-T,

with the per-row k x k cores ``C_i = I + F_O' Psi_O^-1 F_O = L_i L_i'`` (all of
them from one masked GEMM, ``ops.row_core_inverse``).  It keeps the structure
``A = Delta - U U'`` with the masked, ``sqrt(w)``-scaled designs and a per-row
``G_i`` in place of the common ``G``, so the same strategies apply.  The robust
scores become ``w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular

from ..core.ops import LowRankCovariance
from ..core.options import check_real
from ._progress import Progress
from .covariance import COV_ESTIMATORS, CovarianceEstimator, normalise_cov_type
from .exact import EXACT_CORE_LIMIT, ExactCore, KroneckerCore, core_sizes
from .factors import CHUNK_BYTES, DesignFactors  # noqa: F401  (re-exported)
from .lanczos import (  # noqa: F401  (re-exported)
    CONV_FACTOR,
    EIGEN_MAX_RANK,
    EIGEN_TOL,
    FAILURE_PROBABILITY,
    SOLVE_BATCH,
    SOLVE_RTOL,
    EigenCorrectionInfo,
    LanczosCorrection,
    SolveInfo,
    check_options,
    norm_bound,
)

__all__ = ["GLSCovariance", "DesignFactors", "ExactCore", "KroneckerCore", "LanczosCorrection",
           "CovarianceStrategy", "EXACT_CORE_LIMIT", "EXACT_AUTO_FLOPS", "EigenCorrectionInfo",
           "SolveInfo", "SEOptions", "se_options", "SE_METHODS", "DEFAULT_SE_TOL",
           "choose_method", "variance_tol"]

#: ``"auto"`` takes the exact strategy whenever its predicted flops are below
#: this (about 0.2-0.5 s on one core), or below the Lanczos strategy's.
EXACT_AUTO_FLOPS = 1e10
#: Vectors a Lanczos basis plus certificate typically needs (the cost model of "auto").
LANCZOS_VECTORS = 100
#: The values of ``se_method``.
SE_METHODS = ("auto", "exact", "lanczos")
#: Default ``se_tol``: every model-based standard error within 0.1 % (Lanczos).
DEFAULT_SE_TOL = 1e-3


@dataclass(frozen=True)
class SEOptions:
    """How the coefficient covariance is computed (validated by :func:`se_options`).

    Attributes
    ----------
    method : {"auto", "exact", "lanczos"}
        The strategy (module docstring).
    tol : float
        Lanczos only: bound on the relative error of every model-based
        variance, ``(1 + se_tol)^2 - 1`` (:func:`variance_tol`).
    verbose : bool
        Show progress of the computation (it is always logged).
    """

    method: str = "auto"
    tol: float = EIGEN_TOL
    verbose: bool = False


def se_options(se_method: Any = "auto", se_tol: Any = None, se_verbose: Any = False
               ) -> SEOptions:
    """The standard-error options of :meth:`alsgls.SUR.fit`, validated once.

    Parameters
    ----------
    se_method : {"auto", "exact", "lanczos"}, default "auto"
        ``"exact"``: a dense core of side ``min(N k, P)`` (exact to rounding);
        ``"lanczos"``: the truncated eigen-correction with a certified bound;
        ``"auto"``: exact when it is cheap, else Lanczos.
    se_tol : float, optional
        Lanczos only: bound on the relative error ``(se_exact - se) / se`` of
        every model-based standard error, in (0, 0.4); default
        ``DEFAULT_SE_TOL`` (0.1 %).  The variances are then within
        ``(1 + se_tol)^2 - 1``.  Ignored by the exact strategies.
    se_verbose : bool, default False
        Show the progress of standard-error computations (a tqdm bar when
        tqdm is installed, else lines on stderr); they are always logged to the
        ``"alsgls"`` logger.

    Returns
    -------
    SEOptions

    Raises
    ------
    TypeError, ValueError
        Naming the option.
    """
    if not isinstance(se_method, str) or se_method not in SE_METHODS:
        raise ValueError(f"se_method must be one of {SE_METHODS}, got {se_method!r}")
    se_tol = DEFAULT_SE_TOL if se_tol is None else check_real("se_tol", se_tol, upper=0.4)
    if not isinstance(se_verbose, (bool, np.bool_)):
        raise TypeError(f"se_verbose must be True or False, got {se_verbose!r}")
    return SEOptions(se_method, variance_tol(se_tol), bool(se_verbose))


def variance_tol(se_tol: float) -> float:
    """The relative variance bound ``(1 + se_tol)^2 - 1`` that keeps every
    standard error within ``se_tol`` (computed variances never exceed the exact)."""
    return (1.0 + se_tol) ** 2 - 1.0


class CovarianceStrategy(Protocol):
    """How ``A^-1`` is applied: :class:`ExactCore`, :class:`KroneckerCore` or
    :class:`LanczosCorrection`.

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
    progress : callable or None
        Called with a message after each step of a long computation.
    """

    method: str
    truncation_bound: float
    variance_bounds: np.ndarray
    eigen_info: EigenCorrectionInfo | None
    solve_info: SolveInfo | None
    progress: Callable[[str], None] | None

    def diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks ``(A^-1)_jj`` (K, pmax, pmax)."""
        ...

    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` for Z (K, pmax, m) -> (K, pmax, m)."""
        ...


def choose_method(f: DesignFactors, method: str) -> str:
    """The strategy ``method`` selects for these factors (``"exact"`` or
    ``"lanczos"``); no factors or a shared design are always exact."""
    if f.k == 0 or f.shared or method != "auto":
        return "exact" if f.k == 0 or f.shared else method
    nk, n = core_sizes(f)
    if min(nk, n) > EXACT_CORE_LIMIT:
        return "lanczos"
    exact = 4.0 * nk * n * n + n ** 3 if n <= nk else 3.0 * nk * nk * n + nk ** 3 / 3.0
    lanczos = 4.0 * LANCZOS_VECTORS * nk * int(f.mask.sum())
    return "exact" if exact <= max(EXACT_AUTO_FLOPS, lanczos) else "lanczos"


class GLSCovariance:
    """Covariance of the GLS coefficients without forming the P x P matrix.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        Zero-padded designs (``Problem.X`` of :mod:`alsgls.core.problem`).
    p : ndarray of int, shape (K,)
        Number of regressors of each equation.
    cov : LowRankCovariance
        The estimated ``Sigma = F F' + diag(D)``.
    Rt : ndarray, shape (K, N), optional
        Residuals at the estimate; needed only for the sandwich covariances.
    mask : ndarray of bool, shape (N, K), optional
        Observation mask, True where ``Y[i, j]`` is observed (the layout of
        ``Y``).  Entries of ``X`` and ``Rt`` where it is False are ignored (they
        may be NaN).  None: everything observed.
    weights : ndarray, shape (N,), optional
        Non-negative row weights ``w_i`` multiplying each row's log-likelihood
        (use them as the fit did, e.g. rescaled to mean 1).  None: unit weights.
    method : {"auto", "exact", "lanczos"}, default "auto"
        The strategy (module docstring; ``se_method`` of :meth:`SUR.fit`).
        ``"exact"`` raises ``MemoryError`` beyond ``EXACT_CORE_LIMIT``.  With
        no factors or one shared design the exact closed forms are used
        whatever is asked.
    tol : float, default EIGEN_TOL
        Lanczos only: bound on the relative error of every model-based variance
        (``se_tol`` of :meth:`SUR.fit` is the bound on standard errors,
        :func:`variance_tol` converts).
    max_rank : int, default EIGEN_MAX_RANK
        Lanczos only: cap on the number of eigenpairs ``r``.
    rtol : float, default SOLVE_RTOL
        Lanczos only: relative residual of the PCG solves with ``A``.
    seed : int, default 0
        Lanczos only: seed of the random start vectors.
    restriction : LinearRestriction or ndarray (K, pmax, m), optional
        Linear restrictions ``R beta = q`` the estimate satisfies (a
        :class:`~alsgls.core.restriction.LinearRestriction`, or ``R'`` in the
        padded layout): :meth:`solve`, :meth:`bread` and :meth:`diagonal_blocks`
        then apply the restricted bread ``A^-1 - W S^-1 W'``, ``W = A^-1 R'``,
        ``S = R W`` (m solves with ``A``, never P x P), and so does every
        estimator built on this covariance.
    verbose : bool, default False
        Show the progress of long computations (always logged to ``"alsgls"``;
        :mod:`alsgls.stats._progress`).

    Attributes
    ----------
    factors : DesignFactors
        The per-equation factors (``T``, the operators ``V``, ``V'`` and ``M``).
    strategy : ExactCore, KroneckerCore or LanczosCorrection
        What applies ``A^-1``.
    method : str
        The method in use, ``"exact"`` or ``"lanczos"``.
    truncation_bound : float
        Bound on the relative error of every model-based variance (0 when exact).
    variance_bounds : ndarray, shape (K, pmax)
        The same bound per coefficient.
    eigen_info : EigenCorrectionInfo or None
        Rank, eigenvalues, certified tail bound and cost of the eigen-correction.
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
                 rtol: float = SOLVE_RTOL, seed: int = 0, restriction: Any = None,
                 verbose: bool = False) -> None:
        f = self.factors = DesignFactors(X, p, cov, mask=mask, weights=weights)
        self.X, self.p, self.cov, self.obs, self.mask = f.X, f.p, f.cov, f.obs, f.mask
        self.Rt = None if Rt is None else f.weight_rows(Rt)
        self.K, self.N, self.pmax, self.k = f.K, f.N, f.pmax, f.k
        if method not in SE_METHODS:
            raise ValueError(f"method must be 'auto', 'exact' or 'lanczos', got {method!r}")
        self.tol, self.max_rank, self.rtol = check_options(tol, max_rank, rtol)
        self.seed, self.verbose = seed, bool(verbose)
        self._estimators: dict[tuple, CovarianceEstimator] = {}
        chosen = choose_method(f, method)
        if f.shared and f.k > 0:
            self.strategy: Any = KroneckerCore(f)
        elif chosen == "exact":
            self.strategy = ExactCore(f, limit=EXACT_CORE_LIMIT)
        else:
            self.strategy = LanczosCorrection(f, self.tol, self.max_rank, self.rtol, seed)
        self.restriction = restriction
        self._restriction_Rt = self._restriction_rt(restriction)

    @classmethod
    def from_problem(cls, problem: Any, cov: LowRankCovariance,
                     Rt: np.ndarray | None = None, **options: Any) -> GLSCovariance:
        """The covariance for a problem record (``alsgls.core.problem``).

        Parameters
        ----------
        problem : object
            With ``X`` (K, N, pmax; zero where missing), ``p`` (K,), ``O``
            ((K, N) float 1.0 observed / 0.0 missing, or None when nothing is
            missing) and ``w`` ((N,) row weights or None).
        cov : LowRankCovariance
        Rt : ndarray, shape (K, N), optional
            Residuals, for the sandwich covariances.
        **options
            ``method``, ``tol``, ``max_rank``, ``rtol``, ``seed``,
            ``restriction``, ``verbose`` as in the constructor.

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
        self._computed()
        return self.strategy.truncation_bound

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds (K, pmax); zeros when exact."""
        self._computed()
        return self.strategy.variance_bounds

    @property
    def eigen_info(self) -> EigenCorrectionInfo | None:
        """Diagnostics of the eigen-correction (None with the exact method)."""
        self._computed()
        return self.strategy.eigen_info

    def _computed(self) -> None:
        """Build the eigen-correction (Lanczos) with progress and logging, once."""
        if self.method == "lanczos":
            _ = self._strategy_blocks

    @cached_property
    def _strategy_blocks(self) -> np.ndarray:
        """The strategy's (unrestricted) diagonal blocks, computed once with progress."""
        return self._run("standard errors", self.strategy.diagonal_blocks)

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

    def _run(self, what: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` with progress steps shown (``verbose``) and logged."""
        label = f"{what} ({self.method}, K={self.K}, N={self.N}, k={self.k})"
        progress = Progress(label, self.verbose)
        self.strategy.progress = progress
        try:
            out = compute()
        finally:
            self.strategy.progress = None
        info = self.strategy.eigen_info
        progress.done("done" if info is None else
                      f"Krylov basis {info.subspace_dim}, {info.n_matvecs} products with M, "
                      f"relative variance bound {info.bound:.2g}")
        return out

    def row_solve(self, U: np.ndarray) -> np.ndarray:
        """``Sigma_{O_i}^-1 u_{i,O}`` for every row, zero where unobserved: U (K, N) -> (K, N).

        With no mask this is ``Sigma^-1 U``.
        """
        return self.factors.row_solve(U)

    def solve(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` for Z (K, pmax) or (K, pmax, m), padded layout; under a
        restriction the restricted bread ``(A^-1 - W S^-1 W') Z``.

        Exact (direct) with the exact strategies; with ``method="lanczos"``
        deflated PCG to relative residual ``rtol``.
        """
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 2:
            return self.solve(Z[:, :, None])[:, :, 0]
        return self._restrict(self.strategy.solve(Z))

    def bread(self, Z: np.ndarray) -> np.ndarray:
        """``A^-1 Z`` as the sandwich estimators apply it to the ``N`` scores, for Z
        (K, pmax, m).

        With the exact strategies this is :meth:`solve`.  With Lanczos it is the
        Galerkin operator of the eigen-correction (one product with ``M`` for
        all columns, in batches), below ``A^-1`` by at most
        :attr:`bread_error` in the whitened coordinates; its effect on the
        robust standard errors is bounded by :attr:`robust_se_bounds`.
        """
        Z = np.asarray(Z, dtype=np.float64)
        if not hasattr(self.strategy, "galerkin_solve"):
            return self.solve(Z)
        return self._galerkin_columns(Z.shape[2], lambda bs: np.array(Z[:, :, bs]))

    def score_bread(self, U: np.ndarray) -> np.ndarray:
        """:meth:`bread` of the ``N`` scores ``Gamma'[j, a, i] = X[j, i, a] U[j, i]``
        (``U`` (K, N) the row-solved residuals), each batch of scores built
        as it is solved: the (K, pmax, N) scores are never held."""
        if not hasattr(self.strategy, "galerkin_solve"):
            Z = np.empty((self.K, self.pmax, self.N))
            return self.bread(np.multiply(self.X.transpose(0, 2, 1), U[:, None, :], out=Z))
        Xt = self.X.transpose(0, 2, 1)
        return self._galerkin_columns(self.N, lambda bs: Xt[:, :, bs] * U[:, None, bs])

    def _galerkin_columns(self, m: int, columns: Callable[[slice], np.ndarray]) -> np.ndarray:
        """The Galerkin operator applied to ``m`` columns ``columns(batch)`` (a new
        array each call), batch by batch (:meth:`LanczosCorrection.galerkin_columns`)."""
        self._computed()                            # the basis (and its certificate)
        return self._restrict(self._run(
            "sandwich bread", lambda: self.strategy.galerkin_columns(m, columns)))

    @property
    def bread_error(self) -> float:
        """``beta``: ``0 <= (I - M)^-1 - G <= beta I`` for the operator ``G`` that
        :meth:`bread` applies in the whitened coordinates (0 when exact)."""
        self._computed()
        return getattr(self.strategy, "galerkin_error", 0.0)

    def _restrict(self, out: np.ndarray) -> np.ndarray:
        """``out - W S^-1 R out``: the restricted bread applied after ``A^-1``."""
        if self._restriction_Rt is not None:     # C_r Z = A^-1 Z - W S^-1 R A^-1 Z
            W, L = self._restricted_core
            lam = solve_triangular(L, np.einsum("kpm,kpn->mn", self._restriction_Rt, out),
                                   lower=True)
            out = out - W @ solve_triangular(L, lam, lower=True, trans="T")
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
        blocks = self._strategy_blocks
        if self._restriction_Rt is not None:
            W, L = self._restricted_core
            Ws = solve_triangular(L, W.reshape(-1, W.shape[2]).T, lower=True).T
            Ws = Ws.reshape(W.shape)
            blocks = blocks - np.einsum("kam,kbm->kab", Ws, Ws)
        return blocks

    @cached_property
    def robust_se_bounds(self) -> np.ndarray:
        """Bound on ``|se_exact - se| / se`` of every robust (White) standard error
        (K, pmax); zeros when exact.

        With Lanczos the solved scores come from :meth:`bread`; for a
        coefficient ``a`` the error of its robust standard error is at most
        ``sqrt(beta e_a) |Y|`` with ``beta`` = :attr:`bread_error`, ``e_a`` the
        bound on its model-based variance error and ``Y = T' Gamma'`` the
        whitened scores (``|Y|`` bounded like ``lam_perp``, by a certified
        Lanczos estimate; together the bound fails with probability at most
        ``2 FAILURE_PROBABILITY``).  NaN under a restriction (not derived there).
        """
        if self.bread_error == 0.0:
            return np.zeros((self.K, self.pmax))
        if self._restriction_Rt is not None:            # not derived for the restricted bread
            return np.full((self.K, self.pmax), np.nan)
        rob = self.estimator("robust")
        Yw = self.factors.apply_Tt(rob.scores)                     # (K, pmax, N)
        norm = norm_bound(Yw.reshape(-1, Yw.shape[2]), self.seed)
        var = np.einsum("jaa->ja", self._strategy_blocks)
        e = self.variance_bounds * var
        se = np.sqrt(np.einsum("jaa->ja", rob.diagonal_blocks))
        return np.where(self.mask, np.sqrt(self.bread_error * e) * norm
                        / np.where(se > 0, se, 1.0), 0.0)

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
        (one solve per contrast); ``robust=True``: the sandwich.  The
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
