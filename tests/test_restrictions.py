"""Linear restrictions R beta = q: restricted GLS, restricted ML (ALS and EM),
the restricted covariance, the restriction parser and LR tests of nested fits.

Oracles: the dense KKT system of restricted GLS (Greene, Econometric Analysis,
sec. 5.3: [A R'; R 0] [b; l] = [c; q]) and the dense restricted covariance
A^-1 - A^-1 R'(R A^-1 R')^-1 R A^-1, built with plain numpy from
tests/_oracles.py; nothing shares a code path with the matrix-free solvers.
"""

import warnings

import numpy as np
import pytest

from alsgls import simulate_sur
from alsgls.core.als import factor_analysis
from alsgls.core.dispatch import fit_problem
from alsgls.core.gls import solve_gls
from alsgls.core.ops import LowRankCovariance
from alsgls.core.options import solver_options
from alsgls.core.problem import build_problem
from alsgls.core.restriction import build_restriction
from alsgls.stats.hypothesis import parse_restrictions
from alsgls.stats.inference import GLSCovariance, dense_information

from ._oracles import block_diag_design, ols, residuals


@pytest.fixture(scope="module")
def system():
    Xs, Y, _ = simulate_sur(N=150, K=7, p=3, k=2, seed=11)
    return Xs, Y, build_problem(Xs, Y)


def _restriction(lay):
    """Two pooled slopes, a fixed coefficient and a cross-equation sum."""
    P = lay.P
    R = np.zeros((4, P))
    R[0, [1, 4]] = [1, -1]            # eq0_x1 = eq1_x1
    R[1, [2, 8]] = [1, -1]            # eq0_x2 = eq2_x2
    R[2, 10] = 1                      # eq3_x1 = 0.5
    R[3, [12, 15, 19]] = [1, 2, -1]   # eq4_x0 + 2 eq5_x0 - eq6_x1 = 0.3
    return R, np.array([0.0, 0.0, 0.5, 0.3])


def _kkt(A, c, R, q):
    """Dense restricted GLS: the KKT system of min 1/2 b'Ab - c'b s.t. R b = q."""
    m = R.shape[0]
    K = np.block([[A, R.T], [R, np.zeros((m, m))]])
    return np.linalg.solve(K, np.concatenate([c, q]))[: A.shape[0]]


def _dense_gls_system(Xs, Y, Sigma, w=None):
    N = Y.shape[0]
    Z = block_diag_design(Xs)
    W = np.kron(np.linalg.inv(Sigma), np.diag(np.ones(N) if w is None else w))
    return Z.T @ W @ Z, Z.T @ W @ Y.T.ravel()


def _flat(fit):
    return np.concatenate([b.ravel() for b in fit.B])


@pytest.mark.parametrize("k", [0, 2, 6])
def test_restricted_gls_with_fixed_sigma_is_the_kkt_solution(system, k):
    Xs, Y, prob = system
    R, q = _restriction(prob.layout)
    con = build_restriction(R, q, prob.layout)
    rng = np.random.default_rng(k)
    cov = LowRankCovariance(rng.standard_normal((7, k)), rng.uniform(0.5, 2.0, 7))
    theta, Rt = solve_gls(prob, cov, solver_options(), restriction=con)
    beta = _kkt(*_dense_gls_system(Xs, Y, cov.to_dense()), R, q)
    # same mathematics two ways; solve_gls stops within ~1e-10 SE of exact
    np.testing.assert_allclose(prob.layout.flatten(theta), beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(R @ prob.layout.flatten(theta), q, atol=1e-12)
    np.testing.assert_allclose(Rt.T, residuals(Xs, Y, prob.layout.flatten(theta)), atol=1e-12)


def test_solve_gls_identity_is_restricted_ols_and_weights_apply(system):
    Xs, Y, prob = system
    R, q = _restriction(prob.layout)
    con = build_restriction(R, q, prob.layout)
    ident = LowRankCovariance(np.zeros((7, 0)), np.ones(7))
    theta, _ = solve_gls(prob, ident, solver_options())
    np.testing.assert_allclose(prob.layout.flatten(theta), ols(Xs, Y), rtol=1e-10)
    theta, _ = solve_gls(prob, ident, solver_options(), restriction=con)
    beta = _kkt(*_dense_gls_system(Xs, Y, np.eye(7)), R, q)
    np.testing.assert_allclose(prob.layout.flatten(theta), beta, rtol=1e-10, atol=1e-12)
    # weighted: exact weighted restricted GLS (weights rescaled to mean 1 cancel)
    w = np.random.default_rng(3).uniform(0.2, 3.0, Y.shape[0])
    pw = build_problem(Xs, Y, weights=w)
    cov = LowRankCovariance(np.ones((7, 1)), np.full(7, 0.7))
    theta, Rt = solve_gls(pw, cov, solver_options(), restriction=con)
    beta = _kkt(*_dense_gls_system(Xs, Y, cov.to_dense(), w), R, q)
    np.testing.assert_allclose(pw.layout.flatten(theta), beta, rtol=1e-8, atol=1e-10)
    assert Rt.shape == (7, Y.shape[0])


def test_solve_gls_refuses_missing_responses_and_bad_shapes(system):
    Xs, Y, prob = system
    Ym = Y.copy()
    Ym[0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = build_problem(Xs, Ym)
    cov = LowRankCovariance(np.zeros((7, 0)), np.ones(7))
    with pytest.raises(ValueError, match="complete responses"):
        solve_gls(pm, cov, solver_options())
    with pytest.raises(ValueError, match="theta0 must have shape"):
        solve_gls(prob, cov, solver_options(), theta0=np.zeros((7, 2)))
    with pytest.raises(ValueError, match="K=3"):
        solve_gls(prob, LowRankCovariance(np.zeros((3, 0)), np.ones(3)), solver_options())


def _projected_gap(prob, fit, R):
    """1/2 g' C_r g (total-NLL units) of the likelihood gradient g = X'(Sigma^-1 (x) I) r
    at the fit, C_r the dense restricted inverse information: ~0 at the
    restricted MLE (the gradient lies in the row space of R)."""
    Xs = [prob.X[j, :, : prob.p[j]] for j in range(prob.K)]
    Sigma = fit.cov.to_dense()
    Rres = residuals(Xs, prob.Yt.T, _flat(fit))
    g = block_diag_design(Xs).T @ (Rres @ np.linalg.inv(Sigma)).T.ravel()
    A = dense_information(prob.X, prob.p, fit.cov)
    Ai = np.linalg.inv(A)
    Cr = Ai - Ai @ R.T @ np.linalg.solve(R @ Ai @ R.T, R @ Ai)
    return 0.5 * g @ Cr @ g, g


def test_restricted_ml_als_and_em_agree_and_meet_first_order_conditions(system):
    Xs, Y, prob = system
    R, q = _restriction(prob.layout)
    con = build_restriction(R, q, prob.layout)
    opts = solver_options(tol=1e-12)
    fa, Ra = fit_problem(prob, 2, opts, restriction=con)
    fe, _ = fit_problem(prob, 2, opts, solver="em", restriction=con)
    fu, _ = fit_problem(prob, 2, opts)
    assert fa.converged and fe.converged
    for f in (fa, fe):
        np.testing.assert_allclose(R @ _flat(f), q, atol=1e-10)        # feasible
        gap, g = _projected_gap(prob, f, R)
        assert gap < 1e-7                  # restricted first-order condition (tol*K*N = 1e-9)
        assert np.linalg.norm(g) > 1.0     # ... while the unrestricted one fails
    # fixed points of two algorithms, in SE units (unrestricted ALS and EM agree to
    # ~5e-6 SE on these data at this tol as well)
    se = np.sqrt(np.diag(np.linalg.inv(dense_information(prob.X, prob.p, fa.cov))))
    assert np.max(np.abs(_flat(fa) - _flat(fe)) / se) < 5e-5
    S = fa.cov.to_dense()
    np.testing.assert_allclose(S, fe.cov.to_dense(), rtol=0, atol=1e-5 * np.abs(S).max())
    assert fa.nll == pytest.approx(fe.nll, rel=1e-9)
    assert fa.nll > fu.nll                  # restrictions cost likelihood
    np.testing.assert_allclose(Ra.T, residuals(Xs, Y, _flat(fa)), atol=1e-12)
    assert np.all(np.diff(fa.nll_trace) <= 1e-12)


def test_restricted_ml_weighted_matches_em(system):
    Xs, Y, _ = system
    w = np.random.default_rng(5).uniform(0.3, 2.0, Y.shape[0])
    pw = build_problem(Xs, Y, weights=w)
    R, q = _restriction(pw.layout)
    con = build_restriction(R, q, pw.layout)
    opts = solver_options(tol=1e-12)
    fa, _ = fit_problem(pw, 1, opts, restriction=con)
    fe, _ = fit_problem(pw, 1, opts, solver="em", restriction=con)
    np.testing.assert_allclose(R @ _flat(fa), q, atol=1e-10)
    se = np.sqrt(np.diag(np.linalg.inv(dense_information(pw.X, pw.p, fa.cov))))
    assert np.max(np.abs(_flat(fa) - _flat(fe)) / se) < 5e-5


def test_pooled_slope_restriction_recovers_the_pooled_truth():
    K, N, p = 10, 500, 2
    Xs, Y, truth = simulate_sur(N=N, K=K, p=p, k=2, seed=7)
    slope = 1.7                             # make every x1 slope equal to it
    Y = Y + np.column_stack([Xs[j][:, 1] * (slope - truth.B[j][1, 0]) for j in range(K)])
    prob = build_problem(Xs, Y)
    lay = prob.layout
    R = np.zeros((K - 1, lay.P))            # eq0_x1 = eqj_x1 for every j
    R[:, 1] = 1.0
    R[np.arange(K - 1), p * np.arange(1, K) + 1] = -1.0
    con = build_restriction(R, None, lay)
    opts = solver_options(tol=1e-10)
    fit, Rt = fit_problem(prob, 2, opts, restriction=con)
    pooled = _flat(fit)[p * np.arange(K) + 1]
    np.testing.assert_allclose(pooled, pooled[0], rtol=0, atol=1e-10)
    se = np.sqrt(GLSCovariance.from_problem(prob, fit.cov, Rt, restriction=con)
                 .diagonal_blocks[0, 1, 1])
    assert abs(pooled[0] - slope) < 4 * se          # a 4-SE band (misses with prob. 6e-5)
    fu, _ = fit_problem(prob, 2, opts)
    se_u = np.sqrt(GLSCovariance.from_problem(prob, fu.cov).diagonal_blocks[0, 1, 1])
    assert se < 0.6 * se_u                          # pooling ten slopes sharpens the estimate


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_restricted_covariance_equals_dense_formula(system, method):
    Xs, Y, prob = system
    R, q = _restriction(prob.layout)
    con = build_restriction(R, q, prob.layout)
    lay = prob.layout
    rng = np.random.default_rng(2)
    cov = LowRankCovariance(rng.standard_normal((7, 2)), rng.uniform(0.5, 2.0, 7))
    Rt = rng.standard_normal((7, Y.shape[0]))
    A = dense_information(prob.X, prob.p, cov)
    Ai = np.linalg.inv(A)
    Cr = Ai - Ai @ R.T @ np.linalg.solve(R @ Ai @ R.T, R @ Ai)     # dense oracle
    gls = GLSCovariance.from_problem(prob, cov, Rt, restriction=con, method=method,
                                     rtol=1e-13)
    blocks = gls.diagonal_blocks
    scale = np.abs(Cr).max()
    np.testing.assert_allclose(blocks[lay.eq, lay.col, lay.col], np.diag(Cr),
                               rtol=0, atol=1e-10 * scale)
    full = lay.flatten(gls.solve(lay.unflatten(np.eye(lay.P))))
    np.testing.assert_allclose(full, Cr, rtol=0, atol=1e-10 * scale)
    assert np.abs(np.diag(Cr)[10]) < 1e-12 * scale          # a fixed coefficient: variance 0
    # restricted sandwich C_r B C_r, scores X_i' Sigma^-1 r_i
    Om = np.kron(np.linalg.inv(cov.to_dense()), np.eye(Y.shape[0]))
    G = block_diag_design(Xs).T @ Om @ Rt.ravel()            # the total score
    Gi = np.stack([np.concatenate([Xs[j][i] * cov.solve(Rt[:, i])[j] for j in range(7)])
                   for i in range(Y.shape[0])], axis=1)
    np.testing.assert_allclose(Gi.sum(axis=1), G, rtol=1e-10)
    V = Cr @ (Gi @ Gi.T) @ Cr
    rob = gls.estimator("robust")
    np.testing.assert_allclose(rob.diagonal_blocks[lay.eq, lay.col, lay.col], np.diag(V),
                               rtol=0, atol=1e-10 * np.abs(V).max())
    L = lay.unflatten(np.eye(lay.P)[:, [0, 1, 4, 13]])
    np.testing.assert_allclose(rob.contrast_cov(L), V[np.ix_([0, 1, 4, 13], [0, 1, 4, 13])],
                               rtol=0, atol=1e-10 * np.abs(V).max())
    mb = gls.estimator("unadjusted")
    np.testing.assert_allclose(mb.contrast_cov(L), Cr[np.ix_([0, 1, 4, 13], [0, 1, 4, 13])],
                               rtol=0, atol=1e-10 * scale)


def test_restricted_covariance_accepts_padded_array_and_checks_shape(system):
    _, _, prob = system
    R, q = _restriction(prob.layout)
    con = build_restriction(R, q, prob.layout)
    cov = LowRankCovariance(np.ones((7, 1)), np.ones(7))
    a = GLSCovariance.from_problem(prob, cov, restriction=con).diagonal_blocks
    b = GLSCovariance.from_problem(prob, cov, restriction=np.array(con.Rt)).diagonal_blocks
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"\(K, pmax, m\)"):
        GLSCovariance.from_problem(prob, cov, restriction=np.ones((7, 2, 1)))


def test_fixed_beta_fit_is_factor_analysis_of_the_ols_residuals(system):
    Xs, Y, prob = system
    opts = solver_options(tol=1e-12)
    fit, Rt = fit_problem(prob, 2, opts, update_beta=False)
    np.testing.assert_allclose(_flat(fit), ols(Xs, Y), rtol=1e-12)
    F, D = factor_analysis(Rt, 2, opts)
    np.testing.assert_allclose(fit.cov.to_dense(), F @ F.T + np.diag(D), rtol=1e-12)
    assert fit.converged and np.all(fit.cg_iterations == 0)
    # with a restriction the fixed coefficients are restricted OLS (Sigma = I)
    R, q = _restriction(prob.layout)
    con = build_restriction(R, q, prob.layout)
    fit_r, _ = fit_problem(prob, 2, opts, restriction=con, update_beta=False)
    beta = _kkt(*_dense_gls_system(Xs, Y, np.eye(7)), R, q)
    np.testing.assert_allclose(_flat(fit_r), beta, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="update_beta=False"):
        fit_problem(prob, 2, opts, solver="em", update_beta=False)


# -- validation of R beta = q ---------------------------------------------------
def test_build_restriction_errors(system):
    _, _, prob = system
    lay = prob.layout
    names = [f"b{i}" for i in range(lay.P)]
    R = np.zeros((3, lay.P))
    R[0, [1, 4]] = [1, -1]
    R[1, [4, 7]] = [1, -1]
    R[2, [1, 7]] = [1, -1]                  # row 2 = row 0 + row 1
    with pytest.raises(ValueError, match=r"redundant .*rank 2.*rows \[2\].*row 2 \(b1 - b7\)"
                       r" = 1\*\(row 0\) \+ 1\*\(row 1\)"):
        build_restriction(R, [0, 0, 0], lay, names)
    with pytest.raises(ValueError, match=r"inconsistent.*value 1 differs from the implied 0"):
        build_restriction(R, [0, 0, 1], lay, names)
    with pytest.raises(ValueError, match="row 1 involves no coefficient"):
        build_restriction(np.vstack([R[0], np.zeros(lay.P)]), None, lay)
    with pytest.raises(ValueError, match=r"shape \(m, P=21\)"):
        build_restriction(np.ones((2, 5)), None, lay)
    with pytest.raises(ValueError, match="q must have shape"):
        build_restriction(R[:2], [0, 0, 0], lay)
    with pytest.raises(ValueError, match="NaN or inf"):
        build_restriction(np.full((1, lay.P), np.nan), None, lay)
    with pytest.raises(ValueError, match="fewer restrictions than coefficients"):
        build_restriction(np.eye(lay.P), None, lay)
    with pytest.raises(TypeError, match="numeric"):
        build_restriction(np.array([["a"] * lay.P]), None, lay)
    con = build_restriction(R[:2], None, lay)
    assert con.m == 2 and con.P == lay.P and not con.R.flags.writeable


def test_restricted_fit_refuses_missing_responses(system):
    Xs, Y, _ = system
    Ym = Y.copy()
    Ym[3, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = build_problem(Xs, Ym)
    R, q = _restriction(pm.layout)
    con = build_restriction(R, q, pm.layout)
    with pytest.raises(ValueError, match="missing='drop'"):
        fit_problem(pm, 1, solver_options(), restriction=con)
    small = build_problem(Xs[:3], Y[:, :3])
    with pytest.raises(ValueError, match="P=9"):
        fit_problem(small, 1, solver_options(), restriction=con)


# -- the parser (shared with wald_test and SUR constraints) ---------------------------
NAMES = [f"eq{j}_x{i}" for j in range(3) for i in range(3)] + ["C(a b)[T.1]_x-1"]


@pytest.mark.parametrize("text, row, value", [
    ("eq0_x1 = eq1_x1", {"eq0_x1": 1, "eq1_x1": -1}, 0.0),
    ("2*eq0_x1 - 2*eq1_x1 = 0", {"eq0_x1": 2, "eq1_x1": -2}, 0.0),
    ("2 * eq0_x1 = 1", {"eq0_x1": 2}, 1.0),
    ("eq0_x1*2 = .5", {"eq0_x1": 2}, 0.5),
    ("-eq0_x1 + 0.5 = eq1_x1", {"eq0_x1": -1, "eq1_x1": -1}, -0.5),
    ("1e-3*eq0_x1 - - eq1_x1", {"eq0_x1": 1e-3, "eq1_x1": 1}, 0.0),
    ("eq2_x2-eq2_x1=3", {"eq2_x2": 1, "eq2_x1": -1}, 3.0),
    ("C(a b)[T.1]_x-1 = eq0_x0", {"C(a b)[T.1]_x-1": 1, "eq0_x0": -1}, 0.0),
])
def test_parser_accepts(text, row, value):
    R, r = parse_restrictions(text, NAMES)
    expect = np.zeros(len(NAMES))
    for nm, c in row.items():
        expect[NAMES.index(nm)] = c
    np.testing.assert_array_equal(R[0], expect)
    assert r[0] == value


@pytest.mark.parametrize("text, message", [
    ("eq0_x1 = eq1_x12", r"unknown parameter 'eq1_x12'; did you mean .*'eq1_x1'"),
    ("2 eq0_x1 = 1", r"'2 eq0_x1' is an implicit product; write '2\*eq0_x1'"),
    ("2eq0_x1 = 1", r"'2eq0_x1' is not a parameter; write the product with '\*': '2\*eq0_x1'"),
    ("eq0_x1 eq1_x1 = 0", r"no operator between 'eq0_x1' and 'eq1_x1'"),
    ("eq0_x1eq1_x1 = 0", r"'eq0_x1' and 'eq1_x1' glued together.*'eq0_x1 \+ eq1_x1'"),
    ("eq0_x1 2 = 0", r"no operator between 'eq0_x1' and '2'"),
    ("eq0_x1 * eq1_x1 = 0", r"restrictions are linear"),
    ("eq0_x1 + = 0", r"ends with an operator"),
    ("eq0_x1 * = 0", r"ends with an operator"),
    ("eq0_x1 =", r"empty side"),
    ("* eq0_x1 = 0", r"'\*' needs a number"),
    ("eq0_x1 = 1 = 2", r"more than one '='"),
    ("3 = 1", r"involves no parameter"),
    ("eq9_x1 = 0", r"unknown parameter 'eq9_x1'"),
])
def test_parser_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        parse_restrictions(text, NAMES)


# -- LR tests of nested fits -------------------------------------------------------
@pytest.fixture(scope="module")
def nested():
    from alsgls.stats.system import SUR

    Xs, Y, _ = simulate_sur(N=200, K=5, p=2, k=1, seed=21)
    fits = {}
    for rank in (1, 2):
        for con in (None, "eq0_x1 = eq1_x1, eq2_x1 = eq3_x1"):
            fits[rank, con is not None] = SUR.from_arrays(
                Xs, Y, rank=rank, constraints=con).fit(tol=1e-12)
    return Xs, Y, fits


def test_lr_test_of_nested_fits(nested):
    from alsgls.core.ops import covariance_parameters

    Xs, Y, fits = nested
    u, r = fits[1, False], fits[1, True]
    lr = u.lr_test(r)
    assert lr.df == 2 and "df = 2 = 2 coefficient restriction(s) + 0 covariance" in lr.null
    assert lr.stat == pytest.approx(2 * (u.llf - r.llf), rel=1e-12) and lr.stat > 0
    assert r.lr_test(u).stat == lr.stat                 # either order
    k_lr = fits[2, False].lr_test(fits[1, True])        # both at once
    assert k_lr.df == 2 + covariance_parameters(5, 2) - covariance_parameters(5, 1)
    rank_lr = fits[1, False].lr_test(fits[2, False])
    assert rank_lr.df == covariance_parameters(5, 2) - covariance_parameters(5, 1)
    with pytest.raises(ValueError, match="not nested"):
        fits[2, True].lr_test(fits[1, False])
    with pytest.raises(ValueError, match="same number of free parameters"):
        u.lr_test(u)
    from alsgls.stats.system import SUR

    other = SUR.from_arrays(Xs, Y[:, ::-1], rank=1).fit(tol=1e-10)
    with pytest.raises(ValueError, match="same data.*responses"):
        u.lr_test(other)
    shorter = SUR.from_arrays([x[:150] for x in Xs], Y[:150], rank=1).fit(tol=1e-10)
    with pytest.raises(ValueError, match="same data.*N"):
        u.lr_test(shorter)
    with pytest.raises(TypeError, match="refits nothing"):
        u.lr_test(r, tol=1e-8)
    assert u.lr_test("diagonal").df == covariance_parameters(5, 1) - 5
