"""Two-step FGLS, GLS with a given Sigma, and equation-by-equation OLS.

The estimators linearmodels' ``SUR.fit()``, Stata's ``sureg`` and systemfit's
``method="SUR"`` compute by default, beside the maximum-likelihood fit of
:mod:`alsgls.core.dispatch`:

``"ols"``
    Equation-by-equation least squares (with restrictions: restricted
    least squares on the stacked system with ``Sigma = I``).  ``Sigma`` is
    estimated from its residuals, for the covariance of the estimates.
``"twostep"``
    ``Sigma`` from the OLS residuals, then one exact GLS solve with it.  At
    full rank (``k = K - 1``) ``Sigma`` is the residual covariance
    ``S = R R' / N``; at a lower rank it is the maximum-likelihood factor
    analysis ``F F' + diag(D)`` of the OLS residuals (the factor steps of
    the ALS core with beta held at the OLS estimate).
``sigma=`` given
    One GLS solve with that ``Sigma`` (dense ``K x K``, ``(F, D)`` or a
    :class:`~alsgls.core.ops.LowRankCovariance`).

``sigma_divisor="dfk"`` replaces the divisor ``N`` of the estimated ``Sigma``
by ``sqrt((N - p_i)(N - p_j))`` (Stata's ``dfk``, systemfit's default
``"geomean"``, linearmodels' ``debiased=True``); with ``Sigma = F F' + diag(D)``
that is ``F -> s F``, ``D -> s^2 D`` with ``s_j = sqrt(N / (N - p_j))``, so
the low-rank structure is kept exactly.

Row weights run on the ``sqrt(w)``-scaled rows (linearmodels' weighted SUR).
These estimators need complete responses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._threads import blas_threads
from .fit_result import GLSFit
from .ops import LowRankCovariance, design_matvec
from .options import SolverOptions
from .problem import Problem, as_float_matrix, check_fit_rank

__all__ = ["fit_fgls", "ESTIMATORS", "SIGMA_DIVISORS", "full_rank_covariance",
           "check_sigma", "check_sigma_divisor", "estimate_sigma"]

#: Values of ``method`` handled here (``"ml"`` is :func:`alsgls.core.dispatch.fit_problem`).
ESTIMATORS = ("twostep", "ols")
#: Divisors of the estimated Sigma (``"geomean"`` is systemfit's name for ``"dfk"``).
SIGMA_DIVISORS = {"n": "n", "dfk": "dfk", "geomean": "dfk"}
#: Smallest eigenvalue of the residual correlation matrix, relative to the
#: largest, below which the estimated Sigma counts as singular.
SINGULAR_RTOL = 1e-12


def check_sigma_divisor(sigma_divisor: Any) -> str:
    """The canonical divisor name; ``ValueError`` naming ``sigma_divisor`` otherwise."""
    key = str(sigma_divisor).lower() if isinstance(sigma_divisor, str) else None
    if key not in SIGMA_DIVISORS:
        raise ValueError(f"sigma_divisor must be one of {sorted(SIGMA_DIVISORS)}, "
                         f"got {sigma_divisor!r}")
    return SIGMA_DIVISORS[key]


def full_rank_covariance(S: np.ndarray, what: str = "Sigma") -> LowRankCovariance:
    """An exact ``F F' + diag(D)`` form (k = K - 1) of a positive-definite ``S`` (K x K).

    ``D_j = t S_jj`` with ``t`` the smallest eigenvalue of the correlation
    matrix ``C`` of ``S``, so ``S - diag(D)`` is positive semidefinite of rank
    ``K - 1`` and ``F = diag(S)^1/2 V (Lambda - t)^1/2`` from the other
    eigenpairs of ``C`` (scale-invariant per equation).

    Raises
    ------
    ValueError
        When ``S`` is not symmetric positive definite (naming ``what``).
    """
    K = S.shape[0]
    d = np.diag(S)
    if not np.all(d > 0) or not np.all(np.isfinite(S)):
        raise ValueError(f"{what} must be finite with a positive diagonal")
    if not np.allclose(S, S.T, rtol=1e-10, atol=0.0):
        raise ValueError(f"{what} must be symmetric")
    s = np.sqrt(d)
    lam, V = np.linalg.eigh(S / np.outer(s, s))
    if lam[0] <= SINGULAR_RTOL * lam[-1]:
        raise ValueError(f"{what} is singular or not positive definite (smallest eigenvalue "
                         f"of its correlation matrix {lam[0]:.3g}); GLS needs a "
                         "positive-definite Sigma")
    t = lam[0]
    F = s[:, None] * V[:, 1:] * np.sqrt(np.maximum(lam[1:] - t, 0.0))
    if K == 1:
        return LowRankCovariance(np.zeros((1, 0)), d.copy())
    return LowRankCovariance(F, t * d)


def check_sigma(sigma: Any, K: int) -> LowRankCovariance:
    """A user's fixed Sigma as a :class:`LowRankCovariance`.

    Parameters
    ----------
    sigma : ndarray or DataFrame (K, K), tuple (F, D), or LowRankCovariance

    Raises
    ------
    ValueError, TypeError
        Naming ``sigma`` for a wrong shape, a non-positive-definite matrix or
        non-positive ``D``.
    """
    if isinstance(sigma, LowRankCovariance):
        cov = sigma
    elif isinstance(sigma, tuple):
        if len(sigma) != 2:
            raise TypeError("sigma as a tuple must be (F, D): loadings (K, k) and "
                            f"noise variances (K,); got {len(sigma)} items")
        F = as_float_matrix(sigma[0], "sigma F", 2)
        D = np.asarray(sigma[1], dtype=np.float64)
        if D.ndim != 1 or D.shape[0] != K or F.shape[0] != K:
            raise ValueError(f"sigma=(F, D) needs F (K, k) and D (K,) with K={K}; got "
                             f"{F.shape} and {D.shape}")
        if not np.all(np.isfinite(D)) or not np.all(D > 0):
            raise ValueError("sigma=(F, D): D must be finite and strictly positive")
        cov = LowRankCovariance(F, D)
    else:
        S = as_float_matrix(sigma, "sigma", 2)
        if S.shape != (K, K):
            raise ValueError(f"sigma must be (K, K) = ({K}, {K}), got {S.shape}")
        return full_rank_covariance(S, "sigma")
    if cov.K != K:
        raise ValueError(f"sigma has K={cov.K} equations, the model K={K}")
    return cov


def _divisor_scale(problem: Problem, divisor: str) -> np.ndarray:
    """Per-equation ``s_j``: Sigma_ij is multiplied by ``s_i s_j``."""
    if divisor == "n":
        return np.ones(problem.K)
    N = problem.N
    return np.sqrt(N / (N - problem.p))


def estimate_sigma(Rt: np.ndarray, k: int, options: SolverOptions) -> LowRankCovariance:
    """Sigma of the rank-k model maximising the likelihood of fixed residuals
    ``Rt`` (K, N): ``diag(R R') / N`` at k = 0, ``R R' / N`` at full rank, else
    the ML factor analysis of the residuals (:func:`alsgls.core.als.factor_analysis`,
    the ALS factor steps with beta held fixed)."""
    K, N = Rt.shape
    if k == 0:
        return LowRankCovariance(np.zeros((K, 0)), np.einsum("kn,kn->k", Rt, Rt) / N)
    if k == K - 1:
        return full_rank_covariance(Rt @ Rt.T / N, "the residual covariance")
    from .als import factor_analysis

    F, D = factor_analysis(Rt, k, options)
    return LowRankCovariance(F, D)


def fit_fgls(problem: Problem, k: int, options: SolverOptions, *, method: str,
             sigma: Any = None, sigma_divisor: str = "n", restriction: Any = None
             ) -> tuple[GLSFit, np.ndarray]:
    """Two-step FGLS, GLS with a fixed Sigma, or OLS (see the module docstring).

    Parameters
    ----------
    problem : Problem
        Validated, complete responses.
    k : int
        Rank of the estimated Sigma (``K - 1``: unrestricted).
    options : SolverOptions
    method : {"twostep", "ols"}
    sigma : optional
        A fixed Sigma (:func:`check_sigma`); only with ``"twostep"``.
    sigma_divisor : {"n", "dfk"}
    restriction : LinearRestriction, optional
        ``R beta = q`` imposed on every step.

    Returns
    -------
    fit : GLSFit
        ``F``, ``D`` of the Sigma used in the GLS weights (``"ols"``: the Sigma
        of its residuals); ``nll_trace`` holds the NLL per row at the returned
        beta with Sigma profiled out in the rank-k model (the log-likelihood
        systemfit reports, and a lower bound on what ML attains).
    Rt : ndarray, shape (K, N)
        Residuals of the (unscaled) problem.

    Raises
    ------
    ValueError
        For missing responses, an unknown method, or a singular Sigma.
    """
    from .gls import solve_gls

    if method not in ESTIMATORS:
        raise ValueError(f"method must be one of {ESTIMATORS}, got {method!r}")
    if not problem.complete:
        raise ValueError(f"method={method!r} needs complete responses: use missing='drop' "
                         "(listwise deletion, as linearmodels and Stata do) or method='ml' "
                         "(exact maximum likelihood on every observed response)")
    if sigma is not None and method != "twostep":
        raise ValueError("sigma= fixes the Sigma of the GLS weights: use it with "
                         "method='twostep' (the default when sigma is given)")
    k = check_fit_rank(problem, k, warn_ledermann=False)
    divisor = check_sigma_divisor(sigma_divisor)
    scaled = problem.scaled()
    K = problem.K
    with blas_threads(options.blas_threads):
        identity = LowRankCovariance(np.zeros((K, 0)), np.ones(K))
        if restriction is None:
            theta, Rs = scaled.ols()
        else:
            theta, Rs = solve_gls(scaled, identity, options, restriction=restriction)
        profile = None                    # Sigma profiled out at the first-step beta
        if sigma is not None:
            cov = check_sigma(sigma, K)
        else:
            cov = profile = estimate_sigma(Rs, k, options)
            if divisor != "n":
                s = _divisor_scale(problem, divisor)
                cov = LowRankCovariance(cov.F * s[:, None], cov.D * s * s)
        if method == "twostep":
            theta, Rs = solve_gls(scaled, cov, options, restriction=restriction, theta0=theta)
            profile = estimate_sigma(Rs, cov.k if sigma is not None else k, options)
        Rt = problem.Yt - design_matvec(problem.X, theta) if problem.w is not None else Rs
        nll = float(profile.nll_per_row(Rs))
    fit = GLSFit(B=problem.layout.unpad(theta), F=cov.F.copy(), D=cov.D.copy(),
                 nll_trace=np.array([nll]), n_iter=1 if method == "twostep" else 0,
                 converged=True, heywood=np.zeros(K, dtype=bool), method=method,
                 cg_iterations=np.zeros(0, dtype=int), beta_gap=np.zeros(1),
                 eig_iterations=np.zeros(0, dtype=int), backtracks=np.zeros(0, dtype=int),
                 profile_evaluations=np.zeros(0, dtype=int), tol=options.tol)
    return fit, Rt
