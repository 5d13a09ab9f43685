"""GLS given a fixed ``Sigma``, exact to solver precision (optionally restricted).

:func:`solve_gls` is the one-step estimator of two-step FGLS and of a
user-given ``Sigma``: it minimises ``sum_i r_i' Sigma^-1 r_i`` over the
coefficients, subject to ``R beta = q`` when a
:class:`~alsgls.core.restriction.LinearRestriction` is given.  It runs the
ALS beta-step's matrix-free PCG (``ops.normal_matvec`` and the block-Jacobi
preconditioner; projected PCG under a restriction) from a warm start until
the decrease still available, ``1/2 r' M^-1 r``, is below :data:`GLS_GAP`
in total-NLL units.  That quantity bounds ``1/2 ||e||_A^2`` up to the
preconditioner, and ``|e_j| <= ||e||_A sqrt((A^-1)_jj)``, so every
coefficient is within about ``sqrt(2 GLS_GAP)`` of its standard error of the
exact solution.  The residuals are then recomputed from the coefficients and
CG restarted (at most :data:`GLS_REFINEMENTS` passes) so that the recursively
updated CG residual cannot hide a drift; a pass that starts no lower than
:data:`ROUNDOFF` of the previous one has met the round-off floor of the
residuals, and the solve stops there.

With ``cov = LowRankCovariance(np.zeros((K, 0)), np.ones(K))`` the normal
matrix is ``blockdiag(X_j'X_j)``, the preconditioner is exact and the result
is stacked OLS (restricted OLS under a restriction) in one or two steps.
"""

from __future__ import annotations

import numpy as np

from .._threads import blas_threads
from .._warnings import warn
from ..exceptions import ConvergenceWarning
from .ops import (
    LowRankCovariance,
    design_matvec,
    gls_gradient,
    gls_pcg,
)
from .options import SolverOptions
from .problem import Problem
from .restriction import LinearRestriction

__all__ = ["solve_gls", "GLS_GAP", "GLS_REFINEMENTS", "ROUNDOFF"]

#: Stop when the decrease of the GLS objective still available is below this
#: (total-NLL units): coefficients within ~sqrt(2 GLS_GAP) = 1.4e-10 SE of exact.
GLS_GAP = 1e-20
#: CG passes from recomputed residuals, at most.
GLS_REFINEMENTS = 4
#: A pass whose true starting gap is above this fraction of the previous
#: pass's has reached the round-off floor of the residuals: stop there.
ROUNDOFF = 0.25


def solve_gls(problem: Problem, cov: LowRankCovariance, options: SolverOptions, *,
              restriction: LinearRestriction | None = None,
              theta0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (restricted) GLS coefficients given a fixed ``Sigma``.

    Parameters
    ----------
    problem : Problem
        Complete responses (weights are applied: exact weighted GLS).
    cov : LowRankCovariance
        ``Sigma = F F' + diag(D)``, fixed; ``F`` may have zero columns.
    options : SolverOptions
        ``cg_maxiter`` (per CG pass) and ``blas_threads`` are used.
    restriction : LinearRestriction, optional
        Solve subject to ``R beta = q``.
    theta0 : ndarray, shape (K, pmax), optional
        Warm start (made feasible under a restriction); default the
        (restricted) OLS estimate.

    Returns
    -------
    theta : ndarray, shape (K, pmax)
        Coefficients, zero-padded.
    Rt : ndarray, shape (K, N)
        Residuals ``Y - X B`` of the (unweighted) problem.

    Raises
    ------
    ValueError
        Missing responses, or ``cov`` / ``theta0`` of the wrong size.

    Warns
    -----
    ConvergenceWarning
        When the last CG pass ran out of its ``cg_maxiter`` iterations.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import simulate_sur
    >>> from alsgls.core.ops import LowRankCovariance
    >>> from alsgls.core.options import solver_options
    >>> from alsgls.core.problem import build_problem
    >>> Xs, Y, _ = simulate_sur(N=100, K=3, p=2, k=1, seed=0)
    >>> prob = build_problem(Xs, Y)
    >>> ols = LowRankCovariance(np.zeros((3, 0)), np.ones(3))
    >>> theta, Rt = solve_gls(prob, ols, solver_options())
    >>> np.allclose(theta, prob.ols()[0])
    True
    """
    if not problem.complete:
        raise ValueError("solve_gls needs complete responses (missing='drop'); with missing "
                         "responses the GLS information differs row by row")
    if cov.K != problem.K:
        raise ValueError(f"cov has K={cov.K} equations but the problem has K={problem.K}")
    with blas_threads(options.blas_threads):
        prob = problem.scaled()
        gram_inv = prob.gram_inv
        if theta0 is None:
            theta, _ = prob.ols()
        else:
            theta = np.array(theta0, dtype=np.float64)
            if theta.shape != (problem.K, problem.pmax):
                raise ValueError(f"theta0 must have shape (K, pmax) = "
                                 f"{(problem.K, problem.pmax)}, got {theta.shape}")
            theta *= problem.mask
        if restriction is not None:
            theta = restriction.block_metric(gram_inv).feasible(theta)
        theta, converged = _refine(prob, cov, gram_inv, theta, restriction, options.cg_maxiter)
    if not converged:
        warn(f"the GLS solve given Sigma did not reach its gap {GLS_GAP:g} within "
             f"{GLS_REFINEMENTS} x cg_maxiter={options.cg_maxiter} CG iterations; raise "
             "cg_maxiter", ConvergenceWarning)
    return theta, problem.Yt - design_matvec(problem.X, theta)


def _refine(prob: Problem, cov: LowRankCovariance, gram_inv: np.ndarray, theta: np.ndarray,
            restriction: LinearRestriction | None, maxiter: int) -> tuple[np.ndarray, bool]:
    """PCG passes from recomputed residuals until the true gap is below
    GLS_GAP, or stops falling (round-off); False when CG ran out of iterations."""
    X, gram = prob.X, prob.gram
    scale = cov.inverse_diagonal
    project = (None if restriction is None
               else restriction.block_metric(gram_inv, scale).project)
    prev = np.inf
    for _ in range(GLS_REFINEMENTS):
        r = gls_gradient(X, cov, prob.Yt - design_matvec(X, theta))
        theta, info = gls_pcg(X, gram, gram_inv, cov, theta, r, GLS_GAP, maxiter, None,
                              project)
        if info.iterations == 0 or (info.converged and info.start_gap > ROUNDOFF * prev):
            return theta, True     # the true gap is met, or round-off keeps it up
        prev = info.start_gap
    return theta, info.converged
