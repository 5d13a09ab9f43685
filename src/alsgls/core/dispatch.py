"""The one dispatcher: a validated problem and an options record in, a fit out.

``fit_problem`` chooses the core -- balanced ALS (:mod:`alsgls.core.als`),
dense EM (:mod:`alsgls.core.em`) or the missing-data EM
(:mod:`alsgls.core.missing_em`) -- runs it under the BLAS thread limit, turns
its :class:`~alsgls.core.fit_result.SolverRun` into the public
:class:`~alsgls.GLSFit` (one place for the canonical rotation, the Heywood
flags and the coefficient layout) and emits the warnings, attributed to the
user's line.  Every public entry point (``als_gls``, ``em_gls``,
``fit_missing``, ``SUR.fit``, ``ALSGLS.fit``, ``select_rank``) ends here.
"""

from __future__ import annotations

import numpy as np

from .._threads import blas_threads
from .._warnings import warn
from ..exceptions import ConvergenceWarning, HeywoodWarning
from .als import STUCK_REASON, run_als
from .em import run_em
from .existence import ExistenceCheck, describe, floor_collapse, relation_at_rank
from .fit_result import GLSFit, MissingGLSFit, SolverRun, canonical_loadings
from .ops import design_matvec
from .missing_em import run_missing
from .options import SolverOptions
from .problem import Problem, check_fit_rank
from .restriction import LinearRestriction

__all__ = ["fit_problem", "SOLVERS"]

#: Values of ``solver``: the ALS core, the dense EM reference, or the
#: missing-data EM (chosen anyway when responses are missing).
SOLVERS = ("als", "em", "missing")
_NAMES = {"als": "ALS", "em": "dense EM", "em-missing": "missing-data EM"}


def fit_problem(problem: Problem, k: int, options: SolverOptions, *, solver: str = "als",
                quiet: bool = False, ledermann_warning: bool = True,
                missing_fit: bool | None = None,
                restriction: LinearRestriction | None = None,
                update_beta: bool = True) -> tuple[GLSFit, np.ndarray]:
    """Fit ``problem`` at rank ``k``; return the fit and its residuals.

    Parameters
    ----------
    problem : Problem
        Validated data (:func:`alsgls.core.problem.build_problem`).
    k : int
        Number of factors; checked against the problem here.  A rank whose
        likelihood has no finite maximum -- some set of at most ``k + 1``
        equations whose residuals can be made exactly linearly dependent -- is
        refused with its cause, before the fit when the search is affordable,
        else when the fit ends with such equations at the floor
        (:mod:`alsgls.core.existence`).  A fit whose end point the floor
        ``d_floor`` decides (nearly collinear responses) returns
        ``converged=False`` with a ``HeywoodWarning`` that says why.
    options : SolverOptions
    solver : {"als", "em", "missing"}
        Core for complete responses; with missing responses every choice
        uses the exact missing-data EM.  Weighted complete data run the chosen core on
        ``sqrt(w)``-scaled rows (exact weighted ML).
    quiet : bool
        Do not emit convergence, Heywood or identification warnings (the
        fit still records ``converged`` and ``heywood``); for the candidate
        fits of rank selection, which routinely trip them.
    ledermann_warning : bool
        Warn when ``k`` exceeds the Ledermann bound.
    missing_fit : bool, optional
        Return a :class:`MissingGLSFit`; default when the problem has missing
        responses, weights or dropped rows.
    restriction : LinearRestriction, optional
        Fit subject to ``R beta = q`` (:func:`alsgls.core.restriction.build_restriction`):
        the restricted MLE, by ALS or the dense EM; complete responses only.
    update_beta : bool, default True
        ALS only.  False keeps the (restricted) OLS coefficients and fits
        ``Sigma`` alone: the ML factor analysis of the OLS residuals (the
        first step of two-step FGLS at low rank).

    Returns
    -------
    fit : GLSFit or MissingGLSFit
    Rt : ndarray, shape (K, N)
        Residuals ``Y - X B`` of the (unscaled) problem, zero where missing.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "em" and problem.complete and options.accelerate == "anderson":
        raise ValueError("accelerate='anderson' is for the missing-data EM; the dense EM "
                         "accelerates with SQUAREM (accelerate=True or 'squarem') or not "
                         "at all (False or 'em')")
    _check_restricted(problem, solver, restriction, update_beta)
    k = check_fit_rank(problem, k, warn_ledermann=ledermann_warning and not quiet)
    check = _existence(problem, k, restriction, update_beta)
    if missing_fit is None:
        missing_fit = (not problem.complete or problem.w is not None
                       or problem.rows.size != problem.n_rows_in or problem.missing != "ml")
    with blas_threads(options.blas_threads):   # everything, the final assembly too
        if not problem.complete or solver == "missing":
            run = run_missing(problem, k, options)
        else:
            if solver == "als":
                # one design for every equation: GLS = OLS for any Sigma (Kruskal), so
                # the MLE is OLS plus the exact ML factor analysis of its residuals
                shared = problem.shared and restriction is None
                run = run_als(problem.scaled(), k, options, restriction=restriction,
                              update_beta=update_beta and not shared)
            else:
                run = run_em(problem.scaled(), k, options, restriction=restriction)
            if problem.w is not None:     # residuals of the caller's (unscaled) rows
                run.Rt = problem.Yt - design_matvec(problem.X, run.theta)
        collapse = _floor_decides(run, problem, k, check,
                                  exact=restriction is None and update_beta)
        fit = _assemble(run, problem, options, missing_fit)
    if not quiet:
        _warn(run, problem, options, collapse)
    return fit, run.Rt


def _existence(problem: Problem, k: int, restriction: LinearRestriction | None,
               update_beta: bool) -> ExistenceCheck:
    """Refuse a rank whose likelihood has no finite maximum (ValueError naming
    the dependent equations, :mod:`alsgls.core.existence`).

    The relation ignores linear restrictions, which can only bound the
    likelihood further: restricted fits are checked at full rank only (as
    before restrictions existed), and fixed coefficients (``update_beta=False``)
    not at all; the end point of any fit is still checked
    (:func:`_floor_decides`).
    """
    if not update_beta or k == 0 or (restriction is not None and k < problem.K - 1):
        return ExistenceCheck(None, False)
    check = relation_at_rank(problem, k, before_fit=True)
    if check.relation is not None:
        raise ValueError(describe(problem, check.relation, k))
    return check


def _floor_decides(run: SolverRun, problem: Problem, k: int, check: ExistenceCheck,
                   exact: bool) -> str | None:
    """Check the end point: when the floor supplies much of the variance of a
    direction of Sigma among the equations at the floor
    (:func:`alsgls.core.existence.floor_collapse`), the likelihood either has
    no finite maximum -- a dependent set of at most ``k + 1`` of those
    equations, a ValueError -- or its maximum lies at (nearly) singular Sigma,
    below what ``d_floor`` allows: the fit is not converged, and the returned
    note says why.
    """
    found = floor_collapse(run.F, run.D, run.floor) if run.F.shape[1] > 0 else None
    if (exact and not check.decided and k > 0
            and np.any(run.D <= run.floor * (1 + 1e-9))):
        # a Heywood end point of a fit whose existence was not decided before it
        rel = relation_at_rank(problem, k).relation
        if rel is not None and rel.equations.size <= k + 1:
            raise ValueError(describe(problem, rel, k))
    if found is None:
        return None
    C, share = found
    if exact and not check.decided and C.size >= 2:
        rel = relation_at_rank(problem, k, candidates=C).relation
        if rel is not None:
            raise ValueError(describe(problem, rel, k))
    run.converged = False
    names = ", ".join(problem.equation(int(j)) for j in C[:5]) + (" ..." if C.size > 5 else "")
    return (f"the floor d_floor decides this fit: {C.size} equation(s) at the floor ({names}) "
            f"have (nearly) collinear residuals -- the floor supplies {share:.0%} of the "
            f"variance of a direction of Sigma that the k={k} factors cannot carry -- so "
            "the likelihood's maximum lies at (nearly) singular Sigma and the fit is not "
            "converged; drop all but one of these equations, lower d_floor, or lower k")


def _check_restricted(problem: Problem, solver: str, restriction: LinearRestriction | None,
                      update_beta: bool) -> None:
    """What the restricted and fixed-beta fits support (ValueError otherwise)."""
    if restriction is not None:
        if restriction.P != problem.layout.P:
            raise ValueError(f"restriction has P={restriction.P} columns but the problem has "
                             f"P={problem.layout.P} coefficients")
        if not problem.complete or solver == "missing":
            raise ValueError("constraints need complete responses for now: pass "
                             "missing='drop' (listwise deletion) to fit a restricted model")
    if not update_beta and (solver != "als" or not problem.complete):
        raise ValueError("update_beta=False (fixed OLS coefficients) is for the ALS core "
                         "on complete responses")


def _canonical(run: SolverRun) -> tuple[np.ndarray, np.ndarray]:
    """Canonical loadings, and the NLL trace ending at the NLL of the returned
    point when the rotation lowered it (the rotation changes ``F F'`` only by
    round-off; the trace stays non-increasing)."""
    trace = np.asarray(run.trace, dtype=np.float64)
    F = canonical_loadings(run.F, run.D)
    if run.nll_at is not None and F.shape[1] > 0:
        trace[-1] = min(trace[-1], float(run.nll_at(F)))
    return F, trace


def _assemble(run: SolverRun, problem: Problem, options: SolverOptions,
              missing_fit: bool) -> GLSFit:
    """The public record from a core's outcome."""
    F, trace = _canonical(run)

    def per_iteration(name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in run.iterations], dtype=int)

    common = dict(
        B=problem.layout.unpad(run.theta), F=F,
        D=np.array(run.D, dtype=np.float64), nll_trace=trace, n_iter=len(run.trace) - 1,
        converged=bool(run.converged), heywood=_heywood(run), method=run.method,
        cg_iterations=per_iteration("cg_iterations"),
        beta_gap=np.asarray(run.beta_gap, dtype=float),
        eig_iterations=per_iteration("eig_iterations"),
        backtracks=per_iteration("backtracks"),
        profile_evaluations=per_iteration("profile_evaluations"), tol=options.tol)
    if not missing_fit:
        return GLSFit(**common)
    return MissingGLSFit(
        **common, n_observed=problem.n_observed, rows=np.array(problem.rows),
        weights=None if problem.w is None else np.array(problem.w), missing=problem.missing,
        quasi_newton=(per_iteration("quasi_newton") if run.method == "em-missing"
                      else np.zeros(0, dtype=int)),
        gap=float(run.gap))


def _heywood(run: SolverRun) -> np.ndarray:
    """Equations whose noise variance sits on its floor."""
    return run.D <= run.floor * (1 + 1e-9)


def _warn(run: SolverRun, problem: Problem, options: SolverOptions,
          collapse: str | None = None) -> None:
    """Convergence and Heywood warnings, attributed to the user's line."""
    if collapse is not None:
        warn(collapse, HeywoodWarning)
        return
    if not run.converged:
        n = len(run.trace) - 1
        limit = options.iterations({"em-missing": "missing"}.get(run.method, run.method))
        why = (f"reached max_iter={limit} {run.unit}s" if n >= limit else
               f"stopped after {n} {run.unit}s, before max_iter={limit}, when no step "
               "decreased the NLL any more (" + (
                   STUCK_REASON if run.method == "als"
                   else "the tolerance is below what round-off allows here") + ")")
        warn(f"the {_NAMES[run.method]} solver {why} without meeting tol={options.tol:g} "
             f"({run.note}); " + ("raise max_iter or loosen tol" if n >= limit
                                  else "loosen tol"), ConvergenceWarning)
    heywood = _heywood(run)
    if run.F.shape[1] > 0 and heywood.any():
        idx = np.flatnonzero(heywood)
        warn(f"{idx.size} equation(s) have D_j at the floor d_floor*s_j (Heywood cases), "
             f"e.g. {problem.equation(int(idx[0]))}; see the fit's heywood flags",
             HeywoodWarning)
