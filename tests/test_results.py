"""Results: summary, hypothesis tests, prediction."""

import numpy as np
import pytest
from scipy import stats

from alsgls import simulate_sur
from alsgls.stats.system import SUR

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def res():
    Xs, Y, _ = simulate_sur(N=150, K=6, p=2, k=1, seed=4, intercept=True)
    return SUR.from_arrays(Xs, Y, rank=1).fit()


def test_summary_renders(res):
    s = res.summary()
    text = s.as_text()
    assert "Equation: eq0" in text and "eq5_x1" not in text  # names are per equation
    assert "Log-likelihood" in text
    assert s.as_html().count("<table") == 7 and res.summary()._repr_html_()
    assert r"\begin{tabular}" in s.as_latex()


def test_summary_truncates_large_systems(monkeypatch):
    monkeypatch.setattr("alsgls.stats.results.FULL_COV_LIMIT", 500)
    Xs, Y, _ = simulate_sur(N=60, K=300, p=2, k=2, seed=1)
    r = SUR.from_arrays(Xs, Y, rank=2).fit(tol=1e-8)
    text = r.summary().as_text()
    assert text.count("Equation:") == 10 and "290 of 300 equations not shown" in text
    with pytest.raises(ValueError, match="full covariance is 600x600"):
        r.cov_params()
    assert r.cov_params(full=True).shape == (600, 600)


def test_wald_strings_match_matrix(res):
    names = res.param_names
    R = np.zeros((2, len(names)))
    R[0, names.index("eq0_x1")], R[0, names.index("eq1_x1")] = 1, -1
    R[1, names.index("eq2_x0")] = 1
    w_mat = res.wald_test(R, value=[0, 0.5])
    w_str = res.wald_test("eq0_x1 = eq1_x1, eq2_x0 = 0.5")
    assert w_mat.stat == pytest.approx(w_str.stat, rel=1e-12)
    # oracle: the Wald formula with the dense restricted covariance
    V = res.cov_params(["eq0_x1", "eq1_x1", "eq2_x0"]).to_numpy()
    Rs = np.array([[1, -1, 0], [0, 0, 1.0]])
    b = res.params[["eq0_x1", "eq1_x1", "eq2_x0"]].to_numpy()
    d = Rs @ b - [0, 0.5]
    assert w_str.stat == pytest.approx(d @ np.linalg.solve(Rs @ V @ Rs.T, d), rel=1e-10)
    assert w_str.pvalue == pytest.approx(stats.chi2.sf(w_str.stat, 2))


def test_wald_bad_restrictions(res):
    with pytest.raises(ValueError, match="unknown parameter 'eq0_x9'"):
        res.wald_test("eq0_x9 = 0")
    with pytest.raises(ValueError, match="singular"):
        res.wald_test(["eq0_x1 = eq1_x1", "2*eq0_x1 - 2*eq1_x1 = 0"])
    with pytest.raises(ValueError, match=r"\(q, P=12\)"):
        res.wald_test(np.ones((1, 5)))


def test_lr_tests(res):
    lr = res.lr_test("diagonal")
    r0 = SUR.from_arrays([e.X for e in res.model.equations], res.model.data.Yt.T, rank=0).fit()
    assert lr.stat == pytest.approx(2 * (res.llf - r0.llf))
    assert lr.df == 6  # K k - k(k-1)/2 with K=6, k=1
    with pytest.raises(ValueError, match="already"):
        r0.lr_test()


def test_breusch_pagan_matches_dense(res):
    d = res.model.data
    E = np.column_stack([d.Yt[j] - e.X @ np.linalg.lstsq(e.X, d.Yt[j], rcond=None)[0]
                         for j, e in enumerate(res.model.equations)])
    C = np.corrcoef(E, rowvar=False)   # oracle: dense correlations (OLS residuals have mean 0)
    lm = d.N * np.sum(np.triu(C, 1) ** 2)
    bp = res.breusch_pagan()
    assert bp.stat == pytest.approx(lm, rel=1e-8) and bp.df == 15


def test_prediction_standard_errors(res):
    newX = {e.label: e.X[:4] for e in res.model.equations}
    pr = res.get_prediction(newX)
    np.testing.assert_allclose(pr.predicted_mean.to_numpy(), res.fittedvalues.to_numpy()[:4])
    j = 2
    V = res.cov_params(equation="eq2").to_numpy()
    x = res.model.equations[j].X[:4]
    np.testing.assert_allclose(pr.se_mean[:, j], np.sqrt(np.einsum("na,ab,nb->n", x, V, x)), rtol=1e-10)
    lo, hi = pr.conf_int(obs=True)
    sig = res.sigma.diagonal[j]
    np.testing.assert_allclose((hi - lo).to_numpy()[:, j],
                               2 * 1.959963984540054 * np.sqrt(pr.se_mean[:, j] ** 2 + sig), rtol=1e-8)
    with pytest.raises(ValueError, match="columns"):
        res.predict({e.label: e.X[:, :1] for e in res.model.equations})


def test_information_criteria_and_scores(res):
    n_par = res.df_model + (6 * 1 + 6)
    assert res.aic == pytest.approx(2 * n_par - 2 * res.llf)
    assert res.bic == pytest.approx(np.log(150) * n_par - 2 * res.llf)
    F, D = res.loadings.to_numpy(), res.noise_variance.to_numpy()
    R = res.resid.to_numpy()
    C = np.eye(1) + F.T @ (F / D[:, None])
    np.testing.assert_allclose(res.factor_scores.to_numpy(), R @ (F / D[:, None]) @ np.linalg.inv(C))
    assert res.system_rsquared < 1 and np.all(res.rsquared < 1)


def test_summary_names_the_standard_error_method(monkeypatch):
    """The header says whether SEs are exact or truncated (with the bound)."""
    import alsgls.stats.inference as inference
    from alsgls import SUR, simulate_sur

    Xs, Y, _ = simulate_sur(N=100, K=20, p=2, k=2, seed=0)
    exact = SUR.from_arrays(Xs, Y, rank=2).fit().summary(max_equations=0).as_text()
    assert "exact (Woodbury core)" in exact
    monkeypatch.setattr(inference, "EXACT_CORE_LIMIT", 10)
    lanczos = SUR.from_arrays(Xs, Y, rank=2).fit().summary(max_equations=0).as_text()
    assert "Lanczos, var. bound" in lanczos


# ---------------------------------------------------------------- bad arguments
def test_predict_accepts_one_shared_design_when_widths_agree(res):
    X = res.model.equations[0].X[:5]
    per_eq = res.predict({e.label: X for e in res.model.equations})
    np.testing.assert_array_equal(res.predict(X).to_numpy(), per_eq.to_numpy())
    df = pd.DataFrame(X, columns=["a", "b"], index=list("vwxyz"))
    shared = res.predict(df)
    assert list(shared.index) == list("vwxyz")
    np.testing.assert_array_equal(shared.to_numpy(), per_eq.to_numpy())
    # unequal widths: a single design cannot serve, and the message says what can
    Xs = [e.X for e in res.model.equations]
    Xs[2] = Xs[2][:, :1]
    r1 = SUR.from_arrays(Xs, res.model.data.Yt.T, rank=1).fit()
    with pytest.raises(ValueError, match=r"mapping \{label: .*list of K designs"):
        r1.predict(X)
    with pytest.raises(TypeError, match="exog must be a mapping"):
        res.predict("eq0")


def test_predict_refuses_misaligned_or_unknown_exog(res):
    eqs = res.model.equations
    new = {e.label: pd.DataFrame(e.X[:4], index=[10, 11, 12, 13]) for e in eqs}
    assert list(res.predict(new).index) == [10, 11, 12, 13]
    new["eq3"] = new["eq3"].set_axis([10, 11, 12, 99])
    with pytest.raises(ValueError, match="'eq0' and 'eq3' have different indexes"):
        res.predict(new)
    extra = {e.label: e.X[:4] for e in eqs} | {"eq9": eqs[0].X[:4], "other": eqs[0].X[:4]}
    with pytest.raises(ValueError, match=r"unknown equations \['eq9', 'other'\]"):
        res.predict(extra)


def test_in_sample_prediction_uses_the_validated_designs(res):
    pr = res.get_prediction()
    np.testing.assert_allclose(pr.predicted_mean.to_numpy(), res.fittedvalues.to_numpy(),
                               rtol=1e-12)
    full = res.get_prediction({e.label: e.X for e in res.model.equations})
    np.testing.assert_allclose(pr.se_mean, full.se_mean, rtol=1e-12)


@pytest.mark.parametrize("alpha, error", [("a", TypeError), (None, TypeError),
                                          (5, ValueError), (0.0, ValueError),
                                          (np.nan, ValueError)])
def test_conf_int_names_alpha(res, alpha, error):
    with pytest.raises(error, match="alpha"):
        res.conf_int(alpha)
    pr = res.get_prediction({e.label: e.X[:3] for e in res.model.equations})
    with pytest.raises(error, match="alpha"):
        pr.conf_int(alpha)
    with pytest.raises(error, match="alpha"):
        res.summary(alpha=alpha)


def test_summary_and_wald_name_bad_arguments(res):
    with pytest.raises(TypeError, match="max_equations"):
        res.summary(max_equations="x")
    with pytest.raises(ValueError, match="max_equations"):
        res.summary(max_equations=-1)
    assert res.summary(max_equations=None).as_text().count("Equation:") == 6
    with pytest.raises(TypeError, match="restrictions must be numeric"):
        res.wald_test(np.array([["a"] * 12]))
    with pytest.raises(TypeError, match="restrictions must be numeric"):
        res.wald_test([[1, None] + [0] * 10])
    R = np.zeros((1, 12))
    R[0, 1] = 1.0
    with pytest.raises(TypeError, match="value must be numeric"):
        res.wald_test(R, value=["x"])


def test_debias_factor_scales_coefficients_and_predictions(res):
    from alsgls.stats.results import SURResults

    d = SURResults(res.model, res.fit_result, debiased=True, residuals=res._Rt,
                   covariance=res.covariance)
    n, p = res.model.data.N, res.model.data.p
    np.testing.assert_allclose(d.debias_factor, np.sqrt(n / (n - p)), rtol=1e-15)
    np.testing.assert_array_equal(res.debias_factor, np.ones(6))
    np.testing.assert_allclose(d.bse.to_numpy(), res.bse.to_numpy() * d._scale, rtol=1e-12)
    new = {e.label: e.X[:3] for e in res.model.equations}
    np.testing.assert_allclose(d.get_prediction(new).se_mean,
                               res.get_prediction(new).se_mean * d.debias_factor, rtol=1e-12)
