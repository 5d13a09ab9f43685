"""The scikit-learn estimator ALSGLS: contract, fitted values, conditional
prediction, likelihood, covariance objects and bad input."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from alsgls import als_gls, simulate_gls, simulate_sur  # noqa: E402
from alsgls.learn.estimator import ALSGLS, ExactFitWarning, LowRankPrecision  # noqa: E402
from alsgls.core.ops import LowRankCovariance  # noqa: E402

#: Checks that cannot pass, with the reason (reported by check_estimator).
EXPECTED_FAILED_CHECKS = {
    "check_regressor_multioutput": (
        "uses N = 11 rows and 10 features: with the intercept N <= p, the "
        "likelihood is unbounded and ALSGLS refuses (DESIGN.md section 8); "
        "the same check passes with fit_intercept=False (tested below)"
    ),
}


@pytest.fixture(scope="module")
def shared():
    """2-D form: N = 400, K = 30, p = 3 shared regressors, k = 2."""
    Xs, Y, truth = simulate_gls(N=400, K=30, p=3, k=2, seed=7)
    return Xs[0], Y, truth


@pytest.fixture(scope="module")
def fitted(shared):
    X, Y, _ = shared
    return ALSGLS(rank=2).fit(X[:300], Y[:300])


@pytest.mark.skipif(
    tuple(int(v) for v in sklearn.__version__.split(".")[:2]) < (1, 6),
    reason="expected_failed_checks needs scikit-learn >= 1.6",
)
def test_check_estimator():
    res = check_estimator(ALSGLS(), on_fail=None,
                          expected_failed_checks=EXPECTED_FAILED_CHECKS)
    bad = [(r["check_name"], r["exception"]) for r in res
           if r["status"] == "failed"]
    assert not bad, bad
    xfail = {r["check_name"] for r in res if r["status"] == "xfail"}
    assert xfail <= set(EXPECTED_FAILED_CHECKS)


def test_multioutput_check_without_intercept():
    from sklearn.utils.estimator_checks import check_regressor_multioutput

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExactFitWarning)  # make_regression has no noise
        check_regressor_multioutput("ALSGLS", ALSGLS(fit_intercept=False))


def test_shared_design_coefficients_equal_ols(shared, fitted):
    """Zellner: with one design for all outputs, GLS = OLS (oracle:
    LinearRegression; rtol 1e-8 covers the CG tolerance of the fit)."""
    X, Y, _ = shared
    lr = LinearRegression().fit(X[:300], Y[:300])
    np.testing.assert_allclose(fitted.coef_, lr.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fitted.intercept_, lr.intercept_, rtol=1e-8, atol=1e-10)
    assert fitted.coef_.shape == (30, 3) and len(fitted.coef_list_) == 30
    np.testing.assert_allclose(fitted.predict(X[300:]), lr.predict(X[300:]), rtol=1e-8,
                               atol=1e-9)


def test_attributes_match_als_gls(shared, fitted):
    X, Y, _ = shared
    Xd = np.hstack([np.ones((300, 1)), X[:300]])
    fit = als_gls([Xd] * 30, Y[:300], 2)
    # the same solver on the same data: identical up to round-off
    np.testing.assert_allclose(fitted.noise_variance_, fit.D, rtol=1e-10)
    np.testing.assert_allclose(fitted.loadings_ @ fitted.loadings_.T, fit.F @ fit.F.T,
                               rtol=1e-10, atol=1e-12)
    assert fitted.rank_ == 2 and fitted.converged_ and fitted.n_iter_ == fit.n_iter
    np.testing.assert_allclose(fitted.nll_history_, fit.nll_trace)
    assert fitted.rank_selection_ is None and fitted.n_features_in_ == 3


def test_auto_rank_records_selection(shared):
    X, Y, _ = shared
    est = ALSGLS().fit(X, Y)
    assert est.rank_ == 2 and est.rank_selection_.rank == 2


def test_conditional_prediction_matches_dense_gaussian(shared, fitted):
    """Woodbury conditional mean against the textbook
    mu_U + S_UO S_OO^-1 (y_O - mu_O) with the dense Sigma (rtol 1e-10: same
    mathematics two ways)."""
    X, Y, _ = shared
    Xt, Yt = X[300:320], Y[300:320]
    rng = np.random.default_rng(0)
    obs = rng.random(Yt.shape) < 0.6
    obs[0] = False          # nothing observed: unconditional mean
    obs[1] = obs[2]         # a repeated pattern
    Yp = np.where(obs, Yt, np.nan)
    pred = fitted.predict(Xt, Yp)
    mu = fitted.predict(Xt)
    S = fitted.get_covariance(dense=True)
    for i in range(Yt.shape[0]):
        O, U = obs[i], ~obs[i]
        ref = mu[i, U].copy()
        if O.any():
            ref += S[np.ix_(U, O)] @ np.linalg.solve(S[np.ix_(O, O)], Yt[i, O] - mu[i, O])
        np.testing.assert_allclose(pred[i, U], ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(pred[i, O], Yt[i, O])


def test_conditional_prediction_gain_on_simulated_data():
    """Observing half of the outputs of a new row cuts the prediction error of
    the other half: with strong factors the conditional MSE is well below the
    unconditional one (measured ratio about 0.35; asserting < 0.6)."""
    Xs, Y, _ = simulate_gls(N=600, K=40, p=2, k=3, seed=1, factor_strength=1.0)
    X = Xs[0]
    est = ALSGLS().fit(X[:400], Y[:400])
    Xt, Yt = X[400:], Y[400:]
    obs = np.random.default_rng(1).random(Yt.shape) < 0.5
    Yp = np.where(obs, Yt, np.nan)
    mse_u = np.mean((est.predict(Xt) - Yt)[~obs] ** 2)
    mse_c = np.mean((est.predict(Xt, Yp) - Yt)[~obs] ** 2)
    assert mse_c < 0.6 * mse_u


def test_likelihood_and_score(shared, fitted):
    X, Y, _ = shared
    Xt, Yt = X[300:], Y[300:]
    mu = fitted.predict(Xt)
    S = fitted.get_covariance(dense=True)
    from scipy.stats import multivariate_normal

    ref = multivariate_normal(mean=np.zeros(30), cov=S).logpdf(Yt - mu)
    # Woodbury/determinant lemma vs dense scipy: rtol 1e-10
    np.testing.assert_allclose(fitted.log_likelihood_samples(Xt, Yt), ref, rtol=1e-10)
    assert fitted.log_likelihood(Xt, Yt) == pytest.approx(ref.sum(), rel=1e-10)
    from sklearn.metrics import r2_score

    assert fitted.score(Xt, Yt) == pytest.approx(r2_score(Yt, mu))


def test_covariance_and_precision_objects(fitted):
    cov = fitted.get_covariance()
    prec = fitted.get_precision()
    assert isinstance(cov, LowRankCovariance) and isinstance(prec, LowRankPrecision)
    S, P = fitted.get_covariance(dense=True), fitted.get_precision(dense=True)
    np.testing.assert_allclose(S @ P, np.eye(30), atol=1e-10)
    V = np.random.default_rng(0).standard_normal((30, 2))
    np.testing.assert_allclose(prec.matvec(V), P @ V, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(prec.solve(V), S @ V, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(prec.diagonal, np.diag(P), rtol=1e-10)
    assert prec.logdet == pytest.approx(-np.linalg.slogdet(S)[1], rel=1e-10)


def test_sur_form():
    """List of per-equation designs: coefficients are the ALS GLS ones (rtol 1e-8)."""
    Xs, Y, _ = simulate_sur(N=250, K=15, p=2, k=2, seed=3)
    est = ALSGLS(rank=2, fit_intercept=False).fit(Xs, Y)
    fit = als_gls(Xs, Y, 2)
    for b, ref in zip(est.coef_list_, fit.B):
        np.testing.assert_allclose(b, ref[:, 0], rtol=1e-8)
    assert not hasattr(est, "coef_") and est.intercept_ == 0.0
    np.testing.assert_allclose(est.predict(Xs), fit.predict(Xs), rtol=1e-10)
    Yp = Y.copy()
    Yp[:, :5] = np.nan
    assert np.all(np.isfinite(est.predict(Xs, Yp)))
    est_i = ALSGLS(rank=2).fit(Xs, Y)
    assert est_i.intercept_.shape == (15,) and est_i.coef_list_[0].shape == (2,)


def test_sklearn_tools(shared):
    X, Y, _ = shared
    pipe = make_pipeline(StandardScaler(), ALSGLS(rank=2))
    assert cross_val_score(pipe, X, Y, cv=3).mean() > 0.3
    gs = GridSearchCV(ALSGLS(), {"rank": [0, 1, 2]}, cv=3).fit(X, Y)
    assert gs.best_params_["rank"] in (0, 1, 2)
    est = clone(ALSGLS(rank=1, tol=1e-6))
    assert est.get_params()["rank"] == 1
    fitted = ALSGLS(rank=1).fit(X, Y)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))


def test_single_output_column_is_plain_regression(shared):
    X, Y, _ = shared
    est = ALSGLS().fit(X, Y[:, :1])
    lr = LinearRegression().fit(X, Y[:, :1])
    assert est.rank_ == 0
    np.testing.assert_allclose(est.coef_, lr.coef_, rtol=1e-10)


def test_bad_input(shared, fitted):
    X, Y, _ = shared
    with pytest.raises(ValueError, match="rank=29 exceeds the largest identifiable rank 22"):
        ALSGLS(rank=29).fit(X, Y)
    with pytest.raises(ValueError, match="rank must be a non-negative integer"):
        ALSGLS(rank="best").fit(X, Y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        ALSGLS(rank=1).fit(X[:100], Y)
    with pytest.raises(ValueError, match="Y is 1-D"):
        ALSGLS(rank=1).fit(X, Y[:, 0])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        ALSGLS(rank=1).fit(Xn, Y)
    with pytest.raises(ValueError, match=r"Y_partial must have shape \(n_samples, n_outputs\)"):
        fitted.predict(X[:5], Y[:5, :29])
    with pytest.raises(ValueError, match="Y_partial contains inf"):
        fitted.predict(X[:1], np.full((1, 30), np.inf))
    # a duplicated column fits as in LinearRegression (tests/test_sklearn_habits.py)
    dup = ALSGLS(rank=1).fit(np.column_stack([X, X[:, 0]]), Y)
    assert list(dup.dropped_columns_) == [3] and dup.design_rank_ == 3
    with pytest.raises(ValueError, match="predict with a list of 30 designs"):
        ALSGLS(rank=1).fit([X] * 30, Y).predict(X)
    with pytest.raises(ValueError, match=r"X\[2\] has 10 rows but Y has 400"):
        ALSGLS(rank=1).fit([X] * 2 + [X[:10]] + [X] * 27, Y)


def test_inputs_not_modified(shared):
    X, Y, _ = shared
    X0, Y0 = X.copy(), Y.copy()
    est = ALSGLS(rank=1).fit(X, Y)
    Yp = Y.copy()
    Yp[:, ::2] = np.nan
    Yp0 = Yp.copy()
    est.predict(X, Yp)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)
    np.testing.assert_array_equal(Yp, Yp0)


# --------------------------------------------------------------- missing outputs
def _missing_data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((200, 3))
    Y = (X @ rng.standard_normal((3, 10)) + rng.standard_normal((200, 1)) @ rng.standard_normal((1, 10))
         + 0.3 * rng.standard_normal((200, 10)))
    Y[:30, :3] = np.nan
    return X, Y


def test_missing_outputs_ml_equals_als_gls():
    """missing='ml' is the observed-data MLE of als_gls on the same designs."""
    from alsgls import als_gls

    X, Y = _missing_data()
    est = ALSGLS(rank=1, missing="ml").fit(X, Y)
    Xd = np.hstack([np.ones((200, 1)), X])
    ref = als_gls([Xd] * 10, Y, 1)
    np.testing.assert_allclose(est.intercept_, [b[0, 0] for b in ref.B], rtol=1e-10)
    np.testing.assert_allclose(est.coef_, np.vstack([b[1:, 0] for b in ref.B]), rtol=1e-10)
    np.testing.assert_allclose(est.noise_variance_, ref.D, rtol=1e-10)


def test_missing_outputs_drop_and_raise():
    X, Y = _missing_data()
    complete = ~np.isnan(Y).any(axis=1)
    a = ALSGLS(rank=1, missing="drop").fit(X, Y)
    b = ALSGLS(rank=1).fit(X[complete], Y[complete])
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        ALSGLS(rank=1).fit(X, Y)
    with pytest.raises(ValueError, match="missing must be"):
        ALSGLS(rank=1, missing="impute").fit(X, Y)


def test_missing_outputs_auto_rank_uses_complete_rows():
    X, Y = _missing_data()
    est = ALSGLS(rank="auto", missing="ml").fit(X, Y)
    assert est.rank_ == 1 and est.rank_selection_ is not None


# --------------------------------------------------------------- review fixes
def test_constant_column_with_intercept_fits_as_linear_regression(shared):
    """Was refused ('X is rank deficient: column 1 is constant'); now a constant
    column beside the intercept is set aside, as LinearRegression's lstsq does,
    and the user's column is named in ``dropped_columns_`` (the same for one
    design among per-equation ones)."""
    X, Y, _ = shared
    Xc = np.column_stack([X[:, 0], np.full(X.shape[0], 2.0), X[:, 1]])
    est = ALSGLS(rank=2).fit(Xc, Y)
    lr = LinearRegression().fit(Xc, Y)
    assert list(est.dropped_columns_) == [1] and est.design_rank_ == 2
    np.testing.assert_allclose(est.predict(Xc), lr.predict(Xc), rtol=1e-8, atol=1e-8)
    per_eq = ALSGLS(rank=1).fit([X, np.column_stack([np.ones(400), X[:, 1]])] + [X] * 28, Y)
    assert [list(c) for c in per_eq.dropped_columns_[:3]] == [[], [0], []]
    # without an intercept a constant column is an ordinary regressor
    est = ALSGLS(rank=2, fit_intercept=False).fit(Xc, Y)
    lr = LinearRegression().fit(X[:, :2], Y)
    np.testing.assert_allclose(est.coef_[:, 1] * 2.0, lr.intercept_, rtol=1e-8)


def test_columns_combining_to_a_constant_with_intercept(shared):
    """Dummies of every level sum to one, collinear with the intercept: one of
    them is set aside and the fit is LinearRegression's (was refused)."""
    X, Y, _ = shared
    d = (X[:, 2] > 0).astype(float)
    Xd = np.column_stack([X[:, 0], d, 1.0 - d])
    est = ALSGLS(rank=1).fit(Xd, Y)
    lr = LinearRegression().fit(Xd, Y)
    assert len(est.dropped_columns_) == 1 and est.dropped_columns_[0] in (1, 2)
    np.testing.assert_allclose(est.predict(Xd), lr.predict(Xd), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(est.coef_, lr.coef_, rtol=1e-7, atol=1e-9)


def test_hyper_parameters_are_checked_naming_them(shared):
    X, Y, _ = shared
    with pytest.raises(TypeError, match="max_rank must be an integer >= 0 or None"):
        ALSGLS(max_rank="x").fit(X, Y)
    with pytest.raises(ValueError, match="max_rank must be at least 0"):
        ALSGLS(max_rank=-1).fit(X, Y)
    with pytest.raises(TypeError, match="n_folds must be an integer >= 2"):
        ALSGLS(rank="cv", n_folds="3").fit(X, Y)
    with pytest.raises(ValueError, match="n_folds must be at least 2"):
        ALSGLS(rank="cv", n_folds=1).fit(X, Y)
    with pytest.raises(TypeError, match="rank must be an integer >= 0"):
        ALSGLS(rank=1.5).fit(X, Y)


def test_sur_form_designs_must_be_2d(shared):
    """Pins: a list of 1-D designs fell through to scikit-learn's validation as
    a (K, N) X: 'inconsistent numbers of samples'."""
    X, Y, _ = shared
    with pytest.raises(ValueError, match=r"X\[0\] has shape \(400,\): .*each design must be "
                                         r"2-D \(N, p_j\)"):
        ALSGLS(rank=1).fit([X[:, 0]] * 30, Y)
    with pytest.raises(ValueError, match=r"X\[2\] has shape \(400,\)"):
        ALSGLS(rank=1).fit([X, X, X[:, 0]] + [X] * 27, Y)
    est = ALSGLS(rank=1).fit([X[:, :1]] * 30, Y)     # (N, 1) designs are fine
    assert est.coef_list_[0].shape == (1,)


def test_max_sweeps_deprecation_points_at_the_caller(shared):
    X, Y, _ = shared
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = ALSGLS(rank=1, max_sweeps=5).fit(X, Y)
    dep = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert dep and "max_sweeps" in str(dep[0].message)
    assert dep[0].filename == __file__
    assert est.n_iter_ <= 5


@pytest.mark.parametrize("rank, expected", [(2, 1), ("onatski", 2)])
def test_ols_is_solved_once_per_step(shared, monkeypatch, rank, expected):
    """Pins: fit solved OLS for its exact-fit check and again in the solver
    (and a third time in rank selection).  Now: a fixed rank only in the
    solver; a rank method once for the check and the selection, once in the
    solver."""
    from alsgls.core.problem import Problem

    X, Y, _ = shared
    calls = [0]
    original = Problem.ols

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Problem, "ols", counting)
    ALSGLS(rank=rank).fit(X, Y)
    assert calls[0] == expected


def test_exact_fit_rank0_reuses_ols_and_counts_observed_rows():
    """Outputs fitted exactly force the closed-form rank-0 fit: coefficients
    are OLS on each output's observed rows, and the NLL per row weights each
    output by its share of observed rows (oracle: per-output Gaussian NLL)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((120, 2))
    Y = np.column_stack([X @ [1.0, 2.0] + 3.0, rng.standard_normal((120, 3))])
    Y[:20, 1] = np.nan
    with pytest.warns(ExactFitWarning):
        est = ALSGLS(missing="ml").fit(X, Y)
    assert est.rank_ == 0 and est.n_iter_ == 0 and est.nll_history_.shape == (1,)
    obs = ~np.isnan(Y)
    ref = 0.0
    for j in range(4):
        lr = LinearRegression().fit(X[obs[:, j]], Y[obs[:, j], j])
        np.testing.assert_allclose(est.coef_[j], lr.coef_, rtol=1e-8, atol=1e-10)
        r = Y[obs[:, j], j] - lr.predict(X[obs[:, j]])
        s = max(np.mean(r ** 2), est.noise_variance_[j])
        ref += 0.5 * r.size / 120 * (np.log(2 * np.pi * s) + np.mean(r ** 2) / s)
    assert est.nll_history_[0] == pytest.approx(ref, rel=1e-10)
