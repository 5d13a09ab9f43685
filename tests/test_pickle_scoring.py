"""Lean pickles and the save/load contract, the held-out log-likelihood scorer,
SUR(rank="auto"), and equations never observed together (issue 11)."""

import io
import pickle
import warnings

import numpy as np
import pytest

import alsgls
from alsgls import SUR, MissingDataWarning, persistence, simulate_gls, simulate_sur
from alsgls.core.problem import build_problem
from alsgls.stats.equations import never_observed_together


def _roundtrip(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _assert_same_problem(a, b):
    """The rebuilt problem equals the validated one array for array, layout
    (zero strides of a shared design) included."""
    for name in ("X", "Yt", "gram", "O", "w", "rows"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
            continue
        assert x.shape == y.shape and x.strides == y.strides, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert not b.X.flags.writeable and not b.Yt.flags.writeable
    assert (a.labels, a.n_rows_in, a.missing) == (b.labels, b.n_rows_in, b.missing)


# --------------------------------------------------------------------------
# Pickle size and round trips
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [False, True], ids=["per-equation", "shared"])
def test_pickle_holds_the_data_once_and_no_caches(shared):
    """Pins: a pickled SURResults was 6x the data (K=2000) -- the equations'
    arrays and the problem's copies, a shared design expanded K times, the
    residuals and the factored coefficient covariance.  Budget: the data's
    bytes x 1.2 + 4 MB, with the standard errors and other caches computed."""
    K, N, p = 500, 400, 3
    if shared:
        Xs, Y, _ = simulate_gls(N=N, K=K, p=p, k=5, seed=0)
        mod, data = SUR.from_arrays(Xs[0], Y, rank=5), Y.nbytes + Xs[0].nbytes
    else:
        Xs, Y, _ = simulate_sur(N=N, K=K, p=p, k=5, seed=0)
        mod, data = SUR.from_arrays(Xs, Y, rank=5), Y.nbytes + sum(x.nbytes for x in Xs)
    res = mod.fit(tol=1e-6)
    _ = res.bse, res.rsquared, res.factor_scores      # fill the caches
    blob = pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(blob) <= 1.2 * data + 4e6, (len(blob), data)
    again = pickle.loads(blob)
    # bit-identical: params, llf and predictions come from the stored B and nll
    np.testing.assert_array_equal(again.params, res.params)
    assert again.llf == res.llf
    np.testing.assert_array_equal(again.predict(), res.predict())
    _assert_same_problem(res.problem, again.problem)
    assert again.problem is again.model.data
    if shared:   # one design after loading, seen by every equation without a copy
        assert again.problem.shared and again.problem.X.strides[0] == 0
        designs = {id(e.X) for e in again.model.equations}
        assert len(designs) == 1
        assert np.shares_memory(again.problem.X, again.model.equations[0].X)


@pytest.mark.parametrize("case", ["complete", "missing", "missing-shared", "drop", "weights",
                                  "constraints", "robust", "twostep"])
def test_results_roundtrip(case):
    """params, llf, predictions exactly; bse to rtol 1e-10: robust scores use the
    residuals, which loading recomputes as ``Y - X B`` while the solver
    returned its own (equal up to round-off, ~1e-15 of Y, amplified by the
    sandwich to ~1e-12 relative)."""
    Xs, Y, _ = simulate_sur(N=150, K=6, p=2, k=1, seed=4)
    Ym = Y.copy()
    Ym[:20, 0] = np.nan
    Ym[40:55, 3] = np.nan
    w = np.random.default_rng(0).uniform(0.5, 2.0, 150)
    mods = {
        "complete": lambda: SUR.from_arrays(Xs, Y, rank=1),
        "missing": lambda: SUR.from_arrays(Xs, Ym, rank=1),
        "missing-shared": lambda: SUR.from_arrays(Xs[0], Ym, rank=1),
        "drop": lambda: SUR.from_arrays(Xs, Ym, rank=1, missing="drop"),
        "weights": lambda: SUR.from_arrays(Xs, Y, rank=1, weights=w),
        "constraints": lambda: SUR.from_arrays(Xs, Y, rank=1,
                                               constraints="eq0_x0 = eq1_x0"),
        "robust": lambda: SUR.from_arrays(Xs, Y, rank=2),
        "twostep": lambda: SUR.from_arrays(Xs, Y, rank="full"),
    }
    fit_kw = {"robust": {"cov_type": "robust"}, "twostep": {"method": "twostep"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDataWarning)
        res = mods[case]().fit(**fit_kw.get(case, {}))
    again = _roundtrip(res)
    np.testing.assert_array_equal(again.params, res.params)
    assert again.llf == res.llf
    np.testing.assert_allclose(again.bse, res.bse, rtol=1e-10)
    np.testing.assert_array_equal(again.predict(), res.predict())
    np.testing.assert_allclose(again.resid, res.resid, rtol=0, atol=1e-12 * np.abs(Y).max())
    _assert_same_problem(res.problem, again.problem)
    assert again.n_restrictions == res.n_restrictions
    assert (again.cov_type, again.method) == (res.cov_type, res.method)


def test_pandas_and_formula_models_roundtrip():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("formulaic")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.standard_normal((80, 4)), columns=["y1", "y2", "x1", "x2"],
                      index=pd.date_range("2020-01-01", periods=80))
    res = SUR.from_formula({"a": "y1 ~ 1 + x1", "b": "y2 ~ 1 + x1 + x2"}, df).fit()
    again = _roundtrip(res)
    pd.testing.assert_series_equal(again.params, res.params)
    pd.testing.assert_frame_equal(again.predict(data=df), res.predict(data=df))
    assert again.model.index.equals(res.model.index)
    assert str(again.summary()) == str(res.summary())


def test_problem_pickles_a_shared_design_once():
    """numpy pickles a zero-stride view as a full copy (K x N x p); the problem
    stores the base and restores the view."""
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((300, 3)), rng.standard_normal((300, 200))
    prob = build_problem(X, Y)
    assert len(pickle.dumps(prob.X, protocol=5)) > 100 * X.nbytes      # what numpy does
    blob = pickle.dumps(prob, protocol=5)
    assert len(blob) < X.nbytes + Y.nbytes + 100_000
    again = pickle.loads(blob)
    _assert_same_problem(prob, again)
    assert again.shared and again.gram.strides[0] == 0


def test_with_rank_is_a_shallow_copy_not_a_pickle_round_trip(small_system):
    Xs, Y, _ = small_system
    mod = SUR.from_arrays(Xs, Y, rank=2)
    assert mod.with_rank(1).data is mod.data


# --------------------------------------------------------------------------
# save / load and the version contract
# --------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path, small_system):
    Xs, Y, _ = small_system
    res = SUR.from_arrays(Xs, Y, rank=2).fit()
    path = tmp_path / "fit.alsgls"
    res.save(path)
    again = alsgls.load(path)
    np.testing.assert_array_equal(again.params, res.params)
    np.testing.assert_allclose(again.bse, res.bse, rtol=1e-12)
    assert again.llf == res.llf


def test_load_refuses_a_newer_format_before_unpickling(monkeypatch, small_system):
    Xs, Y, _ = small_system
    res = SUR.from_arrays(Xs, Y, rank=2).fit()
    buf = io.BytesIO()
    monkeypatch.setattr(persistence, "PICKLE_FORMAT", 99)
    monkeypatch.setattr(persistence, "_version", lambda: "9.0")
    res.save(buf)
    monkeypatch.undo()
    buf.seek(0)
    with pytest.raises(alsgls.IncompatiblePickleError, match=r"alsgls 9\.0 \(pickle format 99\)"):
        alsgls.load(buf)


def test_plain_pickle_refuses_a_newer_format(monkeypatch, small_system):
    Xs, Y, _ = small_system
    res = SUR.from_arrays(Xs, Y, rank=2).fit()
    monkeypatch.setattr(persistence, "PICKLE_FORMAT", 99)
    blob = pickle.dumps(res)
    monkeypatch.undo()
    with pytest.raises(alsgls.IncompatiblePickleError, match="reads formats 1 to 1"):
        pickle.loads(blob)


def test_load_refuses_a_file_not_written_by_save(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}) + pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="not a file written by alsgls.save"):
        alsgls.load(path)


def test_persistence_examples_run():
    import doctest

    assert doctest.testmod(persistence).failed == 0


def test_an_untagged_state_loads_as_stored(small_system):
    """alsgls 0.1 pickled every attribute without a tag: restored as stored."""
    Xs, Y, _ = small_system
    res = SUR.from_arrays(Xs, Y, rank=2).fit()
    old = object.__new__(type(res))
    old.__setstate__(dict(res.__dict__))
    assert old.problem is res.problem and old.llf == res.llf


# --------------------------------------------------------------------------
# loglik_scorer
# --------------------------------------------------------------------------

def test_gridsearch_with_loglik_scorer_selects_the_true_rank():
    """With one shared design the coefficients do not depend on the rank, so
    R^2 ties at every rank (scikit-learn keeps rank 0); the held-out
    likelihood chooses the true rank 2."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV

    from alsgls.learn.estimator import ALSGLS

    for seed in (0, 1):
        Xs, Y, _ = simulate_gls(N=300, K=30, p=3, k=2, seed=seed)
        grid = {"rank": [0, 1, 2, 3]}
        search = GridSearchCV(ALSGLS(tol=1e-8), grid, cv=3,
                              scoring=alsgls.loglik_scorer).fit(Xs[0], Y)
        assert search.best_params_ == {"rank": 2}
        r2 = GridSearchCV(ALSGLS(tol=1e-8), grid, cv=3).fit(Xs[0], Y)
        scores = r2.cv_results_["mean_test_score"]
        np.testing.assert_allclose(scores, scores[0], rtol=1e-8)   # the tie
        assert r2.best_params_ == {"rank": 0}


@pytest.mark.filterwarnings("ignore::alsgls.HeywoodWarning")   # the rank-3 candidates
def test_loglik_scorer_is_nan_aware_under_missing_ml():
    """Pins: with NaN in Y and missing='ml' every CV score was NaN."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV

    from alsgls.learn.estimator import ALSGLS

    Xs, Y, _ = simulate_gls(N=300, K=25, p=2, k=2, seed=3)
    Y = Y.copy()
    Y[np.random.default_rng(3).random(Y.shape) < 0.1] = np.nan
    search = GridSearchCV(ALSGLS(missing="ml", tol=1e-8), {"rank": [0, 1, 2, 3]}, cv=3,
                          scoring=alsgls.loglik_scorer).fit(Xs[0], Y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_ == {"rank": 2}


def _dense_loglik(est, X, Y):
    """Textbook oracle: the mean over rows with an observed output of the dense
    multivariate normal log-density of the observed sub-vector."""
    from scipy.stats import multivariate_normal

    mu, S = est.predict(X), est.get_covariance(dense=True)
    vals = []
    for y, m in zip(Y, mu):
        o = ~np.isnan(y)
        if o.any():
            vals.append(multivariate_normal(m[o], S[np.ix_(o, o)]).logpdf(y[o]))
    return float(np.mean(vals))


@pytest.mark.parametrize("missing", ["ml", "drop"])
def test_loglik_scorer_matches_the_dense_density(missing):
    """Oracle: dense ``multivariate_normal.logpdf`` of each row's observed
    outputs (rtol 1e-10: the same mathematics through the k x k cores); on the
    training rows with missing='ml' it is minus the fit's final NLL."""
    pytest.importorskip("sklearn")
    from alsgls.learn.estimator import ALSGLS

    Xs, Y, _ = simulate_gls(N=200, K=8, p=2, k=2, seed=5)
    Y = Y.copy()
    rng = np.random.default_rng(5)
    Y[rng.random(Y.shape) < 0.2] = np.nan
    Y[7] = np.nan                                      # a row with nothing observed
    X = Xs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDataWarning)
        est = ALSGLS(rank=2, missing=missing, tol=1e-10).fit(X, Y)
    got = alsgls.loglik_scorer(est, X, Y)
    rows = ~np.isnan(Y).any(axis=1) if missing == "drop" else slice(None)
    np.testing.assert_allclose(got, _dense_loglik(est, X[rows], Y[rows]), rtol=1e-10)
    if missing == "ml":
        np.testing.assert_allclose(got, -est.nll_history_[-1], rtol=1e-10)
    complete = ~np.isnan(Y).any(axis=1)
    np.testing.assert_allclose(alsgls.loglik_scorer(est, X[complete], Y[complete]),
                               est.log_likelihood(X[complete], Y[complete]) / complete.sum(),
                               rtol=1e-12)


def test_loglik_scorer_on_a_pipeline_and_its_refusals():
    pytest.importorskip("sklearn")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from alsgls.learn.estimator import ALSGLS

    Xs, Y, _ = simulate_gls(N=120, K=6, p=2, k=1, seed=2)
    pipe = make_pipeline(StandardScaler(), ALSGLS(rank=1)).fit(Xs[0], Y)
    est = pipe[-1]
    np.testing.assert_allclose(alsgls.loglik_scorer(pipe, Xs[0], Y),
                               est.log_likelihood(pipe[0].transform(Xs[0]), Y) / 120,
                               rtol=1e-12)
    Yn = Y.copy()
    Yn[0, 0] = np.nan
    with pytest.raises(ValueError, match="missing='raise'"):
        alsgls.loglik_scorer(pipe, Xs[0], Yn)
    with pytest.raises(ValueError, match="shape"):
        alsgls.loglik_scorer(pipe, Xs[0], Y[:, :5])
    with pytest.raises(TypeError, match="error covariance"):
        alsgls.loglik_scorer(StandardScaler().fit(Xs[0]), Xs[0], Y)


# --------------------------------------------------------------------------
# SUR(rank="auto")
# --------------------------------------------------------------------------

def test_sur_rank_auto_selects_on_the_validated_problem(monkeypatch):
    from alsgls.core import problem as problem_module
    from alsgls.stats import system

    calls = [0]
    original = problem_module.build_problem

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(system, "build_problem", counting)
    Xs, Y, _ = simulate_sur(N=300, K=40, p=2, k=3, seed=3, factor_strength=0.6)
    mod = SUR.from_arrays(Xs, Y, rank="auto")
    assert calls[0] == 1                                   # validated once
    assert mod.rank == 3
    res = mod.fit()
    sel = res.rank_selection
    assert sel is mod.rank_selection and res.rank == sel.rank == 3
    assert sel.method == "auto" and sel.scores.size == sel.candidates.size
    assert _roundtrip(res).rank_selection.rank == 3
    assert mod.with_rank(1).rank_selection is None
    assert SUR.from_arrays(Xs, Y, rank=2).fit().rank_selection is None
    assert mod.with_rank("bic").rank_selection.method == "bic"


def test_sur_rank_auto_with_missing_responses_and_bad_names():
    Xs, Y, _ = simulate_sur(N=300, K=40, p=2, k=3, seed=3, factor_strength=0.6)
    Y = Y.copy()
    Y[:30, :3] = np.nan
    mod = SUR.from_arrays(Xs, Y, rank="auto")
    assert mod.rank == 3 and mod.rank_selection.N == 270
    with pytest.raises(ValueError, match="'auto'"):
        SUR.from_arrays(Xs, Y, rank="atuo")


# --------------------------------------------------------------------------
# Equations never observed together
# --------------------------------------------------------------------------

def _equation(pd, index, rng):
    X = pd.DataFrame({"const": 1.0, "x": rng.standard_normal(len(index))}, index=index)
    y = pd.Series(X["x"] + rng.standard_normal(len(index)), index=index, name="y")
    return y, X


def test_disjoint_indexes_are_refused_at_full_rank():
    """Pins: equations whose indexes share no label were stacked (N doubled) and
    a correlation reported between equations never observed together."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    a = pd.date_range("2000-01-01", periods=60)
    b = pd.date_range("2001-01-01", periods=60)
    eqs = {"A": _equation(pd, a, rng), "B": _equation(pd, b, rng)}
    with pytest.raises(ValueError, match=r"equations 'A' and 'B' are never observed in the "
                                         r"same row \('A': 2000-01-01"):
        SUR(eqs)
    assert SUR(eqs, rank=0).nobs == 120                   # diagonal Sigma claims nothing
    eqs["C"] = _equation(pd, a.union(b), rng)
    with pytest.raises(ValueError, match="'A' and 'B'"):
        SUR(eqs, rank="full")


def test_never_observed_together_warns_below_full_rank():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    a = pd.RangeIndex(0, 80)
    b = pd.RangeIndex(80, 160)
    both = pd.RangeIndex(0, 160)
    eqs = {"A": _equation(pd, a, rng), "B": _equation(pd, b, rng),
           "C": _equation(pd, both, rng), "D": _equation(pd, both, rng)}
    with pytest.warns(MissingDataWarning, match="'A' and 'B'.*implied only by the factor"):
        mod = SUR(eqs, rank=1)
    with pytest.raises(ValueError, match="'A' and 'B'"):
        mod.with_rank("full")
    with warnings.catch_warnings():                      # overlapping indexes: no message
        warnings.simplefilter("error", MissingDataWarning)
        eqs["B"] = _equation(pd, pd.RangeIndex(70, 160), rng)
        SUR(eqs, rank=1)


def test_nan_responses_never_together_at_full_rank_are_refused():
    Xs, Y, _ = simulate_sur(N=100, K=3, p=2, k=1, seed=0)
    Y = Y.copy()
    Y[:50, 0] = np.nan
    Y[50:, 1] = np.nan
    with pytest.raises(ValueError, match="'eq0' and 'eq1'"):
        SUR.from_arrays(Xs, Y)


def test_never_observed_together_against_brute_force(monkeypatch):
    """Oracle: a loop over the pairs; blocks of 3 equations cross the boundaries."""
    from alsgls.stats import equations

    monkeypatch.setattr(equations, "PAIR_BLOCK", 3)
    rng = np.random.default_rng(2)
    for trial in range(30):
        obs = rng.random((12, 8)) < rng.uniform(0.1, 0.6)
        seen = obs.any(axis=0)
        pairs = [(i, j) for i in range(8) for j in range(i + 1, 8)
                 if seen[i] and seen[j] and not (obs[:, i] & obs[:, j]).any()]
        got = never_observed_together(obs)
        if not pairs:
            assert got is None
        else:
            assert got == (*pairs[0], len(pairs))
