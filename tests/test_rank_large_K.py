"""rank="auto" when K >> N: the whitened edge test settles on the truth, leaves
factors below the detection limit out, and says when it cannot decide.

The seed's "auto" whitened by the ML ``D`` of each refit and read the noise
level from its absolute scale; that scale shrinks like ``(N - p - r) / N``, so
at N = 100, K = 2000 the counts ran 4, 5, 6, 7 on 4 true factors.
"""

import warnings

import numpy as np
import pytest

from alsgls import simulate_gls, simulate_sur
from alsgls.core.dispatch import fit_problem
from alsgls.core.options import solver_options
from alsgls.core.problem import build_problem
from alsgls.learn import rank as rank_module
from alsgls.learn.rank import (
    TW_QUANTILE,
    RankSelectionWarning,
    _whitened_count,
    _whitening_variances,
    select_rank,
)

N, P = 100, 3


def _theta_system(K: int, theta, seed: int):
    """SUR data with whitened signal eigenvalues ``theta`` (of
    ``D^-1/2 F F' D^-1/2``), ``D_j ~ U(0.5, 1.5)``, intercept + 2 regressors."""
    rng = np.random.default_rng(seed)
    theta = np.asarray(theta, dtype=float)
    X = rng.standard_normal((K, N, P))
    X[:, :, 0] = 1.0
    D = rng.uniform(0.5, 1.5, size=K)
    Q, _ = np.linalg.qr(rng.standard_normal((K, theta.size)))
    F = np.sqrt(D)[:, None] * Q * np.sqrt(theta)
    E = rng.standard_normal((N, theta.size)) @ F.T + rng.standard_normal((N, K)) * np.sqrt(D)
    Y = np.einsum("knp,kp->nk", X, rng.standard_normal((K, P))) + E
    return X, Y


def _select(Xs, Y, **kw):
    """select_rank with RankSelectionWarning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankSelectionWarning)
        return select_rank(Xs, Y, **kw)


@pytest.mark.parametrize("ratio, k", [(1, 4), (5, 3), (10, 4), (20, 4)])
def test_auto_finds_strong_factors_at_every_ratio(ratio, k):
    """K/N = 1..20, N(0, 1) loadings: one fit, settled on the truth, and
    exactly k whitened eigenvalues above the threshold."""
    Xs, Y, _ = simulate_sur(N=N, K=ratio * N, p=P, k=k, seed=ratio, intercept=True)
    sel = _select(Xs, Y)
    assert sel.rank == k and sel.method == "auto" and sel.settled
    assert sel.n_fits == 1 and sel.details["ranks_visited"] == [k, k]
    assert np.sum(sel.scores > sel.threshold) == k


def test_the_measured_drift_is_gone():
    """The case that ran 4, 5, 6, 7 (N = 100, K = 2000, seed 1)."""
    Xs, Y, _ = simulate_sur(N=N, K=2000, p=P, k=4, seed=1, intercept=True)
    sel = _select(Xs, Y)
    assert sel.rank == 4 and sel.details["ranks_visited"] == [4, 4]


def test_overfitted_ranks_do_not_count_more():
    """The cause: whitening by a rank-r fit must not lower the edge as r grows.
    At r = k .. k + 2 the count stays k = 3 (the seed's whitening counted
    3, 4, 5 here: one more at every refit).  Over-fitted fits converge slowly,
    and the count does not need them converged: max_iter=30."""
    K = 500
    X, Y = _theta_system(K, np.sqrt(K / (N - P)) * np.array([40.0, 20.0, 10.0]), seed=5)
    problem = build_problem(X, Y)
    Rt = problem.ols()[1]
    options = solver_options(tol=1e-6, max_iter=30)
    counts = [_whitened_count(problem, Rt, r, 13, options).count for r in range(3, 6)]
    assert counts == [3, 3, 3]


def test_a_factor_below_the_detection_limit_is_not_counted():
    """theta_4 = sqrt(K/(N - p)) / 2 sits inside the noise bulk (BBP): the
    detectable rank is 3, and the fourth whitened eigenvalue is below the
    threshold."""
    K = 1000
    X, Y = _theta_system(K, np.sqrt(K / (N - P)) * np.array([16.0, 8.0, 4.0, 0.5]), seed=2)
    sel = _select(X, Y)
    assert sel.rank == 3 and sel.settled
    assert sel.scores[3] < TW_QUANTILE


@pytest.mark.parametrize("ratio", [1, 5, 10, 20])
def test_no_factors_selects_zero_without_a_fit(ratio):
    Xs, Y, _ = simulate_sur(N=N, K=ratio * N, p=P, k=0, seed=ratio, intercept=True)
    sel = _select(Xs, Y)
    assert sel.rank == 0 and sel.n_fits == 0 and sel.settled


def test_whitening_variances_are_the_ml_D_for_a_shared_design():
    """Oracle: with one design the ML fit is factor analysis of the OLS
    residuals, whose stationarity equations give diag(E E')/N = D (1 - h);
    rtol 1e-6.  An NLL gap of tol per equation leaves relative errors in D of
    about sqrt(2 tol / Fisher information): 5e-5 measured at tol = 1e-10,
    7e-9 at the tol = 1e-12 the fit is run to here."""
    Xs, Y, _ = simulate_gls(N=N, K=300, p=P, k=3, seed=0)
    problem = build_problem(Xs, Y)
    Rt = problem.ols()[1]
    fit, _ = fit_problem(problem, 3, solver_options(tol=1e-12), quiet=True)
    s = np.einsum("kn,kn->k", Rt, Rt) / N
    np.testing.assert_allclose(_whitening_variances(Rt, fit.F, fit.D, s), fit.D, rtol=1e-6)


def test_a_zero_loading_column_takes_nothing_out(rng):
    """A fitted factor at a whitened eigenvalue <= 1 has zero loadings: the
    whitening variances are those without it (same arithmetic, rtol 1e-12)."""
    K, n = 30, 80
    F = rng.standard_normal((K, 2))
    D = rng.uniform(0.5, 1.5, K)
    Rt = F @ rng.standard_normal((2, n)) + np.sqrt(D)[:, None] * rng.standard_normal((K, n))
    s = np.einsum("kn,kn->k", Rt, Rt) / n
    F0 = np.column_stack([F, np.zeros(K)])
    np.testing.assert_allclose(_whitening_variances(Rt, F0, D, s),
                               _whitening_variances(Rt, F, D, s), rtol=1e-12)


@pytest.fixture(scope="module")
def strong4():
    Xs, Y, _ = simulate_sur(N=N, K=500, p=P, k=4, seed=0, intercept=True)
    return Xs, Y


def _fake_counts(counts: dict):
    """A stand-in for one whitening whose count at rank r is ``counts[r]``."""
    def whitened_count(data, Rt, r, m, options):
        scores = np.linspace(10.0, -10.0, m)
        return rank_module._WhitenedCount(r, np.zeros(m), 1.0, scores, counts[r])
    return whitened_count


@pytest.mark.parametrize("counts, rank, kind", [
    ({4: 5, 5: 4}, 4, "cycle"),                       # 4 -> 5 -> 4
    ({4: 6, 6: 5, 5: 6}, 5, "cycle"),                 # 4 -> 6 -> 5 -> 6
    ({r: r + 1 for r in range(4, 12)}, 4, "path"),    # 4 -> 5 -> ... (drift)
])
def test_a_count_that_does_not_settle_warns(monkeypatch, strong4, counts, rank, kind):
    """The loop logic on scripted counts: a cycle returns its smallest rank, a
    drift the smallest rank fitted, each with a RankSelectionWarning that
    names the path."""
    monkeypatch.setattr(rank_module, "_whitened_count", _fake_counts(counts))
    Xs, Y = strong4
    with pytest.warns(RankSelectionWarning, match=rf"did not settle.*smallest rank of the {kind}"):
        sel = select_rank(Xs, Y)
    assert sel.rank == rank and not sel.settled
    assert sel.n_fits <= rank_module.AUTO_MAX_FITS
    assert sel.details["reason"].startswith("rank='auto' did not settle")


def test_more_factors_than_max_rank_warns(strong4):
    Xs, Y = strong4
    with pytest.warns(RankSelectionWarning, match="above the noise edge but max_rank=2"):
        sel = select_rank(Xs, Y, max_rank=2)
    assert sel.rank == 2 and sel.settled
