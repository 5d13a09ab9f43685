"""Alternating least squares: exact block-coordinate descent on the SUR likelihood.

Each sweep takes two monotone steps on the Gaussian negative log-likelihood of
``Y[:, j] = X_j B_j + E[:, j]``, rows of ``E`` i.i.d. ``N(0, F F' + diag(D))``
(DESIGN.md section 2):

1. *beta-step* -- GLS given Sigma by matrix-free preconditioned CG, warm
   started, the Woodbury identity replacing any K x K inverse;
2. *factor step* -- the Lawley/Joreskog profile step on the residuals
   (:mod:`alsgls.core.als_factor`): the exact maximiser of the likelihood over
   F given D, then the D update ``D = diag(S - F F')`` backtracked until the
   NLL does not increase.

The fixed point satisfies every first-order condition of the joint
likelihood, so it is the Gaussian MLE.  Memory beyond the data is O(K k).

When the sweeps stall -- short panels, where beta and Sigma are strongly
coupled in the sample although the Fisher information is block-diagonal, or
a D map that crawls (weak factors, Heywood cases) -- the *coupled phase*
(:class:`_Coupled`) takes over: the exact factor analysis of each iterate's
residuals, an accurate GLS step, and Anderson acceleration of the resulting
map in beta.  On Munnell's nine regions (N = 17, seven regressors each) at
k = 1 the plain sweeps contract at rate ~0.9 (216 sweeps to the MLE); the
coupled phase reaches it in 34-42 sweeps, depending on the machine's rounding
and the version (benchmarks/real_panels.py); on a recursive five-equation
macro system at full rank (rate 0.98) in 20 instead of thousands.

Stopping rule: the NLL gap per row still available is estimated as the
largest of 1e-2 times the last sweep's decrease, the linear-rate
extrapolation of the decreases (or the gap Anderson's step predicts), and
the beta gap (``1/2 r' M^-1 r``) plus the Sigma gap (the D gap by a Newton
step with the Fisher curvature of ``log D``, measured after the last factor
step when only it blocks the test: ``_settled_gap``) times the amplification
``1 / (1 - rho)`` by which the coupling of the blocks enlarges the joint gap
over the block gaps (``rho`` from the ratios of successive decreases, or
from the Ritz values of the Anderson history); the fit stops when it is at
most ``tol * K``.  It is an estimate, not a bound: on the real panels of
``benchmarks/real_panels.py`` the true gap at stop was at most 0.4
``tol * K`` for ``tol`` = 1e-10, 1e-11 and 1e-12 (the rule before the coupled
phase: up to 11x at 1e-11 on Grunfeld, 8.6x at 1e-12 on the wage panel).
At a Heywood case the NLL itself is computed only to about ``eps / d_floor``
per row.  When five sweeps in a row change the NLL by no more than its
round-off the fit stops unconverged (the tolerance is below what round-off
allows, or the estimate cannot be brought below it: see ``STUCK_REASON``).

Linear restrictions ``R beta = q`` (:mod:`alsgls.core.restriction`): the
start is restricted OLS and the beta-step is projected PCG (the block-Jacobi
preconditioner projected on the null space of ``R``), so every iterate stays
feasible and the gaps of the stopping rule are those of the restricted
problem; the fixed point is the restricted MLE.  ``update_beta=False`` keeps
the (restricted) OLS coefficients and runs the factor steps alone: the ML
factor analysis of the OLS residuals.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .._warnings import warn
from ..exceptions import ConvergenceWarning
from ._backend import materialize, settle_residuals
from .als_factor import (  # noqa: F401  (DENSE_EIG_LIMIT: the old alsgls.als name)
    DENSE_EIG_LIMIT,
    EIG_RTOL,
    EIG_RTOL_FIRST,
    EIG_RTOL_MAX,
    _factor_step,
    _profile_gap,
    _profile_lbfgs,
    _residual_variances,
    _settled_gap,
    _State,
    _d_map,
    _newton_d,
    _whitened_eigenpairs,
    _moved_variances,
)
from .fit_result import IterationRecord, SolverRun
from .ops import (
    CGInfo,
    LowRankCovariance,
    apply_block,
    design_matvec,
    design_rmatvec,
    gls_gradient,
    gls_pcg,
    subtract_scaled,
    workspace,
)
from .options import SolverOptions
from .problem import Problem
from .restriction import LinearRestriction

__all__ = ["run_als", "factor_analysis"]

#: A beta-step solves until the decrease still available is below this
#: fraction of the previous sweep's NLL decrease (DESIGN.md section 2).
CG_BUDGET = 1e-2
#: At convergence beta is solved given the final Sigma to POLISH * tol (the
#: first polish step judged by a 32-equation sample, ``ops.sampled_gap``, as
#: the sweeps' steps are; CG goes on when the sample says it fell short).
POLISH = 1e-3
#: When two successive sweeps each gain more than this fraction of the gain
#: before (or one gains more than three times it), the sweeps are stalling:
#: switch to the coupled phase (:class:`_Coupled`).
STALL_RATIO = 0.1
#: Coupled phase: memory of the Anderson acceleration of the profile map in
#: beta, the relative accuracy of its beta-steps (``1/2 r' M^-1 r`` at exit
#: over its start) and L-BFGS-B's ``ftol`` in its factor analyses (tighter
#: makes L-BFGS-B's termination depend on round-off, and the fit with it).
COUPLED_M = 6
COUPLED_CG_REL = 1e-8
COUPLED_FTOL = 1e-13
#: Ritz values lie inside the spectrum, so their estimate of the amplification
#: is low (measured: by up to 25% on the real panels); it is doubled.
RITZ_SAFETY = 2.0
#: Largest amplification ``1 / (1 - rho)`` the stopping rule uses: a sweep
#: contracting slower than ``rho = 0.999`` is treated as contracting at it.
MAX_AMPLIFICATION = 1e3
#: The NLL has stopped moving when this many successive sweeps decrease it by
#: at most its round-off, ``NOISE * eps * (|NLL| + K)`` per row.
STUCK_SWEEPS = 5
NOISE = 4.0
#: Why a fit can stop with no step decreasing the NLL while the stopping rule's
#: estimate stays above the tolerance (the warnings say it).
STUCK_REASON = ("at this tolerance the NLL's round-off, or, near a Heywood boundary, a "
                "coupling amplification estimated from steps that no longer move: the "
                "gap estimate may overstate the gap, but it is not certified")
#: The beta-step record of a sweep without one (``update_beta=False``).
_NO_STEP = CGInfo(0, 0.0, 0.0, 0.0, True)


def _beta_gradient(st: _State, problem: Problem, gram_inv: np.ndarray,
                   restriction: LinearRestriction | None = None
                   ) -> tuple[LowRankCovariance, np.ndarray, float, bool]:
    """The start of a beta-step: the GLS gradient at ``(theta, Sigma)``
    (projected under a restriction, kept in ``st.grad``) and the decrease
    still available, ``1/2 r' M^-1 r`` (total-NLL units).

    On in-memory data the gradient is ``X'R / D - X' (G Z)`` from ``X'R``
    and ``Z = G'R`` that the state keeps current (:meth:`_State.lowrank`:
    ``Z`` is the factor step's, from its last NLL evaluation): one pass over
    the designs.  Returns ``(cov, r, start, tracked)``; ``tracked`` says that
    CG must keep ``X'R`` and ``G'R`` current (:func:`_beta_solve`).
    """
    X = problem.X
    in_memory = type(st.Rt) is np.ndarray
    tracked = in_memory and type(X) is np.ndarray
    if st.work is None and in_memory:
        # the tracked steps write only X v; the Woodbury route also Sigma^-1 X v
        st.work = workspace(st.Rt.shape, 1 if tracked else 2)
    if tracked:
        cov, Z = st.lowrank(st.F, st.D)
        if st.xr is None:
            st.xr = design_rmatvec(X, st.Rt)
        r = gls_gradient(X, cov, st.Rt, xr=st.xr, Z=Z)
    else:
        cov = LowRankCovariance._trusted(st.F, st.D)
        r = gls_gradient(X, cov, st.Rt, None if st.work is None else st.work[1])
    if restriction is not None:
        r = restriction.block_metric(gram_inv, cov.inverse_diagonal).project(r)
    st.grad = r
    start = 0.5 * float(np.vdot(r, apply_block(gram_inv, cov.inverse_diagonal, r)))
    return cov, r, start, tracked


def _beta_solve(st: _State, problem: Problem, gram_inv: np.ndarray, grad: tuple,
                abs_tol: float, budget: float, cg_maxiter: int,
                restriction: LinearRestriction | None = None, rel: float = 1e-2,
                single: bool = False) -> CGInfo:
    """GLS for beta given Sigma = F F' + diag(D) by PCG from the gradient
    ``grad`` of :func:`_beta_gradient`; updates theta and Rt.

    CG stops once the decrease still available, ``1/2 r' M^-1 r`` (total-NLL
    units), is below ``abs_tol`` or below ``min(budget, rel * start)``: there
    is no point solving beta far more accurately than Sigma is known.  With a
    restriction (``theta`` feasible) the residual is projected
    (``RestrictionMetric.project``) and the gap is the restricted one.  Each
    step updates the residuals in place and, when ``tracked``, ``X'R`` and
    ``G'R`` from the operator's by-products (:func:`ops.split_normal_matvec`).
    ``single``: the first CG step's length from ``v' A v`` without forming
    ``A v`` (:func:`ops.curvature`); the solve ends there when the gap
    it left, estimated on a sample of equations (:func:`ops.sampled_gap`),
    meets the tolerance (``final_gap`` NaN: the next gradient measures it),
    else ``A v`` is completed and CG goes on.
    """
    cov, r, start, tracked = grad
    X, gram = problem.X, problem.gram
    project = None
    if restriction is not None:
        project = restriction.block_metric(gram_inv, cov.inverse_diagonal).project
    gap_tol = max(abs_tol, min(budget, rel * start))

    def on_step(alpha: float, d: np.ndarray, aux) -> None:
        if not tracked:
            U = aux[0] if isinstance(aux, tuple) else aux
            st.Rt = subtract_scaled(st.Rt, alpha, U)     # in place: rebinding clears caches
            return
        U, Zv, Gv = aux
        cache, xr, s = st.z_cache, st.xr, st.s_cache
        st.Rt = subtract_scaled(st.Rt, alpha, U)         # rebinding clears the caches...
        st.s_cache = None if s is None else _moved_variances(s, st.Rt.shape[1], alpha, d, xr, Gv)
        xr -= alpha * Gv                                 # ...restored, moved along the step
        st.xr = xr
        if cache is not None and cache[2] is cov:
            Z = cache[3]
            Z -= alpha * Zv
            st.z_cache = cache

    st.theta, info = gls_pcg(X, gram, gram_inv, cov, st.theta, r, gap_tol, cg_maxiter,
                             on_step, project, st.work, split=tracked, single=single)
    settled = settle_residuals(problem, st.Rt, st.theta)   # Dask: stored or re-expressed
    if settled is not st.Rt:
        st.Rt = settled
    return info


@dataclass
class _Progress:
    """Per-sweep diagnostics and the quantities of the stopping rule."""

    trace: list
    last_delta: float                 # NLL decrease of the last sweep (per row)
    prev_delta: float = np.inf
    ratios: list = field(default_factory=list)
    gaps: list = field(default_factory=list)        # beta gap at each beta-step start
    sweeps: list = field(default_factory=list)      # one IterationRecord per sweep
    stuck: int = 0                                  # successive sweeps within round-off
    hold: int = 0                                   # stopping tests still to skip
    #: the last stopping test's estimate: (gap, beta gap + Sigma gap, amplification)
    estimate: tuple = (np.inf, np.inf, 1.0)

    def rate(self) -> float:
        """Contraction of the sweeps: the largest of the last three ratios of
        successive decreases, at most ``1 - 1 / MAX_AMPLIFICATION``."""
        last = self.last_delta / self.prev_delta if self.prev_delta > 0 else 0.0
        return min(max([last] + self.ratios[-2:]), 1.0 - 1.0 / MAX_AMPLIFICATION)

    def amplification(self) -> float:
        """``1 / (1 - rho)``: how much the coupling of the blocks enlarges the
        joint gap over the sum of the block gaps (:meth:`rate`)."""
        return 1.0 / (1.0 - self.rate())

    def trend(self) -> float:
        """The gap the decreases alone imply: the larger of 1e-2 times the last
        one and their linear-rate extrapolation (:meth:`remaining`)."""
        return max(1e-2 * self.last_delta, self.remaining())

    def remaining(self) -> float:
        """Linear-rate extrapolation of the decrease still to come."""
        rho = self.rate()
        return self.last_delta * rho / (1.0 - rho)

    def stalled(self, k: int) -> bool:
        """The sweeps are stalling: switch to the coupled phase."""
        self.ratios.append(self.last_delta / self.prev_delta if self.prev_delta > 0 else 0.0)
        r = self.ratios
        return k > 0 and len(r) >= 3 and (r[-1] > 3 * STALL_RATIO or min(r[-2:]) > STALL_RATIO)

    def record(self, nll: float, sweep: IterationRecord, noise: float = 0.0) -> None:
        self.sweeps.append(sweep)
        self.prev_delta, self.last_delta = self.last_delta, max(self.trace[-1] - nll, 0.0)
        self.trace.append(nll)
        self.stuck = self.stuck + 1 if self.last_delta <= noise else 0


@dataclass
class _BetaBlock:
    """The coefficient side of a fit: the GLS step given Sigma, and moving beta."""

    st: _State
    problem: Problem
    gram_inv: np.ndarray
    cg_maxiter: int
    restriction: LinearRestriction | None = None

    def gradient(self) -> tuple:
        """The start of a beta-step (:func:`_beta_gradient`); its gap is ``[2]``."""
        return _beta_gradient(self.st, self.problem, self.gram_inv, self.restriction)

    def solve(self, grad: tuple, abs_tol: float, budget: float, rel: float = 1e-2,
              single: bool = False) -> CGInfo:
        """CG from ``grad`` (:func:`_beta_solve`); updates ``st.theta``, ``st.Rt``."""
        return _beta_solve(self.st, self.problem, self.gram_inv, grad, abs_tol, budget,
                           self.cg_maxiter, self.restriction, rel, single)

    def step(self, abs_tol: float, budget: float, rel: float = 1e-2) -> CGInfo:
        """One beta-step: the gradient, then CG; updates ``st.theta``, ``st.Rt``."""
        return self.solve(self.gradient(), abs_tol, budget, rel)

    def move(self, theta: np.ndarray) -> None:
        """Set the coefficients (kept feasible under a restriction) and residuals."""
        if self.restriction is not None:
            theta = self.restriction.block_metric(self.gram_inv).feasible(theta)
        self.st.theta = theta
        self.st.Rt = settle_residuals(self.problem,
                                      self.problem.Yt - design_matvec(self.problem.X, theta), theta)


@dataclass
class _Coupled:
    """The coupled phase: Anderson acceleration of the profile map in beta.

    Sweeps stall when beta and Sigma are strongly coupled (short panels, N
    not much larger than p_j: the coupling the asymptotic Fisher information
    does not show) or when the D map crawls (weak factors, Heywood cases).
    Each iteration of this phase then maximises the likelihood over Sigma
    given the residuals (:func:`_exact_factor_analysis`) and solves the GLS
    step accurately.  That is the
    map ``T(beta) = GLS(Sigma*(beta))``, a step on the profile
    ``g(beta) = min_Sigma NLL(beta, Sigma)`` preconditioned by the GLS normal
    matrix ``A``; it contracts at the rate ``rho`` of the sweeps.  Anderson
    mixing (type II, memory ``COUPLED_M``) on ``G(beta) = T(beta) - beta``, in
    coordinates ``x_j = chol(X_j'X_j)' beta_j / sqrt(N s_j)`` that make it
    invariant to the scale of regressors and responses, extrapolates it; an
    extrapolated beta is kept only if its profile NLL is below that of the
    plain step, so the NLL never increases.

    Near the fixed point ``G(x) = -A^-1 H (x - x*)`` with ``H`` the Hessian of
    the profile ``g``, whose eigenvalues lie in ``[1 - rho, 1]`` relative to
    ``A``, so the gap ``g(x) - g(x*)`` is between the beta-step's decrease and
    ``1 / (1 - rho)`` times it.  ``amp`` estimates that factor from the Ritz
    values of ``A^-1 H`` on the secant pairs of the Anderson history
    (``S = dX^+ dG``); the extrapolated step itself predicts the gap as
    ``1/2 r' (x_new - x)`` with ``r`` the GLS gradient.
    """

    W: np.ndarray          # (K, pmax, pmax) upper triangular: x_j = W_j theta_j
    amp: float             # estimate of gap / (beta-step decrease), >= 1
    hist: list = field(default_factory=list)   # (x, G(x)) pairs, oldest first
    ritz: float = 0.0      # largest Ritz estimate of amp so far (0: none yet)

    @classmethod
    def start(cls, problem: Problem | None, Rt: np.ndarray, amp: float) -> "_Coupled":
        if problem is None:     # factor steps alone: no coefficients to accelerate
            return cls(W=np.zeros((0, 0, 0)), amp=1.0)
        L = np.linalg.cholesky(problem.gram)
        scale = np.sqrt(Rt.shape[1] * _residual_variances(Rt))
        return cls(W=L.transpose(0, 2, 1) / scale[:, None, None], amp=amp)

    def to_x(self, theta: np.ndarray) -> np.ndarray:
        return np.einsum("kpq,kq->kp", self.W, theta).ravel()

    def from_x(self, x: np.ndarray) -> np.ndarray:
        K, p, _ = self.W.shape
        return np.linalg.solve(self.W, x.reshape(K, p, 1))[:, :, 0]

    def extrapolate(self, x: np.ndarray, g: np.ndarray) -> np.ndarray | None:
        """Anderson's next point from ``x`` and ``G(x) = g`` (None without
        history); ``amp`` becomes the largest Ritz estimate of the secant pairs."""
        self.hist.append((x, g))
        del self.hist[:-COUPLED_M - 1]
        if len(self.hist) < 2:
            return None
        dX = np.column_stack([b[0] - a[0] for a, b in zip(self.hist[:-1], self.hist[1:])])
        dG = np.column_stack([b[1] - a[1] for a, b in zip(self.hist[:-1], self.hist[1:])])
        gamma, *_ = np.linalg.lstsq(dG, g, rcond=1e-12)
        if dX.shape[1] >= 2:
            ritz = np.abs(np.linalg.eigvals(np.linalg.lstsq(dX, dG, rcond=1e-12)[0]))
            if ritz.size and np.all(np.isfinite(ritz)):
                # rho is a property of the problem near the MLE: keep the largest
                # estimate (a fresh history sees only part of the spectrum); it
                # replaces the prior from the sweeps' decrease ratios
                self.ritz = float(np.clip(RITZ_SAFETY / max(ritz.min(), 1e-300), self.ritz,
                                          MAX_AMPLIFICATION))
                self.amp = max(self.ritz, 1.0)
        return x + g - (dX + dG) @ gamma


def _start(problem: Problem, k: int, options: SolverOptions, rng: np.random.Generator,
           restriction: LinearRestriction | None = None
           ) -> tuple[_State, _Progress, np.ndarray]:
    """OLS (restricted OLS with a restriction), the zero-residual-variance check
    and a first (loose) factor step."""
    gram_inv = problem.gram_inv
    theta, Rt, ss, xr = problem.ols(sumsq=True, moments=True)
    s = problem.residual_variances(Rt, ss)
    if restriction is not None:     # restricted OLS: the X'X-nearest feasible point
        theta = restriction.block_metric(gram_inv).feasible(theta)
        Rt = problem.Yt - design_matvec(problem.X, theta)
        s, xr = _residual_variances(Rt), None
    st, pr = _first_factor_step(theta, Rt, s, k, options, rng)
    if xr is not None and st.Rt is Rt:
        st.xr = xr          # X'R of the OLS residuals: the first gradient's diagonal part
    return st, pr, gram_inv


def _first_factor_step(theta: np.ndarray | None, Rt: np.ndarray, s: np.ndarray, k: int,
                       options: SolverOptions, rng: np.random.Generator
                       ) -> tuple[_State, _Progress]:
    """The state at ``(F, D) = (0, s)`` after one loose factor step."""
    st = _State(theta=theta, Rt=Rt, F=np.zeros((Rt.shape[0], k)), D=s.copy(),
                floor=options.d_floor * s)
    st.s_cache = s      # the variances of these very residuals: no pass to recompute them
    # F = 0: the diagonal NLL, without a pass over R for the zero low-rank part
    st.nll = st.nll_of(st.F[:, :0], st.D)
    ols_nll = st.nll
    _factor_step(st, k, options.d_floor, rng, options.eig_maxiter, EIG_RTOL_FIRST)
    return st, _Progress(trace=[st.nll], last_delta=max(ols_nll - st.nll, 0.0))


def run_als(problem: Problem, k: int, options: SolverOptions, *,
            restriction: LinearRestriction | None = None,
            update_beta: bool = True) -> SolverRun:
    """The ALS core on a complete, unweighted problem (see the module docstring).

    Each sweep: a beta-step (PCG, solving until the decrease still available
    is ``CG_BUDGET`` of the last sweep's), the stopping test, then a factor
    step (the Lawley/Joreskog profile step); when the sweeps stall, the
    coupled phase (:class:`_Coupled`).  Stops when the gap estimate of
    :func:`_sweeps` is at most ``tol * K`` per row; after plain sweeps beta is
    then polished given the final Sigma, after the coupled phase the point
    whose factor analysis was solved exactly is returned.

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
    beta = _BetaBlock(st, problem, gram_inv, options.cg_maxiter, restriction)
    converged = _sweeps(st, pr, k, options, rng, beta if update_beta else None, problem)
    return SolverRun(
        theta=st.theta, F=st.F, D=st.D, Rt=st.Rt, trace=pr.trace, converged=converged,
        nll_at=st.nll_rotated,
        floor=st.floor if st.floor is not None else options.d_floor * _residual_variances(st.Rt),
        method="als", unit="sweep",
        note=_note(pr, problem.K),
        iterations=pr.sweeps, beta_gap=pr.gaps)


def _note(pr: _Progress, K: int) -> str:
    """The fit's closing diagnostics, per row and equation: the last NLL
    decrease and the stopping rule's last estimate with its parts."""
    gap, blocks, amp = pr.estimate
    return (f"last NLL decrease per row and equation {pr.last_delta / K:.2e}; estimated "
            f"gap {gap / K:.2e}: block gaps {blocks / K:.2e} times the coupling's "
            f"amplification {amp:.3g}")


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
    if not _sweeps(st, pr, k, options, rng, None, None):
        why, fix = ((f"reached max_iter={options.iterations('als')} sweeps", "raise max_iter or ")
                    if pr.stuck < STUCK_SWEEPS else
                    (f"stopped when no step decreased the NLL any more ({STUCK_REASON})", ""))
        warn(f"the factor analysis of the residuals {why} without meeting tol="
             f"{options.tol:g} (last NLL decrease per row and equation "
             f"{pr.last_delta / Rt.shape[0]:.2e}); {fix}loosen tol", ConvergenceWarning)
    return st.F, st.D


def _sweeps(st: _State, pr: _Progress, k: int, options: SolverOptions,
            rng: np.random.Generator, beta: _BetaBlock | None,
            problem: Problem | None) -> bool:
    """The ALS sweeps (run_als), or the factor steps alone when ``beta`` is
    None; returns whether the stopping rule was met.

    Plain sweeps until they stall (:meth:`_Progress.stalled`), then the
    coupled phase (:class:`_Coupled`).  The stopping rule estimates the NLL
    gap per row as the largest of ``1e-2`` times the last decrease, the
    linear-rate extrapolation of the decreases (plain sweeps) or the gap that
    Anderson's step predicts (coupled phase), and the beta gap plus the
    Sigma gap times the amplification ``1 / (1 - rho)`` of their coupling
    (from the decrease ratios, or from the Anderson history), and stops when
    it is at most ``tol * K``.  The Sigma gap is the D gap before the last
    factor step (:func:`_profile_gap`), or, when only it blocks the test, the
    gap measured after that step (:func:`_settled_gap`).  A factor step that had to solve
    its eigenpairs again tightly (loose ones proved too inexact) and so gained
    more than the tolerance is not a step at the sweeps' rate: the factor
    steps solve tightly from then on (``_State.tight``) and the next two
    tests are skipped, so that the extrapolation uses tight sweeps alone.
    ``STUCK_SWEEPS`` sweeps in a row within the NLL's round-off stop the fit
    unconverged (:data:`STUCK_REASON`).
    """
    K, N = st.Rt.shape
    limit = options.iterations("als")
    scale = options.tol * K   # NLL per row is O(K): tol is per row and equation
    co: _Coupled | None = None
    for sweep in range(limit + 1):
        if co is None:
            grad = None if beta is None else beta.gradient()
            amp = pr.amplification()
            blocks = (0.0 if grad is None else grad[2]) / N + st.d_gap
            gap = max(pr.trend(), blocks * amp)
            pr.estimate = (gap, blocks, amp)
            if pr.hold:
                # a recent factor step caught up on inexact eigenpairs: its
                # decrease says nothing of the rate the rule extrapolates with
                gap, pr.hold = np.inf, pr.hold - 1
            # the last beta-step solves to POLISH * tol given the final Sigma (a
            # step or a few): the returned beta then meets its first-order
            # condition far inside the tolerance
            last = sweep > 0 and gap <= scale
            # the first CG step's length from v'Av, and Av itself (a pass over
            # the designs) only when a sample of equations says that step left
            # more than the tolerance (the last beta-step too: its exact gap at
            # the start is the certificate, the step only lowers it)
            single = beta is not None
            # before that, CG runs at least until the beta gap alone, amplified,
            # is within half the stopping scale (else it alone could block the stop)
            info = _NO_STEP if beta is None else beta.solve(
                grad, (POLISH if last else 0.5 / amp) * scale * N,
                0.0 if last else CG_BUDGET * pr.last_delta * N, single=single)
        else:
            theta_x = st.theta
            info, gap, x_new, nll_T = _coupled_beta_step(st, co, beta, scale, pr)
        pr.gaps.append(info.start_gap / N)
        if sweep > 0 and gap <= scale:
            if co is not None and beta is not None:
                # return x with Sigma*(x): (F, D) then solve the factor analysis of the
                # returned residuals exactly, floor included, and beta is certified
                beta.move(theta_x)
                if st.theta is not theta_x:     # re-projected onto R beta = q
                    _refresh_nll(st, pr)
            elif beta is not None:
                if not np.isnan(info.final_gap):    # else the exact gap at the test
                    pr.gaps[-1] = info.final_gap / N
                if info.iterations:
                    _refresh_nll(st, pr)
            return True
        if sweep == limit:  # out of sweeps: keep the last beta-step's gain
            if beta is not None:
                _refresh_nll(st, pr)
            return False
        n_back = n_prof = 0
        if co is None and pr.stalled(k):
            # prior amplification from the last ratio (earlier ones may be erratic)
            rho = min(pr.last_delta / pr.prev_delta, 1.0 - 1.0 / MAX_AMPLIFICATION)
            co = _Coupled.start(problem if beta is not None else None, st.Rt, 1.0 / (1.0 - rho))
            st.hist.clear()
            e_it, n_prof = _exact_factor_analysis(st, k, options, rng)
        elif co is not None:
            e_it, n_prof, n_back = _coupled_factor_step(st, co, beta, x_new, nll_T, k,
                                                        options, rng)
        else:
            # eigenvector errors cost NLL quadratically: sqrt of the progress
            eig_rtol = float(np.clip(np.sqrt(1e-2 * pr.last_delta / K), EIG_RTOL,
                                     EIG_RTOL_MAX))
            before = st.nll
            e_it, n_back, resolved = _factor_step(st, k, options.d_floor, rng,
                                                  options.eig_maxiter, eig_rtol)
            if resolved and not st.tight and before - st.nll > scale:
                # a catch-up on inexact eigenpairs that gained more than the
                # tolerance: its decrease, and the next one's ratio to it, are
                # not the sweeps' rate; solve tightly from now on
                st.tight, pr.hold = True, 2
        pr.record(st.nll, IterationRecord(cg_iterations=info.iterations, eig_iterations=e_it,
                                          backtracks=n_back, profile_evaluations=n_prof),
                  _roundoff(st))
        if (co is None and k > 0 and not pr.hold and st.d_gap * pr.amplification() > 0.5 * scale
                and pr.trend() <= scale):
            # only the D gap before the last step blocks the next test: measure
            # the gap after it (a warm-started eigen-solve at the new D)
            e_it = _settled_gap(st, k, options.d_floor, rng, options.eig_maxiter, options.tol)
            pr.sweeps[-1] = replace(pr.sweeps[-1],
                                    eig_iterations=pr.sweeps[-1].eig_iterations + e_it)
        if pr.stuck >= STUCK_SWEEPS:   # no step moves the NLL: STUCK_REASON
            if beta is not None:
                _refresh_nll(st, pr)
            return False
    return False


def _roundoff(st: _State) -> float:
    """Round-off of the NLL per row at the current point."""
    return NOISE * np.finfo(float).eps * (abs(st.nll) + st.D.size)


def _coupled_beta_step(st: _State, co: _Coupled, beta: _BetaBlock | None, scale: float,
                       pr: _Progress):
    """The first half of a coupled iteration at ``x`` (Sigma = Sigma*(x)): the
    accurate beta-step to ``T(x)``, Anderson's next point and the gap estimate.

    Returns ``(CGInfo, gap estimate, next point or None, NLL at (T(x), Sigma*(x)))``.
    """
    N = st.Rt.shape[1]
    if beta is None:
        return _NO_STEP, max(1e-2 * pr.last_delta, st.d_gap), None, st.nll
    x = co.to_x(st.theta)
    info = beta.step(POLISH * scale * N, np.inf, COUPLED_CG_REL)
    nll_T = st.nll_of(st.F, st.D)
    x_new = co.extrapolate(x, co.to_x(st.theta) - x)
    predicted = 0.0
    if x_new is not None:
        predicted = 0.5 * float(np.vdot(st.grad, co.from_x(x_new - x))) / N
    beta_gap = (info.decrease + info.final_gap) / N
    gap = max(1e-2 * pr.last_delta, predicted, (beta_gap + st.d_gap) * co.amp)
    pr.estimate = (gap, beta_gap + st.d_gap, co.amp)
    return info, gap, x_new, nll_T


def _exact_factor_analysis(st: _State, k: int, options: SolverOptions,
                           rng: np.random.Generator) -> tuple[int, int]:
    """The ML factor analysis of the current residuals: L-BFGS-B on the profile,
    then one projected Newton step in ``log D`` with the Fisher curvature
    (:func:`_newton_d`), or if that raises the NLL one step of the D map
    ``D = max(s - diag(F F'), floor)``; both have the optimum as fixed point.
    They are driven by the gradient, not by NLL differences, so they remove
    what L-BFGS-B's function-value test leaves (NLL differences at the
    round-off of the NLL decide where it stops); the Newton step also reaches
    a floor the D map crawls towards (1 - (D_j (Sigma^-1)_jj)^2 per step).
    A step is kept unless it raises the NLL by more than its round-off."""
    if k == st.Rt.shape[0] - 1 and _unrestricted_sigma(st, k, options, rng):
        return 0, 1
    e_it, n_prof = _profile_lbfgs(st, k, options.d_floor, rng, options.eig_maxiter, COUPLED_FTOL)
    s = st.variances()
    floor = options.d_floor * s
    _, F0, e2 = _whitened_eigenpairs(st, st.D, k, rng, options.eig_maxiter)
    st.d_gap = _profile_gap(F0, st.D, s, floor)      # the step's own size: what is left
    e_it += e2
    for D in (_newton_d(F0, st.D, s, floor), _d_map(F0, s, floor)):
        _, F, e3 = _whitened_eigenpairs(st, D, k, rng, options.eig_maxiter)   # F given the new D
        e_it, n_prof = e_it + e3, n_prof + 1
        nll = st.nll_of(F, D)
        if nll <= st.nll + _roundoff(st):
            st.F, st.D, st.nll, st.floor = F, D, min(nll, st.nll), floor
            break
    return e_it, n_prof + 1


def _unrestricted_sigma(st: _State, k: int, options: SolverOptions,
                        rng: np.random.Generator) -> bool:
    """At ``k = K - 1`` Sigma is unrestricted and its MLE is ``S = R R' / N``
    itself, reached by ``D = lam_min(C) s`` (``C`` the residual correlation
    matrix: the whitened ``S`` then has smallest eigenvalue 1) and the Lawley
    loadings of the other K - 1.  False (nothing changed) when that ``D``
    is below the floor (nearly collinear residuals): use L-BFGS-B."""
    N = st.Rt.shape[1]
    s = st.variances()
    W = st.Rt / np.sqrt(N * s)[:, None]
    lam_min = float(np.linalg.eigvalsh(materialize(W @ W.T))[0])
    if not lam_min > options.d_floor:
        return False
    D = lam_min * s
    _, F, _ = _whitened_eigenpairs(st, D, k, rng, options.eig_maxiter)
    nll = st.nll_of(F, D)
    if nll <= st.nll + _roundoff(st):
        st.F, st.D, st.nll, st.floor = F, D, min(nll, st.nll), options.d_floor * s
    st.d_gap = 0.0
    return True


def _coupled_factor_step(st: _State, co: _Coupled, beta: _BetaBlock | None,
                         x_new: np.ndarray | None, nll_T: float, k: int,
                         options: SolverOptions, rng: np.random.Generator
                         ) -> tuple[int, int, int]:
    """The second half of a coupled iteration: the exact factor analysis at
    Anderson's point if its NLL is below ``nll_T``, else at ``T(x)``.

    Returns ``(subspace iterations, profile evaluations, rejected points)``.
    """
    e_total = n_total = rejected = 0
    if x_new is not None:
        saved = st.theta, st.Rt, st.F, st.D, st.floor, st.d_gap   # move() rebinds, never mutates
        beta.move(co.from_x(x_new))
        st.nll = np.inf
        e_total, n_total = _exact_factor_analysis(st, k, options, rng)
        if st.nll <= nll_T:
            return e_total, n_total, 0
        st.theta, st.Rt, st.F, st.D, st.floor, st.d_gap = saved
        co.hist.clear()
        rejected = 1
    st.nll = nll_T
    e_it, n_prof = _exact_factor_analysis(st, k, options, rng)
    return e_total + e_it, n_total + n_prof, rejected


def _refresh_nll(st: _State, pr: _Progress) -> None:
    """Recompute the NLL after a beta-step that followed the last factor step."""
    st.nll = st.nll_of(st.F, st.D)
    pr.trace[-1] = min(pr.trace[-1], st.nll)
