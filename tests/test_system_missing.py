"""The statistics layer with missing responses and row weights.

Oracles: the dense observed-data information built row by row from the dense
K x K Sigma (test only), the missing-data solver itself, and the balanced
model on complete or replicated rows.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from alsgls import simulate_sur
from alsgls.exceptions import MissingDataWarning
from alsgls.stats.inference import GLSCovariance
from alsgls import fit_missing, observed_nll_per_row
from alsgls.core.ops import LowRankCovariance
from alsgls.stats.system import SUR


def dense_observed(X, p, F, D, mask, w, R=None):
    """Dense ``A = sum_i w_i X_{i,O}' Sigma_OO^-1 X_{i,O}`` and the robust middle
    ``B = sum_i g_i g_i'`` (``g_i = w_i X_{i,O}' Sigma_OO^-1 r_{i,O}``), row by row."""
    K, N, _ = X.shape
    S = F @ F.T + np.diag(D)
    off = np.concatenate([[0], np.cumsum(p)])
    A = np.zeros((off[-1], off[-1]))
    B = np.zeros_like(A)
    for i in range(N):
        o = np.flatnonzero(mask[i])
        Xi = np.zeros((o.size, off[-1]))
        for a, j in enumerate(o):
            Xi[a, off[j]:off[j + 1]] = X[j, i, : p[j]]
        Si = np.linalg.inv(S[np.ix_(o, o)])
        A += w[i] * Xi.T @ Si @ Xi
        if R is not None:
            g = w[i] * Xi.T @ Si @ R[o, i]
            B += np.outer(g, g)
    return A, B


@pytest.fixture(scope="module")
def unbalanced():
    """K = 20 with strong factors and intercepts, 20 % missing at random."""
    Xs, Y, _ = simulate_sur(N=120, K=20, p=3, k=2, seed=5, intercept=True,
                            x_common=0.5, factor_strength=2.0)
    Xs[3] = Xs[3][:, :2]                          # unequal p_j
    rng = np.random.default_rng(1)
    mask = rng.random(Y.shape) > 0.2
    Y[~mask] = np.nan
    Xs = [np.where(mask[:, [j]], x, np.nan) for j, x in enumerate(Xs)]  # NaN X where missing
    return Xs, Y, mask


# ------------------------------------------------------- GLSCovariance level
@pytest.mark.parametrize("weighted", [False, True])
def test_observed_information_equals_dense(weighted):
    rng = np.random.default_rng(2)
    K, N, pm, k = 15, 70, 3, 2
    p = np.full(K, 3)
    p[4] = 2
    X = rng.standard_normal((K, N, pm))
    X[:, :, 0] = 1.0                               # intercepts
    X[4, :, 2] = 0.0
    F, D = 1.5 * rng.standard_normal((K, k)), rng.uniform(0.3, 2.0, K)
    mask = rng.random((N, K)) > 0.2
    w = rng.uniform(0.2, 3.0, N) if weighted else np.ones(N)
    R = rng.standard_normal((K, N))
    inf = GLSCovariance(np.where(mask.T[:, :, None], X, np.nan), p, LowRankCovariance(F, D),
                        np.where(mask.T, R, np.nan), mask=mask,
                        weights=w if weighted else None)
    A, B = dense_observed(X, p, F, D, mask, w, R)
    Ainv = np.linalg.inv(A)
    eq, col = np.repeat(np.arange(K), p), np.concatenate([np.arange(q) for q in p])
    # same mathematics two ways (per-row Woodbury core vs dense inverse): rtol 1e-8
    np.testing.assert_allclose(inf.diagonal_blocks[eq, col, col], np.diag(Ainv), rtol=1e-8)
    V = Ainv @ B @ Ainv
    np.testing.assert_allclose(inf.robust_diagonal_blocks[eq, col, col], np.diag(V), rtol=1e-8)
    v = rng.standard_normal((K, pm)) * inf.mask
    np.testing.assert_allclose(inf.matvec(v)[inf.mask], A @ v[inf.mask], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(inf.solve(v)[inf.mask], Ainv @ v[inf.mask], rtol=1e-8, atol=1e-14)


def test_full_mask_and_unit_weights_equal_balanced():
    Xs, Y, _ = simulate_sur(N=80, K=10, p=2, k=2, seed=0)
    res = SUR.from_arrays(Xs, Y, rank=2).fit()
    d, cov = res.model.data, res.sigma
    base = GLSCovariance(d.X, d.p, cov, res._Rt)
    other = GLSCovariance(d.X, d.p, cov, res._Rt, mask=np.ones((d.N, d.K), bool),
                          weights=np.ones(d.N))
    # sqrt(1) scaling is exact and an all-True mask takes the balanced path
    np.testing.assert_allclose(other.diagonal_blocks, base.diagonal_blocks, rtol=1e-12, atol=0)
    np.testing.assert_allclose(other.robust_diagonal_blocks, base.robust_diagonal_blocks,
                               rtol=1e-12, atol=0)


# ----------------------------------------------------------------- SUR level
@pytest.fixture(scope="module")
def fitted(unbalanced):
    Xs, Y, mask = unbalanced
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a clean unbalanced fit warns nothing
        res = SUR.from_arrays(Xs, Y, rank=2).fit(tol=1e-12)
    return res


def test_fit_equals_missing_solver_and_dense_ses(unbalanced, fitted):
    Xs, Y, mask = unbalanced
    res = fitted
    ref = fit_missing(Xs, Y, 2, tol=1e-12)
    # the model calls the same solver on the same data: equal to round-off
    np.testing.assert_allclose(res.params.to_numpy(), np.concatenate([b.ravel() for b in ref.B]),
                               rtol=1e-10, atol=1e-12)
    nll = observed_nll_per_row(Xs, Y, res.fit_result.B, res.fit_result.F, res.fit_result.D)
    assert res.llf == pytest.approx(-Y.shape[0] * nll, rel=1e-12)
    d = res.model.data
    A, _ = dense_observed(d.X, d.p, res.sigma.F, res.sigma.D, mask, np.ones(d.N))
    np.testing.assert_allclose(res.bse.to_numpy(), np.sqrt(np.diag(np.linalg.inv(A))), rtol=1e-8)
    assert res.fit_result.method == "em-missing" and res.converged


def test_residuals_fitted_rsquared_nobs(unbalanced, fitted):
    Xs, Y, mask = unbalanced
    res = fitted
    assert np.array_equal(res.resid.isna().to_numpy(), ~mask)
    assert np.array_equal(res.fittedvalues.isna().to_numpy(), ~mask)
    np.testing.assert_allclose((res.resid + res.fittedvalues).to_numpy()[mask], Y[mask], rtol=1e-12)
    np.testing.assert_array_equal(res.nobs_equation.to_numpy(), mask.sum(axis=0))
    assert res.df_resid == mask.sum() - res.df_model
    j = 3
    r, y = res.resid.iloc[:, j].dropna(), Y[mask[:, j], j]
    # textbook centred R^2 over the equation's observed rows (equation has an intercept)
    assert res.rsquared.iloc[j] == pytest.approx(1 - r @ r / np.sum((y - y.mean()) ** 2), rel=1e-12)
    text = res.summary(max_equations=2).as_text()
    assert f"N: {mask[:, 0].sum()}" in text and "Observed responses" in text
    assert "N: " in res.summary(max_equations=1).as_html()


def test_wald_predict_scores_tests(unbalanced, fitted):
    Xs, Y, mask = unbalanced
    res = fitted
    names = res.param_names
    t = res.wald_test(f"{names[1]} = {names[4]}")
    V = res.cov_params([names[1], names[4]]).to_numpy()
    b = res.params.to_numpy()[[1, 4]]
    assert t.stat == pytest.approx((b[0] - b[1]) ** 2 / (V[0, 0] + V[1, 1] - 2 * V[0, 1]), rel=1e-10)
    pred = res.predict()                          # NaN where the regressors are NaN
    assert pred.shape == Y.shape and np.array_equal(pred.isna().to_numpy(), ~mask)
    np.testing.assert_allclose(pred.to_numpy()[mask], res.fittedvalues.to_numpy()[mask], rtol=1e-12)
    Z = res.factor_scores.to_numpy()
    assert Z.shape == (Y.shape[0], 2) and np.isfinite(Z).all()
    bp = res.breusch_pagan()
    assert bp.df == (20 * 19) // 2 and bp.pvalue < 1e-6
    lr = res.lr_test()
    assert lr.stat > 0 and lr.pvalue < 1e-6
    rd = SUR.from_arrays(Xs, Y, rank=2).fit(tol=1e-12, debiased=True)
    n, p = mask.sum(axis=0), res.model.data.p
    scale = np.sqrt(n / (n - p))[np.repeat(np.arange(20), p)]
    np.testing.assert_allclose(rd.bse.to_numpy(), res.bse.to_numpy() * scale, rtol=1e-8)


def test_breusch_pagan_pairwise_matches_dense(fitted):
    res = fitted
    d = res.model.data
    E = d.Yt - np.einsum("knp,kpq,kmq,km->kn", d.X, np.linalg.pinv(
        np.einsum("knp,knq->kpq", d.X, d.X)), d.X, d.Yt)   # OLS on observed rows
    O = d.O
    lm = 0.0
    for i in range(d.K):
        for j in range(i + 1, d.K):
            c = (O[i] * O[j]) > 0
            rho = E[i, c] @ E[j, c] / np.sqrt((E[i, c] @ E[i, c]) * (E[j, c] @ E[j, c]))
            lm += c.sum() * rho ** 2
    assert res.breusch_pagan().stat == pytest.approx(lm, rel=1e-8)


# ------------------------------------------------------- pandas and policies
def _frames(Xs, Y, mask):
    eqs = {}
    for j in range(Y.shape[1]):
        rows = np.flatnonzero(mask[:, j])
        idx = pd.Index(rows + 1000)
        eqs[f"e{j}"] = (pd.Series(Y[rows, j], index=idx, name=f"y{j}"),
                        pd.DataFrame(Xs[j][rows], index=idx,
                                     columns=[f"x{a}" for a in range(Xs[j].shape[1])]))
    return eqs


def test_pandas_series_with_different_indexes_align_on_union(unbalanced, fitted):
    Xs, Y, mask = unbalanced
    res = SUR(_frames(Xs, Y, mask), rank=2).fit(tol=1e-12)
    np.testing.assert_allclose(res.params.to_numpy(), fitted.params.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(res.bse.to_numpy(), fitted.bse.to_numpy(), rtol=1e-10)
    assert list(res.resid.index[:3]) == [1000, 1001, 1002]
    with pytest.raises(ValueError, match="equation 'e0': dependent has missing values"):
        SUR(_frames(Xs, Y, mask), rank=2, missing="raise")


def test_drop_equals_balanced_on_complete_rows(unbalanced):
    Xs, Y, mask = unbalanced
    Yd, Xd = Y[:, :6], [x for x in Xs[:6]]
    full = mask[:, :6].all(axis=1)
    with pytest.warns(MissingDataWarning, match="listwise"):
        res = SUR.from_arrays(Xd, Yd, rank=1, missing="drop").fit()
    ref = SUR.from_arrays([x[full] for x in Xd], Yd[full], rank=1).fit()
    np.testing.assert_allclose(res.params.to_numpy(), ref.params.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-12)
    assert res.nobs == full.sum() and list(res.resid.index) == list(np.flatnonzero(full))


def test_missing_raise_and_bad_input(unbalanced):
    Xs, Y, mask = unbalanced
    with pytest.raises(ValueError, match="equation 'eq0': dependent has missing values"):
        SUR.from_arrays(Xs, Y, rank=2, missing="raise")
    with pytest.raises(ValueError, match="missing must be one of"):
        SUR.from_arrays(Xs, Y, rank=2, missing="listwise")
    Xbad = [x.copy() for x in Xs]
    i = int(np.flatnonzero(mask[:, 2])[0])
    Xbad[2][i, 1] = np.nan
    with pytest.raises(ValueError, match="equation 'eq2' has NaN in row"):
        SUR.from_arrays(Xbad, Y, rank=2)
    Yfew = Y.copy()
    Yfew[3:, 5] = np.nan
    with pytest.raises(ValueError, match="equation 'eq5' has .* observed rows but needs"):
        SUR.from_arrays(Xs, Yfew, rank=2)
    with pytest.raises(ValueError, match="weights has length"):
        SUR.from_arrays(Xs, Y, rank=2, weights=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        SUR.from_arrays(Xs, Y, rank=2, weights=-np.ones(Y.shape[0]))


# ------------------------------------------------------------------ weights
def test_integer_weights_equal_replicated_rows():
    Xs, Y, _ = simulate_sur(N=60, K=6, p=2, k=1, seed=3)
    w = np.random.default_rng(0).integers(1, 4, size=60)
    rep = np.repeat(np.arange(60), w)
    a = SUR.from_arrays(Xs, Y, rank=1, weights=w).fit(tol=1e-13)
    b = SUR.from_arrays([x[rep] for x in Xs], Y[rep], rank=1).fit(tol=1e-13)
    # same likelihood up to the factor N / sum(w) from rescaling to mean 1
    np.testing.assert_allclose(a.params.to_numpy(), b.params.to_numpy(), rtol=1e-7)
    assert a.llf == pytest.approx(b.llf * 60 / w.sum(), rel=1e-9)
    np.testing.assert_allclose(a.bse.to_numpy(), b.bse.to_numpy() * np.sqrt(w.sum() / 60),
                               rtol=1e-6)
    assert "Weights" in a.summary().as_text()


def test_linearmodels_style_weights_in_equations():
    Xs, Y, _ = simulate_sur(N=60, K=3, p=2, k=1, seed=4)
    w = np.random.default_rng(1).uniform(0.5, 2.0, 60)
    a = SUR.from_arrays(Xs, Y, rank=1, weights=w).fit()
    b = SUR({f"eq{j}": (Y[:, j], Xs[j], w) for j in range(3)}, rank=1).fit()
    np.testing.assert_allclose(b.params.to_numpy(), a.params.to_numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="equations 'eq.' and 'eq.' have different weights"):
        SUR({"eq0": (Y[:, 0], Xs[0], w), "eq1": {"dependent": Y[:, 1], "exog": Xs[1]}}, rank=0)
    with pytest.raises(ValueError, match="both in the equations and as weights="):
        SUR({"eq0": (Y[:, 0], Xs[0], w), "eq1": (Y[:, 1], Xs[1])}, rank=0, weights=w)


def test_weights_with_missing_equal_dense(unbalanced):
    Xs, Y, mask = unbalanced
    w = np.random.default_rng(7).uniform(0.3, 3.0, Y.shape[0])
    res = SUR.from_arrays(Xs, Y, rank=2, weights=w).fit(tol=1e-12, cov_type="robust")
    d = res.model.data
    wn = w * w.size / w.sum()
    A, B = dense_observed(d.X, d.p, res.sigma.F, res.sigma.D, mask, wn, res._Rt)
    Ainv = np.linalg.inv(A)
    np.testing.assert_allclose(res.bse.to_numpy(), np.sqrt(np.diag(Ainv @ B @ Ainv)), rtol=1e-8)


def test_formula_with_missing_values():
    pytest.importorskip("formulaic")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.standard_normal((80, 4)), columns=["y1", "y2", "x1", "x2"])
    df.loc[:9, "y1"] = np.nan
    res = SUR.from_formula({"a": "y1 ~ 1 + x1", "b": "y2 ~ 1 + x2"}, df, rank=0).fit()
    np.testing.assert_array_equal(res.nobs_equation.to_numpy(), [70, 80])
    # rank 0: GLS = OLS per equation on its own rows
    ols = np.linalg.lstsq(np.column_stack([np.ones(70), df.x1[10:]]), df.y1[10:], rcond=None)[0]
    np.testing.assert_allclose(res.params.to_numpy()[:2], ols, rtol=1e-8)


def test_factor_scores_are_posterior_means_on_observed_responses(unbalanced, fitted):
    # oracle: E[z_i | r_{i,O}] = (I + F_O' Psi_O^-1 F_O)^-1 F_O' Psi_O^-1 r_{i,O}, row by row
    _, _, mask = unbalanced
    res = fitted
    F, D = res.sigma.F, res.sigma.D
    R = res.resid.to_numpy()
    Z = res.factor_scores.to_numpy()
    for i in range(0, mask.shape[0], 7):
        o = mask[i]
        Fo = F[o] / D[o, None]
        ref = np.linalg.solve(np.eye(2) + F[o].T @ Fo, Fo.T @ R[i, o])
        np.testing.assert_allclose(Z[i], ref, rtol=1e-10, atol=1e-12)


def test_missing_predictions_and_weights_use_the_problem(unbalanced, fitted):
    # entry weights w_i o_ij are the problem's; in-sample designs stay NaN where missing
    res = fitted
    d = res.model.data
    np.testing.assert_array_equal(res._row_w, d.observation_weights)
    Xs = unbalanced[0]
    with pytest.raises(ValueError, match="equation 'eq0': exog contains NaN"):
        res.predict(Xs)                        # new designs must be finite
