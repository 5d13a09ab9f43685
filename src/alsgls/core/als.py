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

Linear restrictions ``R beta = q`` (:mod:`alsgls.core.restriction`): the
start is restricted OLS and the beta-step is projected PCG (the block-Jacobi
preconditioner projected on the null space of ``R``), so every iterate stays
feasible and the gaps of the stopping rule are those of the restricted
problem; the fixed point is the restricted MLE.  ``update_beta=False`` keeps
the (restricted) OLS coefficients and runs the factor steps alone: the ML
factor analysis of the OLS residuals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._warnings import warn
from ..exceptions import ConvergenceWarning
from .fit_result import IterationRecord, SolverRun
from .ops import (
    LOG_2PI,
    CGInfo,
    LowRankCovariance,
    apply_block,
    block_jacobi_inverse,
    design_matvec,
    gls_gradient,
    lawley_loadings,
    normal_matvec,
    pcg,
    top_eigenpairs,
)
from .options import SolverOptions
from .problem import Problem
from .restriction import LinearRestriction

__all__ = ["run_als", "factor_analysis"]

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
#: The beta-step record of a sweep without one (``update_beta=False``).
_NO_STEP = CGInfo(0, 0.0, 0.0, 0.0, True)



@dataclass
class _State:
    """Mutable iteration state of one ALS fit."""

    theta: np.ndarray | None   # (K, pmax) coefficients, padded (None: residuals only)
    Rt: np.ndarray             # (K, N) residuals Y - X B, equation-major
    F: np.ndarray              # (K, k)
    D: np.ndarray              # (K,)
    basis: np.ndarray | None = None   # warm start of the subspace iteration
    nll: float = float("nan")
    d_gap: float = float("inf")   # NLL decrease still available from D (estimate)
    hist: list = field(default_factory=list)   # (log D, map residual) for Anderson


def _residual_variances(Rt: np.ndarray) -> np.ndarray:
    return np.einsum("kn,kn->k", Rt, Rt) / Rt.shape[1]


def _whitened_eigenpairs(st: _State, D: np.ndarray, k: int, rng: np.random.Generator,
                         maxiter: int, rtol: float = EIG_RTOL
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k eigenpairs of ``D^-1/2 S D^-1/2`` (``S = R R' / N``) and the Lawley
    loadings they give: ``(lam, F, subspace iterations)``; warm-starts ``st.basis``."""
    lam, U, st.basis, it = top_eigenpairs(
        st.Rt, 1.0 / np.sqrt(D * st.Rt.shape[1]), k, basis=st.basis, rng=rng,
        maxiter=maxiter, rtol=rtol, oversample=OVERSAMPLE, dense_limit=DENSE_EIG_LIMIT)
    return lam, lawley_loadings(U, lam, D), it


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

    Returns ``(subspace iterations, rejected proposals)``: a rejected
    Anderson step counts one, and so does each halving of the D update.
    """
    N = st.Rt.shape[1]
    s = _residual_variances(st.Rt)
    floor = d_floor * s
    D = st.D
    eig_it = 0
    if k > 0:
        lam, F, eig_it = _whitened_eigenpairs(st, D, k, rng, eig_maxiter, eig_rtol)
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
    rejected = 0
    if D_acc is not None:
        nll_acc = LowRankCovariance(F, D_acc).nll_per_row(st.Rt, rowsq=N * s)
        if nll_acc <= nll_F:
            st.F, st.D, st.nll = F, D_acc, nll_acc
            return eig_it, 0
        rejected = 1
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
    return eig_it, rejected + halvings


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
    returns ``(subspace iterations, profile evaluations)``.
    """
    from scipy.optimize import minimize

    N, K = st.Rt.shape[1], st.Rt.shape[0]
    s = _residual_variances(st.Rt)
    const = 0.5 * K * LOG_2PI
    eig_total = [0]

    def profile(x: np.ndarray):
        if not np.all(x < 700.0):   # a trial step of L-BFGS-B far out: no finite value
            return np.inf, np.zeros_like(x)
        D = np.exp(x)
        lam, F, it = _whitened_eigenpairs(st, D, k, rng, eig_maxiter)
        eig_total[0] += it
        big = lam > 1.0
        f = const + 0.5 * (np.sum(x) + np.sum(np.log(lam[big]) - lam[big] + 1.0)
                           + np.sum(s / D))
        g = 0.5 * (np.einsum("ij,ij->i", F, F) + D - s) / D
        return f, g

    lo = np.log(d_floor * s)
    x0 = np.maximum(np.log(st.D), lo)
    res = minimize(profile, x0, jac=True, method="L-BFGS-B",
                   bounds=list(zip(lo, [None] * K)),
                   options={"ftol": ftol, "gtol": 1e-12, "maxiter": 1000, "maxcor": 20})
    D = np.exp(res.x)
    _, F, _ = _whitened_eigenpairs(st, D, k, rng, eig_maxiter)
    st.d_gap = _profile_gap(F, D, s, np.exp(lo))
    nll = LowRankCovariance(F, D).nll_per_row(st.Rt, rowsq=N * s)
    if nll <= st.nll:
        st.F, st.D, st.nll = F, D, nll
    return eig_total[0], int(res.nfev)


def _beta_step(
    st: _State, problem: Problem, gram_inv: np.ndarray, abs_tol: float, budget: float,
    cg_maxiter: int, restriction: LinearRestriction | None = None,
):
    """GLS for beta given Sigma = F F' + diag(D) by PCG; updates theta and Rt.

    CG stops once the decrease still available, ``1/2 r' M^-1 r`` (total-NLL
    units), is below ``abs_tol`` or below ``min(budget, 1e-2 * start)``: there
    is no point solving beta far more accurately than Sigma is known.  With a
    restriction (``theta`` feasible) the residual is projected
    (``RestrictionMetric.project``) and the gap is the restricted one.
    """
    cov = LowRankCovariance(st.F, st.D)
    X, gram = problem.X, problem.gram
    r = gls_gradient(X, cov, st.Rt)
    scale = cov.inverse_diagonal
    project = None
    if restriction is not None:
        project = restriction.block_metric(gram_inv, scale).project
        r = project(r)
    start = 0.5 * float(np.vdot(r, apply_block(gram_inv, scale, r)))
    gap_tol = max(abs_tol, min(budget, 1e-2 * start))

    def on_step(alpha: float, U: np.ndarray) -> None:
        st.Rt -= alpha * U

    st.theta, info = pcg(
        lambda v: normal_matvec(X, cov, v, gram),
        lambda g: apply_block(gram_inv, scale, g),
        st.theta, r, gap_tol, cg_maxiter, on_step, project,
    )
    return info, cov


@dataclass
class _Progress:
    """Per-sweep diagnostics and the quantities of the stopping rule."""

    trace: list
    last_delta: float                 # NLL decrease of the last sweep (per row)
    prev_delta: float = np.inf
    ratios: list = field(default_factory=list)
    gaps: list = field(default_factory=list)        # beta gap at each beta-step start
    sweeps: list = field(default_factory=list)      # one IterationRecord per sweep

    def remaining(self) -> float:
        """Linear-rate extrapolation of the decrease still to come."""
        rho = min(self.last_delta / self.prev_delta, 0.99) if self.prev_delta > 0 else 0.0
        return self.last_delta * rho / (1.0 - rho)

    def stalled(self, k: int) -> bool:
        """The D map is stalling: switch the factor step to L-BFGS-B."""
        self.ratios.append(self.last_delta / self.prev_delta if self.prev_delta > 0 else 0.0)
        r = self.ratios
        return k > 0 and len(r) >= 3 and (r[-1] > 3 * STALL_RATIO or min(r[-2:]) > STALL_RATIO)

    def record(self, nll: float, sweep: IterationRecord) -> None:
        self.sweeps.append(sweep)
        self.prev_delta, self.last_delta = self.last_delta, max(self.trace[-1] - nll, 0.0)
        self.trace.append(nll)


def _start(problem: Problem, k: int, options: SolverOptions, rng: np.random.Generator,
           restriction: LinearRestriction | None = None
           ) -> tuple[_State, _Progress, np.ndarray]:
    """OLS (restricted OLS with a restriction), the zero-residual-variance check
    and a first (loose) factor step."""
    gram_inv = block_jacobi_inverse(problem.gram)
    theta, Rt = problem.ols()
    s = problem.residual_variances(Rt)
    if restriction is not None:     # restricted OLS: the X'X-nearest feasible point
        theta = restriction.block_metric(gram_inv).feasible(theta)
        Rt = problem.Yt - design_matvec(problem.X, theta)
        s = _residual_variances(Rt)
    st, pr = _first_factor_step(theta, Rt, s, k, options, rng)
    return st, pr, gram_inv


def _first_factor_step(theta: np.ndarray | None, Rt: np.ndarray, s: np.ndarray, k: int,
                       options: SolverOptions, rng: np.random.Generator
                       ) -> tuple[_State, _Progress]:
    """The state at ``(F, D) = (0, s)`` after one loose factor step."""
    st = _State(theta=theta, Rt=Rt, F=np.zeros((Rt.shape[0], k)), D=s.copy())
    st.nll = LowRankCovariance(st.F, st.D).nll_per_row(Rt)
    ols_nll = st.nll
    _factor_step(st, k, options.d_floor, rng, options.eig_maxiter, EIG_RTOL_MAX)
    return st, _Progress(trace=[st.nll], last_delta=max(ols_nll - st.nll, 0.0))


def run_als(problem: Problem, k: int, options: SolverOptions, *,
            restriction: LinearRestriction | None = None,
            update_beta: bool = True) -> SolverRun:
    """The ALS core on a complete, unweighted problem (see the module docstring).

    Each sweep: a beta-step (PCG, solving until the decrease still available
    is ``CG_BUDGET`` of the last sweep's), the stopping test, then a factor
    step (the Lawley/Joreskog profile step, or L-BFGS-B on the profile
    likelihood when the D map stalls).  Stops when the gap estimate --
    ``max(1e-2 last decrease, extrapolated remainder, beta gap, D gap)`` per
    row -- is below ``tol * K``, then polishes beta given the final Sigma.

    Parameters
    ----------
    problem : Problem
        Complete and unweighted (``Problem.scaled()`` of a weighted one).
    k : int
    options : SolverOptions
    restriction : LinearRestriction, optional
        Fit subject to ``R beta = q`` (restricted OLS start, projected PCG).
    update_beta : bool, default True
        False: keep the (restricted) OLS coefficients and iterate the factor
        steps alone (the ML factor analysis of the OLS residuals); the
        stopping rule then has no beta gap.
    """
    rng = np.random.default_rng(options.random_state)
    st, pr, gram_inv = _start(problem, k, options, rng, restriction)

    def beta_step(abs_tol: float, budget: float) -> CGInfo:
        info, _ = _beta_step(st, problem, gram_inv, abs_tol, budget, options.cg_maxiter,
                             restriction)
        return info

    converged = _sweeps(st, pr, k, options, rng, beta_step if update_beta else None)
    return SolverRun(
        theta=st.theta, F=st.F, D=st.D, Rt=st.Rt, trace=pr.trace, converged=converged,
        nll_at=lambda F: LowRankCovariance(F, st.D).nll_per_row(st.Rt),
        floor=options.d_floor * _residual_variances(st.Rt), method="als", unit="sweep",
        note=f"last NLL decrease per row and equation {pr.last_delta / problem.K:.2e}",
        iterations=pr.sweeps, beta_gap=pr.gaps)


def factor_analysis(Rt: np.ndarray, k: int, options: SolverOptions
                    ) -> tuple[np.ndarray, np.ndarray]:
    """ML factor analysis of fixed residuals: ``Sigma = F F' + diag(D)`` maximising
    the Gaussian likelihood of the columns of ``Rt`` (mean zero, divisor N).

    The factor steps of ALS alone (:func:`run_als` with the coefficients held
    fixed), from ``(F, D) = (0, diag(R R') / N)``, to ``options.tol``.

    Parameters
    ----------
    Rt : ndarray, shape (K, N)
        Residuals, equation-major, every row with a positive mean square.
    k : int
        Number of factors, ``0 <= k < K``.
    options : SolverOptions

    Returns
    -------
    F : ndarray, shape (K, k)
    D : ndarray, shape (K,)

    Raises
    ------
    ValueError
        A row of ``Rt`` that is identically zero.

    Warns
    -----
    ConvergenceWarning
        When the stopping rule is not met within ``options.max_iter`` sweeps.
    """
    Rt = np.asarray(Rt, dtype=np.float64)
    s = _residual_variances(Rt)
    if np.any(s <= 0):
        raise ValueError(f"residual row {int(np.flatnonzero(s <= 0)[0])} is identically "
                         "zero: its variance cannot be estimated")
    rng = np.random.default_rng(options.random_state)
    st, pr = _first_factor_step(None, Rt, s, k, options, rng)
    if not _sweeps(st, pr, k, options, rng, None):
        warn(f"the factor analysis of the residuals reached max_iter="
             f"{options.iterations('als')} sweeps without meeting tol={options.tol:g} (last "
             f"NLL decrease per row and equation {pr.last_delta / Rt.shape[0]:.2e}); raise "
             "max_iter or loosen tol", ConvergenceWarning)
    return st.F, st.D


def _sweeps(st: _State, pr: _Progress, k: int, options: SolverOptions,
            rng: np.random.Generator, beta_step) -> bool:
    """The ALS sweeps (run_als), or the factor steps alone when ``beta_step`` is
    None; returns whether the stopping rule was met."""
    K, N = st.Rt.shape
    limit = options.iterations("als")
    scale = options.tol * K   # NLL per row is O(K): tol is per row and equation
    for sweep in range(limit + 1):
        info = _NO_STEP if beta_step is None else beta_step(scale * N,
                                                            CG_BUDGET * pr.last_delta * N)
        pr.gaps.append(info.start_gap / N)
        if sweep > 0 and max(1e-2 * pr.last_delta, pr.remaining(), info.start_gap / N,
                             st.d_gap) <= scale:
            if beta_step is not None:
                # start_gap <= gap_tol, so this solve made no step.  Polish beta
                # given the final Sigma (1-2 CG steps): the returned beta then
                # meets its first-order condition far inside the tolerance
                polish = beta_step(POLISH * scale * N, 0.0)
                pr.gaps[-1] = polish.final_gap / N
                if polish.iterations:
                    _refresh_nll(st, pr)
            return True
        if sweep == limit:  # out of sweeps: keep the last beta-step's gain
            if beta_step is not None:
                _refresh_nll(st, pr)
            return False
        if pr.stalled(k):
            st.hist.clear()
            e_it, n_prof = _profile_lbfgs(st, k, options.d_floor, rng, options.eig_maxiter,
                                          0.1 * options.tol)
            n_back = 0
        else:
            # eigenvector errors cost NLL quadratically: sqrt of the progress
            eig_rtol = float(np.clip(np.sqrt(1e-2 * pr.last_delta / K), EIG_RTOL,
                                     EIG_RTOL_MAX))
            e_it, n_back = _factor_step(st, k, options.d_floor, rng, options.eig_maxiter,
                                        eig_rtol)
            n_prof = 0
        pr.record(st.nll, IterationRecord(cg_iterations=info.iterations, eig_iterations=e_it,
                                          backtracks=n_back, profile_evaluations=n_prof))
    return False


def _refresh_nll(st: _State, pr: _Progress) -> None:
    """Recompute the NLL after a beta-step that followed the last factor step."""
    st.nll = LowRankCovariance(st.F, st.D).nll_per_row(st.Rt)
    pr.trace[-1] = min(pr.trace[-1], st.nll)
