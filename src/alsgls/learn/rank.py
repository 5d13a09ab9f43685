"""Choosing the number of latent factors ``k`` of ``Sigma = F F' + diag(D)``.

Methods (DESIGN.md section 5):

* ``"onatski"`` -- Onatski's (2010) edge-distribution (ED) estimator on the
  top eigenvalues of the correlation matrix of the OLS residuals.  The
  eigenvalues come from the standardised residuals W (N x K): a dense
  eigensolve of the Gram matrix of W's short side when ``min(N, K)`` is at
  most ``DENSE_SVD_LIMIT``, else a truncated (ARPACK) SVD of W; no K x K
  matrix is formed at scale.  Costs one OLS pass, no likelihood fit.
* ``"bic"``, ``"aic"`` -- information criteria of the exact ML fits with the
  parameter count ``P + K k + K - k(k-1)/2`` (:func:`n_parameters`).
* ``"cv"`` -- ``n_folds``-fold cross-validated held-out NLL per row.
* ``"auto"`` -- a whitened edge test: count the eigenvalues of the OLS
  residual covariance, whitened by the noise variances of a rank-``r`` fit,
  above the Marchenko-Pastur edge of the ``(N - p - r) x (K - r)`` residual
  dimensions plus ``TW_QUANTILE`` Tracy-Widom scales, starting from the
  (conservative) correlation matrix (``r = 0``) and refitting at the counted
  rank until the count repeats (at most ``AUTO_MAX_FITS`` fits, usually 1).
  Falls back to ``"bic"`` when the residual spectrum is too short for the
  edge (``min(N - p, K) < ED_MIN_SPECTRUM``).

**The whitened edge test.**  Let ``W`` (N x K) be the OLS residuals whitened
by the noise variances of the rank-``r`` fit (:func:`_whitening_variances`)
and ``n = N - p``.  Once the ``r`` factors are taken out, the noise of ``W``
has ``n - r`` degrees of freedom per equation (the regressors and the factor
scores use ``p + r`` rows' worth) and ``K - r`` per row (the loadings use
``r``); the largest eigenvalue of ``W' W`` beyond the ``r`` factors is then
``sigma^2 (sqrt(n - r) + sqrt(K - r))^2`` plus Tracy-Widom fluctuations
(Johnstone, 2001, centring and scaling).  The noise level ``sigma^2`` comes
from the bulk: the trace of ``W' W`` less its top ``r`` eigenvalues over
``(n - r)(K - r)``.

Why not from ``D``: the seed's ``"auto"`` whitened by the ML ``D`` and read
``sigma^2`` from its absolute scale with the edge ``(sqrt(n) + sqrt(K))^2 / N``.
But the ML ``D`` of a rank-``r`` fit is about ``D (N - p - r) / N`` (each
factor's scores use one row's worth of each equation's noise), so at K >> N,
where 1 % of the edge is about one Tracy-Widom scale, every factor fitted
lowered the edge by about a scale and each refit counted one more (N = 100,
K = 2000, 4 true factors: counts 4, 5, 6, 7; 7-12 returned at K = 1000-2000).
Normalised by the bulk, the count does not depend on ``r``: fitted with 1-3
spurious factors, the count stays at the truth.  A fitted spurious factor
does raise its own eigenvalue (by 3-4 scales, measured: the fit shapes the
whitening around it), so a false positive at the true rank is kept; its rate
is the test's, since the count climbs from the conservative correlation
count.  A count that does not settle -- it returns to a rank fitted before
with another answer, or changes at each of ``AUTO_MAX_FITS`` fits -- warns
(:class:`RankSelectionWarning`) and returns the smallest rank of the cycle
(of the path, for a drift).

The test is calibrated for one design shared by every equation (the noise
of every column lies in the same ``n``-dimensional space): the
``(r + 1)``-th score at the true rank averaged -1.4 to -2.1 Tracy-Widom
units (N = 100, K/N = 1-20, 0 or 4 factors, 30 replicates; the TW mean is
-1.21).  With separate designs the noise spreads over up to ``N`` dimensions
and the edge of ``n`` rows is conservative: -1.9 at K/N = 1 to -4.7 at
K/N = 20, which costs power just above the detection limit.

**Detection limit.**  Write ``theta`` for an eigenvalue of the whitened signal
``D^-1/2 F F' D^-1/2`` (a factor's signal-to-noise ratio summed over the
K equations; its whitened covariance eigenvalue is ``1 + theta``).  When
``theta < sqrt(K/(N - p))`` the corresponding sample eigenvalue is swallowed
by the Marchenko-Pastur noise bulk (the BBP phase transition) and *no* method
can detect the factor from N rows; above it the sample eigenvalue of
``W' W / n`` sits near ``(1 + theta)(1 + gamma / theta)`` with
``gamma = K / (N - p)``, and ``"auto"`` counts it once that exceeds the edge
``(1 + sqrt(gamma))^2`` by ``TW_QUANTILE`` Tracy-Widom scales.  Near the
limit detection is unreliable.  ``RankSelection.detection_limit`` reports
``sqrt(K/N)``, the limit without the ``p`` regressors' degrees of freedom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .._threads import blas_threads
from .._warnings import warn
from ..exceptions import RankSelectionWarning
from ..core.dispatch import fit_problem
from ..core.existence import bounded_rank
from ..core.ops import design_matvec
from ..core.options import SolverOptions, check_integer, solver_options
from ..core.problem import Problem, build_problem

__all__ = ["RankSelection", "RankSelectionWarning", "select_rank", "select_rank_problem",
           "max_identifiable_rank", "RANK_METHODS"]

#: Accepted values of ``method``.
RANK_METHODS = ("auto", "onatski", "bic", "aic", "cv")
#: Largest rank searched when ``max_rank`` is not given.
DEFAULT_MAX_RANK = 12
#: The ED estimator regresses 5 eigenvalues beyond the candidate range on
#: ``j^(2/3)``; it needs ``max_rank + 5`` eigenvalues (Onatski, 2010, eq. 10).
ED_TAIL = 5
#: ``"auto"`` uses the ED estimator only when the residual spectrum has at
#: least this many eigenvalues (``min(N - p, K)``): below it the noise edge
#: cannot be estimated and BIC is used instead.
ED_MIN_SPECTRUM = 20
#: Tracy-Widom (beta = 1) 99.9 % quantile: ``"auto"`` counts whitened residual
#: eigenvalues more than this many TW scales above the Marchenko-Pastur edge
#: (Johnstone, 2001, centring and scaling), a 0.1 % false-positive rate per
#: noise eigenvalue under the null.
TW_QUANTILE = 3.27
#: ``"auto"`` refits at most this many times while the whitened count changes
#: (settled counts took 0-2 fits in ``benchmarks/rank_selection.py``).
AUTO_MAX_FITS = 4
#: ``"auto"`` whitens equation ``j`` by a noise variance of at least
#: ``WHITEN_FLOOR * s_j``, ``s_j`` its OLS residual variance, and divides by at
#: most ``1 / WHITEN_FLOOR`` for its leverage (:func:`_whitening_variances`): a
#: Heywood equation (``D_j`` at the solver's floor ``d_floor * s_j``) would
#: otherwise become a spike of its own.  Noise shares below 1 % are rare; an
#: equation floored here is under-weighted, which can only lower the count.
WHITEN_FLOOR = 0.01
#: Use a dense eigensolver on the short side's Gram matrix (instead of ARPACK)
#: when ``min(N, K)`` is at most this.
DENSE_SVD_LIMIT = 200
#: Information-criterion and CV searches stop after this many consecutive
#: candidates that fail to improve the best score.
PATIENCE = 2
#: Relative tolerance of the candidate fits.  Adding a factor changes the total
#: NLL by O(N K) and the BIC penalty by O(K log N); 1e-6 of the total NLL is
#: O(N K 1e-6), orders of magnitude below both (measured: 0.25 units at
#: N = 200, K = 1000 against a penalty of 2650 per factor).
SELECTION_TOL = 1e-6


@dataclass(frozen=True)
class RankSelection:
    """The outcome of :func:`select_rank`.

    Attributes
    ----------
    rank : int
        The selected number of factors.
    method : str
        The method that made the choice (``"auto"``, or ``"bic"`` when
        ``"auto"`` fell back for a short spectrum; see ``requested``).
    requested : str
        The method asked for.
    candidates : ndarray of int, shape (m,)
        The ranks scored: ``0, 1, ...`` for the likelihood methods (a
        sequential search, see :func:`select_rank`), ``1 .. max_rank`` for
        ``"onatski"``; for ``"auto"``, the positions ``1 .. m`` of the
        whitened eigenvalues in ``scores``.
    scores : ndarray, shape (m,)
        For ``"bic"``/``"aic"``: the criterion (lower is better); for ``"cv"``:
        held-out NLL per row (lower is better); for ``"onatski"``: the
        eigenvalue gaps ``lambda_i - lambda_{i+1}``, compared with
        ``threshold``; for ``"auto"``: the D-whitened eigenvalues of the fit at
        ``rank`` in Tracy-Widom units above the noise edge, compared with
        ``threshold`` (settled, exactly ``rank`` of them exceed it, unless
        capped by ``max_rank``).
    eigenvalues : ndarray, shape (max_rank + 5,) or shorter
        Largest eigenvalues of the correlation matrix of the OLS residuals,
        decreasing (they sum, over all K, to K).
    threshold : float
        ED threshold ``delta`` (``"onatski"``), ``TW_QUANTILE`` (``"auto"``),
        NaN otherwise.
    noise_edge : float
        Marchenko-Pastur upper edge ``(1 + sqrt(K / (N - p)))^2`` of the noise
        eigenvalues of a correlation matrix with no factors.
    detection_limit : float
        ``sqrt(K / N)``: factors whose whitened signal eigenvalue is below
        this cannot be detected by any method.
    max_rank : int
        Largest rank considered.
    n_fits : int
        Number of full likelihood fits performed (0 for ``"onatski"``, at
        most ``AUTO_MAX_FITS`` for ``"auto"``; a count of 0 needs no fit).
    N, K : int
        Rows and equations of the data.
    details : dict
        Method-specific extras; for ``"auto"``: ``"ranks_visited"`` (the
        correlation count, then the count after each whitening),
        ``"whitened_eigenvalues"`` and ``"noise_variances"`` (each
        whitening's spectrum and bulk variance) and ``"reason"`` (why it did
        not settle, or ``""``).
    settled : bool
        For ``"auto"``: whether the count repeated the rank fitted; when not,
        a :class:`RankSelectionWarning` said why.  True for other methods.
    """

    rank: int
    method: str
    requested: str
    candidates: np.ndarray
    scores: np.ndarray
    eigenvalues: np.ndarray
    threshold: float
    noise_edge: float
    detection_limit: float
    max_rank: int
    n_fits: int
    N: int
    K: int
    details: dict = field(default_factory=dict, repr=False, compare=False)
    settled: bool = True

    def __repr__(self) -> str:
        return (
            f"RankSelection(rank={self.rank}, method={self.method!r}, "
            f"max_rank={self.max_rank}, n_fits={self.n_fits}, N={self.N}, K={self.K})"
        )


def max_identifiable_rank(K: int, N: int | None = None, p: int = 0) -> int:
    """Largest ``k`` for which ``F F'`` and ``D`` are identified.

    Parameters
    ----------
    K : int
        Number of equations.
    N : int, optional
        Number of rows; when given, also require ``N > k + p``.
    p : int, default 0
        Largest number of regressors of an equation.

    Returns
    -------
    int
        The largest ``k >= 0`` with ``(K - k)^2 >= K + k`` (Ledermann bound)
        and ``k < K`` (and ``N > k + p`` when ``N`` is given).

    Examples
    --------
    >>> max_identifiable_rank(3), max_identifiable_rank(10), max_identifiable_rank(100)
    (1, 6, 86)
    """
    k = 0
    while k + 1 < K and (K - k - 1) ** 2 >= K + k + 1:
        k += 1
    if N is not None:
        k = min(k, max(N - p - 1, 0))
    return k


# --------------------------------------------------------------------------
# Residual spectrum
# --------------------------------------------------------------------------

def _top_eigenvalues(W: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Largest ``m`` eigenvalues of ``W' W``: a dense eigensolve of the short
    side's Gram when ``min(W.shape) <= max(DENSE_SVD_LIMIT, 3 m)``, else an
    ARPACK truncated SVD of ``W``.

    Not :func:`alsgls.core.ops.top_eigenpairs`: that block subspace iteration
    serves the ALS factor step, which wants k factor eigenvalues well
    separated from the rest.  Rank selection needs ``max_rank + ED_TAIL``
    eigenvalues reaching into the Marchenko-Pastur bulk, where neighbours are
    nearly equal and subspace iteration converges at a rate near 1.  Measured
    on the settings of ``tests/test_rank.py`` and
    ``benchmarks/rank_selection.py`` (N in {200, 1000}, K in {100, 1000},
    strengths 8, 4, 2, 1, two seeds, 13 eigenvalues, ``rtol=1e-10``): with
    the solvers' ``eig_maxiter=100`` it stopped unconverged, relative errors
    up to 5e-8 (N=200, K=1000) and 1.5e-5 (N=K=1000); allowed 1000
    iterations it matched this function to 1e-14 and chose the same ranks,
    but took 90-440 iterations and 20 to 100 times as long (about 1 s
    against 45 ms at N=K=1000).
    """
    n = min(W.shape)
    m = min(m, n)
    if n <= max(DENSE_SVD_LIMIT, 3 * m):
        # Gram of the short side (at most DENSE_SVD_LIMIT^2 entries, never
        # K x K at scale): top eigenvalues to eps * lambda_max, and ~100x
        # faster than LAPACK's gesdd here.
        G = W.T @ W if W.shape[1] <= W.shape[0] else W @ W.T
        return np.linalg.eigvalsh(G)[::-1][:m].copy()
    from scipy.sparse.linalg import svds

    v0 = np.random.default_rng(seed).standard_normal(n)
    s = svds(W, k=m, v0=v0, return_singular_vectors=False, solver="arpack")
    return np.sort(s)[::-1] ** 2


def _residual_spectrum(Rt: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Top ``m`` eigenvalues of the correlation matrix of residuals ``Rt`` (K, N)."""
    s = np.sqrt(np.einsum("kn,kn->k", Rt, Rt))
    s[s == 0] = 1.0  # exactly fitted equation: contributes a zero column
    return _top_eigenvalues((Rt / s[:, None]).T, m, seed)


def _onatski_ed(lam: np.ndarray, kmax: int, max_iter: int = 20) -> tuple[int, float, np.ndarray]:
    """Onatski's (2010) edge-distribution estimator.

    With ``lam`` decreasing and ``j = kmax + 1``: regress
    ``lam_j .. lam_{j+4}`` on ``(j-1)^(2/3) .. (j+3)^(2/3)`` (with a constant),
    set ``delta = 2 |slope|``, ``r = max{i <= kmax : lam_i - lam_{i+1} >= delta}``
    (0 if none), then ``j = r + 1`` and repeat until ``r`` is stable.
    Returns ``(r, delta, gaps)`` with ``gaps[i-1] = lam_i - lam_{i+1}``.
    """
    gaps = lam[:kmax] - lam[1 : kmax + 1]
    j, r, delta = kmax + 1, 0, float("nan")
    for _ in range(max_iter):
        y = lam[j - 1 : j + 4]
        x = np.arange(j - 1, j + 4, dtype=float) ** (2.0 / 3.0)
        slope = np.polyfit(x, y, 1)[0]
        delta = 2.0 * abs(float(slope))
        above = np.flatnonzero(gaps >= delta)
        r_new = int(above[-1]) + 1 if above.size else 0
        if r_new + 1 == j:
            return r_new, delta, gaps
        r, j = r_new, r_new + 1
    return r, delta, gaps


def _tw_edge(n: int, K: int) -> tuple[float, float]:
    """Johnstone's (2001) centring and scaling of the largest eigenvalue of
    ``W' W`` for ``W`` (n x K) of i.i.d. N(0, 1) entries."""
    a, b = np.sqrt(n - 0.5), np.sqrt(K - 0.5)
    return float((a + b) ** 2), float((a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0))


def _edge_scores(mu: np.ndarray, sigma2: float, n: int, K: int) -> np.ndarray:
    """Eigenvalues ``mu`` of ``W' W`` in Tracy-Widom units above the noise edge
    of ``W`` (n x K) with i.i.d. entries of variance ``sigma2``."""
    center, scale = _tw_edge(n, K)
    return (mu / sigma2 - center) / scale


def _bulk_variance(total: float, mu: np.ndarray, r: int, n: int, K: int) -> float:
    """Noise variance per entry of ``W`` (n x K, trace ``total``, top
    eigenvalues ``mu``) once a rank-``r`` signal is taken out: the trace left
    after the top ``r`` eigenvalues over the residual degrees of freedom
    ``(n - r)(K - r)`` of a rank-``r`` fit."""
    return (total - float(np.sum(mu[:r]))) / ((n - r) * (K - r))


@dataclass(frozen=True)
class _WhitenedCount:
    """One whitening of ``"auto"``: the spectrum given a fit at ``rank``."""

    rank: int                # rank of the fit whose noise variances whitened
    eigenvalues: np.ndarray  # top eigenvalues of the whitened W' W, decreasing
    noise_variance: float    # bulk variance per entry (_bulk_variance)
    scores: np.ndarray       # eigenvalues in TW units above the edge (_edge_scores)
    count: int               # scores above TW_QUANTILE (not capped at max_rank)


@dataclass(frozen=True)
class _EdgeTest:
    """The path of ``"auto"``."""

    rank: int
    settled: bool
    visited: list            # the count of each whitening (capped at max_rank)
    steps: list              # each whitening, the correlation (rank 0) first
    final: _WhitenedCount    # the whitening at ``rank``
    reason: str              # why it did not settle ("" when it did)


def _whitening_variances(Rt: np.ndarray, F: np.ndarray, D: np.ndarray,
                         s: np.ndarray) -> np.ndarray:
    """Each equation's noise variance for whitening the residuals ``Rt`` (K, N)
    given a fit ``F`` (K, k), ``D`` (K,): the variance of the residual of the
    Bartlett (GLS) factor scores over ``1 - h_j``, ``h_j`` the equation's
    leverage on the scores; floored at ``WHITEN_FLOOR`` times the OLS residual
    variance ``s`` (K,).

    Notes
    -----
    Scores ``Z = A F' D^-1 Rt`` with ``A = (F' D^-1 F)^-1`` leave residuals
    ``E = (I - H) Rt``, ``H = F A F' D^-1`` an oblique projection of trace k,
    whose covariance per row is ``D - F A F'``: ``E_j`` has variance
    ``D_j (1 - h_j)`` with ``h_j = F_j A F_j' / D_j``.  At a maximum-likelihood
    factor analysis of ``Rt`` (the ML fit when every equation shares one
    design) the stationarity equations give ``diag(E E') / N = D (1 - h)``
    exactly, so this *is* the ML ``D``.  With separate designs the ML ``D``
    belongs to the GLS residuals, whose coefficients use the other equations'
    residuals, not to the OLS residuals ``Rt`` being whitened: for an equation
    with a large loading and a small noise share the two differ (measured at
    K = N = 100: ``D_j`` 1.8 x below the truth, ``h_j = 0.34``, and that
    whitened column became an eigenvalue of its own, 10.7 Tracy-Widom units
    above the edge).  This is the factor-analysis ``D`` of ``Rt`` itself
    given ``F``.
    """
    # a factor whose whitened eigenvalue is at most 1 has zero loadings
    # (lawley_loadings) and takes nothing out of the residuals
    F = F[:, np.einsum("ka,ka->a", F, F) > 0]
    if F.shape[1] == 0:
        return s
    G = F / D[:, None]
    C = cho_factor(F.T @ G)
    E = Rt - F @ cho_solve(C, G.T @ Rt)
    h = np.einsum("ka,ak->k", G, cho_solve(C, F.T))
    N = Rt.shape[1]
    Dw = np.einsum("kn,kn->k", E, E) / (N * np.maximum(1.0 - h, WHITEN_FLOOR))
    return np.maximum(Dw, WHITEN_FLOOR * s)


def _whitened_count(data: Problem, Rt: np.ndarray, r: int, m: int,
                    options: SolverOptions) -> _WhitenedCount:
    """Fit at rank ``r``, whiten the OLS residuals ``Rt`` (K, N) by the fit's
    noise variances (:func:`_whitening_variances`) and count the eigenvalues
    of the whitened ``W' W`` above the noise edge.

    The noise level is the bulk variance (:func:`_bulk_variance`), not the
    absolute scale of ``D``: the ML ``D`` of a rank-``r`` fit is about
    ``D (N - p - r) / N`` (each factor's scores use up one row's worth of
    noise; measured 0.93 at N = 100, p = 3, r = 4), so an edge built on ``D``
    moves down with every factor fitted: counting more, fitting more.
    """
    n, K, N = data.N - data.pmax, data.K, data.N
    s = np.einsum("kn,kn->k", Rt, Rt) / N
    fit = _quiet_fit(data, r, options)[0]
    Dw = _whitening_variances(Rt, fit.F, fit.D, s)
    Dw[Dw == 0] = 1.0            # an exactly fitted equation: a zero column
    w = 1.0 / np.sqrt(Dw)
    mu = _top_eigenvalues((Rt * w[:, None]).T, m, options.random_state)
    return _counted(r, mu, N * float(s @ (w * w)), n, K)


def _counted(r: int, mu: np.ndarray, total: float, n: int, K: int) -> _WhitenedCount:
    """The count of eigenvalues ``mu`` (of ``W' W``, trace ``total``, ``W``
    with ``n`` residual rows and ``K`` columns) above the edge of the
    ``(n - r) x (K - r)`` noise left by a rank-``r`` fit."""
    sigma2 = _bulk_variance(total, mu, r, n, K)
    scores = _edge_scores(mu, sigma2, n - r, K - r)
    return _WhitenedCount(r, mu, sigma2, scores, int(np.sum(scores > TW_QUANTILE)))


def _auto(data: Problem, Rt: np.ndarray, lam: np.ndarray, kmax: int,
          options: SolverOptions) -> tuple[_EdgeTest, int]:
    """Whitened edge test, refitting until the count is stable.

    Start: the correlation eigenvalues ``lam`` (the whitening of rank 0,
    by each equation's total residual variance: an equation's noise is less
    than that, so the count is conservative).  Then fit at the counted rank,
    whiten the OLS residuals by the fit's noise variances and count again,
    until the count is a rank already whitened.  Settled when that rank's own
    count is itself; otherwise a cycle (return the smallest rank of the
    cycle), or ``AUTO_MAX_FITS`` fits spent on a drift (return the smallest
    rank fitted).  Returns the path and the number of fits.
    """
    n, K = data.N - data.pmax, data.K
    corr = _counted(0, lam, float(K), n, K)       # columns of unit norm: trace K
    ranks, seen = [0], {0: corr}
    visited = [min(corr.count, kmax)]
    while visited[-1] not in seen and len(ranks) <= AUTO_MAX_FITS:
        r = visited[-1]
        seen[r] = _whitened_count(data, Rt, r, lam.size, options)
        ranks.append(r)
        visited.append(min(seen[r].count, kmax))
    r, n_fits = visited[-1], len(ranks) - 1
    steps = [seen[q] for q in ranks]
    if r in seen and min(seen[r].count, kmax) == r:
        return _EdgeTest(r, True, visited, steps, seen[r], ""), n_fits
    path = ranks[ranks.index(r):] if r in seen else ranks[1:]
    rank = min(path)
    reason = _unsettled_reason(visited, r in seen, rank, seen[rank], n, K)
    return _EdgeTest(rank, False, visited, steps, seen[rank], reason), n_fits


def _unsettled_reason(visited: list, cycle: bool, rank: int, step: _WhitenedCount,
                      n: int, K: int) -> str:
    """The warning of an unsettled ``"auto"``: the path, the eigenvalues at
    the threshold, the detection limit and what to do."""
    top = max(visited)
    near = ", ".join(f"{s:+.1f}" for s in step.scores[rank:top])
    kind = ("returned to a rank it had whitened before" if cycle else
            f"changed after each of its {len(visited) - 1} fits")
    return (f"rank='auto' did not settle: the whitened edge count {kind} (counts "
            f"{visited}); at rank {rank} eigenvalues {rank + 1}..{top} sit at {near} "
            f"Tracy-Widom units against the threshold {TW_QUANTILE} (a factor near the "
            f"detection limit sqrt(K/(N-p)) = {np.sqrt(K / n):.3g}, or noise that is not "
            f"Marchenko-Pastur); returning the smallest rank of the "
            f"{'cycle' if cycle else 'path'}, {rank}.  Compare method='bic' or 'cv', "
            "or use more rows")


# --------------------------------------------------------------------------
# Likelihood-based criteria
# --------------------------------------------------------------------------

def n_parameters(P: int, K: int, k: int) -> int:
    """Free parameters of the model: ``P + K k + K - k(k-1)/2``.

    Within the Ledermann bound ``(K - k)^2 >= K + k`` -- every rank that
    :func:`select_rank` scores -- this equals ``P + covariance_parameters(K, k)``
    (:func:`alsgls.core.ops.covariance_parameters`; a test checks it).  Beyond
    the bound that kernel caps the covariance count at ``K(K+1)/2`` while this
    formula stays uncapped, as it always has, so it is not written with the
    kernel.
    """
    return int(P + K * k + K - k * (k - 1) // 2)


def _quiet_fit(problem: Problem, k: int, options: SolverOptions):
    """A candidate fit and its residuals.  Heywood, slow-convergence and
    identification warnings are expected for superfluous factors and do not
    affect the comparison, so the dispatcher is asked not to emit them."""
    return fit_problem(problem, k, options, quiet=True, missing_fit=False)


def _sequential(score: Callable[[int], float], kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Score ``k = 0, 1, ...`` until ``PATIENCE`` candidates in a row fail to
    improve the best score (or ``kmax`` is reached)."""
    ks, vals, best, since = [], [], np.inf, 0
    for k in range(kmax + 1):
        v = score(k)
        ks.append(k)
        vals.append(v)
        if v < best:
            best, since = v, 0
        else:
            since += 1
            if since >= PATIENCE:
                break
    return np.asarray(ks), np.asarray(vals)


def _information_criterion(data: Problem, kmax: int, kind: str,
                           options: SolverOptions) -> tuple[np.ndarray, np.ndarray]:
    N, K, P = data.N, data.K, int(data.p.sum())
    pen = np.log(N) if kind == "bic" else 2.0

    def score(k: int) -> float:
        fit, _ = _quiet_fit(data, k, options)
        return 2.0 * N * fit.nll + pen * n_parameters(P, K, k)

    return _sequential(score, kmax)


def _cross_validation(data: Problem, kmax: int, n_folds: int,
                      options: SolverOptions) -> tuple[np.ndarray, np.ndarray]:
    N = data.N
    if n_folds > N:
        raise ValueError(f"n_folds must be between 2 and N={N}, got {n_folds}")
    folds = np.array_split(np.random.default_rng(options.random_state).permutation(N), n_folds)
    checked: set = set()

    def score(k: int) -> float:
        # folds are formed when used (one fold's copy of the data at a time); a
        # training fold is fitted on, so its Gram matrices are checked the first
        # time; a test fold is only evaluated on
        total = 0.0
        for i, rows in enumerate(folds):
            train = data.take(np.setdiff1d(np.arange(N), rows),
                              f"the training rows of CV fold {i}", check=i not in checked)
            checked.add(i)
            fit, _ = _quiet_fit(train, k, options)
            del train
            test = data.take(rows, check=False)
            Rt = test.Yt - design_matvec(test.X, test.layout.pad(fit.B))
            total += fit.cov.nll_per_row(Rt) * test.N
        return total / N

    return _sequential(score, kmax)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------

def _check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in RANK_METHODS:
        raise ValueError(f"method must be one of {RANK_METHODS}, got {method!r}")
    return method


def check_n_folds(n_folds: Any) -> int:
    """``n_folds`` as an int of at least 2 (``TypeError``/``ValueError`` naming it)."""
    return check_integer("n_folds", n_folds, minimum=2)


def _resolve_max_rank(max_rank: Any, K: int, N: int, pmax: int) -> int:
    """``max_rank`` checked (an integer >= 0 or None) and resolved: the default
    ``min(DEFAULT_MAX_RANK, identifiable maximum)``, else refused above it."""
    max_rank = check_integer("max_rank", max_rank, minimum=0, allow_none=True)
    ident = max_identifiable_rank(K, N, pmax)
    if max_rank is None:
        return min(DEFAULT_MAX_RANK, ident)
    if max_rank > ident:
        raise ValueError(
            f"max_rank={max_rank} exceeds the largest identifiable rank {ident} for "
            f"K={K} equations and N={N} rows ((K-k)^2 >= K+k and N > k + max p_j)"
        )
    return max_rank


def select_rank(
    Xs: Any,
    Y: Any,
    *,
    method: str = "auto",
    max_rank: int | None = None,
    n_folds: int = 5,
    tol: float = SELECTION_TOL,
    random_state: int = 0,
) -> RankSelection:
    """Choose the number of factors ``k`` of ``Sigma = F F' + diag(D)``.

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), or ndarray (K, N, p)
        Per-equation designs.
    Y : array_like, shape (N, K)
        Responses.
    method : {"auto", "onatski", "bic", "aic", "cv"}, default "auto"
        ``"onatski"``: edge-distribution estimator on the OLS-residual
        correlation eigenvalues (no likelihood fit).  ``"bic"``/``"aic"``:
        ``2 N nll + penalty * (P + K k + K - k(k-1)/2)`` over exact ML fits.
        ``"cv"``: ``n_folds``-fold held-out NLL per row (the predictive
        choice).  ``"auto"``: the whitened edge test (module docstring; at
        most 4 fits) when ``min(N - p, K) >= ED_MIN_SPECTRUM``, else ``"bic"``.
    max_rank : int, optional
        Largest rank considered; default ``min(12, identifiable maximum)``;
        a larger value than the identifiable maximum is a ``ValueError``.
    n_folds : int, default 5
        Folds for ``"cv"`` (at least 2, at most N).
    tol : float, default 1e-6
        Tolerance of each candidate fit (the ``tol`` of :func:`alsgls.als_gls`).
    random_state : int, default 0
        Seed of the CV split and of the iterative eigen-solvers.

    Returns
    -------
    RankSelection
        Chosen rank, scores of the candidates, and the residual eigenvalues.

    Notes
    -----
    Likelihood searches score ``k = 0, 1, ...`` and stop after ``PATIENCE``
    consecutive ranks that do not improve the best score, so they cost
    ``k_hat + 1 + PATIENCE`` fits (``n_folds`` times that for CV).
    Candidate fits do not emit ``HeywoodWarning``, ``ConvergenceWarning`` or
    identification warnings: superfluous factors routinely produce them, and
    the scores still compare.

    No method detects a factor whose whitened signal eigenvalue is below
    ``sqrt(K/(N - p))`` (see the module docstring).  ``"auto"`` warns
    (:class:`RankSelectionWarning`) when its count does not settle or exceeds
    ``max_rank``.

    Examples
    --------
    >>> from alsgls import simulate_sur
    >>> Xs, Y, _ = simulate_sur(N=300, K=40, p=2, k=3, seed=0)
    >>> select_rank(Xs, Y).rank
    3
    """
    options = solver_options(None, "select_rank", tol=tol, random_state=random_state)
    return select_rank_problem(build_problem(Xs, Y, missing="raise"), method=method,
                               max_rank=max_rank, n_folds=n_folds, options=options)


def select_rank_problem(data: Problem, *, method: str = "auto", max_rank: int | None = None,
                        n_folds: int = 5, options: SolverOptions | None = None,
                        ols_residuals: np.ndarray | None = None) -> RankSelection:
    """:func:`select_rank` on a validated, complete problem (no re-validation).

    ``options`` are those of the candidate fits (default: ``tol =
    SELECTION_TOL``); BLAS runs with one thread (many mid-sized GEMVs, see
    :mod:`alsgls._threads`).  ``ols_residuals`` (K, N), the residuals of
    ``data.ols()`` when the caller has them, save that OLS pass.
    """
    method = _check_method(method)
    n_folds = check_n_folds(n_folds)
    options = solver_options(options, tol=SELECTION_TOL) if options is None else options
    options = options.replace(blas_threads=1)
    if not data.complete or data.w is not None:
        raise ValueError("rank selection needs complete, unweighted responses")
    with blas_threads(1):
        Rt = data.ols()[1] if ols_residuals is None else ols_residuals
        return _select(data, method, max_rank, n_folds, options, Rt)


def _select(data: Problem, method: str, max_rank: int | None, n_folds: int,
            options: SolverOptions, Rt: np.ndarray) -> RankSelection:
    """The body of :func:`select_rank_problem` (arguments checked; ``Rt`` the
    OLS residuals)."""
    N, K, pmax = data.N, data.K, int(data.p.max())
    kmax = _resolve_max_rank(max_rank, K, N, pmax)
    if kmax > 0:        # candidates must have a finite maximum to be compared
        bounded = bounded_rank(data, kmax)
        if bounded < kmax:
            warn(f"ranks above {bounded} have no finite maximum-likelihood estimate here "
                 f"(some {bounded + 2} equations' responses satisfy an exact linear relation "
                 "with their own regressors); the search stops at rank "
                 f"{bounded}", RankSelectionWarning)
            kmax = bounded
    n_spec = min(N - pmax, K)
    m = min(kmax + ED_TAIL, n_spec)
    lam = _residual_spectrum(Rt, m, options.random_state) if kmax > 0 else np.zeros(0)
    chosen = method
    if method == "auto" and not (n_spec >= ED_MIN_SPECTRUM and lam.size >= kmax + ED_TAIL):
        chosen = "bic"
    common = dict(
        requested=method, eigenvalues=lam, max_rank=kmax, N=N, K=K,
        noise_edge=(1.0 + np.sqrt(K / max(N - pmax, 1))) ** 2,
        detection_limit=float(np.sqrt(K / N)),
    )
    if kmax == 0:
        return RankSelection(rank=0, method=chosen, candidates=np.zeros(1, int),
                             scores=np.zeros(1), threshold=float("nan"), n_fits=0, **common)
    if chosen == "onatski":
        if lam.size < kmax + ED_TAIL:
            raise ValueError(
                f"method='onatski' needs max_rank + {ED_TAIL} = {kmax + ED_TAIL} residual "
                f"eigenvalues but min(N - p, K) = {n_spec}; lower max_rank or use 'bic'"
            )
        r, delta, gaps = _onatski_ed(lam, kmax)
        return RankSelection(rank=r, method=chosen, candidates=np.arange(1, kmax + 1),
                             scores=gaps, threshold=delta, n_fits=0, **common)
    if chosen == "auto":
        test, n_fits = _auto(data, Rt, lam, kmax, options)
        if not test.settled:
            warn(test.reason, RankSelectionWarning)
        elif test.final.count > kmax:
            ident = max_identifiable_rank(K, N, pmax)
            fix = (f"raise max_rank (at most {ident} here) to count them all" if kmax < ident
                   else "that is the largest identifiable rank for these N and K")
            warn(f"{test.final.count} whitened eigenvalues lie above the noise edge but "
                 f"max_rank={kmax}: returning {kmax}; {fix}", RankSelectionWarning)
        return RankSelection(
            rank=test.rank, method="auto", candidates=np.arange(1, lam.size + 1),
            scores=test.final.scores, threshold=TW_QUANTILE, n_fits=n_fits,
            settled=test.settled,
            details={"ranks_visited": test.visited,
                     "whitened_eigenvalues": [st.eigenvalues for st in test.steps],
                     "noise_variances": [st.noise_variance for st in test.steps],
                     "reason": test.reason},
            **common)
    if chosen in ("bic", "aic"):
        ks, vals = _information_criterion(data, kmax, chosen, options)
        n_fits = ks.size
    else:
        ks, vals = _cross_validation(data, kmax, n_folds, options)
        n_fits = ks.size * n_folds
    return RankSelection(rank=int(ks[np.argmin(vals)]), method=chosen, candidates=ks,
                         scores=vals, threshold=float("nan"), n_fits=n_fits, **common)
