"""SUR model: agreement with linearmodels on real data, unbounded likelihoods, bad input."""

import warnings

import numpy as np
import pytest

from alsgls import simulate_sur
from alsgls.exceptions import HeywoodWarning
from alsgls.stats.system import SUR

from ._sur_data import load, reference_series

pd = pytest.importorskip("pandas")

# Oracle: linearmodels 7.1 iterated GLS (tests/data/README.md).  Grunfeld's
# likelihood is flat in the coefficients (cond(X_j) ~ 1e4), so the solver runs
# to tol=1e-16 (NLL change ~ float resolution) to pin coefficients to ~1e-6.
CASES = [("grunfeld", 1e-16), ("fringe", 1e-14)]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def fitted(request):
    name, tol = request.param
    ref, eqs = load(name)
    mod = SUR(eqs, rank="full")
    res = {ct: mod.fit(tol=tol, max_iter=2000, cov_type=ct) for ct in ("unadjusted", "robust")}
    return ref, res


@pytest.mark.parametrize("cov_type", ["unadjusted", "robust"])
def test_matches_linearmodels_iterated_gls(fitted, cov_type):
    ref, res = fitted
    r = res[cov_type]
    key = f"gls_iterated_{cov_type}"
    params = reference_series(ref, key, "params")
    se = reference_series(ref, key, "std_errors")
    assert list(r.params.index) == list(params.index)
    # coefficients: fixed point to solver tolerance (STYLE: ~1e-6)
    np.testing.assert_allclose(r.params, params, rtol=2e-6)
    # SEs are smooth in (beta, Sigma): tighter
    np.testing.assert_allclose(r.bse, se, rtol=1e-6)
    # llf: concentrated Gaussian log-likelihood at linearmodels' params
    np.testing.assert_allclose(r.llf, ref["fits"][key]["llf_numpy"], rtol=1e-10)


def test_full_rank_sigma_matches(fitted):
    ref, res = fitted
    r = res["unadjusted"]
    sig = np.asarray(ref["fits"]["gls_iterated_unadjusted"]["sigma_mle_final_resid"])
    np.testing.assert_allclose(r.sigma_matrix().to_numpy(), sig, rtol=1e-5, atol=1e-8 * np.abs(sig).max())


def test_munnell_unrestricted_has_no_mle_but_low_rank_fits():
    _, eqs = load("munnell")
    with pytest.raises(ValueError, match="no finite maximum-likelihood"):
        SUR(eqs, rank="full").fit()
    res = SUR(eqs, rank=1).fit(tol=1e-6)
    assert res.converged
    assert np.all(np.isfinite(res.bse)) and np.all(res.bse > 0)
    # the two-step FGLS llf (598.9, README) is below the rank-1 MLE? not comparable
    # (different Sigma models); we only require a finite, sane likelihood
    assert np.isfinite(res.llf)


def test_labels_flow_into_outputs():
    _, eqs = load("grunfeld")
    mod = SUR(eqs, rank=1)
    # errors name equations by label from the start (no message rewriting)
    bad = dict(eqs)
    y, X = bad["WE"][0], np.asarray(bad["WE"][1], dtype=float)
    bad["WE"] = (y, np.column_stack([X, X[:, 1]]))
    with pytest.raises(ValueError, match="equation 'WE': exog is rank deficient"):
        SUR(bad, rank=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a possible Heywood case is not the point here
        res = mod.fit()
    assert list(res.resid.columns) == ["GM", "CH", "GE", "WE", "US"]
    assert res.params.index[0] == "GM_const"
    assert list(res.loadings.index) == list(res.noise_variance.index)
    assert res.rsquared.shape == (5,)
    assert res.cov_params(equation="GE").shape == (3, 3)
    # the solver's warnings name equations by label too: a high floor on D at
    # rank 2 puts Grunfeld equations at the floor (Heywood cases)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")   # it also stops at max_iter (not the point)
        hey = SUR(eqs, rank=2).fit(d_floor=0.1)
    first = hey.heywood.index[hey.heywood.to_numpy()][0]
    msgs = [str(w.message) for w in record if issubclass(w.category, HeywoodWarning)]
    assert msgs and f"equation '{first}'" in msgs[0]


def test_from_arrays_and_em_agree(small_system):
    Xs, Y, _ = small_system
    mod = SUR.from_arrays(Xs, Y, rank=2)
    a = mod.fit(tol=1e-12)
    e = mod.fit(solver="em", tol=1e-12)
    np.testing.assert_allclose(a.params, e.params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.bse, e.bse, rtol=1e-5)
    assert a.param_names[:2] == ["eq0_x0", "eq0_x1"]


def test_from_formula_matches_mapping():
    pytest.importorskip("formulaic")
    ref, eqs = load("grunfeld")
    df = pd.read_csv(__import__("tests._sur_data", fromlist=["DATA"]).DATA / "grunfeld_data.csv")
    forms = {f: f"{f}_invest ~ 1 + {f}_value + {f}_capital" for f in ref["equation_labels"]}
    rf = SUR.from_formula(forms, df, rank=2).fit()
    rm = SUR(eqs, rank=2).fit()
    np.testing.assert_allclose(rf.params.to_numpy(), rm.params.to_numpy(), rtol=1e-10)
    assert rf.params.index[0] == "GM_Intercept"
    pred = rf.predict(data=df.iloc[:3])
    np.testing.assert_allclose(pred.to_numpy(), rf.fittedvalues.iloc[:3].to_numpy(), rtol=1e-12)
    # no intercept unless the formula says so
    r0 = SUR.from_formula({"GM": "GM_invest ~ GM_value", "CH": "CH_invest ~ CH_value"}, df, rank=0)
    assert r0.param_names == ["GM_GM_value", "CH_CH_value"]


# ---------------------------------------------------------------- bad input
def _eq(n=30, p=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n), rng.standard_normal((n, p))


def test_mismatched_lengths_name_the_equation():
    with pytest.raises(ValueError, match="equation 'b' has 29 observations"):
        SUR({"a": _eq(30), "b": _eq(29)}, rank=0)
    y, X = _eq(30)
    with pytest.raises(ValueError, match="equation 'a': exog has 29 rows"):
        SUR({"a": (y, X[:29]), "b": _eq(30)}, rank=0)


def test_duplicate_labels():
    with pytest.raises(ValueError, match="duplicate equation labels"):
        SUR([("a", _eq()), ("a", _eq())], rank=0)
    Xs, Y, _ = simulate_sur(N=30, K=2, p=2, k=1, seed=0)
    with pytest.raises(ValueError, match="duplicate equation labels"):
        SUR.from_arrays(Xs, Y, rank=0, labels=["x", "x"])


def test_non_numeric_column():
    y, X = _eq()
    Xdf = pd.DataFrame(X, columns=["a", "b"])
    Xdf["c"] = ["u"] * 30
    with pytest.raises(TypeError, match="equation 'e1': exog column 'c' is not numeric"):
        SUR({"e1": (y, Xdf), "e2": _eq()}, rank=0)


def test_formula_naming_absent_column():
    pytest.importorskip("formulaic")
    df = pd.DataFrame({"y": np.arange(10.0), "x": np.random.default_rng(0).random(10)})
    with pytest.raises(ValueError, match="equation 'e': cannot evaluate formula.*nope"):
        SUR.from_formula({"e": "y ~ 1 + nope"}, df, rank=0)


def test_bad_rank_and_options():
    eqs = {"a": _eq(), "b": _eq(seed=1)}
    with pytest.raises(ValueError, match="rank=2 must be smaller"):
        SUR(eqs, rank=2)
    with pytest.raises(TypeError, match="rank"):
        SUR(eqs, rank=1.5)
    with pytest.raises(ValueError, match="cov_type"):
        SUR(eqs, rank=0).fit(cov_type="jackknife")


def test_collinear_design_names_label():
    y, X = _eq()
    X = np.column_stack([X, X[:, 0] * 2])
    with pytest.raises(ValueError, match="equation 'bad'"):
        SUR({"ok": _eq(), "bad": (y, X)}, rank=0)


def test_no_warnings_for_clean_fit(small_system):
    Xs, Y, _ = small_system
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SUR.from_arrays(Xs, Y, rank=2).fit()


def test_from_arrays_with_one_shared_design(small_system):
    Xs, Y, _ = small_system
    X = Xs[0]
    shared = SUR.from_arrays(X, Y, rank=2)
    assert shared.data.shared and shared.data.X.strides[0] == 0      # stored once
    assert all(np.shares_memory(e.X, X) for e in shared.equations)  # views, no copies
    listed = SUR.from_arrays([X] * Y.shape[1], Y, rank=2)
    a, b = shared.fit(tol=1e-12), listed.fit(tol=1e-12)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.bse, b.bse, rtol=1e-10)
    named = SUR.from_arrays(X, Y, rank=2, exog_names=[["c", "d"]] * Y.shape[1])
    assert named.param_names[:2] == ["eq0_c", "eq0_d"] and named.data.shared


def test_from_arrays_exog_names_must_match(small_system):
    Xs, Y, _ = small_system
    K = Y.shape[1]
    with pytest.raises(ValueError, match=r"exog_names must hold one list of names per "
                                         r"equation \(K=12\)"):
        SUR.from_arrays(Xs, Y, rank=1, exog_names=[["a", "b"]] * (K - 1))
    names = [["a", "b"]] * K
    names[3] = ["a", "b", "c"]
    with pytest.raises(ValueError, match="exog_names for equation 'eq3' has 3 names but "
                                         "its exog has 2 columns"):
        SUR.from_arrays(Xs, Y, rank=1, exog_names=names)
    names[3] = "ab"
    with pytest.raises(ValueError, match="exog_names for equation 'eq3' must be a list"):
        SUR.from_arrays(Xs, Y, rank=1, exog_names=names)


def test_debiased_must_be_a_bool(small_system):
    Xs, Y, _ = small_system
    mod = SUR.from_arrays(Xs, Y, rank=1)
    with pytest.raises(TypeError, match="debiased must be True or False, got 'no'"):
        mod.fit(debiased="no")
    assert mod.fit(debiased=np.bool_(True)).debiased is True


def test_has_constant_is_decided_from_the_validated_data():
    """R^2 centring comes from the model's own validated problem (its copy of
    the designs), not from the caller's arrays, which the model only views."""
    y, X = _eq()
    Xc = np.column_stack([np.ones(30), X])
    mod = SUR({"c": (y, Xc), "n": _eq(seed=1)}, rank=0)
    c, n = mod.equations
    assert c.has_constant and not n.has_constant
    np.testing.assert_array_equal(mod.data.constant_columns().any(axis=1), [True, False])
    r2 = mod.fit().rsquared
    Xc[:, 0] = np.arange(30.0)          # the caller changes its array afterwards
    np.testing.assert_array_equal(mod.data.constant_columns().any(axis=1), [True, False])
    np.testing.assert_allclose(mod.fit().rsquared, r2)
