"""EM baseline special cases, simulators and metrics."""

import numpy as np
import pytest

from alsgls import ConvergenceWarning, em_gls, mse, nll_per_row, simulate_gls, simulate_sur

from . import _oracles as orc


def flat(B):
    return np.concatenate([b.ravel() for b in B])


def test_em_k0_is_ols_and_trace_monotone(small_system):
    Xs, Y, _ = small_system
    e = em_gls(Xs, Y, 0)
    np.testing.assert_allclose(flat(e.B), orc.ols(Xs, Y), rtol=1e-10, atol=1e-12)
    with pytest.warns(ConvergenceWarning):  # plain EM: 50 cycles are not enough
        e2 = em_gls(Xs, Y, 2, accelerate=False, max_iter=50)
    assert np.all(np.diff(e2.nll_trace) <= 1e-13 * abs(e2.nll))


def test_em_matches_dense_nll(small_system):
    Xs, Y, _ = small_system
    e = em_gls(Xs, Y, 2)
    R = orc.residuals(Xs, Y, flat(e.B))
    np.testing.assert_allclose(e.nll, orc.dense_nll_per_row(R, e.cov.to_dense()), rtol=1e-12)


def test_simulators_are_seeded_and_return_truth():
    a = simulate_sur(N=30, K=5, p=3, k=2, seed=4, intercept=True)
    b = simulate_sur(N=30, K=5, p=3, k=2, seed=4, intercept=True)
    np.testing.assert_array_equal(a[1], b[1])
    Xs, Y, truth = a
    assert all(np.all(x[:, 0] == 1) for x in Xs)
    assert [bb.shape for bb in truth.B] == [(3, 1)] * 5
    assert truth.cov.to_dense().shape == (5, 5)
    with pytest.raises(ValueError, match="x_common"):
        simulate_sur(N=5, K=2, x_common=1.0)
    Xg, Yg, tg = simulate_gls(N=20, K=4, p=2, k=1, seed=0)
    assert all(x is Xg[0] for x in Xg) and Yg.shape == (20, 4)


def test_simulated_covariance_is_right():
    """Residual covariance of a large simulated sample matches F F' + diag(D)
    to Monte Carlo error (N = 200000: entries to ~ 4 / sqrt(N) * scale)."""
    Xs, Y, truth = simulate_sur(N=200_000, K=4, p=1, k=1, seed=9)
    R = orc.residuals(Xs, Y, flat(truth.B))
    Sig = truth.cov.to_dense()
    np.testing.assert_allclose(np.cov(R.T, bias=True), Sig, atol=4 * np.max(Sig) / np.sqrt(2e5) * 2)


def test_metrics(rng):
    Y = rng.standard_normal((10, 3))
    assert mse(Y, Y) == 0.0
    np.testing.assert_allclose(mse(Y, np.zeros_like(Y)), np.mean(Y ** 2))
    with pytest.raises(ValueError, match="shape"):
        mse(Y, Y[:, :2])
    F = rng.standard_normal((3, 2))
    D = rng.uniform(1, 2, 3)
    np.testing.assert_allclose(nll_per_row(Y, F, D),
                               orc.dense_nll_per_row(Y, F @ F.T + np.diag(D)), rtol=1e-12)
    with pytest.raises(ValueError, match="K=3"):
        nll_per_row(Y, F[:2], D)
