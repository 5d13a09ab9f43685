"""One design shared by every equation: GLS = OLS, so the MLE is OLS plus the
exact ML factor analysis of its residuals.

With ``X_j = X`` for every j the GLS estimator equals OLS for any ``Sigma``
(Kruskal; Zellner 1962), so ``fit_problem`` keeps the OLS coefficients and
runs the ALS factor steps alone (``run_als(update_beta=False)``) for a shared,
complete, unrestricted problem (weighted too: ``Problem.scaled`` keeps the
design shared).  The design is stored once (a zero-stride view) and OLS
factors its one Gram matrix once.

Oracles: the dense textbook GLS given the fitted ``Sigma`` (it is OLS, to
1e-10); and the general path, forced by passing K separate copies of the
design (no longer recognised as shared), which runs the beta-steps too.  Its
beta-steps find nothing to do (the start gap is ~1e-29), so the coefficients
and the NLL agree to round-off, asserted at 1e-10.  ``D`` and ``F F'`` are
fixed by the NLL-based stopping rule only to about the square root of its gap:
residuals that differ in the last bit (two Gram solves) can flip an accept /
reject of an accelerated step, and the two runs then stop at points 1e-8 to
1e-7 apart (NLL equal to 1e-14), asserted at 1e-6 (the style's tolerance for
fixed points).
"""

from __future__ import annotations

import numpy as np
import pytest

import alsgls
from alsgls import als_gls, em_gls, simulate_gls
from alsgls.core import dispatch
from alsgls.core import problem as problem_module
from alsgls.core.options import solver_options
from alsgls.core.problem import build_problem
from alsgls.core.restriction import build_restriction

from . import _oracles

TOL = 1e-12


@pytest.fixture(scope="module")
def shared_system():
    """K = 20 outputs, N = 200, one design with p = 3 and an intercept, k = 3."""
    Xs, Y, _ = simulate_gls(N=200, K=20, p=3, k=3, seed=17)
    X = np.column_stack([np.ones(200), Xs[0][:, 1:]])
    return X, Y + 4.0


def _copies(X, K):
    return [X.copy() for _ in range(K)]


def _assert_same_fit(a, b, rtol=1e-10, sigma_rtol=1e-6):
    np.testing.assert_allclose(np.hstack(a.B), np.hstack(b.B), rtol=rtol,
                               atol=rtol * np.abs(np.hstack(b.B)).max())
    assert a.nll == pytest.approx(b.nll, rel=rtol)
    np.testing.assert_allclose(a.D, b.D, rtol=sigma_rtol)
    Ca, Cb = a.F @ a.F.T, b.F @ b.F.T
    np.testing.assert_allclose(Ca, Cb, rtol=0, atol=sigma_rtol * np.abs(Cb).max())


def test_gls_given_the_fitted_sigma_is_ols():
    """Kruskal's theorem at the fitted Sigma, against the dense textbook GLS on K
    copies of the design (480 x 480 system), and the dense NLL."""
    Xs, Y, _ = simulate_gls(N=60, K=8, p=2, k=2, seed=4)
    fit = als_gls(Xs[0], Y, 2, tol=TOL)
    Sigma = fit.F @ fit.F.T + np.diag(fit.D)
    beta = _oracles.dense_gls(Xs, Y, Sigma)
    np.testing.assert_allclose(np.vstack(fit.B).ravel(), beta, rtol=1e-10, atol=1e-12)
    R = _oracles.residuals(Xs, Y, beta)
    assert fit.nll == pytest.approx(_oracles.dense_nll_per_row(R, Sigma), rel=1e-12)


@pytest.fixture
def calls(monkeypatch):
    """Record ``update_beta`` of every ALS run started by the dispatcher."""
    seen = []
    run_als = dispatch.run_als

    def spy(problem, k, options, **kw):
        seen.append((problem, kw.get("update_beta", True)))
        return run_als(problem, k, options, **kw)

    monkeypatch.setattr(dispatch, "run_als", spy)
    return seen


@pytest.mark.parametrize("k", [0, 3])
def test_shared_path_equals_general_path(shared_system, calls, k):
    X, Y = shared_system
    shared = als_gls(X, Y, k, tol=TOL)
    general = als_gls(_copies(X, Y.shape[1]), Y, k, tol=TOL)
    assert [u for _, u in calls] == [False, True]
    assert calls[0][0].shared and not calls[1][0].shared
    assert shared.converged and general.converged
    _assert_same_fit(shared, general)
    assert np.all(shared.beta_gap == 0)           # no beta-step was run


def test_shared_path_is_ols(shared_system):
    """The coefficients are OLS exactly (lstsq), whatever the rank."""
    X, Y = shared_system
    fit = als_gls(X, Y, 3, tol=TOL)
    ols = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(np.hstack(fit.B), ols, rtol=1e-12, atol=1e-12)


def test_weighted_shared_path(shared_system, calls):
    X, Y = shared_system
    w = np.random.default_rng(3).uniform(0.2, 3.0, Y.shape[0])
    shared = als_gls(X, Y, 2, tol=TOL, weights=w)
    general = als_gls(_copies(X, Y.shape[1]), Y, 2, tol=TOL, weights=w)
    assert [u for _, u in calls] == [False, True]
    _assert_same_fit(shared, general)


def test_list_of_one_array_is_shared(shared_system, calls):
    """K references to one array (what SUR builds from one exog) take the shared path."""
    X, Y = shared_system
    als_gls([X] * Y.shape[1], Y, 2, tol=TOL)
    assert calls[0][1] is False and calls[0][0].X.strides[0] == 0


def test_em_agrees_with_the_shared_path(shared_system):
    """Dense EM (the reference core, unchanged) reaches the same MLE (fixed points:
    rtol 1e-6, the style's tolerance for two solvers)."""
    X, Y = shared_system
    a = als_gls(X, Y, 3, tol=TOL)
    b = em_gls(X, Y, 3, tol=TOL, max_iter=5000)
    _assert_same_fit(a, b, rtol=1e-6, sigma_rtol=1e-5)


def test_restricted_shared_design_takes_the_general_path(shared_system, calls):
    """A restriction across equations breaks Kruskal's theorem: beta-steps run."""
    X, Y = shared_system
    prob = build_problem(X, Y)
    R = np.zeros(prob.layout.P)
    R[[1, 4]] = 1.0, -1.0                     # slope 1 of equation 0 = that of equation 1
    res = build_restriction(R, None, prob.layout)
    fit, _ = dispatch.fit_problem(prob, 2, solver_options(tol=TOL), restriction=res)
    assert calls[0][1] is True
    assert fit.B[0][1, 0] == pytest.approx(fit.B[1][1, 0], abs=1e-12)


def test_ols_factors_the_shared_gram_once(shared_system, monkeypatch):
    """No K copies of the Gram matrix or its inverse: one Cholesky factorisation."""
    X, Y = shared_system
    prob = build_problem(X, Y)
    assert prob.X.strides[0] == 0 and prob.gram.strides[0] == 0

    def refuse(gram):
        raise AssertionError("block_jacobi_inverse called on a shared Gram matrix")

    monkeypatch.setattr(problem_module, "block_jacobi_inverse", refuse)
    theta, Rt = prob.ols()
    np.testing.assert_allclose(theta[:, :3].T, np.linalg.lstsq(X, Y, rcond=None)[0],
                               rtol=1e-12, atol=1e-12)
    assert prob.spans_constant.all() and prob.exact_fits(Rt)[1].size == 0


def test_alsgls_with_a_2d_design(shared_system, calls):
    """ALSGLS stores X once (with its intercept column: one (N, p + 1) array) and
    fits by the shared path; coefficients are LinearRegression's, the rest the
    general path's (the SUR form with K copies)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, Y = shared_system
    x = X[:, 1:]
    est = alsgls.ALSGLS(rank=3, tol=TOL).fit(x, Y)
    prob, update_beta = calls[0]
    assert update_beta is False
    assert prob.X.strides[0] == 0
    base = prob.X[0]
    while base.base is not None:
        base = base.base
    assert base.nbytes <= x.shape[0] * (x.shape[1] + 1) * 8
    lr = linear_model.LinearRegression().fit(x, Y)
    np.testing.assert_allclose(est.coef_, lr.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(est.intercept_, lr.intercept_, rtol=1e-10)
    sur = alsgls.ALSGLS(rank=3, tol=TOL).fit(_copies(x, Y.shape[1]), Y)
    assert calls[1][1] is True
    np.testing.assert_allclose(np.column_stack(sur.coef_list_), est.coef_.T, rtol=1e-10)
    assert est.nll_history_[-1] == pytest.approx(sur.nll_history_[-1], rel=1e-10)
    np.testing.assert_allclose(est.noise_variance_, sur.noise_variance_, rtol=1e-6)
    Ca, Cb = est.loadings_ @ est.loadings_.T, sur.loadings_ @ sur.loadings_.T
    np.testing.assert_allclose(Ca, Cb, rtol=0, atol=1e-6 * np.abs(Cb).max())


def test_missing_responses_keep_the_missing_data_path(shared_system):
    """With missing responses the designs differ by their observed rows: the
    missing-data EM, as before (no shared shortcut)."""
    Xs, Y, _ = simulate_gls(N=80, K=6, p=2, k=1, seed=5)
    Y[::9, 2] = np.nan
    fit = als_gls(Xs[0], Y, 1, tol=1e-8)
    assert fit.method == "em-missing"
