"""Standard errors at about the cost of a fit: the strategies, their accuracy
guarantees, the ``fit`` options, per-equation work and progress feedback.

Oracles: the dense P x P information ``dense_information`` and its inverse
(the same mathematics two ways: rtol 1e-10 on well-conditioned fixtures), the
dense eigenvalues of the whitened correction ``M = I - T' A T`` (for the
certified tail bound), and the dense sandwich ``A^-1 Gamma' Gamma A^-1``.
"""

import logging
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from alsgls import simulate_sur
from alsgls.core.ops import LowRankCovariance
from alsgls.core.problem import build_problem
from alsgls.exceptions import ConvergenceWarning
from alsgls.stats import inference
from alsgls.stats.inference import (
    ExactCore,
    GLSCovariance,
    KroneckerCore,
    choose_method,
    dense_information,
    se_options,
    variance_tol,
)
from alsgls.stats.system import SUR


def _random_cov(K, k, seed):
    rng = np.random.default_rng(seed)
    return LowRankCovariance(1.5 * rng.standard_normal((K, k)), rng.uniform(0.5, 1.5, K))


def _problem(N, K, p, seed, **kw):
    Xs, Y, _ = simulate_sur(N=N, K=K, p=p, k=2, seed=seed, intercept=True, x_common=0.5, **kw)
    return build_problem(Xs, Y), Xs, Y


def _dense(prob, cov, Rt=None):
    """Dense oracle: A^-1 (P x P) and, with residuals, the White sandwich."""
    Ai = np.linalg.inv(dense_information(prob.X, prob.p, cov))
    if Rt is None:
        return Ai, None
    W = cov.solve(Rt)                                                   # Sigma^-1 r_i
    Gam = np.concatenate([prob.X[j, :, : prob.p[j]] * W[j][:, None] for j in range(prob.K)],
                         axis=1)
    return Ai, Ai @ (Gam.T @ Gam) @ Ai


def _var(blocks, prob):
    lay = prob.layout
    return blocks[lay.eq, lay.col, lay.col]


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("kw, error, name", [
    ({"se_method": "dense"}, ValueError, "se_method"),
    ({"se_tol": 0.0}, ValueError, "se_tol"), ({"se_tol": 0.5}, ValueError, "se_tol"),
    ({"se_tol": "small"}, TypeError, "se_tol"), ({"se_verbose": "yes"}, TypeError, "se_verbose"),
])
def test_se_options_name_the_wrong_option(kw, error, name):
    with pytest.raises(error, match=name):
        se_options(**kw)


def test_se_tol_bounds_standard_errors():
    # computed variances never exceed the exact ones: v_exact / v <= 1 + tol_v
    # keeps se_exact / se - 1 <= se_tol exactly when tol_v = (1 + se_tol)^2 - 1
    opts = se_options("lanczos", 1e-3)
    assert opts.tol == pytest.approx(variance_tol(1e-3)) == pytest.approx(2.001e-3)
    assert np.sqrt(1 + opts.tol) - 1 == pytest.approx(1e-3)
    assert se_options().method == "auto" and se_options().tol == pytest.approx(2.001e-3)


def test_fit_options_reach_the_covariance():
    Xs, Y, _ = simulate_sur(N=100, K=20, p=2, k=2, seed=0)
    mod = SUR.from_arrays(Xs, Y, rank=2)
    res = mod.fit(se_method="lanczos", se_tol=1e-2)
    assert res.se_options.method == "lanczos" and res.covariance.method == "lanczos"
    assert res.covariance.tol == pytest.approx(variance_tol(1e-2))
    rob = res.with_cov_type("robust")
    assert rob.se_options == res.se_options and rob.covariance is res.covariance
    assert mod.fit(se_method="exact").covariance.method == "exact"
    with pytest.raises(ValueError, match="se_method"):
        mod.fit(se_method="dense")


# ----------------------------------------------------------- the strategies
def test_auto_chooses_by_predicted_cost(monkeypatch):
    def factors(N, K, p, k, shared=False):
        return SimpleNamespace(N=N, K=K, pmax=p, k=k, shared=shared,
                               mask=np.ones((K, p), dtype=bool))

    # the size: the exact core is 5000 x 5000 and ~3e11 flops -> Lanczos
    assert choose_method(factors(1000, 2000, 3, 5), "auto") == "lanczos"
    assert choose_method(factors(120, 50, 3, 3), "auto") == "exact"          # cheap
    assert choose_method(factors(10_000, 10, 3, 9), "auto") == "exact"     # P x P core: 30
    assert choose_method(factors(1000, 2000, 3, 0), "lanczos") == "exact"    # no factors
    assert choose_method(factors(1000, 2000, 3, 5, True), "lanczos") == "exact"
    assert choose_method(factors(120, 50, 3, 3), "lanczos") == "lanczos"
    monkeypatch.setattr(inference, "EXACT_CORE_LIMIT", 100)
    assert choose_method(factors(120, 50, 3, 3), "auto") == "lanczos"


@pytest.mark.parametrize("N, K, k, space", [(300, 4, 3, "coefficients"), (30, 40, 2, "rows")])
def test_exact_cores_equal_the_dense_inverse(N, K, k, space):
    prob, _, _ = _problem(N, K, 3, seed=1)
    cov = _random_cov(K, k, 2)
    gls = GLSCovariance.from_problem(prob, cov, method="exact")
    assert isinstance(gls.strategy, ExactCore) and gls.strategy.space == space
    Ai, _ = _dense(prob, cov)
    # the same mathematics two ways: rtol 1e-10
    np.testing.assert_allclose(_var(gls.diagonal_blocks, prob), np.diag(Ai), rtol=1e-10)
    lay = prob.layout
    full = lay.flatten(gls.solve(lay.unflatten(np.eye(lay.P))))
    np.testing.assert_allclose(full, Ai, rtol=0, atol=1e-10 * np.abs(Ai).max())


@pytest.mark.parametrize("N, K, k, space", [(200, 6, 3, "coefficients"), (8, 10, 2, "rows")])
def test_exact_cores_with_missing_responses_and_weights(N, K, k, space):
    """Oracle: the observed-data information sum_i w_i X_iO' Sigma_O^-1 X_iO, row by row."""
    rng = np.random.default_rng(13)
    p = 2
    Xs = [np.column_stack([np.ones(N), rng.standard_normal(N)]) for _ in range(K)]
    Y = rng.standard_normal((N, K))
    Y[rng.random((N, K)) < 0.2] = np.nan
    prob = build_problem(Xs, Y, weights=rng.uniform(0.5, 2.0, N))
    cov = _random_cov(K, k, 14)
    gls = GLSCovariance.from_problem(prob, cov, method="exact")
    assert gls.strategy.space == space
    S, obs, P = cov.to_dense(), prob.O.T > 0, K * p
    A = np.zeros((P, P))
    for i in range(prob.N):
        o = np.flatnonzero(obs[i])
        Xi = np.zeros((len(o), P))
        for r, j in enumerate(o):
            Xi[r, j * p:(j + 1) * p] = prob.X[j, i]
        A += prob.w[i] * Xi.T @ np.linalg.solve(S[np.ix_(o, o)], Xi)
    np.testing.assert_allclose(_var(gls.diagonal_blocks, prob), np.diag(np.linalg.inv(A)),
                               rtol=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_shared_design_is_the_kronecker_product(weighted):
    rng = np.random.default_rng(3)
    N, K, k = 150, 30, 2
    X = np.column_stack([np.ones(N), rng.standard_normal((N, 2))])
    Y = rng.standard_normal((N, K))
    w = rng.uniform(0.5, 2.0, N) if weighted else None
    prob = build_problem(X, Y, weights=w)
    assert prob.shared
    cov, Rt = _random_cov(K, k, 4), rng.standard_normal((K, N))
    gls = GLSCovariance.from_problem(prob, cov, Rt, method="lanczos")   # exact whatever asked
    assert isinstance(gls.strategy, KroneckerCore) and gls.method == "exact"
    sw = np.ones(N) if w is None else np.sqrt(prob.w)       # the weights as the fit uses them
    Ai, V = _dense(build_problem([X * sw[:, None]] * K, Y), cov, Rt * sw[None, :])
    np.testing.assert_allclose(_var(gls.diagonal_blocks, prob), np.diag(Ai), rtol=1e-10)
    np.testing.assert_allclose(_var(gls.robust_diagonal_blocks, prob), np.diag(V), rtol=1e-10)
    assert gls.factors.X.strides[0] == 0                  # the design is still one array


# ------------------------------------------------- Lanczos: certified bounds
@pytest.fixture(scope="module")
def truncated():
    """K = 60, N = 150, p = 3 (intercepts, common regressors), k = 3: M has k p
    large eigenvalues and a bulk near 0.05, so a tolerance of 1e-2 truncates."""
    prob, _, _ = _problem(150, 60, 3, seed=5)
    cov = _random_cov(60, 3, 6)
    Rt = np.random.default_rng(7).standard_normal((60, 150))
    ex = GLSCovariance.from_problem(prob, cov, Rt, method="exact")
    return prob, cov, Rt, ex


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lanczos_variances_within_the_certified_bound(truncated, seed):
    prob, cov, Rt, ex = truncated
    la = GLSCovariance.from_problem(prob, cov, Rt, method="lanczos", tol=1e-2, seed=seed)
    ve, vl = _var(ex.diagonal_blocks, prob), _var(la.diagonal_blocks, prob)
    rel = (ve - vl) / vl
    bounds = _var(np.broadcast_to(la.variance_bounds[:, :, None], la.diagonal_blocks.shape),
                  prob)
    info = la.eigen_info
    assert info.converged and 0 < la.truncation_bound <= 1e-2
    assert info.subspace_dim < prob.layout.P                  # a genuine truncation
    assert rel.min() >= -1e-10                                # Galerkin: never above exact
    assert np.all(rel <= bounds + 1e-10)                      # and within the bound
    # the certificate: lambda_next bounds the deflated operator, whose top
    # eigenvalue is at least the (r+1)-th of M (Courant-Fischer)
    f = la.factors
    Tf = np.zeros((f.K * f.pmax, f.K * f.pmax))
    for j in range(f.K):
        Tf[j * f.pmax:(j + 1) * f.pmax, j * f.pmax:(j + 1) * f.pmax] = f.T[j]
    keep = f.mask.ravel()
    A = dense_information(prob.X, prob.p, cov)
    Tk = Tf[np.ix_(keep, keep)]
    lam = np.linalg.eigvalsh(np.eye(keep.sum()) - Tk.T @ A @ Tk)[::-1]
    assert info.lambda_next >= lam[info.rank] - 1e-12
    # the k p = 9 large eigenvalues converged; every Ritz value is below its
    # eigenvalue (interlacing)
    np.testing.assert_allclose(info.eigenvalues[:9], lam[:9], rtol=1e-8)
    assert np.all(info.eigenvalues <= lam[: info.rank] + 1e-12)


def test_robust_ses_within_their_bound(truncated):
    prob, cov, Rt, ex = truncated
    la = GLSCovariance.from_problem(prob, cov, Rt, method="lanczos", tol=1e-2)
    se_e = np.sqrt(_var(ex.robust_diagonal_blocks, prob))
    se_l = np.sqrt(_var(la.robust_diagonal_blocks, prob))
    bound = _var(np.broadcast_to(la.robust_se_bounds[:, :, None], (prob.K,) + (prob.pmax,) * 2),
                 prob)
    assert 0 < la.bread_error < 1 and 0 < bound.max() < 0.5
    assert np.all(np.abs(se_e - se_l) / se_l <= bound + 1e-10)
    assert np.all(ex.robust_se_bounds == 0) and ex.bread_error == 0


def test_unconverged_warning_names_options_fit_accepts(truncated):
    prob, cov, Rt, _ = truncated
    la = GLSCovariance.from_problem(prob, cov, Rt, method="lanczos", tol=1e-6, max_rank=4)
    with pytest.warns(ConvergenceWarning, match="se_method='exact'.*se_tol"):
        _ = la.diagonal_blocks


def test_lanczos_cost_is_a_few_products_with_M():
    """The cost proxy of 'SEs at about the cost of a fit': products with M (each
    about one pass of a CG iteration of the fit) stay near 100 whatever P."""
    prob, _, _ = _problem(400, 300, 3, seed=8)
    cov = _random_cov(300, 3, 9)
    la = GLSCovariance.from_problem(prob, cov, method="lanczos")
    _ = la.diagonal_blocks
    info = la.eigen_info
    assert info.converged and info.n_matvecs <= 150 < prob.layout.P
    assert la.truncation_bound <= variance_tol(1e-3)


def test_lanczos_memory_is_one_copy_of_the_designs():
    import tracemalloc

    prob, _, _ = _problem(300, 400, 3, seed=10)
    cov = _random_cov(400, 3, 11)
    data = prob.X.nbytes + prob.Yt.nbytes
    tracemalloc.start()
    try:
        _ = GLSCovariance.from_problem(prob, cov, method="lanczos").diagonal_blocks
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 3 * data


# ------------------------------------------------- per-equation, on demand
@pytest.fixture(scope="module")
def fitted():
    Xs, Y, _ = simulate_sur(N=150, K=40, p=3, k=2, seed=12, intercept=True, x_common=0.5)
    return SUR.from_arrays(Xs, Y, rank=2)


def _table_ses(summary):
    return np.concatenate([[row[2] for row in t.rows] for t in summary.tables])


def test_summary_of_a_few_equations_computes_only_those(fitted):
    res = fitted.fit(tol=1e-12)
    s = res.summary(max_equations=3)
    assert "bse" not in vars(res) and "diagonal_blocks" not in vars(res.covariance)
    shown = res.problem.layout.eq < 3
    np.testing.assert_allclose(_table_ses(s), res.bse.to_numpy()[shown], rtol=1e-10)


def test_robust_summary_does_not_solve_every_score(fitted):
    res = fitted.fit(tol=1e-12, cov_type="robust", se_method="lanczos", se_tol=1e-2)
    s = res.summary(max_equations=2)
    assert "factor" not in vars(res.cov_estimator)            # no N solved scores
    shown = res.problem.layout.eq < 2
    # the same bread as the system's: equal up to rounding
    np.testing.assert_allclose(_table_ses(s), res.bse.to_numpy()[shown], rtol=1e-7)
    assert "factor" in vars(res.cov_estimator)


# --------------------------------------------------------------- feedback
def test_progress_is_logged_and_shown_on_request(fitted, caplog, capsys):
    res = fitted.fit(se_method="lanczos", se_verbose=True)
    with caplog.at_level(logging.DEBUG, logger="alsgls"):
        _ = res.bse
    records = [r.getMessage() for r in caplog.records if r.name == "alsgls"]
    assert any("standard errors (lanczos" in m and "bound" in m for m in records)
    assert any("Krylov basis" in m for m in records)
    err = capsys.readouterr().err
    assert "standard errors (lanczos" in err
    quiet = fitted.fit(se_method="lanczos")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ = quiet.bse
    assert capsys.readouterr().err == ""
