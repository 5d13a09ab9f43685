"""scikit-learn habits of ALSGLS: rank-deficient designs (constant and
duplicated columns, exact collinearity, PolynomialFeatures' bias column) fit as
LinearRegression fits them, and what is still refused names the design and the
column.

References are independent of alsgls: scikit-learn's LinearRegression
(minimum-norm least squares on the centred data) and numpy's lstsq / pinv.
With one design for every output GLS equals OLS, so the estimator must match
them exactly (to round-off); with per-equation designs GLS differs from OLS,
and the reference is the same estimator on the independent columns chosen by
hand (or OLS at rank 0, where the covariance is diagonal).
"""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import PolynomialFeatures  # noqa: E402

import alsgls.learn.estimator as estimator_module  # noqa: E402
from alsgls.learn.estimator import ALSGLS  # noqa: E402

RTOL = 1e-8


def _factor_data(N=300, K=6, p=3, k=1, seed=0, quadratic=False):
    """X (N, p) and Y with k factors in the errors; a linear mean in X, or a
    quadratic one."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, p))
    P = PolynomialFeatures(2).fit_transform(X) if quadratic else X
    F = rng.standard_normal((K, k))
    E = rng.standard_normal((N, k)) @ F.T + rng.standard_normal((N, K))
    return X, P @ rng.standard_normal((P.shape[1], K)) + E


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(np.abs(b).max(), 1e-300)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


def _min_norm(X, Y, fit_intercept=True):
    """Minimum-norm least squares by numpy alone: (coef (K, p), intercept (K,))."""
    if not fit_intercept:
        return np.linalg.lstsq(X, Y, rcond=None)[0].T, np.zeros(Y.shape[1])
    xm, ym = X.mean(axis=0), Y.mean(axis=0)
    coef = np.linalg.lstsq(X - xm, Y - ym, rcond=None)[0].T
    return coef, ym - coef @ xm


def _same_as_linear_regression(est, lr, X):
    _close(est.predict(X), lr.predict(X))
    _close(est.coef_, lr.coef_)
    _close(est.intercept_, lr.intercept_)


# ------------------------------------------------------- the pipelines
def test_polynomial_pipeline_equals_linear_regression():
    """PolynomialFeatures(2) adds a constant column (include_bias=True): it is
    collinear with the intercept and was refused ('X is rank deficient')."""
    X, Y = _factor_data(k=2, quadratic=True)
    Xt = np.random.default_rng(9).standard_normal((50, 3))
    pipe = make_pipeline(PolynomialFeatures(2), ALSGLS(rank=2)).fit(X, Y)
    ref = make_pipeline(PolynomialFeatures(2), LinearRegression()).fit(X, Y)
    _close(pipe.predict(X), ref.predict(X))
    _close(pipe.predict(Xt), ref.predict(Xt))
    est, lr = pipe[-1], ref[-1]
    _close(est.coef_, lr.coef_)                 # the minimum-norm representative
    _close(est.intercept_, lr.intercept_)
    assert est.design_rank_ == lr.rank_ == 9
    assert est.dropped_columns_.tolist() == [0]     # the bias column
    assert est.rank_ == 2 and est.coef_.shape == (6, 10)


def test_diabetes_polynomial_features_equal_linear_regression():
    """On sklearn's diabetes data, sex (two values) squared is an affine
    function of sex: collinear with the intercept even with include_bias=False."""
    X, y = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(1)
    P = PolynomialFeatures(2, include_bias=False).fit_transform(X)
    N = X.shape[0]
    Yd = (np.column_stack([y, P[:, :12] @ rng.standard_normal((12, 4)) * 50])
          + rng.standard_normal((N, 1)) @ np.full((1, 5), 30.0)     # one factor
          + rng.standard_normal((N, 5)) * 30)
    pipe = make_pipeline(PolynomialFeatures(2, include_bias=False), ALSGLS(rank=1)).fit(X, Yd)
    ref = make_pipeline(PolynomialFeatures(2, include_bias=False),
                        LinearRegression()).fit(X, Yd)
    _close(pipe.predict(X), ref.predict(X))
    est, lr = pipe[-1], ref[-1]
    _close(est.coef_, lr.coef_, rtol=1e-7)      # 64 coefficients; scaled condition ~3e7
    _close(est.intercept_, lr.intercept_)
    assert est.design_rank_ == lr.rank_ == 64 and est.dropped_columns_.size == 1
    sex2 = list(PolynomialFeatures(2, include_bias=False).fit(X).get_feature_names_out())
    assert sex2[int(est.dropped_columns_[0])] in ("x1^2", "x1")   # sex is feature x1


# ------------------------------------------------------------- shared designs
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_duplicate_and_collinear_columns(fit_intercept):
    X, Y = _factor_data(N=200, K=5, seed=2)
    Xd = np.column_stack([X, X[:, 1], 2.0 * X[:, 0] - X[:, 2]])
    est = ALSGLS(rank=1, fit_intercept=fit_intercept).fit(Xd, Y)
    coef, icpt = _min_norm(Xd, Y, fit_intercept)
    _close(est.coef_, coef)
    _close(est.intercept_, icpt)
    _close(est.predict(Xd), Xd @ coef.T + icpt)
    assert est.design_rank_ == 3 and est.dropped_columns_.size == 2
    # the duplicated column's coefficient is split evenly (minimum norm)
    _close(est.coef_[:, 1], est.coef_[:, 3])
    # the likelihood and the covariance are those of the fit on the kept columns
    kept = np.setdiff1d(np.arange(5), est.dropped_columns_)
    ref = ALSGLS(rank=1, fit_intercept=fit_intercept).fit(Xd[:, kept], Y)
    assert est.nll_history_[-1] == pytest.approx(ref.nll_history_[-1], rel=1e-10)
    _close(est.noise_variance_, ref.noise_variance_, rtol=1e-6)
    _close(est.log_likelihood(Xd, Y), ref.log_likelihood(Xd[:, kept], Y), rtol=1e-8)
    _close(est.get_covariance(dense=True), ref.get_covariance(dense=True), rtol=1e-6)


def test_constant_column_is_the_intercept_without_fit_intercept():
    X, Y = _factor_data(N=200, K=5, seed=3)
    Xc = np.column_stack([X[:, 0], np.full(200, 2.0), X[:, 1:]])
    est = ALSGLS(rank=1, fit_intercept=False).fit(Xc, Y)
    assert est.design_rank_ == 4 and est.dropped_columns_.size == 0
    coef, _ = _min_norm(Xc, Y, fit_intercept=False)
    _close(est.coef_, coef)
    lr = LinearRegression().fit(X, Y)
    _close(est.predict(Xc), lr.predict(X))
    _close(2.0 * est.coef_[:, 1], lr.intercept_)
    # with the intercept too, the constant column is set aside: coefficient 0
    both = ALSGLS(rank=1).fit(Xc, Y)
    _same_as_linear_regression(both, LinearRegression().fit(Xc, Y), Xc)
    assert both.dropped_columns_.tolist() == [1] and np.all(both.coef_[:, 1] == 0.0)


def test_all_constant_design_fits_the_means():
    _, Y = _factor_data(N=120, K=4, seed=4)
    Xa = np.tile([1.0, -2.0, 0.5], (120, 1))
    est = ALSGLS(rank=0).fit(Xa, Y)
    assert est.design_rank_ == 0 and est.dropped_columns_.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(est.coef_, np.zeros((4, 3)))
    _close(est.intercept_, Y.mean(axis=0))
    _same_as_linear_regression(est, LinearRegression().fit(Xa, Y), Xa)


def test_dummies_of_every_level_with_intercept():
    X, Y = _factor_data(N=200, K=5, seed=5)
    d = (X[:, 2] > 0).astype(float)
    Xd = np.column_stack([X[:, 0], d, 1.0 - d])
    est = ALSGLS(rank=1).fit(Xd, Y)
    _same_as_linear_regression(est, LinearRegression().fit(Xd, Y), Xd)
    assert est.design_rank_ == 2 and est.dropped_columns_.size == 1


def test_more_columns_than_rows_when_the_rank_allows():
    """N <= p is fitted when the design's rank leaves room for a variance."""
    X, Y = _factor_data(N=8, K=3, seed=6)
    Xw = np.column_stack([X, X, X])                     # 9 columns, rank 3
    est = ALSGLS(rank=0).fit(Xw, Y)
    _same_as_linear_regression(est, LinearRegression().fit(Xw, Y), Xw)
    assert est.design_rank_ == 3 and est.dropped_columns_.size == 6


def test_missing_outputs_with_a_deficient_shared_design():
    X, Y = _factor_data(N=200, K=5, seed=7)
    Y[:40, 1] = np.nan
    Xd = np.column_stack([X, X[:, 0] + X[:, 1]])
    est = ALSGLS(rank=1, missing="ml").fit(Xd, Y)
    ref = ALSGLS(rank=1, missing="ml").fit(X, Y)
    _close(est.predict(Xd), ref.predict(X))
    assert est.nll_history_[-1] == pytest.approx(ref.nll_history_[-1], rel=1e-10)
    assert est.dropped_columns_.size == 1


# ------------------------------------------------------ per-equation designs
def _system(N=150, K=4, seed=8):
    rng = np.random.default_rng(seed)
    Xs = [rng.standard_normal((N, 2)) for _ in range(K)]
    F = rng.standard_normal((K, 1))
    Y = (np.column_stack([x @ rng.standard_normal(2) for x in Xs])
         + rng.standard_normal((N, 1)) @ F.T + 0.5 * rng.standard_normal((N, K)))
    return Xs, Y


def _deficient(Xs):
    """Equation 2 gets a duplicate of its column 0 and a constant column."""
    out = list(Xs)
    out[2] = np.column_stack([Xs[2][:, 0], Xs[2][:, 0], np.full(Xs[2].shape[0], 3.0),
                              Xs[2][:, 1]])
    return out


@pytest.mark.parametrize("form", ["list", "array3d"])
def test_per_equation_designs_rank0_equal_per_equation_ols(form):
    """At rank 0 the covariance is diagonal: GLS is OLS equation by equation."""
    Xs, Y = _system()
    Xd = _deficient(Xs)
    if form == "array3d":      # a (K, N, p) array: every design padded to 4 columns
        Xd = np.stack([np.column_stack([x] + [x[:, :1]] * (4 - x.shape[1])) for x in Xd])
    est = ALSGLS(rank=0).fit(Xd, Y)
    pred = est.predict(Xd if form == "list" else list(Xd))
    for j in range(Y.shape[1]):
        coef, icpt = _min_norm(Xd[j], Y[:, [j]])
        _close(est.coef_list_[j], coef[0])
        _close(est.intercept_[j], icpt[0])
        _close(pred[:, j], Xd[j] @ coef[0] + icpt[0])
    assert est.dropped_columns_[2].tolist() == [1, 2] or est.dropped_columns_[2].tolist() == [0, 2]
    assert est.design_rank_[2] == 2
    if form == "list":
        assert est.design_rank_.tolist() == [2, 2, 2, 2]
        assert [d.size for d in est.dropped_columns_] == [0, 0, 2, 0]


def test_per_equation_designs_equal_the_fit_on_the_kept_columns():
    Xs, Y = _system()
    Xd = _deficient(Xs)
    est = ALSGLS(rank=1).fit(Xd, Y)
    kept = np.setdiff1d(np.arange(4), est.dropped_columns_[2])
    Xk = [x if j != 2 else x[:, kept] for j, x in enumerate(Xd)]
    ref = ALSGLS(rank=1).fit(Xk, Y)
    _close(est.predict(Xd), ref.predict(Xk))
    assert est.nll_history_[-1] == pytest.approx(ref.nll_history_[-1], rel=1e-10)
    for j in (0, 1, 3):
        _close(est.coef_list_[j], ref.coef_list_[j])
    # equation 2: the minimum-norm coefficients with the same fitted values
    # (numpy's pinv of the centred design as the oracle)
    x = Xd[2] - Xd[2].mean(axis=0)
    b = np.zeros(4)
    b[kept] = ref.coef_list_[2]
    _close(est.coef_list_[2], np.linalg.pinv(x) @ (x @ b))
    _close(est.predict(Xd)[:, 2], Xd[2] @ est.coef_list_[2] + est.intercept_[2])


def test_full_rank_designs_take_the_fast_path(monkeypatch):
    """No QR and one validation when every design has full column rank."""
    calls = []
    original = estimator_module.build_problem
    monkeypatch.setattr(estimator_module, "build_problem",
                        lambda *a, **k: calls.append(1) or original(*a, **k))

    def no_qr(*args, **kwargs):
        raise AssertionError("pivoted QR on a full-rank design")

    monkeypatch.setattr(estimator_module, "_independent_columns", no_qr)
    Xs, Y = _system()
    est = ALSGLS(rank=1).fit(Xs, Y)
    shared = ALSGLS(rank=1).fit(Xs[0], Y)
    assert len(calls) == 2
    assert est.design_rank_.tolist() == [2] * 4 and all(d.size == 0 for d in est.dropped_columns_)
    assert shared.design_rank_ == 2 and shared.dropped_columns_.size == 0


# ---------------------------------------------------------------- refusals
def test_refusals_name_the_design_and_the_column():
    X, Y = _factor_data(N=200, K=5, seed=10)
    u = np.random.default_rng(0).standard_normal(200)
    with pytest.raises(ValueError, match=r"X has no non-zero column.*fit_intercept=True"):
        ALSGLS(rank=1, fit_intercept=False).fit(np.zeros((200, 2)), Y)
    with pytest.raises(ValueError, match=r"n_samples=4 is too few for 4 regression "
                                         r"coefficients per output \(3 independent.*"
                                         r"set aside.*drop columns of X"):
        ALSGLS(rank=0).fit(np.column_stack([X[:4], X[:4]]), Y[:4])
    # nearly (not exactly) collinear columns after a duplicate is set aside:
    # the message names the user's column (2 or 4), not the reduced design's
    Xn = np.column_stack([X[:, 0], X[:, 0], X[:, 1], X[:, 2], X[:, 1] + 1e-9 * u])
    with pytest.raises(ValueError, match=r"X is rank deficient: column [24] is nearly, though "
                                         r"not exactly, a linear combination.*column [01], "
                                         r"exact combinations of the others, set aside; "
                                         r"drop that column"):
        ALSGLS(rank=1).fit(Xn, Y)
    # dummies nearly summing to one, with an exact duplicate set aside
    d = (X[:, 2] > 0).astype(float)
    Xd = np.column_stack([X[:, :2], X[:, 0], d, 1.0 - d + 1e-9 * u])
    with pytest.raises(ValueError, match=r"X is rank deficient: columns \[3, 4\] nearly "
                                         r"combine to a constant.*fit_intercept=False"):
        ALSGLS(rank=1).fit(Xd, Y)


def test_per_equation_refusals_name_the_equation():
    Xs, Y = _system()
    bad = list(Xs)
    bad[1] = np.zeros((Y.shape[0], 2))
    bad[2] = _deficient(Xs)[2]
    with pytest.raises(ValueError, match=r"X\[1\] has no non-zero column"):
        ALSGLS(rank=1, fit_intercept=False).fit(bad, Y)
    # too few observed rows for the independent columns of X[2]
    Yn = Y.copy()
    Yn[3:, 2] = np.nan
    with pytest.raises(ValueError, match=r"X\[2\] has 3 rows used, too few for its 3 "
                                         r"regression coefficients.*drop columns of X\[2\]"):
        ALSGLS(rank=1, missing="ml").fit(_deficient(Xs), Yn)


# -------------------------------------------------- the estimator contract
def test_inputs_untouched_clone_params_pickle():
    X, Y = _factor_data(N=150, K=6, seed=11)
    Xd = np.column_stack([X, np.ones(150), X[:, 0]])
    X0, Y0 = Xd.copy(), Y.copy()
    est = ALSGLS(rank=1, tol=1e-9)
    est.fit(Xd, Y)
    np.testing.assert_array_equal(Xd, X0)
    np.testing.assert_array_equal(Y, Y0)
    assert clone(est).get_params() == est.get_params()
    assert not hasattr(clone(est), "design_rank_")
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(Xd), est.predict(Xd))
    dropped = again.dropped_columns_.tolist()
    assert dropped == est.dropped_columns_.tolist() and dropped in ([0, 3], [3, 4])
    Xs, Ys = _system()
    Xl = _deficient(Xs)
    copies = [x.copy() for x in Xl]
    ALSGLS(rank=1).fit(Xl, Ys)
    for a, b in zip(Xl, copies):
        np.testing.assert_array_equal(a, b)


def test_no_warning_on_a_deficient_design():
    """The failed fast check (a singular Gram matrix) leaves no RuntimeWarning."""
    X, Y = _factor_data(N=150, K=4, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ALSGLS(rank=1).fit(PolynomialFeatures(2).fit_transform(X), Y)
