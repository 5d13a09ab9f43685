"""Matrix-free coefficient covariance against dense textbook formulas."""

from types import SimpleNamespace

import numpy as np
import pytest

from alsgls import simulate_sur
from alsgls.core.ops import LowRankCovariance, row_core_inverse
from alsgls.stats.inference import GLSCovariance, dense_information
from alsgls.stats.system import SUR


@pytest.fixture(scope="module")
def k50():
    """K = 50 with strong factors, intercepts and regressors correlated across
    equations: the case where per-equation (A_jj)^-1 is badly wrong."""
    Xs, Y, _ = simulate_sur(N=120, K=50, p=3, k=3, seed=3, intercept=True,
                            x_common=0.5, factor_strength=2.0)
    Xs[7] = Xs[7][:, :2]                     # unequal p_j exercises the padding
    res = SUR.from_arrays(Xs, Y, rank=3).fit(tol=1e-12)
    d = res.model.data
    A = dense_information(d.X, d.p, res.sigma)  # oracle: dense P x P (test only)
    return res, A, np.linalg.inv(A)


def test_model_ses_equal_dense_inverse_diagonal(k50):
    res, _, Ainv = k50
    # same mathematics two ways (Woodbury core vs dense inverse): rtol 1e-8
    np.testing.assert_allclose(res.bse.to_numpy(), np.sqrt(np.diag(Ainv)), rtol=1e-8)


def test_per_equation_shortcut_would_be_wrong(k50):
    res, A, _ = k50
    d = res.model.data
    edges = np.concatenate([[0], np.cumsum(d.p)])
    naive = np.concatenate([np.sqrt(np.diag(np.linalg.inv(A[a:b, a:b])))
                            for a, b in zip(edges[:-1], edges[1:])])
    assert np.max(np.abs(naive / res.bse.to_numpy() - 1)) > 0.2


def test_contrasts_and_subsets(k50):
    res, _, Ainv = k50
    names = res.param_names
    sub = [names[0], names[5], names[-1]]
    idx = [0, 5, len(names) - 1]
    np.testing.assert_allclose(res.cov_params(sub).to_numpy(), Ainv[np.ix_(idx, idx)], rtol=1e-8)
    blk = res.cov_params(equation="eq7").to_numpy()
    a = sum(res.model.data.p[:7])
    np.testing.assert_allclose(blk, Ainv[a:a + 2, a:a + 2], rtol=1e-8)


def test_robust_sandwich_equals_dense(k50):
    res, A, Ainv = k50
    d = res.model.data
    rob = SUR.from_arrays([e.X for e in res.model.equations], d.Yt.T, rank=3)
    # reuse the fitted values: build the robust results on the same fit
    from alsgls.stats.results import SURResults
    r2 = SURResults(rob, res.fit_result, cov_type="robust")
    R = d.Yt - np.einsum("knp,kp->kn", d.X, r2._theta)
    W = res.sigma.inverse_to_dense() @ R                     # (K, N)
    Gam = np.concatenate([d.X[j, :, : d.p[j]] * W[j][:, None] for j in range(d.K)], axis=1)
    V = Ainv @ (Gam.T @ Gam) @ Ainv
    np.testing.assert_allclose(r2.bse.to_numpy(), np.sqrt(np.diag(V)), rtol=1e-8)


def test_solve_matches_dense(k50):
    res, _, Ainv = k50
    d = res.model.data
    inf = GLSCovariance(d.X, d.p, res.sigma)
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((d.K, d.pmax)) * d.mask
    flat = Z[d.mask]
    np.testing.assert_allclose(inf.solve(Z)[d.mask], Ainv @ flat, rtol=1e-8, atol=1e-12)


def test_diagonal_sigma_is_ols_like():
    Xs, Y, _ = simulate_sur(N=80, K=4, p=2, k=1, seed=2)
    res = SUR.from_arrays(Xs, Y, rank=0).fit()
    D = res.noise_variance.to_numpy()
    se = np.concatenate([np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * D[j]) for j, x in enumerate(Xs)])
    np.testing.assert_allclose(res.bse.to_numpy(), se, rtol=1e-10)


def test_debiased_scales_and_uses_t(small_system):
    Xs, Y, _ = small_system
    mod = SUR.from_arrays(Xs, Y, rank=2)
    a, b = mod.fit(), mod.fit(debiased=True)
    N, p = Y.shape[0], Xs[0].shape[1]
    np.testing.assert_allclose(b.bse, a.bse * np.sqrt(N / (N - p)), rtol=1e-12)
    assert np.all(b.pvalues >= a.pvalues - 1e-15)


def test_from_problem_equals_constructor():
    # a masked, weighted problem record (duck-typed: X zero where missing, O (K, N) float)
    rng = np.random.default_rng(5)
    K, N, pm, k = 12, 60, 3, 2
    p = np.full(K, pm)
    p[3] = 2
    X = rng.standard_normal((K, N, pm))
    X[3, :, 2] = 0.0
    mask = rng.random((N, K)) > 0.25
    O = mask.T.astype(np.float64)
    w = rng.uniform(0.3, 2.0, N)
    cov = LowRankCovariance(rng.standard_normal((K, k)), rng.uniform(0.5, 1.5, K))
    R = rng.standard_normal((K, N))
    prob = SimpleNamespace(X=X * O[:, :, None], p=p, O=O, w=w)
    a = GLSCovariance.from_problem(prob, cov, R * O, method="exact")
    b = GLSCovariance(np.where(mask.T[:, :, None], X, np.nan), p, cov,
                      np.where(mask.T, R, np.nan), mask=mask, weights=w, method="exact")
    np.testing.assert_array_equal(a.diagonal_blocks, b.diagonal_blocks)
    np.testing.assert_array_equal(a.robust_diagonal_blocks, b.robust_diagonal_blocks)
    # the per-row cores are public, the one kernel of ops
    np.testing.assert_array_equal(a.row_core_inverse, row_core_inverse(cov.F, cov.D, O))
    # nothing missing, no weights: the balanced path
    full = GLSCovariance.from_problem(SimpleNamespace(X=X, p=p, O=None, w=None), cov, R)
    assert full.obs is None and full.row_core_inverse is None
    np.testing.assert_array_equal(full.diagonal_blocks, GLSCovariance(X, p, cov, R).diagonal_blocks)


def test_robust_estimator_holds_the_sandwich(k50):
    # the sandwich lives in the Robust estimator; GLSCovariance's public names
    # delegate to the one instance it shares between results
    from alsgls.stats.covariance import COV_ESTIMATORS, Robust

    res, _, _ = k50
    d = res.model.data
    gls = GLSCovariance(d.X, d.p, res.sigma, res._Rt)
    rob = gls.estimator("hc0")
    assert isinstance(rob, Robust) and rob is gls.estimator("robust")
    fresh = COV_ESTIMATORS["robust"](gls)
    np.testing.assert_array_equal(fresh.diagonal_blocks, gls.robust_diagonal_blocks)
    np.testing.assert_array_equal(fresh.scores, gls.scores)
    L = np.random.default_rng(0).standard_normal((d.K, d.pmax, 3)) * d.mask[:, :, None]
    np.testing.assert_array_equal(fresh.contrast_cov(L), gls.contrast_cov(L, robust=True))
    np.testing.assert_array_equal(gls.estimator("unadjusted").contrast_cov(L),
                                  gls.contrast_cov(L))
    with pytest.raises(ValueError, match="residuals are required"):
        _ = GLSCovariance(d.X, d.p, res.sigma).robust_diagonal_blocks


def test_a_new_estimator_needs_only_a_registered_class(k50, monkeypatch):
    from alsgls.stats import covariance

    class Doubled(covariance.ModelBased):
        """A stand-in estimator: twice the model-based covariance."""

        name = "doubled"

        @property
        def diagonal_blocks(self):
            return 2.0 * self.gls.diagonal_blocks

        def contrast_cov(self, L):
            return 2.0 * super().contrast_cov(L)

    monkeypatch.setitem(covariance.COV_ESTIMATORS, "doubled", Doubled)
    res, _, Ainv = k50
    new = res.with_cov_type("doubled")
    assert new.cov_type == "doubled" and new.covariance is res.covariance
    np.testing.assert_allclose(new.bse.to_numpy(), np.sqrt(2.0) * res.bse.to_numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(new.cov_params(res.param_names[:2]).to_numpy(),
                               2.0 * Ainv[:2, :2], rtol=1e-8)
    pred = new.get_prediction({e.label: e.X[:3] for e in res.model.equations})
    base = res.get_prediction({e.label: e.X[:3] for e in res.model.equations})
    np.testing.assert_allclose(pred.se_mean, np.sqrt(2.0) * base.se_mean, rtol=1e-12)


def test_with_cov_type_shares_residuals_covariance_and_estimators(k50):
    from alsgls.stats.results import SURResults

    res, _, _ = k50
    _ = res.bse
    rob = res.with_cov_type("robust")
    assert rob.covariance is res.covariance and rob._Rt is res._Rt
    _ = rob.bse
    again = rob.with_cov_type("robust", debiased=True)
    assert again.cov_estimator is rob.cov_estimator             # the sandwich is not redone
    np.testing.assert_allclose(again.bse.to_numpy(),
                               rob.bse.to_numpy() * again._scale, rtol=1e-12)
    # the covariance is an explicit argument, not a write into a cache
    explicit = SURResults(res.model, res.fit_result, covariance=res.covariance)
    assert explicit.covariance is res.covariance
    # residuals recomputed when not given: Y - X B equals the solver's to rounding
    np.testing.assert_allclose(explicit._Rt, res._Rt, rtol=0, atol=1e-12 * np.abs(res._Rt).max())
    with pytest.raises(TypeError, match="debiased"):
        res.with_cov_type("robust", debiased="yes")
