"""Does the unrestricted SUR likelihood have a finite maximum?

With ``Sigma`` unrestricted (``k = K - 1``) the Gaussian likelihood is
unbounded exactly when the residuals of some fit can be made linearly
dependent: when there are ``a != 0`` and coefficients ``gamma_j`` with

    sum_j (a_j y_j - X_j gamma_j) = 0,   gamma_j = 0 wherever a_j = 0

(take ``beta_j = gamma_j / a_j``: then ``sum_j a_j r_j = 0`` and ``Sigma-hat``
is singular).  Two equations with the same dependent variable, budget shares
that sum to one with an intercept in every equation, or more regressors than
rows are such cases.  A recursive system -- one equation's dependent variable
is a regressor of another -- is not: the relation would need ``gamma_j != 0``
in an equation with ``a_j = 0``.

The decision: for the equations ``J`` (all, at first), the ``a`` that work
(ignoring the side condition) are the null space of ``(I - P_J) Y_J``, the
responses of ``J`` with the span of all regressors of ``J`` projected out.
Equations whose coordinate vanishes on that null space cannot take part:
drop them (and their regressors) and repeat until ``J`` is stable.  The
likelihood is unbounded iff ``J`` stays non-empty; a generic vector of the
final null space is a relation with every ``a_j != 0``.  Cost per round: a
thin SVD of the ``N x P_J`` stacked regressors and one of ``N x |J|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .problem import Problem

__all__ = ["ExactRelation", "exact_relation", "describe", "EXISTENCE_CHECK_FLOPS"]

#: Relative singular value below which the projected responses are taken to
#: be exactly dependent (columns scaled to unit norm).
RELATION_RTOL = 1e-8
#: An equation takes part when its coordinate on the null space exceeds this.
COORDINATE_TOL = 1e-6
#: Skip the check when one round's SVD ``N P min(N, P)`` exceeds this (flops).
EXISTENCE_CHECK_FLOPS = 2e10


@dataclass(frozen=True)
class ExactRelation:
    """An exact linear relation among responses and their regressors.

    Attributes
    ----------
    equations : ndarray of int
        The equations ``J`` taking part (every ``a_j`` non-zero).
    a : ndarray, shape (len(equations),)
        Weights of the responses in one such relation, largest magnitude 1.
    """

    equations: np.ndarray
    a: np.ndarray


def _projected_responses(problem: Problem, J: np.ndarray) -> np.ndarray:
    """``(I - P_J) Y_J`` with unit-norm columns of ``Y_J`` (N, |J|)."""
    X = np.concatenate([problem.X[j, :, : problem.p[j]] for j in J], axis=1)
    X = X / np.linalg.norm(X, axis=0)
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    r = int(np.sum(s > s[0] * max(X.shape) * np.finfo(float).eps))
    Y = problem.Yt[J].T / np.linalg.norm(problem.Yt[J], axis=1)
    return Y - U[:, :r] @ (U[:, :r].T @ Y)


def _null_space(R: np.ndarray) -> np.ndarray:
    """Orthonormal basis (|J|, d) of the null space of ``R`` (N, |J|)."""
    _, s, Vt = np.linalg.svd(R, full_matrices=True)
    rank = int(np.sum(s > RELATION_RTOL))
    return Vt[rank:].T


def exact_relation(problem: Problem) -> ExactRelation | None:
    """The exact relation that makes the unrestricted likelihood unbounded,
    or None when its maximum is finite (see the module docstring).

    ``problem`` must be complete (a weighted one is checked on its
    ``sqrt(w)``-scaled rows).  Returns None without checking when a round
    would cost more than :data:`EXISTENCE_CHECK_FLOPS`.
    """
    prob = problem.scaled()
    N, J = prob.N, np.arange(prob.K)
    if N * prob.layout.P * min(N, prob.layout.P) > EXISTENCE_CHECK_FLOPS:
        return None
    while J.size:
        Z = _null_space(_projected_responses(prob, J))
        if Z.shape[1] == 0:
            return None
        keep = np.linalg.norm(Z, axis=1) > COORDINATE_TOL
        if keep.all():
            a = Z @ np.random.default_rng(0).standard_normal(Z.shape[1])
            a = a / np.linalg.norm(prob.Yt[J], axis=1)     # back to the responses' units
            return ExactRelation(J, a / np.max(np.abs(a)))
        J = J[keep]
    return None


def describe(problem: Problem, rel: ExactRelation) -> str:
    """The message that refuses an unrestricted fit with an exact relation."""
    names = [problem.equation(int(j)) for j in rel.equations]
    Yt = problem.Yt
    same = [(a, b) for i, a in enumerate(rel.equations) for b in rel.equations[i + 1:]
            if np.array_equal(Yt[a], Yt[b])]
    P_J = int(problem.p[rel.equations].sum())
    if P_J + rel.equations.size > problem.N:
        cause = (f"the {P_J} regressors of {', '.join(names)} and their responses number "
                 f"more than the N={problem.N} rows, so a combination of the responses is "
                 "fitted exactly")
    elif same:
        a, b = same[0]
        cause = (f"{problem.equation(int(a))} and {problem.equation(int(b))} have the "
                 "same dependent variable")
    else:
        terms = " + ".join(f"{c:.3g} y[{n}]" for c, n in zip(rel.a, names))
        cause = (f"the responses of {', '.join(names)} satisfy an exact linear relation "
                 f"with their own regressors ({terms} lies in the span of those "
                 "equations' regressors)")
    return (f"the unrestricted SUR (k = K - 1 = {problem.K - 1}) has no finite maximum-"
            f"likelihood estimate: {cause}, so the residuals of a fit can be made "
            "linearly dependent and Sigma-hat singular (the likelihood grows without "
            "bound); drop one of these equations, or fit a factor structure (a lower "
            "rank)")
