"""Does the SUR likelihood with ``Sigma = F F' + diag(D)`` have a finite maximum?

**The condition.**  Call a set ``J`` of equations *dependent* when its
responses satisfy an exact linear relation with its own regressors,

    sum_{j in J} (a_j y_j - X_j gamma_j) = 0   on the rows where all of J are observed,

with every ``a_j != 0`` and at least one such row.  Taking
``beta_j = gamma_j / a_j`` makes the residuals of ``J`` linearly dependent
(``R_J a = 0``).  Then, at rank ``k``:

    the likelihood is unbounded  <=>  some dependent set has at most k + 1 equations.

*If*: ``rank R_J <= |J| - 1 <= k``, so ``F_J F_J' = R_J' R_J / N`` is a
rank-``k`` loading block; with ``D_J = eps`` (other equations as they are)
``Sigma_eps -> Sigma_0`` singular, the null vector ``a`` of ``Sigma_0`` is
also a null vector of the residual covariance, ``tr(Sigma_eps^-1 S)`` stays
bounded and ``log|Sigma_eps| ~ log eps -> -inf``.  *Only if*: along a sequence
whose likelihood grows without bound ``Sigma`` tends to a singular
``Sigma_0 = F F' + D_0``; its null vectors ``v`` have ``F'v = 0`` and support
in ``Z = {j: D_0j = 0}``, so there are at least ``max(1, |Z| - k)`` of them,
and the trace term stays bounded only if ``R_Z v = 0`` for each: ``rank R_Z <=
min(|Z| - 1, k)``, and any ``k + 1`` of those residual columns (all of them if
``|Z| <= k + 1``) are dependent -- the minimal support of that dependence is a
dependent set of at most ``k + 1`` equations.  With missing responses the
same argument runs row by row: a row's ``Sigma_O`` becomes singular only if
it observes the whole support of a null vector, so the relation must hold
on exactly those rows.

Consequences: at ``k = 0`` only an equation fitted exactly (caught when the
problem is built); at full rank ``k = K - 1`` any dependent set (two
equations with the same dependent variable, budget shares summing to one
with an intercept in each, more regressors plus responses than rows); and
with ``m*`` the size of the smallest dependent set the likelihood is bounded
exactly for ``k <= m* - 2`` -- a rank-``k`` model is a subset of the
unrestricted one, so a bounded unrestricted likelihood bounds every rank.
Munnell's regions (17 rows, 7 regressors each): two equations have 13
distinct regressors and 2 responses, fewer than 17, but any three have 19 + 3,
more than 17, so ``m* = 3`` and only ``k <= 1`` has a maximum.  A *Heywood
case* -- ``D_j -> 0`` while ``Sigma`` stays non-singular (``F_H`` of full row
rank on the equations ``H`` at the floor) -- is a legitimate boundary
maximum, not a failure of existence.  A recursive system (one dependent
variable a regressor of another equation) is not dependent: the relation
would need ``gamma_j != 0`` where ``a_j = 0``.

**The decision.**  :func:`exact_relation` finds the union of all dependent
sets by pruning: for ``J`` (all equations at first) the relations that use
all of ``J``'s regressors are the null space of ``(I - P_J) Y_J`` on the rows
observing all of ``J``; equations whose coordinate vanishes on it take part
in no dependent set; drop them and repeat (a relation on a subset survives
the restriction to fewer rows and more regressors, so nothing dependent is
ever dropped).  What remains is one dependent set (a generic null vector),
or nothing: then no rank has a problem.  Below full rank
:func:`relation_at_rank` then looks for a dependent set of at most ``k + 1``
equations among the survivors by enumerating subsets by size, each an
exact test (:func:`_dependent`); past :data:`SUBSET_BUDGET` subsets it
gives up (``decided=False``) and the fit's own end point is checked instead
(:func:`floor_collapse`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from ._backend import is_lazy
from .problem import Problem

__all__ = ["ExactRelation", "ExistenceCheck", "exact_relation", "relation_at_rank",
           "bounded_rank", "describe", "floor_collapse", "EXISTENCE_CHECK_FLOPS", "SUBSET_BUDGET",
           "FLOOR_SHARE"]

#: Relative singular value below which the projected responses are taken to
#: be exactly dependent (each response scaled to unit *centred* norm, so an
#: offset such as ``Y + 1e9`` is no relation).  The threshold grows with the
#: round-off an offset leaves in the projection: at least
#: ``OFFSET_ROUNDOFF * max_j ||y_j|| / ||y_j - mean(y_j)||``.
RELATION_RTOL = 1e-8
OFFSET_ROUNDOFF = 1e4 * np.finfo(float).eps
#: An equation takes part when its coordinate on the null space exceeds this.
COORDINATE_TOL = 1e-6
#: Skip the pruning when one round's SVD ``n P min(n, P)`` exceeds this (flops).
EXISTENCE_CHECK_FLOPS = 2e10
#: Below full rank the pruning runs before a fit only when one SVD of the
#: stacked regressors costs at most this (flops, about 1 ms): at K = 100,
#: N = 500 the SVDs took 23 ms of a 45 ms fit.
PREFIT_FLOPS = 2e7
#: Subsets of equations tested one by one for a small dependent set before
#: the check gives up (each is one SVD of the subset's stacked regressors).
SUBSET_BUDGET = 2000
#: The floor decides a fit when, among the equations at the floor, some
#: direction of ``Sigma`` gets at least this fraction of its variance from
#: the floor (``1 / lambda_min(I + D_H^-1/2 F_H F_H' D_H^-1/2)``).  A genuine
#: Heywood case has ``F_H`` of full row rank and a fraction of order
#: ``d_floor``; a collapsing ``Sigma`` has a fraction near 1.
FLOOR_SHARE = 0.1


@dataclass(frozen=True)
class ExactRelation:
    """A dependent set of equations (module docstring).

    Attributes
    ----------
    equations : ndarray of int
        The equations ``J`` taking part (every ``a_j`` non-zero).
    a : ndarray, shape (len(equations),)
        Weights of the responses in one such relation, largest magnitude 1.
    n_rows : int
        Rows on which the relation holds (where every equation of ``J`` is
        observed; all rows for complete data).
    minimal : bool
        No dependent set has fewer equations (found by the search by size).
    """

    equations: np.ndarray
    a: np.ndarray
    n_rows: int = 0
    minimal: bool = False


@dataclass(frozen=True)
class ExistenceCheck:
    """Outcome of :func:`relation_at_rank`.

    Attributes
    ----------
    relation : ExactRelation or None
        A dependent set of at most ``k + 1`` equations: no finite maximum.
    decided : bool
        True when ``relation`` is None because none exists (bounded); False
        when the search was too expensive to finish.
    """

    relation: ExactRelation | None
    decided: bool


def _rows(problem: Problem, J) -> np.ndarray | None:
    """Rows observing every equation of ``J`` (None: all rows)."""
    if problem.O is None:
        return None
    return np.flatnonzero(problem.O[np.asarray(J)].min(axis=0) > 0)


def _unit_columns(A: np.ndarray) -> np.ndarray:
    """Columns scaled to unit norm, safe at any representable scale."""
    A = A / np.maximum(np.abs(A).max(axis=0), np.finfo(float).tiny)
    n = np.linalg.norm(A, axis=0)
    return A / np.where(n > 0, n, 1.0)


def _designs(problem: Problem, J, rows) -> np.ndarray:
    """The stacked regressors of ``J`` on ``rows`` (one copy of a shared design)."""
    if problem.shared:
        X = problem.X[0, :, : problem.pmax]
        return X if rows is None else X[rows]
    sel = slice(None) if rows is None else rows
    return np.concatenate([problem.X[j, sel, : problem.p[j]] for j in J], axis=1)


def _response_scale(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For responses ``Y`` (n, m): the centred norm of each column, safe at any
    representable scale (the uncentred norm for a constant column), and the
    factor ``||y|| / ||y - mean(y)||`` by which an offset amplifies round-off."""
    big = np.maximum(np.abs(Y).max(axis=0), np.finfo(float).tiny)
    Z = Y / big
    full = np.linalg.norm(Z, axis=0)
    centred = np.linalg.norm(Z - Z.mean(axis=0), axis=0)
    ok = centred > 0
    scale = big * np.where(ok, centred, np.where(full > 0, full, 1.0))
    return scale, np.where(ok, full / np.where(ok, centred, 1.0), 1.0)


def _projected_responses(problem: Problem, J, rows=None) -> tuple[np.ndarray, float]:
    """``(I - P_J) Y_J`` on ``rows`` with the columns of ``Y_J`` scaled to unit
    centred norm (n, |J|), and the singular value below which it counts as
    exactly dependent (:data:`RELATION_RTOL`, :data:`OFFSET_ROUNDOFF`)."""
    X = _unit_columns(_designs(problem, J, rows))
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    r = int(np.sum(s > s[0] * max(X.shape) * np.finfo(float).eps)) if s.size else 0
    Y = problem.Yt[np.asarray(J)].T
    Y = Y if rows is None else Y[rows]
    scale, offset = _response_scale(Y)
    Y = Y / scale
    tol = max(RELATION_RTOL, OFFSET_ROUNDOFF * float(offset.max()))
    return Y - U[:, :r] @ (U[:, :r].T @ Y), tol


def _null_space(Rt: tuple[np.ndarray, float]) -> tuple[int, np.ndarray, np.ndarray]:
    """The null space of ``R`` (n, m), given as ``(R, tol)``
    (:func:`_projected_responses`), without an m x m basis: its dimension, the
    norm of each coordinate on it (m,) and a generic vector of it (m,)."""
    R, tol = Rt
    _, s, Vt = np.linalg.svd(R, full_matrices=False)
    Vr = Vt[: int(np.sum(s > tol))]                           # row space (r, m)
    coord = np.sqrt(np.maximum(1.0 - np.einsum("rm,rm->m", Vr, Vr), 0.0))
    g = np.random.default_rng(0).standard_normal(R.shape[1])
    return R.shape[1] - Vr.shape[0], coord, g - Vr.T @ (Vr @ g)


def _relation(problem: Problem, J: np.ndarray, a: np.ndarray, rows, minimal=False):
    """The relation ``a`` (unit-column units) of ``J`` in the responses' units."""
    Y = problem.Yt[J] if rows is None else problem.Yt[J][:, rows]
    c, _ = _response_scale(Y.T)                     # what _projected_responses divided by
    a = a / (c / c.max())
    n = problem.N if rows is None else rows.size
    return ExactRelation(J, a / np.max(np.abs(a)), n, minimal)


def _flops(problem: Problem, J, rows) -> float:
    n = problem.N if rows is None else rows.size
    P = problem.pmax if problem.shared else int(problem.p[np.asarray(J)].sum())
    return float(n) * P * min(n, P)


def _dependent(problem: Problem, J: np.ndarray, minimal: bool = False) -> ExactRelation | None:
    """A relation with every ``a_j != 0`` on exactly the set ``J``, or None (exact)."""
    rows = _rows(problem, J)
    if rows is not None and rows.size == 0:
        return None
    dim, coord, a = _null_space(_projected_responses(problem, J, rows))
    if dim == 0 or not (coord > COORDINATE_TOL).all():
        return None
    return _relation(problem, J, a, rows, minimal)


def _prune(problem: Problem) -> tuple[ExactRelation | None, np.ndarray | None]:
    """The pruning of the module docstring.

    Returns ``(relation, J)``: a dependent set and the survivors; ``(None,
    None)`` when no set of equations is dependent; ``(None, J)`` when it could
    not finish (no row observes all of ``J``, or the SVD would cost more than
    :data:`EXISTENCE_CHECK_FLOPS`) -- every dependent set lies within ``J``.
    """
    J = np.arange(problem.K)
    while J.size:
        rows = _rows(problem, J)
        if (rows is not None and rows.size == 0) or _flops(problem, J, rows) > EXISTENCE_CHECK_FLOPS:
            return None, J
        dim, coord, a = _null_space(_projected_responses(problem, J, rows))
        if dim == 0:
            return None, None
        keep = coord > COORDINATE_TOL
        if keep.all():
            return _relation(problem, J, a, rows), J
        J = J[keep]
    return None, None


def exact_relation(problem: Problem) -> ExactRelation | None:
    """A dependent set of equations (the unrestricted likelihood is then
    unbounded), or None when there is none or the check could not finish
    (see :func:`_prune`).  Positive row weights do not change the answer."""
    return _prune(problem)[0]


def tied_pairs(keys: np.ndarray) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, of rows of ``keys`` (K, m) that are equal and
    neighbours in lexicographic order, sorted: every set of equal rows is
    linked by a chain of such pairs.  O(K log K), no Python loop over rows.

    Numeric keys are first sorted on their first column alone; only rows
    that share it with another row (none, for continuous data) go through
    the full lexicographic sort."""
    if keys.dtype.kind == "f" and keys.shape[0] > 1 and keys.shape[1] > 1:
        order = np.argsort(keys[:, 0], kind="stable")
        eq = keys[order[1:], 0] == keys[order[:-1], 0]
        dup = np.zeros(keys.shape[0], dtype=bool)
        dup[1:] |= eq
        dup[:-1] |= eq
        cand = order[dup]
        if cand.size < keys.shape[0]:
            if cand.size == 0:
                return np.zeros((0, 2), dtype=np.intp)
            pairs = np.sort(cand[tied_pairs(keys[cand])], axis=1)
            return pairs[np.lexsort(pairs.T[::-1])]
    order = np.lexsort(keys.T[::-1])
    tie = np.all(keys[order[1:]] == keys[order[:-1]], axis=1)
    pairs = np.sort(np.column_stack([order[:-1][tie], order[1:][tie]]), axis=1)
    return pairs[np.lexsort(pairs.T[::-1])]


def _identical_pair(problem: Problem) -> ExactRelation | None:
    """Two equations with bit-identical responses (complete data): ``a = (1, -1)``.

    Rows of ``Yt`` tied on a few of their entries (:func:`tied_pairs`; exact
    values, so equal rows tie) are then sorted by their full bytes, so that
    equal rows are neighbours; the smallest pair ``(i, j)`` is reported.
    Dask data use hashes of the rows instead (``LazyProblem``).
    """
    if problem.O is not None or problem.K < 2:
        return None
    if is_lazy(problem.Yt):         # Dask data: from the validation pass's hashes
        pair = problem._identical_pair()
    else:
        Yt = np.ascontiguousarray(problem.Yt)
        N = Yt.shape[1]
        ties = tied_pairs(Yt[:, np.unique(np.linspace(0, N - 1, min(N, 8)).astype(int))])
        cand = np.unique(ties)
        rows = Yt[cand].view(np.dtype((np.void, N * Yt.itemsize))).ravel()
        same = tied_pairs(rows[:, None])
        pair = cand[same[0]] if same.size else None
    if pair is None:
        return None
    return ExactRelation(np.asarray(pair), np.array([1.0, -1.0]), problem.N, True)


def _subsets(c: int, largest: int) -> int:
    """Subsets of 2..``largest`` of ``c`` equations."""
    return sum(comb(c, m) for m in range(2, min(largest, c) + 1))


def _smallest(problem: Problem, C: np.ndarray, largest: int) -> ExistenceCheck:
    """The smallest dependent set of 2..``largest`` equations within ``C``, by
    size; undecided when there are more than :data:`SUBSET_BUDGET` subsets."""
    if _subsets(C.size, largest) > SUBSET_BUDGET:
        return ExistenceCheck(None, False)
    for m in range(2, min(largest, C.size) + 1):
        for A in combinations(C.tolist(), m):
            rel = _dependent(problem, np.array(A), minimal=True)
            if rel is not None:
                return ExistenceCheck(rel, True)
    return ExistenceCheck(None, True)


def relation_at_rank(problem: Problem, k: int, candidates: np.ndarray | None = None,
                     *, before_fit: bool = False) -> ExistenceCheck:
    """Is the rank-``k`` likelihood unbounded?  A dependent set of at most
    ``k + 1`` equations if so (module docstring).

    ``candidates`` restricts the search to those equations (e.g. the
    equations at the floor of a finished fit); by default all equations:
    bit-identical responses first, then the pruning -- below full rank only
    where it can prove boundedness (``rank of all regressors + K <= N``) or
    leaves few enough survivors to search -- then the search by size.  Cost:
    the pruning's SVDs (each within :data:`EXISTENCE_CHECK_FLOPS`), then at
    most :data:`SUBSET_BUDGET` small SVDs; beyond that ``decided=False``.
    ``before_fit``: below full rank, stop after the identical responses
    (``decided=False``) when one SVD of the stacked regressors would cost
    more than :data:`PREFIT_FLOPS` -- the dispatcher then checks the fit's
    end point in full if it lies on the floor.
    """
    if k <= 0 or problem.K < 2:
        return ExistenceCheck(None, True)     # k = 0: exact fits are refused earlier
    if is_lazy(problem.Yt):     # Dask data: reduced statistics, gathered candidates
        return problem.relation_at_rank(k, candidates)
    if candidates is not None:
        return _smallest(problem, np.asarray(candidates, dtype=int), k + 1)
    rel = _identical_pair(problem)
    if rel is not None:
        return ExistenceCheck(rel, True)
    K, N = problem.K, problem.N
    if before_fit and k < K - 1 and _flops(problem, np.arange(K), None) > PREFIT_FLOPS:
        return ExistenceCheck(None, False)         # as much as a fit: after it, if needed
    regressors = problem.pmax if problem.shared else min(N, int(problem.p.sum()))
    if k < K - 1 and regressors + K > N and _subsets(K, k + 1) > SUBSET_BUDGET:
        return ExistenceCheck(None, False)         # the pruning could not decide
    rel, C = _prune(problem)
    if C is None:
        return ExistenceCheck(None, True)          # no dependent set at all
    if rel is not None and rel.equations.size == 1:
        return ExistenceCheck(None, False)         # an exact fit: the solvers refuse it
    if rel is not None and rel.equations.size <= k + 1:
        return ExistenceCheck(rel, True)
    return _smallest(problem, C, k + 1)


def bounded_rank(problem: Problem, kmax: int) -> int:
    """The largest rank ``k <= kmax`` whose likelihood is bounded, as far as
    :func:`relation_at_rank` can decide: ``m - 2`` for the smallest dependent
    set of ``m`` equations, ``kmax`` when none of at most ``kmax + 1`` exists
    (or the search is too expensive; the fits' end points are then checked).
    For rank selection, whose candidates must have a maximum to compare."""
    check = relation_at_rank(problem, kmax)
    rel = check.relation
    if rel is None:
        return kmax
    if not rel.minimal:                  # from the pruning: look for a smaller one
        smaller = _smallest(problem, rel.equations, rel.equations.size - 1).relation
        rel = smaller if smaller is not None else rel
    return max(0, min(kmax, rel.equations.size - 2))


def floor_collapse(F: np.ndarray, D: np.ndarray, floor: np.ndarray
                   ) -> tuple[np.ndarray, float] | None:
    """Does the floor decide this point?

    Among the equations ``H`` at the floor, ``1 / lambda_min`` of
    ``I + D_H^-1/2 F_H F_H' D_H^-1/2`` is the largest fraction of the
    variance of a direction of ``Sigma_HH`` that the floor supplies: 1 when
    more equations sit at the floor than the factors can carry
    (``rank F_H < |H|``), about ``d_floor`` in a genuine Heywood case.
    Returns ``(equations, share)`` -- the equations spanned by the directions
    whose share is at least :data:`FLOOR_SHARE` -- or None.
    """
    H = np.flatnonzero(D <= floor * (1 + 1e-9))
    if H.size == 0 or not (np.all(D[H] > 0) and np.all(np.isfinite(F[H]))):
        return None               # nothing at the floor, or D underflowed (|Y| < 1e-154)
    B = F[H] / np.sqrt(D[H])[:, None]
    lam, V = np.linalg.eigh(np.eye(H.size) + B @ B.T)
    share = 1.0 / max(lam[0], 1.0)
    if share < FLOOR_SHARE:
        return None
    Vc = V[:, lam <= 1.0 / FLOOR_SHARE]
    return H[np.linalg.norm(Vc, axis=1) > 1e-3], share


def _cause(problem: Problem, rel: ExactRelation, names: list) -> str:
    """Why the equations of ``rel`` are dependent, in words."""
    J, Yt = rel.equations, problem.Yt
    rows = _rows(problem, J)
    on = "" if rows is None else f" on the {rows.size} rows where all of them are observed"
    n = problem.N if rows is None else rows.size
    ys = Yt[J] if rows is None else Yt[J][:, rows]
    same = [(a, b) for a in range(J.size) for b in range(a + 1, J.size)
            if np.array_equal(ys[a], ys[b])]
    P_J = int(problem.p[J].sum())
    if same:
        a, b = same[0]
        return (f"{problem.equation(int(J[a]))} and {problem.equation(int(J[b]))} have the "
                f"same dependent variable{on}")
    if P_J + J.size > n:
        return (f"the {P_J} regressors of {', '.join(names)} and their responses number "
                f"more than the {'N=' if rows is None else ''}{n} rows{on}, so a "
                "combination of the responses is fitted exactly")
    terms = " + ".join(f"{c:.3g} y[{m}]" for c, m in zip(rel.a, names))
    return (f"the responses of {', '.join(names)} satisfy an exact linear relation "
            f"with their own regressors{on} ({terms} lies in the span of those "
            "equations' regressors)")


def describe(problem: Problem, rel: ExactRelation, k: int | None = None) -> str:
    """The message that refuses a rank-``k`` fit (default ``K - 1``) with ``rel``."""
    if is_lazy(problem.Yt):     # Dask data: the equations of rel, gathered
        problem, rel = problem.gathered(rel)
    K = problem.K
    k = K - 1 if k is None else k
    names = [problem.equation(int(j)) for j in rel.equations]
    cause = _cause(problem, rel, names)
    m = rel.equations.size
    lower = ("fit a factor structure (a lower rank)" if not rel.minimal
             else f"fit rank {m - 2} or lower" if m > 2
             else "fit them as uncorrelated equations (rank 0)")
    if k == K - 1:
        return (f"the unrestricted SUR (k = K - 1 = {K - 1}) has no finite maximum-"
                f"likelihood estimate: {cause}, so the residuals of a fit can be made "
                "linearly dependent and Sigma-hat singular (the likelihood grows without "
                f"bound); drop one of these equations, or {lower}")
    return (f"at rank k = {k} the likelihood has no finite maximum: {cause}; these {m} "
            f"equations (at most k + 1 = {k + 1}) can have linearly dependent residuals, "
            "which the k factors carry while their noise variances go to 0, so Sigma-hat "
            "becomes singular and the likelihood grows without bound (a fit would stop "
            f"where d_floor decides); drop one of these equations, or {lower}")
