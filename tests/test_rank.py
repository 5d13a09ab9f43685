"""Rank selection: the ED estimator, information criteria, CV, and bad input."""

import numpy as np
import pytest

from alsgls import als_gls, simulate_sur
from alsgls.learn.rank import (
    RankSelection,
    _onatski_ed,
    _top_eigenvalues,
    max_identifiable_rank,
    n_parameters,
    select_rank,
)


@pytest.fixture(scope="module")
def strong3():
    """N = 300, K = 40, three factors well above the sqrt(K/N) limit."""
    return simulate_sur(N=300, K=40, p=2, k=3, seed=3, factor_strength=0.6)


def test_max_identifiable_rank_is_ledermann():
    for K in range(1, 60):
        k = max_identifiable_rank(K)
        assert k < K or K == 1
        assert (K - k) ** 2 >= K + k
        assert k + 1 >= K or (K - k - 1) ** 2 < K + k + 1
    assert max_identifiable_rank(50, N=8, p=3) == 4  # N > k + p


def test_truncated_eigenvalues_match_dense(rng):
    """ARPACK path against a dense eigensolve of W'W (rtol 1e-8: ARPACK
    converges to machine precision on well-separated top values)."""
    W = rng.standard_normal((400, 300))
    W[:, :3] *= 5.0
    ref = np.linalg.eigvalsh(W.T @ W)[::-1][:10]
    np.testing.assert_allclose(_top_eigenvalues(W, 10, seed=0), ref, rtol=1e-8)


def test_onatski_ed_on_synthetic_spectrum():
    """A clean bulk lambda_j = 2 - 0.1 j^(2/3) with three spikes: ED returns 3."""
    j = np.arange(1, 31)
    lam = 2.0 - 0.1 * j ** (2 / 3)
    lam[:3] += np.array([10.0, 5.0, 2.0])
    r, delta, gaps = _onatski_ed(np.sort(lam)[::-1], kmax=8)
    assert r == 3
    assert delta > 0 and gaps.shape == (8,)


@pytest.mark.parametrize("method", ["auto", "onatski", "bic", "aic"])
def test_methods_find_strong_factors(strong3, method):
    Xs, Y, _ = strong3
    sel = select_rank(Xs, Y, method=method, max_rank=6)
    assert isinstance(sel, RankSelection)
    assert sel.rank == 3
    assert sel.requested == method
    assert sel.eigenvalues.shape == (6 + 5,)
    assert np.all(np.diff(sel.eigenvalues) <= 0)
    assert sel.noise_edge == pytest.approx((1 + np.sqrt(40 / 298)) ** 2)
    assert sel.detection_limit == pytest.approx(np.sqrt(40 / 300))


def test_auto_is_the_whitened_edge_test(strong3):
    Xs, Y, _ = strong3
    sel = select_rank(Xs, Y)
    assert sel.method == "auto" and 1 <= sel.n_fits <= 3
    assert sel.details["ranks_visited"][-1] == sel.rank
    assert sel.scores.shape == (sel.max_rank + 5,)
    assert sel.threshold > 0
    # exactly `rank` whitened eigenvalues exceed the Tracy-Widom threshold
    assert np.sum(sel.scores > sel.threshold) == sel.rank


def test_cv_finds_strong_factors():
    Xs, Y, _ = simulate_sur(N=200, K=12, p=2, k=2, seed=4, factor_strength=1.0)
    sel = select_rank(Xs, Y, method="cv", max_rank=4, n_folds=3)
    assert sel.rank == 2 and sel.method == "cv"
    # sequential search: scores k = 0 .. rank + PATIENCE at most
    assert list(sel.candidates) == list(range(sel.candidates.size))
    assert sel.n_fits == 3 * sel.candidates.size


def test_bic_scores_are_the_formula(strong3):
    """BIC(k) = 2 N nll + log(N) (P + K k + K - k(k-1)/2) at the ML fit (oracle:
    an independent fit; rtol 1e-6 is the candidate fits' tolerance)."""
    Xs, Y, _ = strong3
    sel = select_rank(Xs, Y, method="bic", max_rank=4)
    N, K = Y.shape
    fit = als_gls(Xs, Y, 2, tol=1e-12)
    ref = 2 * N * fit.nll + np.log(N) * n_parameters(2 * K, K, 2)
    assert sel.scores[2] == pytest.approx(ref, rel=1e-6)
    assert n_parameters(10, 5, 2) == 10 + 10 + 5 - 1


def test_auto_falls_back_to_bic_for_small_K():
    Xs, Y, _ = simulate_sur(N=150, K=8, p=2, k=1, seed=2, factor_strength=1.0)
    sel = select_rank(Xs, Y)
    assert sel.method == "bic" and sel.rank == 1
    assert sel.n_fits <= sel.rank + 3


def test_no_factors_selects_zero():
    Xs, Y, _ = simulate_sur(N=300, K=40, p=2, k=0, seed=1)
    assert select_rank(Xs, Y).rank == 0
    assert select_rank(Xs, Y, method="bic", max_rank=3).rank == 0


def test_bad_arguments(strong3):
    Xs, Y, _ = strong3
    with pytest.raises(ValueError, match="method must be one of"):
        select_rank(Xs, Y, method="magic")
    with pytest.raises(ValueError, match="max_rank=39 exceeds the largest identifiable"):
        select_rank(Xs, Y, max_rank=39)
    with pytest.raises(ValueError, match="max_rank must be"):
        select_rank(Xs, Y, max_rank=-1)
    with pytest.raises(ValueError, match="n_folds must be"):
        select_rank(Xs, Y, method="cv", max_rank=2, n_folds=1)
    with pytest.raises(ValueError, match=r"Xs\[0\] has 10 rows but Y has 300"):
        select_rank([x[:10] for x in Xs], Y)


def test_n_parameters_is_the_covariance_kernel_within_the_ledermann_bound():
    """Every rank selection scores (k within the Ledermann bound) counts
    P + covariance_parameters(K, k); beyond the bound n_parameters keeps its
    uncapped formula."""
    from alsgls.core.ops import covariance_parameters

    for K in range(1, 40):
        for k in range(max_identifiable_rank(K) + 1):
            assert n_parameters(7, K, k) == 7 + covariance_parameters(K, k)
    assert n_parameters(0, 3, 2) == 3 * 2 + 3 - 1      # beyond the bound: uncapped


def test_integer_arguments_use_the_one_check(strong3):
    Xs, Y, _ = strong3
    with pytest.raises(TypeError, match="max_rank must be an integer >= 0 or None"):
        select_rank(Xs, Y, max_rank="x")
    with pytest.raises(TypeError, match="n_folds must be an integer >= 2"):
        select_rank(Xs, Y, method="cv", max_rank=2, n_folds=2.5)
    assert select_rank(Xs, Y, method="onatski", max_rank=np.int64(6)).max_rank == 6


def test_select_rank_problem_reuses_given_ols_residuals(strong3):
    """Passing the OLS residuals skips that pass and changes nothing."""
    from alsgls.core.problem import build_problem
    from alsgls.learn.rank import select_rank_problem

    Xs, Y, _ = strong3
    prob = build_problem(Xs, Y, missing="raise")
    a = select_rank_problem(prob, method="auto", max_rank=6)
    b = select_rank_problem(prob, method="auto", max_rank=6, ols_residuals=prob.ols()[1])
    assert a.rank == b.rank == 3
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    np.testing.assert_array_equal(a.scores, b.scores)
