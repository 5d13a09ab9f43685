"""Unbalanced systems: missing responses (exact ML under MAR) and row weights.

Oracles: a dense per-row likelihood (each row's observed block of the K x K
Sigma, ``slogdet`` and ``solve``), direct maximisation of it by L-BFGS with
its analytic gradient, the balanced solver ``als_gls``, and row duplication.
"""

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

from alsgls import als_gls, simulate_sur
from alsgls.exceptions import HeywoodWarning
from alsgls import (
    MissingDataWarning,
    als_gls_missing,
    fit_missing,
    impute,
    observed_nll_per_row,
)


def flat(B):
    return np.concatenate([np.ravel(b) for b in B])


def sigma(F, D):
    return F @ F.T + np.diag(D)


def random_missing(Y, frac, seed):
    Ym = Y.copy()
    Ym[np.random.default_rng(seed).random(Y.shape) < frac] = np.nan
    return Ym


def dense_obs_nll(Xs, Y, beta, F, D, w=None, grad=False):
    """Dense per-row observed-data NLL, sum_i w_i l_i / n, and its gradient.

    Row i's Sigma_O is embedded in a K x K matrix with an identity block on the
    missing entries (and a zero residual there), which leaves its determinant
    and quadratic form unchanged; slogdet/solve are batched over rows.
    """
    obs = ~np.isnan(Y)
    keep = obs.any(axis=1)
    Y, obs = Y[keep], obs[keep]
    Xs = [np.nan_to_num(x[keep]) for x in Xs]
    N, K = Y.shape
    w = np.ones(N) if w is None else np.asarray(w, float)[keep] * N / np.sum(np.asarray(w, float)[keep])
    mu, c = np.empty((N, K)), 0
    for j, x in enumerate(Xs):
        mu[:, j] = x @ beta[c:c + x.shape[1]]
        c += x.shape[1]
    R = np.where(obs, np.nan_to_num(Y) - mu, 0.0)
    o = obs.astype(float)
    S = sigma(F, D)[None] * o[:, :, None] * o[:, None, :] + np.eye(K)[None] * (1 - o)[:, None, :]
    sign, logdet = np.linalg.slogdet(S)
    assert np.all(sign > 0)
    a = np.linalg.solve(S, R[..., None])[..., 0]
    ell = 0.5 * (o.sum(1) * np.log(2 * np.pi) + logdet + np.einsum("nk,nk->n", R, a))
    nll = float(w @ ell) / N
    if not grad:
        return nll
    A = np.linalg.inv(S)
    Gm = np.einsum("n,nij->ij", w, (A - a[:, :, None] * a[:, None, :]) * o[:, :, None] * o[:, None, :]) / (2 * N)
    gb = np.concatenate([-(x.T @ (w * a[:, j])) / N for j, x in enumerate(Xs)])
    return nll, gb, 2 * Gm @ F, np.diag(Gm) * D


def dense_mle(Xs, Y, k, seed=0):
    """Direct maximisation of the dense per-row likelihood over (beta, F, log D)."""
    K = Y.shape[1]
    obs = ~np.isnan(Y)
    beta0 = np.concatenate([np.linalg.lstsq(x[obs[:, j]], Y[obs[:, j], j], rcond=None)[0]
                            for j, x in enumerate(Xs)])
    P = beta0.size
    rng = np.random.default_rng(seed)
    v0 = np.concatenate([beta0, 0.3 * rng.standard_normal(K * k), np.zeros(K)])

    def f(v):
        F, D = v[P:P + K * k].reshape(K, k), np.exp(v[P + K * k:])
        nll, gb, gF, gD = dense_obs_nll(Xs, Y, v[:P], F, D, grad=True)
        return nll, np.concatenate([gb, gF.ravel(), gD])

    res = minimize(f, v0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-16, "gtol": 1e-11})
    return res.fun, res.x[:P]


@pytest.fixture
def unbalanced():
    """K = 10, N = 120, p = 2, k = 2; 20 % of the responses missing at random."""
    Xs, Y, truth = simulate_sur(N=120, K=10, p=2, k=2, seed=3)
    return Xs, random_missing(Y, 0.2, seed=4), truth


def test_observed_nll_matches_dense(unbalanced):
    """Per-row Woodbury NLL = dense per-row NLL (same mathematics two ways: 1e-12)."""
    Xs, Y, truth = unbalanced
    rng = np.random.default_rng(0)
    F, D = rng.standard_normal((10, 2)), rng.uniform(0.3, 2.0, 10)
    beta = rng.standard_normal(20)
    B = np.split(beta, 10)
    w = rng.uniform(0.1, 3.0, Y.shape[0])
    for weights in (None, w):
        got = observed_nll_per_row(Xs, Y, B, F, D, weights=weights)
        want = dense_obs_nll(Xs, Y, beta, F, D, w=weights)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_dense_gradient_oracle_is_right(unbalanced):
    """Sanity check of the test's own oracle: analytic vs central differences."""
    Xs, Y, _ = unbalanced
    rng = np.random.default_rng(1)
    beta, F, D = rng.standard_normal(20), rng.standard_normal((10, 2)), rng.uniform(0.5, 2, 10)
    _, gb, gF, gD = dense_obs_nll(Xs, Y, beta, F, D, grad=True)
    h, e = 1e-6, np.zeros(20)
    e[3] = h
    fd = (dense_obs_nll(Xs, Y, beta + e, F, D) - dense_obs_nll(Xs, Y, beta - e, F, D)) / (2 * h)
    np.testing.assert_allclose(gb[3], fd, rtol=1e-6)
    E = np.zeros_like(F)
    E[4, 1] = h
    fd = (dense_obs_nll(Xs, Y, beta, F + E, D) - dense_obs_nll(Xs, Y, beta, F - E, D)) / (2 * h)
    np.testing.assert_allclose(gF[4, 1], fd, rtol=1e-6)


def test_mle_equals_dense_direct_maximisation(unbalanced):
    """With 20 % missing, the EM fixed point is the MLE: L-BFGS on the dense
    per-row likelihood reaches the same NLL (1e-6 relative, as the issue asks;
    observed agreement is ~1e-12) and beta (1e-4: the NLL is flat to 2nd order)."""
    Xs, Y, _ = unbalanced
    fit = fit_missing(Xs, Y, 2, tol=1e-13)
    assert fit.converged and fit.method == "em-missing"
    nll_dense, beta_dense = dense_mle(Xs, Y, 2)
    np.testing.assert_allclose(fit.nll, nll_dense, rtol=1e-6)
    assert fit.nll <= nll_dense + 1e-9 * abs(nll_dense)
    # the reported NLL is the dense per-row NLL at the returned parameters
    np.testing.assert_allclose(fit.nll, dense_obs_nll(Xs, Y, flat(fit.B), fit.F, fit.D), rtol=1e-11)
    np.testing.assert_allclose(flat(fit.B), beta_dense, atol=1e-4)


@pytest.mark.parametrize("accelerate", [True, "squarem", False])
def test_trace_monotone_and_methods_agree(unbalanced, accelerate):
    Xs, Y, _ = unbalanced
    fit = fit_missing(Xs, Y, 2, tol=1e-13, accelerate=accelerate)
    assert fit.converged
    assert np.all(np.diff(fit.nll_trace) <= 0.0)
    ref = fit_missing(Xs, Y, 2, tol=1e-14)
    np.testing.assert_allclose(fit.nll, ref.nll, rtol=1e-10)
    np.testing.assert_allclose(sigma(fit.F, fit.D), sigma(ref.F, ref.D), atol=1e-4)


def test_no_missing_equals_balanced_solver():
    """Complete data: the EM path and ALS reach the same MLE (NLL 1e-9, params 1e-5)."""
    Xs, Y, _ = simulate_sur(N=300, K=30, p=3, k=3, seed=8, intercept=True)
    a = als_gls(Xs, Y, 3, tol=1e-14)
    b = fit_missing(Xs, Y, 3, tol=1e-14)
    np.testing.assert_allclose(b.nll, a.nll, rtol=1e-9)
    np.testing.assert_allclose(flat(b.B), flat(a.B), atol=1e-5)
    np.testing.assert_allclose(sigma(b.F, b.D), sigma(a.F, a.D), atol=1e-5)
    np.testing.assert_allclose(b.D, a.D, rtol=1e-5)
    assert np.all(b.n_observed == 300)


def test_k_zero_is_ols_on_observed_rows(unbalanced):
    """Diagonal Sigma: the likelihood separates, MLE = OLS per equation, D = RSS/n_j."""
    Xs, Y, _ = unbalanced
    fit = fit_missing(Xs, Y, 0)
    for j, x in enumerate(Xs):
        o = ~np.isnan(Y[:, j])
        b, rss = np.linalg.lstsq(x[o], Y[o, j], rcond=None)[:2]
        np.testing.assert_allclose(fit.B[j].ravel(), b, rtol=1e-10)
        np.testing.assert_allclose(fit.D[j], rss[0] / o.sum(), rtol=1e-10)


@pytest.mark.parametrize("frac", [0.0, 0.2])
def test_integer_weights_equal_duplicated_rows(frac):
    """Weights w_i in {0, 1, 2, 3} = row i repeated w_i times (NLL per row and params)."""
    Xs, Y, _ = simulate_sur(N=120, K=8, p=2, k=1, seed=5)
    Y = random_missing(Y, frac, seed=6)
    w = np.random.default_rng(7).integers(0, 4, Y.shape[0])
    rep = np.repeat(np.arange(Y.shape[0]), w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDataWarning)  # zero-weight rows dropped
        a = als_gls_missing(Xs, Y, 1, weights=w, tol=1e-13)
    b = als_gls_missing([x[rep] for x in Xs], Y[rep], 1, tol=1e-13)
    assert a.method == b.method == ("als" if frac == 0 else "em-missing")
    np.testing.assert_allclose(a.nll, b.nll, rtol=1e-10)
    np.testing.assert_allclose(flat(a.B), flat(b.B), atol=1e-6)
    np.testing.assert_allclose(sigma(a.F, a.D), sigma(b.F, b.D), atol=1e-6)
    assert np.all(a.rows == np.flatnonzero(w > 0))
    np.testing.assert_allclose(a.weights.mean(), 1.0)


def test_weighted_balanced_als_path_equals_em_path():
    """Weighted complete data: sqrt(w)-scaled ALS and weighted EM give one MLE."""
    Xs, Y, _ = simulate_sur(N=150, K=12, p=2, k=2, seed=9)
    w = np.random.default_rng(2).uniform(0.2, 5.0, 150)
    a = als_gls_missing(Xs, Y, 2, weights=w, tol=1e-14)
    b = fit_missing(Xs, Y, 2, weights=w, tol=1e-14)
    assert a.method == "als"
    np.testing.assert_allclose(a.nll, b.nll, rtol=1e-10)
    np.testing.assert_allclose(flat(a.B), flat(b.B), atol=1e-6)
    np.testing.assert_allclose(a.nll, observed_nll_per_row(Xs, Y, a.B, a.F, a.D, weights=w), rtol=1e-12)
    # scaling all weights changes nothing (rescaled to mean 1)
    c = als_gls_missing(Xs, Y, 2, weights=7 * w, tol=1e-14)
    np.testing.assert_allclose(c.nll, a.nll, rtol=1e-12)


def test_impute_matches_dense_conditional(unbalanced):
    """E[y_M | y_O] = mu_M + S_MO S_OO^-1 r_O and Var = diag(S_MM - S_MO S_OO^-1 S_OM)."""
    Xs, Y, _ = unbalanced
    fit = fit_missing(Xs, Y, 2)
    mean, var = impute(fit, Xs, Y)
    S = sigma(fit.F, fit.D)
    mu = fit.predict(Xs)
    for i in range(0, Y.shape[0], 7):
        o, m = ~np.isnan(Y[i]), np.isnan(Y[i])
        if not m.any():
            continue
        sol = np.linalg.solve(S[np.ix_(o, o)], np.c_[Y[i, o] - mu[i, o], S[np.ix_(o, m)]])
        np.testing.assert_allclose(mean[i, m], mu[i, m] + S[np.ix_(m, o)] @ sol[:, 0], rtol=1e-10)
        np.testing.assert_allclose(var[i, m], np.diag(S[np.ix_(m, m)] - S[np.ix_(m, o)] @ sol[:, 1:]),
                                   rtol=1e-10)
        np.testing.assert_array_equal(mean[i, o], Y[i, o])
        assert np.all(var[i, o] == 0)


def test_staggered_starts_and_nan_designs_where_missing():
    """Equations starting late, with NaN regressors before their start, are fine."""
    Xs, Y, truth = simulate_sur(N=200, K=15, p=2, k=2, seed=12)
    Xs = [x.copy() for x in Xs]
    starts = np.random.default_rng(0).integers(0, 80, 15)
    for j, s in enumerate(starts):
        Y[:s, j] = np.nan
        Xs[j][:s] = np.nan
    fit = als_gls_missing(Xs, Y, 2)
    assert fit.converged and np.all(np.isfinite(flat(fit.B)))
    np.testing.assert_array_equal(fit.n_observed, 200 - starts)
    mean, var = impute(fit, Xs, Y)
    assert np.isnan(mean[0, starts.argmax()])  # unknown regressors: no mean
    assert np.all(np.isfinite(var))


def test_drop_policy_is_listwise_deletion(unbalanced):
    Xs, Y, _ = simulate_sur(N=200, K=8, p=2, k=1, seed=2)
    Ym = Y.copy()
    Ym[:40, 0] = np.nan
    Ym[150, 3] = np.nan
    with pytest.warns(MissingDataWarning, match="removed 41 of 200"):
        fit = als_gls_missing(Xs, Ym, 1, missing="drop")
    keep = np.r_[40:150, 151:200]
    ref = als_gls([x[keep] for x in Xs], Y[keep], 1)
    np.testing.assert_array_equal(fit.rows, keep)
    np.testing.assert_allclose(fit.nll, ref.nll, rtol=1e-12)
    with pytest.raises(ValueError, match="missing='ml'"):
        als_gls_missing(Xs, Ym, 1, missing="raise")
    assert als_gls_missing(Xs, Y, 1, missing="raise").method == "als"
    with pytest.raises(ValueError, match="missing must be one of"):
        als_gls_missing(Xs, Ym, 1, missing="pairwise")


def test_all_missing_rows_dropped_with_note(unbalanced):
    Xs, Y, _ = unbalanced
    Y = Y.copy()
    Y[[5, 9], :] = np.nan
    with pytest.warns(MissingDataWarning, match="2 row"):
        fit = fit_missing(Xs, Y, 2)
    assert fit.rows.size == Y.shape[0] - 2 and 5 not in fit.rows


def test_bad_inputs(unbalanced):
    Xs, Y, _ = unbalanced
    N = Y.shape[0]
    Y2 = Y.copy()
    Y2[2:, 4] = np.nan  # 2 observed rows, p_4 + 1 = 3 needed
    with pytest.raises(ValueError, match="equation 4 has 2 observed rows"):
        fit_missing(Xs, Y2, 1)
    X3 = [x.copy() for x in Xs]
    i = int(np.flatnonzero(~np.isnan(Y[:, 1]))[0])
    X3[1][i, 0] = np.nan
    with pytest.raises(ValueError, match=rf"Xs\[1\] has NaN in row {i} where Y\[{i}, 1\] is observed"):
        fit_missing(X3, Y, 1)
    for w, msg in [(-np.ones(N), "non-negative"), (np.r_[np.nan, np.ones(N - 1)], "NaN"),
                   (np.ones(N - 1), "length"), (np.zeros(N), "all zero"),
                   (np.ones((N, 1)), "1-D")]:
        with pytest.raises(ValueError, match=msg):
            als_gls_missing(Xs, Y, 1, weights=w)
    Yinf = Y.copy()
    Yinf[0, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        fit_missing(Xs, Yinf, 1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        als_gls_missing(Xs, Y, 1, max_sweep=3)
    with pytest.raises(ValueError, match="accelerate"):
        fit_missing(Xs, Y, 1, accelerate="newton")


def test_inputs_not_modified(unbalanced):
    Xs, Y, _ = unbalanced
    Y0, X0 = Y.copy(), [x.copy() for x in Xs]
    fit_missing(Xs, Y, 2, weights=np.ones(Y.shape[0]))
    np.testing.assert_array_equal(Y, Y0)
    for a, b in zip(Xs, X0):
        np.testing.assert_array_equal(a, b)


def test_observed_gradient_matches_dense_and_finite_differences():
    """Problem.nll_grad (batched per-row cores) = the dense oracle's analytic
    gradient (same mathematics two ways: rtol 1e-9) and central differences
    (h = 1e-6: truncation + round-off about 1e-8 relative)."""
    from alsgls.core.missing_em import EMProblem, pack, unpack
    from alsgls.core.problem import build_problem

    Xs, Y, _ = simulate_sur(N=60, K=7, p=3, k=2, seed=21)
    Xs[1] = Xs[1][:, :2]                                  # unequal p_j (padding)
    Y = random_missing(Y, 0.25, seed=22)
    w = np.random.default_rng(23).uniform(0.2, 3.0, 60)
    data = build_problem(Xs, Y, weights=w)
    s = data.residual_variances(data.ols()[1])
    prob = EMProblem(data, 2, 1e-6 * s)
    rng = np.random.default_rng(24)
    theta = rng.standard_normal((7, 3)) * (np.arange(3) < data.p[:, None])
    F, D = rng.standard_normal((7, 2)), rng.uniform(0.3, 2.0, 7)
    nll, g = prob.nll_grad(theta, F, D)
    beta = np.concatenate([theta[j, :data.p[j]] for j in range(7)])
    nll_d, gb, gF, gD = dense_obs_nll(Xs, Y, beta, F, D, w=w, grad=True)
    np.testing.assert_allclose(nll, nll_d, rtol=1e-12)
    g_theta = g[:21].reshape(7, 3)
    np.testing.assert_array_equal(g_theta[1, 2], 0.0)   # padded coefficient
    np.testing.assert_allclose(np.concatenate([g_theta[j, :data.p[j]] for j in range(7)]), gb,
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g[21:35], gF.ravel(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g[35:], gD, rtol=1e-9, atol=1e-12)
    v, h = pack((theta, F, D)), 1e-6
    fd = np.empty_like(v)
    for i in range(v.size):
        e = np.zeros_like(v)
        e[i] = h
        fd[i] = (prob.nll_grad(*unpack(v + e, prob))[0] - prob.nll_grad(*unpack(v - e, prob))[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=0, atol=1e-7 * np.abs(g).max())


def heywood_system(N=200, K=8, p=2, k=2, seed=0):
    """Equation 0 has no noise of its own (D_0 = 0): its loading explains all
    its variance, so the MLE sits at the floor D_0 = d_floor * s_0."""
    rng = np.random.default_rng(seed)
    Xs = [rng.standard_normal((N, p)) for _ in range(K)]
    F = rng.standard_normal((K, k))
    D = rng.uniform(0.5, 1.5, K)
    D[0] = 0.0
    Z = rng.standard_normal((N, k))
    Y = (np.column_stack([x @ rng.standard_normal(p) for x in Xs]) + Z @ F.T
         + rng.standard_normal((N, K)) * np.sqrt(D))
    Y[rng.random(Y.shape) < 0.2] = np.nan
    return Xs, Y


def dense_bounded_mle(Xs, Y, k, d_floor=1e-6, seed=0):
    """L-BFGS-B on the dense per-row likelihood over (beta, F, log D), log D
    bounded at the floor d_floor * s_j (s_j: OLS residual variance on the
    observed rows, as fit_missing uses), restarted from its own end point."""
    obs = ~np.isnan(Y)
    fits = [np.linalg.lstsq(x[o], Y[o, j], rcond=None) for j, (x, o) in enumerate(zip(Xs, obs.T))]
    s = np.array([f[1][0] / o.sum() for f, o in zip(fits, obs.T)])
    beta0 = np.concatenate([f[0] for f in fits])
    K, P = Y.shape[1], beta0.size
    v = np.concatenate([beta0, 0.3 * np.random.default_rng(seed).standard_normal(K * k), np.log(s)])
    bounds = [(None, None)] * (P + K * k) + [(lo, None) for lo in np.log(d_floor * s)]

    def f(v):
        nll, gb, gF, gD = dense_obs_nll(Xs, Y, v[:P], v[P:P + K * k].reshape(K, k),
                                        np.exp(v[P + K * k:]), grad=True)
        return nll, np.concatenate([gb, gF.ravel(), gD])

    best = np.inf
    for _ in range(4):
        res = minimize(f, v, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-16, "gtol": 1e-12,
                                "maxcor": 30})
        v, done = res.x, best - res.fun <= 1e-15 * abs(res.fun)
        best = min(best, res.fun)
        if done:
            break
    return best


def test_heywood_case_reaches_dense_optimum():
    """Near a Heywood case EM's rate tends to 1 and its decrement understates
    the gap (before the quasi-Newton switch: tol=1e-10 stopped after 130
    iterations at a relative gap of 5.6e-7).  Now the fit certifies the gap and
    matches a dense bounded L-BFGS-B maximisation to 1e-8 relative (the issue's
    bar; observed ~1e-11) in under 150 iterations (observed ~50)."""
    Xs, Y = heywood_system()
    with pytest.warns(HeywoodWarning):
        fit = fit_missing(Xs, Y, 2, tol=1e-10)
    ref = dense_bounded_mle(Xs, Y, 2)
    assert fit.converged and fit.n_iter < 150
    assert fit.heywood[0] and not fit.heywood[1:].any()
    assert fit.quasi_newton.sum() > 0 and fit.gap <= 1e-10 * abs(fit.nll)
    assert np.all(np.diff(fit.nll_trace) <= 0.0)
    np.testing.assert_allclose(fit.nll, ref, rtol=1e-8)
    np.testing.assert_allclose(fit.nll, dense_obs_nll(Xs, Y, flat(fit.B), fit.F, fit.D), rtol=1e-11)
