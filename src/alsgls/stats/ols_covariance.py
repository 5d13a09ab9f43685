"""Covariance of equation-by-equation OLS coefficients (``method="ols"``).

The OLS estimate of equation ``j`` is ``b_j = (X_j'X_j)^-1 X_j' y_j``; with
errors ``Cov(e_ti, e_tj) = sigma_ij`` the covariance of the stacked estimate is
the sandwich with bread ``A^-1 = blockdiag(X_j'X_j)^-1`` and middle
``X'(Sigma (x) I_N)X``::

    Cov(b_i, b_j) = sigma_ij (X_i'X_i)^-1 X_i'X_j (X_j'X_j)^-1,

the full cross-equation covariance linearmodels reports for ``method="ols"``
(its ``HomoskedasticCovariance`` with ``gls=False``).  For contrasts ``L``
(padded (K, pmax, m)) with ``Z_i = X_i (X_i'X_i)^-1 L_i`` (N, m) and
``Sigma = F F' + diag(D)``::

    L' Cov L = sum_ij sigma_ij Z_i'Z_j = sum_i D_i Z_i'Z_i + sum_l Y_l'Y_l,
    Y_l = sum_i F_il Z_i,

computed over chunks of equations in ``O(K N p m + K N k m)`` -- never K x K
or P x P.  The diagonal blocks are ``sigma_jj (X_j'X_j)^-1``.

:class:`OLSCovariance` offers the interface the estimators of
:mod:`alsgls.stats.covariance` use (``X``, ``Rt``, ``solve``, ``row_solve``,
``diagonal_blocks``, ``estimator``), with ``solve`` the OLS bread and
``row_solve`` the identity, so the scores are ``X_t' r_t`` and the robust,
kernel and clustered sandwiches ``(X'X)^-1 (Gamma' Omega Gamma) (X'X)^-1``
run unchanged.  Missing responses and row weights enter as in
:class:`~alsgls.stats.inference.GLSCovariance`: unobserved entries of ``X``
and ``Rt`` are zeroed and rows scaled by ``sqrt(w_i)`` (weighted least squares
per equation).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from .._threads import single_blas_thread
from ..core.ops import LowRankCovariance, triangular_inverse
from .covariance import (
    COV_ESTIMATORS,
    CovarianceConfig,
    CovarianceEstimator,
    ModelBased,
    normalise_cov_type,
)
from .factors import CHUNK_BYTES, DesignFactors

__all__ = ["OLSCovariance", "OLSModelBased"]


class OLSModelBased(ModelBased):
    """Model-based covariance of OLS coefficients with cross-equation error
    covariance ``Sigma`` (``cov_type="unadjusted"`` for ``method="ols"``).

    ``Cov = A^-1 X'(Sigma (x) I)X A^-1`` with ``A = blockdiag(X_j'X_j)``; see
    :mod:`alsgls.stats.ols_covariance`.

    Parameters
    ----------
    gls : OLSCovariance
    config : CovarianceConfig, optional
        Not used (no options).

    Notes
    -----
    linearmodels' ``debiased=True`` scales ``Sigma`` by
    ``N / sqrt((N - p_i)(N - p_j))``, the same as the results' per-equation
    ``sqrt(N / (N - p_j))`` factor on both sides (``variance_scale = 1``), so
    ``Sigma`` here is the divisor-``N`` residual covariance.
    """

    name = "unadjusted"

    @single_blas_thread
    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """``sum_ij sigma_ij Z_i'Z_j`` (m, m), ``Z_i = X_i (X_i'X_i)^-1 L_i``, for
        ``L`` (K, pmax, m) in padded layout."""
        gls = self.gls
        B = gls.solve(L)
        K, N, _ = gls.X.shape
        m = B.shape[2]
        F, D = gls.cov.F, gls.cov.D
        out = np.zeros((m, m))
        Y = np.zeros((F.shape[1], N, m))
        step = max(1, CHUNK_BYTES // (8 * N * max(m, 1)))
        for a in range(0, K, step):
            sl = slice(a, min(a + step, K))
            Z = np.einsum("knp,kpm->knm", gls.X[sl], B[sl])
            out += np.einsum("k,knm,knl->ml", D[sl], Z, Z)
            if F.shape[1]:
                Y += np.einsum("kl,knm->lnm", F[sl], Z)
        if F.shape[1]:
            out += np.einsum("lnm,lnq->mq", Y, Y)
        return 0.5 * (out + out.T)


class OLSCovariance:
    """The coefficient covariance of equation-by-equation OLS, matrix-free.

    Parameters
    ----------
    X : ndarray, shape (K, N, pmax)
        Zero-padded designs; entries where ``mask`` is False are ignored.
    p : ndarray of int, shape (K,)
        Number of regressors of each equation.
    sigma : LowRankCovariance
        The error covariance ``Sigma = F F' + diag(D)`` of the model-based
        covariance (at full rank, e.g. ``k = K - 1`` with ``D`` the smallest
        eigenvalue; the divisor-``N`` residual covariance for linearmodels'
        numbers).
    Rt : ndarray, shape (K, N), optional
        OLS residuals; needed by the sandwich estimators.
    mask : ndarray of bool, shape (N, K), optional
        True where ``Y[i, j]`` is observed.  None: everything observed.
    weights : ndarray, shape (N,), optional
        Non-negative row weights (weighted least squares per equation).

    Attributes
    ----------
    X : ndarray, shape (K, N, pmax)
        Designs with unobserved entries zeroed and rows scaled by ``sqrt(w_i)``.
    Rt : ndarray, shape (K, N), or None
        Residuals, treated the same way.
    cov : LowRankCovariance
        ``Sigma``.
    p, obs, mask, K, N, pmax, k
        As :class:`~alsgls.stats.inference.GLSCovariance` (``k`` is Sigma's rank).
    method : str
        ``"exact"``: every operation is a direct per-equation solve.
    truncation_bound : float
        0.
    eigen_info, solve_info, row_core_inverse : None
    """

    method = "exact"
    truncation_bound = 0.0
    eigen_info = None
    solve_info = None
    row_core_inverse = None

    def __init__(self, X: np.ndarray, p: np.ndarray, sigma: LowRankCovariance,
                 Rt: np.ndarray | None = None, *, mask: np.ndarray | None = None,
                 weights: np.ndarray | None = None, restriction: Any = None) -> None:
        if not isinstance(sigma, LowRankCovariance):
            raise TypeError(f"sigma must be a LowRankCovariance, got {type(sigma).__name__}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 3 or sigma.K != X.shape[0]:
            raise ValueError(f"X must be (K, N, pmax) with K = sigma.K = {sigma.K}, "
                             f"got shape {X.shape}")
        f = DesignFactors(X, p, sigma, mask=mask, weights=weights)   # masking and weights
        self.X, self.p, self.cov, self.obs, self.mask = f.X, f.p, f.cov, f.obs, f.mask
        self.Rt = None if Rt is None else f.weight_rows(np.asarray(Rt, dtype=np.float64))
        self.K, self.N, self.pmax, self.k = f.K, f.N, f.pmax, f.k
        self._estimators: dict[tuple, CovarianceEstimator] = {}
        self.restriction = restriction
        self._restriction_Rt = None if restriction is None else np.asarray(
            getattr(restriction, "Rt", restriction), dtype=np.float64)
        if self._restriction_Rt is not None and self._restriction_Rt.shape[:2] != (
                self.K, self.pmax):
            raise ValueError("restriction must be a LinearRestriction or R' as (K, pmax, m) "
                             f"= ({self.K}, {self.pmax}, m), got "
                             f"{self._restriction_Rt.shape}")

    @classmethod
    def from_problem(cls, problem: Any, sigma: LowRankCovariance,
                     Rt: np.ndarray | None = None, restriction: Any = None) -> OLSCovariance:
        """The covariance for a problem record (``alsgls.core.problem``).

        Parameters
        ----------
        problem : object
            With ``X`` (K, N, pmax), ``p`` (K,), ``O`` ((K, N) 1.0 observed /
            0.0 missing, or None) and ``w`` ((N,) or None).
        sigma : LowRankCovariance
        Rt : ndarray, shape (K, N), optional
        restriction : LinearRestriction, optional
            Restrictions ``R beta = q`` of restricted least squares.

        Returns
        -------
        OLSCovariance
        """
        mask = None if problem.O is None else np.asarray(problem.O).T > 0
        return cls(problem.X, problem.p, sigma, Rt, mask=mask, weights=problem.w,
                   restriction=restriction)

    @property
    def sigma(self) -> LowRankCovariance:
        """``Sigma`` (alias of ``cov``)."""
        return self.cov

    @property
    def variance_bounds(self) -> np.ndarray:
        """Per-coefficient relative variance error bounds: zeros (K, pmax)."""
        return np.zeros((self.K, self.pmax))

    @cached_property
    def _rinv(self) -> np.ndarray:
        """``R_j^-1`` (K, pmax, pmax) of the thin QR ``X_j = Q_j R_j``, padding zero,
        so ``(X_j'X_j)^-1 = R_j^-1 R_j^-T``."""
        R = np.linalg.qr(self.X, mode="r")
        both = self.mask[:, :, None] & self.mask[:, None, :]
        R = R * both
        R[:, np.arange(self.pmax), np.arange(self.pmax)] += ~self.mask     # unit padding
        return triangular_inverse(R) * both

    @cached_property
    def gram_inverse(self) -> np.ndarray:
        """``(X_j'X_j)^-1`` (K, pmax, pmax), padding zero."""
        Ri = self._rinv
        return np.einsum("kab,kcb->kac", Ri, Ri)

    def _gram_solve(self, Z: np.ndarray) -> np.ndarray:
        """``blockdiag(X_j'X_j)^-1 Z`` for Z (K, pmax, m)."""
        Ri = self._rinv
        return np.einsum("kab,kbm->kam", Ri, np.einsum("kba,kbm->kam", Ri, Z))

    def solve(self, Z: np.ndarray) -> np.ndarray:
        """The bread applied to Z (K, pmax) or (K, pmax, m), padded layout:
        ``B Z`` with ``B = blockdiag(X_j'X_j)^-1``, or under restrictions the
        restricted bread ``(B - W S^-1 W') Z``, ``W = B R'``, ``S = R W``."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim == 2:
            return self.solve(Z[:, :, None])[:, :, 0]
        out = self._gram_solve(Z)
        if self._restriction_Rt is not None:
            W, Sinv = self._restricted_core
            lam = Sinv @ np.einsum("kqn,kql->nl", self._restriction_Rt, out)
            out = out - np.einsum("kpm,ml->kpl", W, lam)
        return out

    @cached_property
    def _restricted_core(self) -> tuple[np.ndarray, np.ndarray]:
        """``W = B R'`` (K, pmax, m) and ``S^-1 = (R B R')^-1`` (m, m)."""
        W = self._gram_solve(self._restriction_Rt)
        S = np.einsum("kpm,kpn->mn", self._restriction_Rt, W)
        return W, np.linalg.inv(0.5 * (S + S.T))

    def _sigma_apply(self, W: np.ndarray) -> np.ndarray:
        """``X'(Sigma (x) I)X W`` (K, pmax, m) for W (K, pmax, m), matrix-free."""
        F, D = self.cov.F, self.cov.D
        Z = np.einsum("knp,kpm->knm", self.X, W)
        E = D[:, None, None] * Z
        if F.shape[1]:
            E += np.einsum("kl,lnm->knm", F, np.einsum("kl,knm->lnm", F, Z))
        return np.einsum("knp,knm->kpm", self.X, E)

    def row_solve(self, U: np.ndarray) -> np.ndarray:
        """The identity, zero where unobserved: the OLS scores are ``X_t' r_t``."""
        return U if self.obs is None else np.where(self.obs, U, 0.0)

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """``blockdiag(X_j'X_j) v`` for v (K, pmax) (for checks)."""
        return np.einsum("knp,kn->kp", self.X, np.einsum("knp,kp->kn", self.X, V))

    @cached_property
    def diagonal_blocks(self) -> np.ndarray:
        """Model-based ``Cov(b_j) = sigma_jj (X_j'X_j)^-1`` (K, pmax, pmax).

        Under restrictions, the blocks of ``C M C`` with the restricted bread
        ``C = B - W G W'`` (``G = S^-1``) and ``M = X'(Sigma (x) I)X``:
        ``sigma_jj B_j - B_j U_j G W_j' - W_j G U_j' B_j + W_j G (W'U) G W_j'``
        with ``U = M W`` (m products with M, never P x P).
        """
        base = self.cov.diagonal[:, None, None] * self.gram_inverse
        if self._restriction_Rt is None:
            return base
        W, G = self._restricted_core
        U = self._sigma_apply(W)
        BU = self._gram_solve(U)
        cross = np.einsum("kpm,mn,kqn->kpq", BU, G, W)
        WtU = np.einsum("kpm,kpn->mn", W, U)
        GWUG = G @ (0.5 * (WtU + WtU.T)) @ G
        return base - cross - np.transpose(cross, (0, 2, 1)) + np.einsum(
            "kpm,mn,kqn->kpq", W, GWUG, W)

    def estimator(self, cov_type: str, config: CovarianceConfig | None = None
                  ) -> CovarianceEstimator:
        """The estimator of ``cov_type`` on this covariance, built once per
        ``(cov_type, config)``: :class:`OLSModelBased` for ``"unadjusted"``, the
        classes of :data:`alsgls.stats.covariance.COV_ESTIMATORS` otherwise.

        Parameters
        ----------
        cov_type : str
        config : CovarianceConfig, optional

        Returns
        -------
        CovarianceEstimator
        """
        name = normalise_cov_type(cov_type)
        key = (name, config)
        if key not in self._estimators:
            cls = OLSModelBased if name == "unadjusted" else COV_ESTIMATORS[name]
            self._estimators[key] = cls(self) if config is None else cls(self, config)
        return self._estimators[key]

    @property
    def scores(self) -> np.ndarray:
        """Per-row OLS scores ``w_i x_ij r_ij`` (K, pmax, N)."""
        return self.estimator("robust").scores

    @property
    def robust_diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks of the robust sandwich (K, pmax, pmax)."""
        return self.estimator("robust").diagonal_blocks

    def contrast_cov(self, Lmat: np.ndarray, robust: bool = False) -> np.ndarray:
        """Covariance ``L' Cov L`` (m x m) of contrasts, model-based or robust."""
        return self.estimator("robust" if robust else "unadjusted").contrast_cov(Lmat)
