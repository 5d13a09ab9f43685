"""Alternating least squares: exact block-coordinate descent on the SUR likelihood.

Each sweep takes two monotone steps on the Gaussian negative log-likelihood of
``Y[:, j] = X_j B_j + E[:, j]``, rows of ``E`` i.i.d. ``N(0, F F' + diag(D))``
(DESIGN.md section 2):

1. *beta-step* -- GLS given Sigma by matrix-free preconditioned CG, warm
   started, the Woodbury identity replacing any K x K inverse;
2. *factor step* -- the Lawley/Joreskog profile step: the exact maximiser of
   the likelihood over F given D (top-k eigenpairs of the whitened residual
   covariance by warm-started subspace iteration), then the D update
   ``D = diag(S - F F')`` backtracked until the NLL does not increase.

The fixed point satisfies every first-order condition of the joint
likelihood, so it is the Gaussian MLE.  Memory beyond the data is O(K k).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._threads import blas_threads as _blas_threads
from .problem import SystemData, check_residual_variance, has_nan, validate_system
from ..exceptions import ConvergenceWarning, HeywoodWarning
from .fit_result import GLSFit, canonical_loadings, unpad_coefficients
from .ops import (
    LowRankCovariance,
    apply_block,
    block_jacobi_inverse,
    design_matvec,
    LOG_2PI,
    design_rmatvec,
    gls_gradient,
    normal_matvec,
    pcg,
)

__all__ = ["als_gls"]

#: Extra columns carried by the subspace iteration beyond the k wanted.
OVERSAMPLE = 8
#: Use a thin SVD of the whitened residuals when min(K, N) is this small.
DENSE_EIG_LIMIT = 64
#: Relative Ritz-residual tolerance for the top-k eigenpairs: the final one,
#: and the loosest used in early sweeps (an inexact F only lowers the NLL less;
#: the D step's backtracking keeps every sweep monotone).
EIG_RTOL = 1e-10
EIG_RTOL_MAX = 1e-3
#: A beta-step solves until the decrease still available is below this
#: fraction of the previous sweep's NLL decrease (DESIGN.md section 2).
CG_BUDGET = 1e-2
#: At convergence beta is solved given the final Sigma to POLISH * tol.
POLISH = 1e-3
#: Memory of the Anderson acceleration of the D map, and its largest step in log D.
ANDERSON_M = 3
ANDERSON_MAX_STEP = 2.0
#: When two successive sweeps each gain more than this fraction of the gain
#: before (or one gains more than three times it), the D map is stalling:
#: switch the factor step to L-BFGS-B on the profile likelihood.
STALL_RATIO = 0.1


@dataclass
class _State:
    """Mutable iteration state of one ALS fit."""

    theta: np.ndarray          # (K, pmax) coefficients, padded with zeros
    Rt: np.ndarray             # (K, N) residuals Y - X B, equation-major
    F: np.ndarray              # (K, k)
    D: np.ndarray              # (K,)
    basis: np.ndarray | None = None   # warm start of the subspace iteration
    nll: float = float("nan")
    d_gap: float = float("inf")   # NLL decrease still available from D (estimate)
    hist: list = field(default_factory=list)   # (log D, map residual) for Anderson
    trace: list = field(default_factory=list)


def _residual_variances(Rt: np.ndarray) -> np.ndarray:
    return np.einsum("kn,kn->k", Rt, Rt) / Rt.shape[1]


def _ols(data: SystemData, gram_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equation-by-equation OLS (the first beta-step's PCG refines it)."""
    X, Yt = data.X, data.Yt
    theta = apply_block(gram_inv, np.ones(data.K), design_rmatvec(X, Yt))
    return theta, Yt - design_matvec(X, theta)


def _top_eigenpairs(
    Rt: np.ndarray, scale: np.ndarray, k: int, basis: np.ndarray | None,
    rng: np.random.Generator, maxiter: int, rtol: float = EIG_RTOL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Top-k eigenpairs of ``W W'`` for ``W = diag(scale) Rt`` (K, N), without
    forming K x K (nor W itself: ``W W' V = scale * (Rt (Rt' (scale * V)))``).

    Block subspace iteration with Rayleigh-Ritz, warm-started from ``basis``;
    a thin SVD when ``min(K, N)`` is small.  Returns ``(lam, U, basis, iters)``.
    """
    K, N = Rt.shape
    b = min(k + OVERSAMPLE, K, N)
    if min(K, N) <= max(DENSE_EIG_LIMIT, 2 * b):
        U, s, _ = np.linalg.svd(scale[:, None] * Rt, full_matrices=False)
        return s[:k] ** 2, U[:, :k], None, 0
    if basis is None or basis.shape[1] != b:
        basis, _ = np.linalg.qr(rng.standard_normal((K, b)))
    V = basis
    sc = scale[:, None]
    for it in range(1, maxiter + 1):
        Z = sc * (Rt @ (Rt.T @ (sc * V)))
        lam, S = np.linalg.eigh(V.T @ Z)
        lam, S = lam[::-1], S[:, ::-1]
        V, Z = V @ S, Z @ S
        res = np.linalg.norm(Z[:, :k] - V[:, :k] * lam[:k], axis=0)
        if np.all(res <= rtol * max(lam[0], 1.0)):
            return lam[:k], V[:, :k], V, it
        V, _ = np.linalg.qr(Z)
    return lam[:k], V[:, :k], V, maxiter


def _profile_gap(F: np.ndarray, D: np.ndarray, s: np.ndarray, floor: np.ndarray) -> float:
    """Estimated NLL-per-row decrease still available from D (F profiled out).

    The profile gradient is ``g_j = ((F F')_jj + D_j - s_j) / (2 D_j)`` in
    ``log D_j`` and its curvature is about ``s_j / (2 D_j)``, so a Newton step
    gains ``sum_j g_j^2 D_j / s_j``.  Equations held at the floor whose gradient
    points below it are excluded (projected gradient).
    """
    g = 0.5 * (np.einsum("ij,ij->i", F, F) + D - s) / D
    g[(D <= floor * (1 + 1e-12)) & (g > 0)] = 0.0
    return float(np.sum(g * g * D / s))


def _anderson(st: _State, x: np.ndarray, target: np.ndarray, lo: np.ndarray) -> np.ndarray | None:
    """Anderson-accelerated D from the history of the D map in log D.

    The plain map ``x -> log max(s - diag(F(x) F(x)'), floor)`` converges
    linearly (rate ~0.1-0.2 at K ~ 100); Anderson mixing (type II, memory
    ``ANDERSON_M``) on the residuals ``g = target - x`` extrapolates it.  The
    caller accepts the result only if the NLL does not increase.
    """
    g = target - x
    st.hist.append((x, g))
    del st.hist[:-ANDERSON_M - 1]
    if len(st.hist) < 2:
        return None
    dX = np.column_stack([b[0] - a[0] for a, b in zip(st.hist[:-1], st.hist[1:])])
    dG = np.column_stack([b[1] - a[1] for a, b in zip(st.hist[:-1], st.hist[1:])])
    gamma, *_ = np.linalg.lstsq(dG, g, rcond=1e-10)
    step = g - (dX + dG) @ gamma
    step = np.clip(step, -ANDERSON_MAX_STEP, ANDERSON_MAX_STEP)
    return np.exp(np.maximum(x + step, lo))


def _factor_step(
    st: _State, k: int, d_floor: float, rng: np.random.Generator, eig_maxiter: int,
    eig_rtol: float = EIG_RTOL,
) -> tuple[int, int]:
    """One Lawley/Joreskog profile step on the current residuals (in place).

    Returns ``(subspace iterations, backtracks)``.
    """
    N = st.Rt.shape[1]
    s = _residual_variances(st.Rt)
    floor = d_floor * s
    D = st.D
    eig_it = 0
    if k > 0:
        sq = np.sqrt(D)
        lam, U, st.basis, eig_it = _top_eigenpairs(
            st.Rt, 1.0 / (sq * np.sqrt(N)), k, st.basis, rng, eig_maxiter, eig_rtol)
        F = sq[:, None] * U * np.sqrt(np.maximum(lam - 1.0, 0.0))
    else:
        lam = np.zeros(0)
        F = st.F
    st.d_gap = _profile_gap(F, D, s, floor)
    # NLL at (F(D), D) in closed form: the profile likelihood (no pass over R)
    big = lam > 1.0
    nll_F = 0.5 * (len(D) * LOG_2PI + np.sum(np.log(D)) + np.sum(s / D)
                   + np.sum(np.log(lam[big]) - lam[big] + 1.0))
    D_target = np.maximum(s - np.einsum("ij,ij->i", F, F), floor)
    D_acc = _anderson(st, np.log(D), np.log(D_target), np.log(floor))
    if D_acc is not None:
        nll_acc = LowRankCovariance(F, D_acc).nll_per_row(st.Rt, rowsq=N * s)
        if nll_acc <= nll_F:
            st.F, st.D, st.nll = F, D_acc, nll_acc
            return eig_it, 0
    t, halvings = 1.0, 0
    while True:
        D_try = np.maximum(D + t * (D_target - D), floor)
        nll_try = LowRankCovariance(F, D_try).nll_per_row(st.Rt, rowsq=N * s)
        if nll_try <= nll_F or halvings >= 30:
            break
        t *= 0.5
        halvings += 1
    if nll_try <= nll_F:
        st.F, st.D, st.nll = F, D_try, nll_try
    else:  # D step could not improve: keep D, take the F step alone
        st.F, st.nll = F, nll_F
    return eig_it, halvings


def _profile_lbfgs(
    st: _State, k: int, d_floor: float, rng: np.random.Generator, eig_maxiter: int,
    ftol: float,
) -> tuple[int, int]:
    """Minimise the profile NLL over log D (F profiled out) by L-BFGS-B.

    Used when the plain D map stalls (weak or superfluous factors, Heywood
    cases, k near K).  Per row, the profile is
    ``f(D) = 1/2 [K log 2pi + sum log D_j + sum_{lam_i>1} (log lam_i - lam_i + 1)
    + sum s_j / D_j]`` with ``lam`` the top-k eigenvalues of
    ``D^-1/2 S D^-1/2``, and ``df/dlog D_j = ((F F')_jj + D_j - s_j) / (2 D_j)``
    (Joreskog, 1967).  Bounds ``D_j >= d_floor * s_j``.  Updates st in place;
    returns (eigen iterations, function evaluations).
    """
    from scipy.optimize import minimize

    N, K = st.Rt.shape[1], st.Rt.shape[0]
    s = _residual_variances(st.Rt)
    const = 0.5 * K * LOG_2PI
    eig_total = [0]

    def profile(x: np.ndarray):
        D = np.exp(x)
        sq = np.sqrt(D)
        lam, U, st.basis, it = _top_eigenpairs(
            st.Rt, 1.0 / (sq * np.sqrt(N)), k, st.basis, rng, eig_maxiter)
        eig_total[0] += it
        big = lam > 1.0
        f = const + 0.5 * (np.sum(x) + np.sum(np.log(lam[big]) - lam[big] + 1.0)
                           + np.sum(s / D))
        F = sq[:, None] * U * np.sqrt(np.maximum(lam - 1.0, 0.0))
        g = 0.5 * (np.einsum("ij,ij->i", F, F) + D - s) / D
        return f, g

    lo = np.log(d_floor * s)
    x0 = np.maximum(np.log(st.D), lo)
    res = minimize(profile, x0, jac=True, method="L-BFGS-B",
                   bounds=list(zip(lo, [None] * K)),
                   options={"ftol": ftol, "gtol": 1e-12, "maxiter": 1000, "maxcor": 20})
    D = np.exp(res.x)
    sq = np.sqrt(D)
    lam, U, st.basis, _ = _top_eigenpairs(
        st.Rt, 1.0 / (sq * np.sqrt(N)), k, st.basis, rng, eig_maxiter)
    F = sq[:, None] * U * np.sqrt(np.maximum(lam - 1.0, 0.0))
    st.d_gap = _profile_gap(F, D, s, np.exp(lo))
    nll = LowRankCovariance(F, D).nll_per_row(st.Rt, rowsq=N * s)
    if nll <= st.nll:
        st.F, st.D, st.nll = F, D, nll
    return eig_total[0], int(res.nfev)


def _beta_step(
    st: _State, data: SystemData, gram: np.ndarray, gram_inv: np.ndarray, abs_tol: float,
    budget: float, cg_maxiter: int
):
    """GLS for beta given Sigma = F F' + diag(D) by PCG; updates theta and Rt.

    CG stops once the decrease still available, ``1/2 r' M^-1 r`` (total-NLL
    units), is below ``abs_tol`` or below ``min(budget, 1e-2 * start)``: there
    is no point solving beta far more accurately than Sigma is known.
    """
    cov = LowRankCovariance(st.F, st.D)
    X = data.X
    r = gls_gradient(X, cov, st.Rt)
    scale = cov.inverse_diagonal
    start = 0.5 * float(np.vdot(r, apply_block(gram_inv, scale, r)))
    gap_tol = max(abs_tol, min(budget, 1e-2 * start))

    def on_step(alpha: float, U: np.ndarray) -> None:
        st.Rt -= alpha * U

    st.theta, info = pcg(
        lambda v: normal_matvec(X, cov, v, gram),
        lambda g: apply_block(gram_inv, scale, g),
        st.theta, r, gap_tol, cg_maxiter, on_step,
    )
    return info, cov


def als_gls(
    Xs: Any,
    Y: Any,
    k: int,
    *,
    tol: float = 1e-10,
    max_sweeps: int = 200,
    cg_maxiter: int = 500,
    eig_maxiter: int = 100,
    d_floor: float = 1e-6,
    random_state: int = 0,
    blas_threads: int | None = 1,
    missing: str = "ml",
    weights: Any = None,
) -> GLSFit:
    """Gaussian maximum likelihood for a SUR system with ``Sigma = F F' + diag(D)``.

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), or ndarray (K, N, p)
        Design of each equation.  Integer and float32 inputs are computed in
        float64; inputs are never modified.
    Y : array_like, shape (N, K)
        Responses, one column per equation.
    k : int
        Number of latent factors, ``0 <= k < K``.  ``k = K - 1`` is the
        unrestricted SUR (any positive-definite Sigma).
    tol : float, default 1e-10
        Tolerance on the NLL gap per row *and per equation* (the NLL per row is
        O(K), so this is about a relative gap, and unlike one it is invariant
        to rescaling ``Y``): stop when the decrease still available -- from
        beta (preconditioned gradient norm), from D (Newton estimate on the
        profile likelihood) and from the linear-rate extrapolation of the last
        two sweeps -- is below ``tol * K`` (and the last sweep's decrease below
        100 times that).
    max_sweeps : int, default 200
        Maximum number of sweeps; reaching it emits a ``ConvergenceWarning``.
    cg_maxiter : int, default 500
        Maximum CG iterations per beta-step.
    eig_maxiter : int, default 100
        Maximum subspace iterations per factor step.
    d_floor : float, default 1e-6
        Relative floor on the noise variances: ``D_j >= d_floor * s_j`` with
        ``s_j`` the residual variance of equation ``j``; equations at the floor
        are flagged as Heywood cases.
    random_state : int, default 0
        Seed of the random start of the subspace iteration (results agree
        across seeds to the tolerance).
    blas_threads : int or None, default 1
        BLAS threads inside the fit (needs ``threadpoolctl``, the extra
        ``alsgls[fast]``); ``None`` leaves the process setting alone.  The
        fit's GEMMs are memory-bound and many: one thread avoids the
        thread hand-off cliff of OpenBLAS on loaded machines.
    missing : {"ml", "drop", "raise"}, default "ml"
        What NaN in ``Y`` (a missing response) means.  ``"ml"``: exact
        maximum likelihood of every observed response under
        missing-at-random (:func:`alsgls.missing.fit_missing`; rows of
        ``Xs`` may be NaN where the response is missing); ``"drop"``:
        listwise deletion of rows with any NaN; ``"raise"``: refuse NaN.
        With no NaN and no weights the three are the same balanced fit.
    weights : array_like, shape (N,), optional
        Non-negative row weights, rescaled to mean 1 (as linearmodels does):
        row ``i``'s log-likelihood counts ``w_i`` times.

    Returns
    -------
    GLSFit
        Coefficients ``B``, loadings ``F``, noise variances ``D``, the NLL
        trace and solver diagnostics; a
        :class:`~alsgls.missing.MissingGLSFit` (which adds ``n_observed``,
        ``rows``, ``weights``) when ``Y`` has NaN, ``weights`` is given or
        ``missing`` is not ``"ml"``.

    Raises
    ------
    ValueError, TypeError
        For invalid inputs; messages name the argument and the equation.

    Notes
    -----
    The NLL per row is
    ``1/2 [K log 2 pi + log|Sigma|] + 1/(2N) sum_i r_i' Sigma^-1 r_i``,
    evaluated through the determinant lemma and Woodbury identity in
    O(N K k).  No K x K or P x P matrix is formed (except a thin SVD of the
    whitened residuals when ``min(K, N) <= 64``).

    Examples
    --------
    >>> from alsgls import als_gls, simulate_sur
    >>> Xs, Y, truth = simulate_sur(N=300, K=30, p=2, k=2, seed=0)
    >>> fit = als_gls(Xs, Y, k=2)
    >>> fit.converged, len(fit.B), fit.F.shape
    (True, 30, (30, 2))
    >>> bool(np.all(np.diff(fit.nll_trace) <= 1e-12 * abs(fit.nll)))
    True
    """
    if weights is not None or missing != "ml" or has_nan(Y):
        from .missing import als_gls_missing

        return als_gls_missing(Xs, Y, k, missing=missing, weights=weights, tol=tol,
                               max_sweeps=max_sweeps, cg_maxiter=cg_maxiter,
                               eig_maxiter=eig_maxiter, d_floor=d_floor,
                               random_state=random_state)
    with _blas_threads(blas_threads):
        return _als(Xs, Y, k, tol, max_sweeps, cg_maxiter, eig_maxiter, d_floor, random_state)


def _als(Xs, Y, k, tol, max_sweeps, cg_maxiter, eig_maxiter, d_floor, random_state) -> GLSFit:
    data, k, gram = validate_system(Xs, Y, k)
    gram_inv = block_jacobi_inverse(gram)
    rng = np.random.default_rng(random_state)

    theta, Rt = _ols(data, gram_inv)
    s = check_residual_variance(Rt, data.Yt)
    st = _State(theta=theta, Rt=Rt, F=np.zeros((data.K, k)), D=s.copy())
    st.nll = LowRankCovariance(st.F, st.D).nll_per_row(Rt)
    ols_nll = st.nll
    _factor_step(st, k, d_floor, rng, eig_maxiter, EIG_RTOL_MAX)  # refined in later sweeps
    trace = [st.nll]
    last_delta = ols_nll - st.nll
    prev_delta = np.inf
    cg_its, eig_its, backs, gaps, ratios = [], [], [], [], []
    converged = False
    N = data.N
    for sweep in range(max_sweeps + 1):
        scale = float(data.K)  # NLL per row is O(K): tol is a gap per row and equation
        info, _ = _beta_step(st, data, gram, gram_inv, tol * scale * N,
                             CG_BUDGET * last_delta * N, cg_maxiter)
        gaps.append(info.start_gap / N)
        rho = min(last_delta / prev_delta, 0.99) if prev_delta > 0 else 0.0
        remaining = last_delta * rho / (1.0 - rho)
        if sweep > 0 and max(1e-2 * last_delta, remaining, info.start_gap / N,
                             st.d_gap) <= tol * scale:
            converged = True  # start_gap <= gap_tol, so this solve made no step
            # polish beta given the final Sigma (1-2 CG steps): the returned beta
            # then meets its first-order condition far inside the tolerance
            polish, _ = _beta_step(st, data, gram, gram_inv, POLISH * tol * scale * N, 0.0,
                                   cg_maxiter)
            if polish.iterations:
                st.nll = LowRankCovariance(st.F, st.D).nll_per_row(st.Rt)
                trace[-1] = min(trace[-1], st.nll)
            gaps[-1] = polish.final_gap / N
            break
        if sweep == max_sweeps:  # out of sweeps: keep the last beta-step's gain
            st.nll = LowRankCovariance(st.F, st.D).nll_per_row(st.Rt)
            trace[-1] = min(trace[-1], st.nll)
            break
        ratios.append(last_delta / prev_delta if prev_delta > 0 else 0.0)
        stalled = k > 0 and sweep >= 2 and (
            ratios[-1] > 3 * STALL_RATIO or min(ratios[-2:]) > STALL_RATIO)
        if stalled:
            st.hist.clear()
            e_it, n_back = _profile_lbfgs(st, k, d_floor, rng, eig_maxiter, 0.1 * tol)
        else:
            # eigenvector errors cost NLL quadratically: sqrt of the progress
            eig_rtol = float(np.clip(np.sqrt(1e-2 * last_delta / scale), EIG_RTOL, EIG_RTOL_MAX))
            e_it, n_back = _factor_step(st, k, d_floor, rng, eig_maxiter, eig_rtol)
        cg_its.append(info.iterations)
        eig_its.append(e_it)
        backs.append(n_back)
        prev_delta, last_delta = last_delta, max(trace[-1] - st.nll, 0.0)
        trace.append(st.nll)

    if not converged:
        warnings.warn(
            f"als_gls stopped after {max_sweeps} sweeps without meeting tol={tol:g} "
            f"(last NLL decrease per row and equation {last_delta / data.K:.2e}); "
            "raise max_sweeps or loosen tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    return _finish(st, data, k, d_floor, trace, converged, cg_its, gaps, eig_its, backs, tol)


def _finish(st, data, k, d_floor, trace, converged, cg_its, gaps, eig_its, backs, tol) -> GLSFit:
    s = _residual_variances(st.Rt)
    heywood = st.D <= d_floor * s * (1 + 1e-9)
    if k > 0 and heywood.any():
        idx = np.flatnonzero(heywood)
        warnings.warn(
            f"{idx.size} equation(s) have D_j at the floor d_floor*s_j (Heywood "
            f"cases), e.g. equation {int(idx[0])}; see GLSFit.heywood",
            HeywoodWarning,
            stacklevel=4,
        )
    return GLSFit(
        B=unpad_coefficients(st.theta, data.p),
        F=canonical_loadings(st.F, st.D),
        D=st.D.copy(),
        nll_trace=np.asarray(trace),
        n_iter=len(trace) - 1,
        converged=converged,
        heywood=heywood,
        method="als",
        cg_iterations=np.asarray(cg_its, dtype=int),
        beta_gap=np.asarray(gaps),
        eig_iterations=np.asarray(eig_its, dtype=int),
        backtracks=np.asarray(backs, dtype=int),
        tol=tol,
    )
