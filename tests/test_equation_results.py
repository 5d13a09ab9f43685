"""Equation-level results, the tidy frame, side-by-side tables and ``compare``.

Oracles: the system results themselves (an equation's statistics are the
system's, sliced: same arithmetic, rtol 1e-10 for the solves of one block
against the system's diagonal blocks), the dense P x P information of
``alsgls.stats.inference.dense_information`` (Wald statistic, rtol 1e-9), the
textbook adjusted R^2, and linearmodels 7.1's ``res.equations[label]``
stored in ``tests/data/equation_reference.json`` by
``tests/data/make_equation_reference.py``.
"""

import json
from collections.abc import Mapping

import numpy as np
import pytest
from scipy import stats

from alsgls import SUR, compare, simulate_sur
from alsgls.stats.equation_results import EquationResults
from alsgls.stats.inference import dense_information
from tests._sur_data import DATA, load

pd = pytest.importorskip("pandas")

REF = json.loads((DATA / "equation_reference.json").read_text())


@pytest.fixture(scope="module")
def sim():
    """K = 6 with intercepts and unequal p_j (equation 2 has no intercept)."""
    Xs, Y, _ = simulate_sur(N=80, K=6, p=3, k=2, seed=3, intercept=True, x_common=0.4)
    names = [["const", "x1", "x2"] for _ in range(6)]
    Xs[2], names[2] = Xs[2][:, 1:], ["x1", "x2"]           # no constant column
    Xs[4], names[4] = Xs[4][:, :2], ["const", "x1"]        # p_j = 2
    return SUR.from_arrays(Xs, Y, rank=2, exog_names=names)


@pytest.fixture(scope="module")
def res(sim):
    return sim.fit(tol=1e-12)


# --------------------------------------------------- the system's, sliced
@pytest.mark.parametrize("cov_type,debiased", [("unadjusted", False), ("robust", False),
                                               ("unadjusted", True)])
def test_equation_statistics_are_the_system_ones_sliced(sim, cov_type, debiased):
    res = sim.fit(tol=1e-12, cov_type=cov_type, debiased=debiased)
    ci = res.conf_int(0.1)
    for j, lab in enumerate(res.model.labels):
        e = res.equations[lab]
        names = [f"{lab}_{n}" for n in e.exog_names]
        assert e.param_names == names and e.label == e.equation_label == lab
        assert list(e.params.index) == e.exog_names
        np.testing.assert_array_equal(e.params.to_numpy(), res.params[names].to_numpy())
        # one block by p_j solves vs the system's diagonal blocks: same A^-1, exact
        np.testing.assert_allclose(e.bse.to_numpy(), res.bse[names].to_numpy(), rtol=1e-10)
        np.testing.assert_allclose(e.tvalues.to_numpy(), res.tvalues[names].to_numpy(),
                                   rtol=1e-10)
        np.testing.assert_allclose(e.pvalues.to_numpy(), res.pvalues[names].to_numpy(),
                                   rtol=1e-8, atol=1e-300)
        np.testing.assert_allclose(e.conf_int(0.1).to_numpy(), ci.loc[names].to_numpy(),
                                   rtol=1e-10)
        np.testing.assert_allclose(e.cov_params().to_numpy(),
                                   res.cov_params(equation=lab).to_numpy(), rtol=1e-12)
        assert e.std_errors is not None and e.tstats is not None
        np.testing.assert_allclose(e.rsquared, res.rsquared[lab], rtol=1e-12)
        assert e.nobs == res.nobs == 80 and e.df_model == len(names)
        assert e.df_resid == res.df_resid_equation[lab]
        np.testing.assert_allclose(e.resid.to_numpy(), res.resid[lab].to_numpy(), rtol=1e-14)
        np.testing.assert_allclose(e.fittedvalues.to_numpy(), res.fittedvalues[lab].to_numpy(),
                                   rtol=1e-14)
        assert e.debiased is debiased and e.cov_type == cov_type


def test_one_equation_computes_only_its_block(sim):
    res = sim.fit(tol=1e-12)
    e = res.equations["eq3"]
    se = e.bse.to_numpy()
    # nothing system-wide was computed: the diagonal blocks of all equations are not cached
    assert "bse" not in vars(res) and "diagonal_blocks" not in vars(res.covariance)
    np.testing.assert_allclose(se, res.bse.to_numpy()[res.problem.layout.eq == 3], rtol=1e-10)
    # once the system's SEs exist they are sliced (no second computation)
    e2 = res.equations["eq1"]
    np.testing.assert_array_equal(e2.bse.to_numpy(),
                                  res.bse.to_numpy()[res.problem.layout.eq == 1])


def test_truncated_covariance_is_sliced_not_recomputed(monkeypatch):
    """With the Lanczos covariance the equation shows the system's SEs (one approximation)."""
    import alsgls.stats.inference as inference

    monkeypatch.setattr(inference, "EXACT_CORE_LIMIT", 10)
    Xs, Y, _ = simulate_sur(N=100, K=20, p=2, k=2, seed=0)
    res = SUR.from_arrays(Xs, Y, rank=2).fit()
    e = res.equations["eq7"]
    assert res.covariance.method == "lanczos"
    np.testing.assert_array_equal(e.bse.to_numpy(), res.bse[e.param_names].to_numpy())


def test_rsquared_adj_formula(res):
    for lab in res.equations:
        e = res.equations[lab]
        r = e.resid.to_numpy()
        y = e.fittedvalues.to_numpy() + r
        c = int(e.has_constant)
        tss = np.sum((y - y.mean()) ** 2) if c else np.sum(y ** 2)
        ssr = np.sum(r ** 2)
        n, p = e.nobs, e.df_model
        np.testing.assert_allclose(e.rsquared, 1 - ssr / tss, rtol=1e-12)
        np.testing.assert_allclose(e.rsquared_adj, 1 - (ssr / (n - p)) / (tss / (n - c)),
                                   rtol=1e-12)
        np.testing.assert_allclose([e.resid_ss, e.total_ss], [ssr, tss], rtol=1e-12)
    assert not res.equations["eq2"].has_constant and res.equations["eq0"].has_constant


# ------------------------------------------------------------ F statistic
def _dense_block(res, j):
    d = res.problem
    V = np.linalg.inv(dense_information(d.X, d.p, res.sigma))
    sl = res.problem.layout.eq == j
    return V[np.ix_(sl, sl)]


@pytest.mark.parametrize("debiased", [False, True])
def test_f_statistic_equals_dense_wald(sim, debiased):
    res = sim.fit(tol=1e-12, debiased=debiased)
    N, P = res.nobs, res.df_model
    for j in (0, 2, 4):                           # with constant, without, p_j = 2
        e = res.equations[j]
        keep = np.ones(e.df_model, bool)
        if e.has_constant:
            keep[0] = False                       # simulate_sur puts the intercept first
        V = _dense_block(res, j)[np.ix_(keep, keep)]
        if debiased:
            V = V * N / (N - e.df_model)
        b = e.params.to_numpy()[keep]
        W = b @ np.linalg.solve(V, b)
        q = int(keep.sum())
        f = e.f_statistic
        if debiased:
            assert f.distribution == "F" and f.df == (q, res.problem.K * N - P)
            np.testing.assert_allclose(f.stat, W / q, rtol=1e-9)
            np.testing.assert_allclose(f.pvalue, stats.f.sf(W / q, q, res.problem.K * N - P),
                                       rtol=1e-8)
        else:
            assert f.distribution == "chi2" and f.df == q
            np.testing.assert_allclose(f.stat, W, rtol=1e-9)
            np.testing.assert_allclose(f.pvalue, stats.chi2.sf(W, q), rtol=1e-8)


def test_f_statistic_is_nan_without_coefficients_to_test():
    rng = np.random.default_rng(0)
    N = 50
    X0 = np.ones((N, 1))                          # intercept only
    X1 = np.column_stack([np.ones(N), rng.standard_normal(N)])
    Y = rng.standard_normal((N, 2))
    r = SUR.from_arrays([X0, X1], Y, rank=1).fit()
    f = r.equations[0].f_statistic
    assert np.isnan(f.stat) and np.isnan(f.pvalue) and f.df == 0
    assert np.isfinite(r.equations[1].f_statistic.stat)


# ---------------------------------------------------- against linearmodels
# ML fits: EM to tol 1e-14 puts coefficients within 1e-7 SE of linearmodels'
# iterated GLS (tol 1e-12); two-step and OLS are closed form (rtol 1e-9).
FITS = {
    "gls_iterated_unadjusted": (dict(solver="em", tol=1e-14, max_iter=5000), 1e-6),
    "gls_iterated_robust": (dict(solver="em", tol=1e-14, max_iter=5000,
                                 cov_type="robust"), 1e-6),
    "gls_twostep_unadjusted": (dict(method="twostep"), 1e-9),
    "gls_twostep_robust": (dict(method="twostep", cov_type="robust"), 1e-9),
    "gls_twostep_unadjusted_debiased": (dict(method="twostep", sigma_divisor="dfk",
                                             debiased=True), 1e-9),
    "ols_unadjusted": (dict(method="ols"), 1e-9),
    "ols_unadjusted_debiased": (dict(method="ols", sigma_divisor="dfk", debiased=True), 1e-9),
}


def _within(got, want, atol):
    """Elementwise ``|got - want| <= atol`` (atol an array, e.g. a fraction of the SE)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert np.all(np.abs(got - want) <= atol), (got, want, np.abs(got - want) / atol)


# linearmodels' debiased=True scales Sigma by N / sqrt((N - p_i)(N - p_j)) (in the GLS
# weights and the covariance) and uses t/F references: sigma_divisor="dfk", debiased=True.
CASES = [(system, key) for system in ("grunfeld", "fringe") for key in FITS]


@pytest.mark.parametrize("system,key", CASES)
def test_matches_linearmodels_equation_results(system, key):
    ref = REF["systems"][system]
    _, eqs = load(system)
    options, rtol = FITS[key]
    res = SUR(eqs, rank="full").fit(**options)
    for lab, want in ref["fits"][key]["equations"].items():
        e = res.equations[lab]
        regs = want["regressors"]
        assert e.exog_names == regs
        vec = {k: np.array([want[k][r] for r in regs])
               for k in ("params", "std_errors", "tstats", "pvalues", "conf_int_lower",
                         "conf_int_upper")}
        se = vec["std_errors"]
        _within(e.params, vec["params"], rtol * se)
        np.testing.assert_allclose(e.bse.to_numpy(), se, rtol=rtol)
        _within(e.tvalues, vec["tstats"], 2 * rtol * (1 + np.abs(vec["tstats"])))
        # p-values: relative error ~ t * dt for tiny p-values
        np.testing.assert_allclose(e.pvalues.to_numpy(), vec["pvalues"],
                                   rtol=50 * rtol * (1 + np.abs(vec["tstats"]).max()))
        ci = e.conf_int(0.05).to_numpy()
        _within(ci[:, 0], vec["conf_int_lower"], 3 * rtol * se)
        _within(ci[:, 1], vec["conf_int_upper"], 3 * rtol * se)
        np.testing.assert_allclose([e.rsquared, e.rsquared_adj],
                                   [want["rsquared"], want["rsquared_adj"]], rtol=10 * rtol)
        assert (e.nobs, e.df_model, e.df_resid) == (want["nobs"], want["df_model"],
                                                    want["df_resid"])
        f, g = e.f_statistic, want["f_statistic"]
        np.testing.assert_allclose(f.stat, g["stat"], rtol=10 * rtol)
        np.testing.assert_allclose(f.pvalue, g["pval"], rtol=50 * rtol * (1 + g["stat"]))
        assert f.df == (g["df"] if g["df_denom"] is None else (g["df"], g["df_denom"]))


def test_reference_file_records_versions_and_data():
    import hashlib

    assert REF["versions"]["linearmodels"] == "7.1"
    for ref in REF["systems"].values():
        assert hashlib.sha256((DATA / ref["csv"]).read_bytes()).hexdigest() == ref["sha256"]


# ------------------------------------------------------------ mapping access
def test_equations_mapping(res):
    eqs = res.equations
    assert isinstance(eqs, Mapping) and res.equations is eqs
    assert list(eqs) == res.model.labels and len(eqs) == 6
    assert eqs[1] is eqs["eq1"] and eqs[-1] is eqs["eq5"]
    assert np.int64(2) not in eqs and "eq2" in eqs and 2 not in eqs
    assert isinstance(eqs["eq0"], EquationResults)
    assert "eq0" in repr(eqs) and "eq0" in repr(eqs["eq0"])
    with pytest.raises(KeyError, match=r"no equation 'eq9'.*'eq0', 'eq1'"):
        eqs["eq9"]
    with pytest.raises(KeyError, match="out of range"):
        eqs[6]
    with pytest.raises(KeyError, match="no equation True"):
        eqs[True]
    with pytest.raises(TypeError):
        eqs["eq0"] = None


def test_missing_and_weighted_equations():
    Xs, Y, _ = simulate_sur(N=90, K=4, p=2, k=1, seed=9, intercept=True, factor_strength=2.0)
    rng = np.random.default_rng(3)
    Y[rng.random(Y.shape) < 0.15] = np.nan
    w = rng.uniform(0.5, 2.0, 90)
    res = SUR.from_arrays(Xs, Y, rank=1, weights=w).fit(tol=1e-12)
    for lab in res.equations:
        e = res.equations[lab]
        assert e.nobs == res.nobs_equation[lab] < 90
        np.testing.assert_allclose(e.rsquared, res.rsquared[lab], rtol=1e-12)
        np.testing.assert_array_equal(np.isnan(e.resid.to_numpy()),
                                      np.isnan(res.resid[lab].to_numpy()))
        np.testing.assert_allclose(e.bse.to_numpy(), res.bse[e.param_names].to_numpy(),
                                   rtol=1e-10)
        assert "N: " in e.summary().as_text()


# ------------------------------------------------------------ summary_frame
def test_summary_frame(res):
    sf = res.summary_frame(alpha=0.1)
    assert list(sf.columns) == ["equation", "regressor", "coef", "std_err", "z", "p_value",
                                "ci_lower", "ci_upper"]
    assert len(sf) == res.df_model and list(sf.index) == list(range(res.df_model))
    assert list(sf["equation"] + "_" + sf["regressor"]) == res.param_names
    np.testing.assert_array_equal(sf["coef"], res.params.to_numpy())
    np.testing.assert_array_equal(sf["std_err"], res.bse.to_numpy())
    np.testing.assert_array_equal(sf["p_value"], res.pvalues.to_numpy())
    np.testing.assert_array_equal(sf[["ci_lower", "ci_upper"]].to_numpy(),
                                  res.conf_int(0.1).to_numpy())
    deb = res.with_cov_type("unadjusted", debiased=True).summary_frame()
    assert "t" in deb.columns and "z" not in deb.columns


def test_summary_frame_without_pandas(res, monkeypatch):
    monkeypatch.setattr("alsgls._labels._pandas", lambda: None)
    fresh = res.with_cov_type("unadjusted")
    sf = fresh.summary_frame()
    assert isinstance(sf, np.ndarray) and sf.dtype.names == (
        "equation", "regressor", "coef", "std_err", "z", "p_value", "ci_lower", "ci_upper")
    assert sf["equation"][0] == "eq0" and sf.shape == (res.df_model,)
    np.testing.assert_array_equal(sf["coef"], res.params.to_numpy())
    assert isinstance(fresh.equations[0].params, np.ndarray)
    assert "eq0" in str(fresh.params_table())


# ------------------------------------------------------------ tables
def test_params_table_renders_three_formats(res):
    t = res.params_table(stat="std_err", stars=True)
    text = str(t)
    for s in ("eq0", "eq5", "const", "x1", "R-squared", "Adj. R-squared", "N",
              "Standard errors in parentheses", "* p<0.1"):
        assert s in text
    e = res.equations["eq1"]
    assert f"({e.bse.iloc[1]:.4f})" in text
    html = t.as_html()
    assert html == t._repr_html_() and html.count("<th>eq") == 6 and "<tfoot>" in html
    latex = t.as_latex()
    assert r"\begin{tabular}{lcccccc}" in latex and r"\end{tabular}" in latex
    assert "p$<$0.1" in latex and "eq0 & eq1" in latex
    assert t.as_text() == text
    tt = res.params_table(stat="tstats", equations=["eq1", 3])
    assert tt.columns == ["eq1", "eq3"] and "z statistics in parentheses" in str(tt)
    assert f"({e.tvalues.iloc[1]:.4f})" in str(tt)
    assert "(" not in "".join(c for _, cells in res.params_table(stat=None).sections[1]
                              for c in cells)
    assert "P-values" in str(res.params_table(stat="pvalues"))


def test_params_table_rows_align_regressors(res):
    t = res.params_table()
    rows = {lab: cells for lab, cells in t.sections[1] if lab}
    assert list(rows) == ["const", "x1", "x2"]
    assert rows["const"][2] == "" and rows["x2"][4] == ""   # eq2 has no const, eq4 no x2
    assert rows["const"][0] and rows["x2"][2]


def test_table_arguments_are_checked(res):
    with pytest.raises(ValueError, match="stat must be one of"):
        res.params_table(stat="se2")
    with pytest.raises(TypeError, match="stars must be True or False"):
        res.params_table(stars="yes")
    with pytest.raises(KeyError, match="no equation 'nope'"):
        res.params_table(equations=["nope"])
    with pytest.raises(TypeError, match="equations must be a list"):
        res.params_table(equations="eq0")


def test_equation_summary_renders(res):
    s = res.equations["eq0"].summary(alpha=0.1)
    text = s.as_text()
    for k in ("SUR equation results: eq0", "Adj. R-squared", "F-statistic", "P-value (F-stat)",
              "chi2(2)", "[0.05", "x2"):
        assert k in text
    assert s.as_html().count("<table") == 2 and r"\begin{tabular}" in s.as_latex()
    deb = res.with_cov_type("unadjusted", debiased=True).equations["eq0"].summary().as_text()
    assert f"F(2, {6 * 80 - res.df_model})" in deb and "P>|t|" in deb


# ------------------------------------------------------------ compare
def test_compare_aligns_parameters(sim):
    r1, r2 = sim.fit(tol=1e-10), sim.with_rank("full").fit(tol=1e-10)
    Xs, Y, _ = simulate_sur(N=80, K=2, p=2, k=1, seed=9)
    r3 = SUR.from_arrays(Xs, Y, rank=1, labels=["eq0", "other"]).fit()
    cmp = compare({"rank 2": r1, "full": r2, "small": r3}, stars=True)
    names = cmp.param_names
    assert names[: r1.df_model] == r1.param_names and names[-1] == "other_x1"
    params = cmp.params
    assert list(params.columns) == ["rank 2", "full", "small"]
    np.testing.assert_array_equal(params.loc[r1.param_names, "rank 2"], r1.params)
    np.testing.assert_array_equal(params.loc[r2.param_names, "full"], r2.params)
    np.testing.assert_array_equal(params.loc[r3.param_names, "small"], r3.params)
    assert params.loc["eq3_x1", "small"] != params.loc["eq3_x1", "small"]   # NaN gap
    np.testing.assert_array_equal(cmp.std_errors.loc[r1.param_names, "rank 2"], r1.bse)
    assert list(cmp.rank) == [2, 5, 1] and list(cmp.nobs) == [80, 80, 80]
    np.testing.assert_allclose(cmp.llf.to_numpy(dtype=float), [r1.llf, r2.llf, r3.llf])
    assert list(cmp.method) == ["ML"] * 3 and cmp.cov_type.iloc[0] == "unadjusted"
    text = str(cmp)
    for s in ("Model comparison", "rank 2", "5 (full)", "Log-likelihood", "Factor rank",
              "Cov. estimator", "eq3_x1", "Standard errors in parentheses"):
        assert s in text
    assert cmp.as_html().count("<th>") >= 4 and cmp._repr_html_() == cmp.as_html()
    assert r"\begin{tabular}{lccc}" in cmp.as_latex() and r"eq0\_const" in cmp.as_latex()


def test_compare_arguments(res):
    cmp = compare([res, res.with_cov_type("robust")], stat="t")
    assert cmp.models == ["Model 0", "Model 1"] and "robust" in str(cmp)
    with pytest.raises(TypeError, match=r"results\['a'\] is a int"):
        compare({"a": 1})
    with pytest.raises(ValueError, match="empty"):
        compare({})
    with pytest.raises(TypeError, match="mapping"):
        compare(res)
    with pytest.raises(ValueError, match="stat must be one of"):
        compare([res], stat="bogus")
