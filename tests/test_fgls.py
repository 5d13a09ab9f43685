"""Two-step FGLS, GLS with a fixed Sigma and system OLS against dense textbook formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from alsgls import SUR, LowRankCovariance, simulate_sur
from alsgls.core.fgls import full_rank_covariance

from ._oracles import block_diag_design, dense_gls, ols, residuals


@pytest.fixture(scope="module")
def system():
    rng = np.random.default_rng(3)
    N, K = 60, 4
    Xs = [np.column_stack([np.ones(N), rng.standard_normal((N, 1 + j % 2))]) for j in range(K)]
    L = rng.standard_normal((K, K))
    E = rng.standard_normal((N, K)) @ L.T
    Y = np.column_stack([Xs[j] @ np.arange(1, Xs[j].shape[1] + 1) for j in range(K)]) + E
    return Xs, Y


def _dense_information(Xs, Sigma):
    N = Xs[0].shape[0]
    Z = block_diag_design(Xs)
    return Z.T @ np.kron(np.linalg.inv(Sigma), np.eye(N)) @ Z


def _dfk(Xs, S):
    N = Xs[0].shape[0]
    s = np.sqrt(N / (N - np.array([x.shape[1] for x in Xs])))
    return S * np.outer(s, s)


@pytest.mark.parametrize("divisor", ["n", "dfk"])
def test_twostep_full_rank_is_textbook_fgls(system, divisor):
    Xs, Y = system
    N = Y.shape[0]
    R0 = residuals(Xs, Y, ols(Xs, Y))
    S = R0.T @ R0 / N
    if divisor == "dfk":
        S = _dfk(Xs, S)
    beta = dense_gls(Xs, Y, S)
    res = SUR.from_arrays(Xs, Y).fit(method="twostep", sigma_divisor=divisor)
    np.testing.assert_allclose(np.asarray(res.params), beta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.sigma.to_dense(), S, rtol=1e-10)
    se = np.sqrt(np.diag(np.linalg.inv(_dense_information(Xs, S))))
    np.testing.assert_allclose(np.asarray(res.bse), se, rtol=1e-9)
    assert res.method == "twostep" and res.solver is None
    # llf: Sigma profiled out at the two-step beta (systemfit's logLik)
    R = residuals(Xs, Y, beta)
    _, logdet = np.linalg.slogdet(R.T @ R / N)
    K = Y.shape[1]
    assert res.llf == pytest.approx(-0.5 * N * (K * np.log(2 * np.pi) + logdet + K), rel=1e-12)


def test_fixed_sigma_dense_and_low_rank(system):
    Xs, Y = system
    K = Y.shape[1]
    rng = np.random.default_rng(0)
    F = rng.standard_normal((K, 2))
    D = rng.uniform(0.5, 2.0, K)
    Sigma = F @ F.T + np.diag(D)
    beta = dense_gls(Xs, Y, Sigma)
    mod = SUR.from_arrays(Xs, Y)
    for sigma in (Sigma, (F, D), LowRankCovariance(F, D)):
        res = mod.fit(sigma=sigma)
        assert res.method == "twostep"
        np.testing.assert_allclose(np.asarray(res.params), beta, rtol=1e-10, atol=1e-12)
        se = np.sqrt(np.diag(np.linalg.inv(_dense_information(Xs, Sigma))))
        np.testing.assert_allclose(np.asarray(res.bse), se, rtol=1e-9)


def test_ols_method_coefficients_and_cross_equation_covariance(system):
    Xs, Y = system
    N = Y.shape[0]
    b = ols(Xs, Y)
    R = residuals(Xs, Y, b)
    S = R.T @ R / N
    Z = block_diag_design(Xs)
    ZtZi = np.linalg.inv(Z.T @ Z)
    V = ZtZi @ Z.T @ np.kron(S, np.eye(N)) @ Z @ ZtZi
    res = SUR.from_arrays(Xs, Y).fit(method="ols")
    np.testing.assert_allclose(np.asarray(res.params), b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.bse), np.sqrt(np.diag(V)), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(res.cov_params()), V, rtol=1e-8, atol=1e-14)


def test_twostep_low_rank_uses_factor_analysis_of_ols_residuals():
    Xs, Y, _ = simulate_sur(N=200, K=6, p=3, k=1, seed=4)
    res = SUR.from_arrays(Xs, Y, rank=1).fit(method="twostep", tol=1e-13)
    Sigma = res.sigma.to_dense()
    R0 = residuals(Xs, Y, ols(Xs, Y))
    S = R0.T @ R0 / Y.shape[0]
    assert np.all(res.sigma.D > 1e-3 * np.diag(S))          # no Heywood case here
    # first-order conditions of ML factor analysis of S: the NLL gap is at most
    # tol * K per row, so first-order residuals are O(sqrt(tol)) = 3e-7 relative
    F = res.sigma.F
    Si = np.linalg.inv(Sigma)
    np.testing.assert_allclose(np.diag(S - Sigma) / np.diag(S), 0.0, atol=1e-7)
    np.testing.assert_allclose(Si @ (S - Sigma) @ Si @ F / np.abs(F).max(), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(res.params), dense_gls(Xs, Y, Sigma), rtol=1e-9)


def test_weighted_twostep_is_fgls_on_scaled_rows(system):
    Xs, Y = system
    w = np.random.default_rng(1).uniform(0.5, 2.0, Y.shape[0])
    w = w / w.mean()
    sw = np.sqrt(w)[:, None]
    Xw, Yw = [x * sw for x in Xs], Y * sw
    R0 = residuals(Xw, Yw, ols(Xw, Yw))
    beta = dense_gls(Xw, Yw, R0.T @ R0 / Y.shape[0])
    res = SUR.from_arrays(Xs, Y, weights=w).fit(method="twostep")
    np.testing.assert_allclose(np.asarray(res.params), beta, rtol=1e-10, atol=1e-12)


def test_default_rank_is_full_and_ml_is_default(system):
    Xs, Y = system
    mod = SUR.from_arrays(Xs, Y)
    assert mod.rank == Y.shape[1] - 1
    res = mod.fit(tol=1e-12)
    assert res.method == "ml" and res.solver == "als"


def test_deprecated_method_spelling_moves_to_solver(system):
    Xs, Y = system
    mod = SUR.from_arrays(Xs, Y, rank=1)
    with pytest.warns(DeprecationWarning, match="solver='em'"):
        old = mod.fit(method="em", tol=1e-12)
    new = mod.fit(solver="em", tol=1e-12)
    assert old.solver == "em"
    np.testing.assert_allclose(np.asarray(old.params), np.asarray(new.params))


def test_bad_combinations_are_refused(system):
    Xs, Y = system
    mod = SUR.from_arrays(Xs, Y)
    with pytest.raises(ValueError, match="method must be"):
        mod.fit(method="gls")
    with pytest.raises(ValueError, match="solver must be"):
        mod.fit(solver="lbfgs")
    with pytest.raises(ValueError, match="sigma_divisor applies"):
        mod.fit(sigma_divisor="dfk")
    with pytest.raises(ValueError, match="sigma_divisor must be"):
        mod.fit(method="twostep", sigma_divisor="theil")
    with pytest.raises(ValueError, match="method='twostep'"):
        mod.fit(method="ml", sigma=np.eye(Y.shape[1]))
    with pytest.raises(ValueError, match="use it with"):
        mod.fit(method="ols", sigma=np.eye(Y.shape[1]))
    with pytest.raises(ValueError, match=r"sigma must be \(K, K\)"):
        mod.fit(sigma=np.eye(3))
    with pytest.raises(ValueError, match="positive definite"):
        mod.fit(sigma=np.ones((4, 4)))
    Ym = Y.copy()
    Ym[0, 1] = np.nan
    with pytest.raises(ValueError, match="complete responses"):
        SUR.from_arrays(Xs, Ym).fit(method="twostep")


def test_full_rank_form_is_exact_and_scale_invariant():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((6, 6))
    S = A @ A.T + 0.1 * np.eye(6)
    s = 10.0 ** rng.uniform(-6, 6, 6)
    for M in (S, S * np.outer(s, s)):
        cov = full_rank_covariance(M)
        assert cov.k == 5
        np.testing.assert_allclose(cov.to_dense(), M, rtol=1e-10, atol=0)


def test_simulated_twostep_near_ml_at_low_rank():
    Xs, Y, _ = simulate_sur(N=400, K=6, p=3, k=1, seed=2)
    mod = SUR.from_arrays(Xs, Y, rank=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ml, two = mod.fit(tol=1e-12), mod.fit(method="twostep")
    # both consistent: they differ by a small fraction of a standard error
    d = np.abs(np.asarray(ml.params) - np.asarray(two.params)) / np.asarray(ml.bse)
    assert d.max() < 0.5
    assert two.llf <= ml.llf + 1e-8


def test_restricted_ols_and_twostep_match_dense_restricted_least_squares(system):
    Xs, Y = system
    N, K = Y.shape
    mod = SUR.from_arrays(Xs, Y, constraints="eq0_x1 = eq1_x1, eq2_x0 + eq3_x0 = 1")
    R, q = (np.asarray(a) for a in mod.constraints)
    Z = block_diag_design(Xs)
    y = Y.T.ravel()

    def restricted(W):
        A = Z.T @ W @ Z
        Ai = np.linalg.inv(A)
        b = Ai @ Z.T @ W @ y
        b = b - Ai @ R.T @ np.linalg.solve(R @ Ai @ R.T, R @ b - q)
        C = Ai - Ai @ R.T @ np.linalg.solve(R @ Ai @ R.T, R @ Ai)
        return b, C

    b_ols, C_ols = restricted(np.eye(N * K))
    E = (y - Z @ b_ols).reshape(K, N)
    S = E @ E.T / N
    res = mod.fit(method="ols")
    np.testing.assert_allclose(np.asarray(res.params), b_ols, rtol=1e-10, atol=1e-12)
    V = C_ols @ Z.T @ np.kron(S, np.eye(N)) @ Z @ C_ols
    np.testing.assert_allclose(np.asarray(res.bse), np.sqrt(np.diag(V)), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(res.cov_params()), V, rtol=1e-7, atol=1e-12)
    # two-step: Sigma from the restricted OLS residuals, then restricted GLS
    b2, C2 = restricted(np.kron(np.linalg.inv(S), np.eye(N)))
    res2 = mod.fit(method="twostep")
    np.testing.assert_allclose(np.asarray(res2.params), b2, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.asarray(res2.bse), np.sqrt(np.diag(C2)), rtol=1e-8)
