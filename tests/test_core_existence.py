"""Existence of the maximum at rank k, decided in the core for every solver.

The condition (alsgls.core.existence): the rank-k likelihood is unbounded
exactly when some set of at most k + 1 equations is *dependent* -- their
responses satisfy an exact linear relation with their own regressors (on the
rows observing all of them).  Oracles: the dense textbook NLL along an
explicit path to singular Sigma (it must fall without bound, at the rate
(number of collapsing directions) * log(eps) / 2 per row), and the bounded
case's insensitivity to the floor."""

import warnings

import numpy as np
import pytest

from alsgls import SUR, als_gls, em_gls, fit_missing, simulate_sur
from alsgls.core.existence import (
    ExistenceCheck,
    bounded_rank,
    floor_collapse,
    relation_at_rank,
)
from alsgls.core.problem import build_problem
from alsgls.exceptions import HeywoodWarning

from . import _oracles as orc

pytestmark = pytest.mark.filterwarnings("ignore::alsgls.IdentificationWarning")

CORES = [als_gls, em_gls, fit_missing]


def _arrays(eqs):
    Xs = [np.asarray(X, dtype=float) for _, X in eqs.values()]
    Y = np.column_stack([np.asarray(y, dtype=float) for y, _ in eqs.values()])
    return Xs, Y


def _kmenta():
    pytest.importorskip("pandas")
    from .data import peer_systems

    return peer_systems.load("kmenta")[0]


def _munnell():
    pytest.importorskip("pandas")
    from ._sur_data import load

    return load("munnell")[1]


# -- real data at full rank and below ----------------------------------------------

@pytest.mark.parametrize("core", CORES, ids=lambda f: f.__name__)
def test_kmenta_at_full_rank_is_refused_by_every_core(core):
    """Supply and demand both explain consumption: a relation y - y = 0 of two
    equations, so every k >= 1 is unbounded (rank 0 is the only bounded one)."""
    Xs, Y = _arrays(_kmenta())
    with pytest.raises(ValueError, match=r"no finite maximum-likelihood estimate: equation 0 "
                                         r"and equation 1 have the same dependent variable"):
        core(Xs, Y, 1)


@pytest.mark.parametrize("solver", ["als", "em"])
def test_kmenta_refusal_names_the_equations_by_label(solver):
    with pytest.raises(ValueError, match="equation 'demand' and equation 'supply' have the "
                                         "same dependent variable.*uncorrelated equations \\(rank 0\\)"):
        SUR(_kmenta(), rank=1).fit(solver=solver)


@pytest.mark.parametrize("core", CORES, ids=lambda f: f.__name__)
def test_munnell_is_refused_at_full_rank_and_at_rank_2_but_fits_at_rank_1(core):
    """17 rows, 7 regressors per region: any three regions have 21 regressors
    and 3 responses, more than 17 rows, so three residuals can be made
    dependent; rank 2 is unbounded (two regions: 13 + 2 < 17, bounded)."""
    Xs, Y = _arrays(_munnell())
    with pytest.raises(ValueError, match=r"k = K - 1 = 8\) has no finite maximum"):
        core(Xs, Y, 8)
    with pytest.raises(ValueError, match=r"at rank k = 2 the likelihood has no finite maximum: "
                                         r"the 21 regressors of equation 0, equation 1, "
                                         r"equation 2 .* more than the N=17 rows.*fit rank 1"):
        core(Xs, Y, 2)
    prob = build_problem(Xs, Y)
    assert relation_at_rank(prob, 1) == ExistenceCheck(None, True)


def test_munnell_rank_2_likelihood_really_is_unbounded():
    """Oracle: an explicit path.  beta of regions 0-2 makes a0 r0 + a1 r1 + a2 r2 = 0
    (their stacked regressors span all 17 rows); F carries the rank-2 residual
    covariance of those three, their D = eps s.  The dense NLL per row then
    falls by log(10^4) / 2 for every four decades of eps (one collapsing
    direction), without bound."""
    Xs, Y = _arrays(_munnell())
    N, K = Y.shape
    J, a = [0, 1, 2], np.array([1.0, -0.7, 0.4])
    XJ = np.hstack([Xs[j] for j in J])
    g = np.linalg.lstsq(XJ, Y[:, J] @ a, rcond=None)[0]
    cut = np.cumsum([0] + [Xs[j].shape[1] for j in J])
    beta = [g[cut[i]:cut[i + 1]] / a[i] for i in range(3)]
    beta += [np.linalg.lstsq(Xs[j], Y[:, j], rcond=None)[0] for j in range(3, K)]
    R = Y - np.column_stack([x @ b for x, b in zip(Xs, beta)])
    assert np.linalg.norm(R[:, J] @ a) < 1e-10 * np.linalg.norm(R[:, J])
    S = R.T @ R / N
    w, U = np.linalg.eigh(S[np.ix_(J, J)])
    F = np.zeros((K, 2))
    F[J] = U[:, 1:] * np.sqrt(w[1:])
    nll = []
    for eps in (1e-4, 1e-8, 1e-12):
        D = np.diag(S).copy()
        D[J] = eps * np.diag(S)[J]
        nll.append(orc.dense_nll_per_row(R, F @ F.T + np.diag(D)))
    # slope log(1e4)/2 per step, to 1e-3 (the O(eps) terms)
    np.testing.assert_allclose(np.diff(nll), -0.5 * np.log(1e4), rtol=1e-3)


# -- duplicated and nearly duplicated responses ---------------------------------------

def _duplicated(delta, N=200, K=6, seed=3):
    Xs, Y, _ = simulate_sur(N=N, K=K, p=2, k=1, seed=seed)
    Xs, Y = list(Xs), Y.copy()
    Xs[1] = Xs[0]
    Y[:, 1] = Y[:, 0] + delta * np.random.default_rng(1).standard_normal(N)
    return Xs, Y


@pytest.mark.parametrize("core", CORES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("k", [1, 2])
def test_identical_responses_are_refused_at_every_positive_rank(core, k):
    Xs, Y = _duplicated(0.0)
    with pytest.raises(ValueError, match=rf"at rank k = {k} .* equation 0 and equation 1 "
                                         "have the same dependent variable"):
        core(Xs, Y, k)


@pytest.mark.parametrize("core", CORES, ids=lambda f: f.__name__)
def test_nearly_identical_responses_are_not_converged_and_say_why(core):
    """y1 = y0 + 1e-4 u: the likelihood is bounded, but its maximum has
    var(y1 - y0 | rest) ~ 1e-8 s, below the floor 1e-6 s: the floor decides,
    so the fit reports converged=False with the cause (no silent 7.6e-5)."""
    Xs, Y = _duplicated(1e-4)
    assert relation_at_rank(build_problem(Xs, Y), 1) == ExistenceCheck(None, True)
    with pytest.warns(HeywoodWarning, match=r"the floor d_floor decides this fit: 2 "
                                            r"equation\(s\) at the floor \(equation 0, "
                                            r"equation 1\) have \(nearly\) collinear"):
        fit = core(Xs, Y, 1)
    assert not fit.converged and fit.heywood[:2].all()


def test_a_dependent_pair_missed_before_the_fit_is_refused_after_it(monkeypatch):
    """When the search is too expensive before the fit, the equations the fit
    leaves collapsed at the floor are tested exactly afterwards."""
    from alsgls.core import existence

    Xs, Y = _duplicated(0.0)
    Y[:, 1] = 2.0 * Y[:, 0] + 1.0           # not bit-identical: the hash misses it
    Xs[1] = np.column_stack([np.ones(len(Y)), Xs[0][:, 1]])
    monkeypatch.setattr(existence, "EXISTENCE_CHECK_FLOPS", 0.0)   # no pruning
    monkeypatch.setattr(existence, "SUBSET_BUDGET", 1)             # 15 pairs > 1
    assert not relation_at_rank(build_problem(Xs, Y), 1).decided
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"at rank k = 1 .* equation 0, equation 1 "
                                             r"satisfy an exact linear relation"):
            em_gls(Xs, Y, 1)


# -- a legitimate Heywood case stays a warning ------------------------------------

def _exact_heywood(N=400, seed=0):
    """The textbook Heywood case: three equations whose errors have correlations
    0.8, 0.8 and 0.5, so one factor would need F_0^2 = 0.8 * 0.8 / 0.5 = 1.28 >
    var(e_0) = 1.  The one-factor MLE puts D_0 on its bound 0 while Sigma stays
    non-singular (F_0 != 0, D_1, D_2 > 0): a boundary maximum, bounded."""
    rng = np.random.default_rng(seed)
    C = np.array([[1.0, 0.8, 0.8], [0.8, 1.0, 0.5], [0.8, 0.5, 1.0]])
    E = rng.standard_normal((N, 3)) @ np.linalg.cholesky(C).T
    Xs = [np.column_stack([np.ones(N), rng.standard_normal(N)]) for _ in range(3)]
    Y = np.column_stack([x @ [1.0, 0.5] for x in Xs]) + E
    return Xs, Y


@pytest.mark.parametrize("core", [als_gls, em_gls], ids=lambda f: f.__name__)
def test_a_heywood_case_with_nonsingular_sigma_fits_with_a_heywood_warning(core):
    Xs, Y = _exact_heywood()
    assert relation_at_rank(build_problem(Xs, Y), 1) == ExistenceCheck(None, True)
    with pytest.warns(HeywoodWarning, match=r"1 equation\(s\) have D_j at the floor") as rec:
        fit = core(Xs, Y, 1, tol=1e-12)
    assert not any("decides" in str(w.message) for w in rec)
    assert fit.converged and list(np.flatnonzero(fit.heywood)) == [0]
    assert floor_collapse(fit.F, fit.D, np.where(fit.heywood, fit.D, 0.0)) is None
    # bounded: lowering the floor 10^4-fold moves the NLL by O(floor), not log(1e4)/2
    low = core(Xs, Y, 1, tol=1e-12, d_floor=1e-10)
    assert 0.0 <= fit.nll - low.nll < 1e-5


def test_floor_collapse_measures_what_the_floor_carries():
    """Oracle: 1 / lambda_min(I + D^-1/2 F F' D^-1/2) on the floored block."""
    F = np.array([[1.0], [1.0], [0.5]])
    D = np.array([1e-6, 1e-6, 1.0])
    C, share = floor_collapse(F, D, np.array([1e-6, 1e-6, 1e-6]))
    assert list(C) == [0, 1] and share == pytest.approx(1.0)    # 2 at the floor, k = 1
    F2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert floor_collapse(F2, D, np.array([1e-6, 1e-6, 1e-6])) is None   # carried: Heywood


# -- missing responses ------------------------------------------------------------

def _sparse_overlap():
    Xs, Y, _ = simulate_sur(N=120, K=4, p=2, k=1, seed=3)
    Y = Y.copy()
    Y[4:60, 0] = np.nan     # equations 0 and 1 share only rows 0..3
    Y[60:, 1] = np.nan
    return Xs, Y


def test_missing_data_with_too_few_shared_rows_is_refused():
    """Equations 0 and 1 are observed together on 4 rows, fewer than their 4
    regressors and 2 responses: on those rows their residuals can be made
    proportional, so every k >= 1 is unbounded (the full rank too, which the
    old check skipped for missing data)."""
    Xs, Y = _sparse_overlap()
    for k in (1, 3):
        with pytest.raises(ValueError, match=r"no finite maximum.* on the 4 rows where all "
                                             r"of them are observed"):
            fit_missing(Xs, Y, k)


def test_missing_data_unboundedness_oracle():
    """Oracle: the observed-data NLL (per-row dense blocks) along the path
    r0 = r1 on the 4 shared rows, F_0 = F_1, D_0 = D_1 = eps falls by
    (4 / N) log(10^4) / 2 per four decades of eps."""
    Xs, Y = _sparse_overlap()
    N = Y.shape[0]
    A = np.hstack([Xs[0][:4], -Xs[1][:4]])
    b = np.linalg.lstsq(A, Y[:4, 0] - Y[:4, 1], rcond=None)[0]
    beta = [b[:2], b[2:]] + [np.linalg.lstsq(Xs[j], Y[:, j], rcond=None)[0] for j in (2, 3)]
    R = Y - np.column_stack([x @ c for x, c in zip(Xs, beta)])
    c2 = np.nanvar(R[:, 0])                   # the loading at the residuals' scale
    F = np.array([[1.0], [1.0], [0.0], [0.0]]) * np.sqrt(c2)
    nll = []
    for eps in (1e-4, 1e-8, 1e-12):
        Sig = F @ F.T + np.diag([eps * c2, eps * c2, 1.0, 1.0])
        tot = 0.0
        for i in range(N):
            o = ~np.isnan(R[i])
            r, S = R[i, o], Sig[np.ix_(o, o)]
            tot += 0.5 * (o.sum() * np.log(2 * np.pi) + np.linalg.slogdet(S)[1]
                          + r @ np.linalg.solve(S, r))
        nll.append(tot / N)
    np.testing.assert_allclose(np.diff(nll), -4 / N * 0.5 * np.log(1e4), rtol=1e-3)


# -- the decision itself ----------------------------------------------------------

def test_budget_shares_bound_exactly_the_ranks_below_the_smallest_dependent_set():
    """Four shares summing to one, an intercept in each: the only dependent set
    is all four, so k <= 2 is bounded and k = 3 = K - 1 is not."""
    rng = np.random.default_rng(1)
    N = 80
    raw = np.exp(rng.standard_normal((N, 4)) * 0.3)
    S = raw / raw.sum(axis=1, keepdims=True)
    Xs = [np.column_stack([np.ones(N), rng.standard_normal(N)]) for _ in range(4)]
    prob = build_problem(Xs, S)
    for k in (1, 2):
        assert relation_at_rank(prob, k) == ExistenceCheck(None, True)
    rel = relation_at_rank(prob, 3).relation
    assert list(rel.equations) == [0, 1, 2, 3]
    np.testing.assert_allclose(rel.a, np.ones(4), rtol=1e-6)
    fit = als_gls(Xs, S, 2)
    assert np.isfinite(fit.nll)


def test_recursive_system_with_missing_responses_is_bounded():
    """y0 is a regressor of equation 1: no dependent set, with or without holes."""
    rng = np.random.default_rng(0)
    N = 150
    x0, x1 = rng.standard_normal(N), rng.standard_normal(N)
    y0 = 1.0 + 0.5 * x0 + rng.standard_normal(N)
    y1 = -1.0 + 0.3 * x1 + 0.8 * y0 + rng.standard_normal(N)
    Xs = [np.column_stack([np.ones(N), x0]), np.column_stack([np.ones(N), x1, y0])]
    Y = np.column_stack([y0, y1])
    Y[:20, 1] = np.nan
    assert relation_at_rank(build_problem(Xs, Y), 1) == ExistenceCheck(None, True)
    assert fit_missing(Xs, Y, 1).converged


def test_large_systems_are_not_searched_before_the_fit():
    """K = 400 equations with N = 60 rows: the pruning cannot decide and there
    are too many subsets, so the check gives up at once (the fit's end point
    is still checked)."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((60, 3)), rng.standard_normal((60, 400))
    check = relation_at_rank(build_problem(X, Y), 3)
    assert check == ExistenceCheck(None, False)


def test_bounded_rank_caps_rank_selection_at_the_smallest_dependent_set():
    """m* - 2: Munnell (m* = 3) -> 1, duplicated responses (m* = 2) -> 0, a
    generic system -> the requested maximum."""
    Xs, Y = _arrays(_munnell())
    assert bounded_rank(build_problem(Xs, Y), 7) == 1
    assert bounded_rank(build_problem(*_duplicated(0.0)), 3) == 0
    Xs, Y, _ = simulate_sur(N=300, K=40, p=2, k=3, seed=0)
    assert bounded_rank(build_problem(Xs, Y), 12) == 12


def test_identical_pair_found_among_many_tied_rows():
    """Discrete responses tie on any few entries: the pair is still found by
    its full bytes, wherever the two equations sit, and nothing is reported
    when every response differs (oracle: a brute-force comparison)."""
    from alsgls.core.existence import _identical_pair

    rng = np.random.default_rng(3)
    N, K = 40, 300
    Y = (rng.random((N, K)) < 0.5).astype(float)
    Y[:8] = 1.0                                 # sampled entries tie often
    Xs = [np.ones((N, 1))] * K
    distinct = {Y[:, j].tobytes() for j in range(K)}
    assert len(distinct) == K                   # no duplicate by chance
    assert _identical_pair(build_problem(Xs, Y)) is None
    Y[:, 250] = Y[:, 7]
    rel = _identical_pair(build_problem(Xs, Y))
    assert rel is not None and rel.equations.tolist() == [7, 250]
