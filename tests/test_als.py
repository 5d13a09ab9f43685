"""The ALS solver: exactness, special cases, invariances, agreement with EM."""


import numpy as np
import pytest

from alsgls import (
    IdentificationWarning,
    als_gls,
    em_gls,
    mse,
    nll_per_row,
    simulate_gls,
    simulate_sur,
)
from alsgls.core.als import _BetaBlock, _State
from alsgls.core.problem import build_problem
from alsgls.core.ops import block_jacobi_inverse, design_rmatvec

from . import _oracles as orc

TIGHT = 1e-13


def flat(B):
    return np.concatenate([b.ravel() for b in B])


def sigma(fit):
    return fit.F @ fit.F.T + np.diag(fit.D)


def test_trace_monotone_and_nll_consistent(medium_system):
    Xs, Y, _ = medium_system
    fit = als_gls(Xs, Y, 3)
    assert fit.converged and fit.method == "als"
    # monotone up to round-off of the NLL evaluation (1e-13 relative)
    assert np.all(np.diff(fit.nll_trace) <= 1e-13 * abs(fit.nll))
    R = orc.residuals(Xs, Y, flat(fit.B))
    # reported NLL = dense textbook NLL at the returned parameters
    np.testing.assert_allclose(fit.nll, orc.dense_nll_per_row(R, sigma(fit)), rtol=1e-12)
    np.testing.assert_allclose(fit.nll, nll_per_row(R, fit.F, fit.D), rtol=1e-12)
    assert fit.n_iter == len(fit.nll_trace) - 1 == len(fit.cg_iterations)
    assert len(fit.beta_gap) == fit.n_iter + 1


def test_first_order_conditions_at_fit(medium_system):
    """The dense likelihood's first-order conditions hold at the ALS fit.

    beta: the NLL decrease still available, 1/2 g' A^-1 g / N with the dense
    GLS normal matrix A, is within the solver tolerance (it is what the stopping
    rule certifies).  F, D: the scaled gradients Sigma^-1 (Sigma - S) Sigma^-1 F
    and diag(Sigma - S) / diag(Sigma) are ~sqrt(tol) small (the NLL is flat to
    second order, so a 1e-13 NLL gap pins them to about 1e-6).
    """
    Xs, Y, _ = medium_system
    fit = als_gls(Xs, Y, 3, tol=TIGHT)
    N = Y.shape[0]
    R = orc.residuals(Xs, Y, flat(fit.B))
    S = R.T @ R / N
    Sig = sigma(fit)
    Si = np.linalg.inv(Sig)
    W = R @ Si
    g = np.concatenate([x.T @ W[:, j] for j, x in enumerate(Xs)])
    Z = orc.block_diag_design(Xs)
    A = Z.T @ np.kron(Si, np.eye(N)) @ Z
    assert 0.5 * g @ np.linalg.solve(A, g) / N <= 10 * TIGHT * abs(fit.nll)
    E = Si @ (Sig - S) @ Si
    assert np.linalg.norm(E @ fit.F) <= 1e-5 * np.linalg.norm(Si @ fit.F)
    ok = ~fit.heywood
    assert np.max(np.abs(np.diag(Sig - S)[ok] / np.diag(Sig)[ok])) < 1e-5


@pytest.mark.parametrize("N, K, p, k, seed", [(60, 40, 2, 2, 1), (100, 60, 3, 2, 0)])
def test_polished_beta_meets_its_tolerance(N, K, p, k, seed):
    """At the default tol the returned beta is polished given the returned
    Sigma to POLISH * tol * K per row: the dense decrease still available,
    1/2 g' A^-1 g / N, is below it (measured 3e-4 and 3e-6 of tol * K; the
    assertion fails with the polish skipped: 5.0e-2 and 0.43).  With K
    above the 32-equation sample the polish step is judged on the sample."""
    from alsgls.core.als import POLISH
    Xs, Y, _ = simulate_sur(N=N, K=K, p=p, k=k, seed=seed)
    fit = als_gls(Xs, Y, k)
    assert fit.converged
    R = orc.residuals(Xs, Y, flat(fit.B))
    Si = np.linalg.inv(sigma(fit))
    W = R @ Si
    g = np.concatenate([x.T @ W[:, j] for j, x in enumerate(Xs)])
    Z = orc.block_diag_design(Xs)
    A = Z.T @ np.kron(Si, np.eye(N)) @ Z
    dense = 0.5 * g @ np.linalg.solve(A, g) / N
    assert dense <= POLISH * 1e-10 * K


def test_agrees_with_em(small_system):
    Xs, Y, _ = small_system
    a = als_gls(Xs, Y, 2)
    e = em_gls(Xs, Y, 2, tol=TIGHT)
    assert a.converged and e.converged
    # both at the MLE: NLL to 1e-9 relative (default tol 1e-10 plus EM's own)
    np.testing.assert_allclose(a.nll, e.nll, rtol=1e-9)
    # parameters to 1e-4: the NLL is flat to second order at the optimum, so
    # a 1e-10 NLL tolerance pins parameters to about sqrt(1e-10) * cond
    np.testing.assert_allclose(flat(a.B), flat(e.B), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sigma(a), sigma(e), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.D, e.D, rtol=1e-4)


def test_tight_tolerance_agreement_with_em(medium_system):
    """At tol 1e-13 the NLLs agree to ~1e-12; parameters, on which the NLL
    depends only to second order, to ~sqrt(2 * 1e-13 * |nll| / curvature),
    i.e. a few 1e-6 here: rtol 2e-5 (atol 2e-6 for entries near zero)."""
    Xs, Y, _ = medium_system
    a = als_gls(Xs, Y, 3, tol=TIGHT)
    e = em_gls(Xs, Y, 3, tol=TIGHT)
    np.testing.assert_allclose(a.nll, e.nll, rtol=1e-11)
    np.testing.assert_allclose(flat(a.B), flat(e.B), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(sigma(a), sigma(e), rtol=2e-5, atol=2e-6)


def test_k0_equals_ols(small_system):
    Xs, Y, _ = small_system
    fit = als_gls(Xs, Y, 0)
    # OLS by lstsq (QR) vs normal equations + refinement: rtol 1e-10
    np.testing.assert_allclose(flat(fit.B), orc.ols(Xs, Y), rtol=1e-10, atol=1e-12)
    R = orc.residuals(Xs, Y, orc.ols(Xs, Y))
    np.testing.assert_allclose(fit.D, np.mean(R ** 2, axis=0), rtol=1e-10)
    assert fit.F.shape == (12, 0)


@pytest.mark.filterwarnings("ignore::alsgls.HeywoodWarning")  # k=3 > true rank 2
@pytest.mark.parametrize("k", [1, 3])
def test_identical_designs_give_ols(k):
    Xs, Y, _ = simulate_gls(N=150, K=10, p=3, k=2, seed=3)
    fit = als_gls(Xs, Y, k)
    # Zellner: GLS = OLS for any Sigma when every X_j is the same
    np.testing.assert_allclose(flat(fit.B), orc.ols(Xs, Y), rtol=1e-8, atol=1e-10)


def test_full_rank_equals_iterated_fgls():
    """k = K - 1 is the unrestricted SUR: equal to iterated FGLS (the SUR MLE)."""
    Xs, Y, _ = simulate_sur(N=80, K=4, p=2, k=2, seed=7, x_common=0.3)
    with pytest.warns(IdentificationWarning):
        fit = als_gls(Xs, Y, 3, tol=1e-15)
    beta, Sig = orc.iterated_fgls(Xs, Y)
    # tol 1e-15 (NLL ~ 6, so a 6e-15 gap): parameters to ~1e-7, rtol 1e-6
    np.testing.assert_allclose(fit.nll, orc.dense_nll_per_row(orc.residuals(Xs, Y, beta), Sig),
                               rtol=1e-13)
    np.testing.assert_allclose(flat(fit.B), beta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sigma(fit), Sig, rtol=1e-6, atol=1e-8)


def test_beta_step_with_known_sigma_is_dense_gls(small_system):
    Xs, Y, truth = small_system
    data = build_problem(Xs, Y)
    theta = np.zeros((data.K, data.pmax))
    st = _State(theta=theta, Rt=data.Yt.copy(), F=truth.F, D=truth.D)
    info = _BetaBlock(st, data, block_jacobi_inverse(data.gram), 500).step(1e-26, 0.0)
    assert info.iterations > 3
    beta = np.concatenate([st.theta[j, :p] for j, p in enumerate(data.p)])
    np.testing.assert_allclose(beta, orc.dense_gls(Xs, Y, truth.cov.to_dense()), rtol=1e-8)
    # residuals were tracked through CG without drift
    np.testing.assert_allclose(st.Rt.T, orc.residuals(Xs, Y, beta), atol=1e-10)
    # and so were X'R and G'R, which the next gradient reads instead of passes
    scale = np.abs(design_rmatvec(data.X, data.Yt)).max()
    np.testing.assert_allclose(st.xr, design_rmatvec(data.X, st.Rt), rtol=0, atol=1e-12 * scale)
    F, D, cov, Z = st.z_cache
    assert F is st.F and D is st.D
    np.testing.assert_allclose(Z, cov.G.T @ st.Rt, rtol=0,
                               atol=1e-12 * np.abs(cov.G.T @ data.Yt).max())


def test_scale_invariance(small_system):
    Xs, Y, _ = small_system
    a = als_gls(Xs, Y, 2, tol=TIGHT)
    s = 7.5
    b = als_gls(Xs, s * Y, 2, tol=TIGHT)
    np.testing.assert_allclose(flat(b.B), s * flat(a.B), rtol=1e-7)
    np.testing.assert_allclose(b.D, s ** 2 * a.D, rtol=1e-7)
    np.testing.assert_allclose(sigma(b), s ** 2 * sigma(a), rtol=1e-7, atol=1e-9)
    # canonical rotation; F is pinned to about 5e-9 of its largest entry at this
    # tol (measured before and after the fused beta-step), so the absolute
    # tolerance is relative to that entry, not 1e-8 in the data's units
    np.testing.assert_allclose(b.F, s * a.F, rtol=1e-6, atol=1e-8 * np.abs(b.F).max())


def test_permutation_equivariance(small_system):
    Xs, Y, _ = small_system
    perm = np.random.default_rng(0).permutation(len(Xs))
    a = als_gls(Xs, Y, 2, tol=TIGHT)
    b = als_gls([Xs[j] for j in perm], Y[:, perm], 2, tol=TIGHT)
    np.testing.assert_allclose(flat(b.B), flat([a.B[j] for j in perm]), rtol=1e-7)
    np.testing.assert_allclose(sigma(b), sigma(a)[np.ix_(perm, perm)], rtol=1e-7, atol=1e-9)


def test_rotation_leaves_nll_unchanged(small_system, rng):
    Xs, Y, _ = small_system
    fit = als_gls(Xs, Y, 2)
    Q, _ = np.linalg.qr(rng.standard_normal((2, 2)))
    R = orc.residuals(Xs, Y, flat(fit.B))
    np.testing.assert_allclose(nll_per_row(R, fit.F @ Q, fit.D), fit.nll, rtol=1e-13)


def test_inputs_not_modified_and_dtypes(small_system):
    Xs, Y, _ = small_system
    Xs_copy, Y_copy = [x.copy() for x in Xs], Y.copy()
    als_gls(Xs, Y, 2)
    em_gls(Xs, Y, 2)
    assert all(np.array_equal(a, b) for a, b in zip(Xs, Xs_copy)) and np.array_equal(Y, Y_copy)
    f64 = als_gls([x.astype(np.float32) for x in Xs], Y.astype(np.float32), 2)
    ref = als_gls([x.astype(np.float32).astype(float) for x in Xs],
                  Y.astype(np.float32).astype(float), 2)
    np.testing.assert_allclose(flat(f64.B), flat(ref.B), rtol=1e-12)


def test_integer_and_3d_inputs():
    rng = np.random.default_rng(2)
    Xi = rng.integers(-5, 6, size=(6, 100, 2))
    Y = rng.integers(-20, 20, size=(100, 6))
    a = als_gls(Xi, Y, 1)
    b = als_gls([Xi[j] for j in range(6)], Y.astype(float), 1)
    np.testing.assert_allclose(flat(a.B), flat(b.B), rtol=1e-12)


def test_unequal_widths(rng):
    N, ps = 150, [1, 4, 2, 3, 2, 1, 3]
    Xs = [rng.standard_normal((N, p)) for p in ps]
    B = [rng.standard_normal(p) for p in ps]
    F = rng.standard_normal((7, 1))
    Y = np.column_stack([x @ b for x, b in zip(Xs, B)]) + rng.standard_normal((N, 1)) @ F.T \
        + 0.5 * rng.standard_normal((N, 7))
    a = als_gls(Xs, Y, 1, tol=TIGHT)
    e = em_gls(Xs, Y, 1, tol=TIGHT)
    assert [b.shape for b in a.B] == [(p, 1) for p in ps]
    np.testing.assert_allclose(a.nll, e.nll, rtol=1e-11)
    np.testing.assert_allclose(flat(a.B), flat(e.B), rtol=2e-5, atol=2e-6)  # see tight test


def test_gls_beats_ols_and_ridge_out_of_sample():
    """With strong factors, GLS coefficients estimate B and predict the mean of
    fresh rows far better than per-equation OLS or ridge (ridge penalty tuned
    on the truth itself, the most favourable choice for it)."""
    Xs, Y, truth = simulate_sur(N=60, K=80, p=4, k=2, seed=21, factor_strength=2.0)
    fit = als_gls(Xs, Y, 2)
    b_true = flat(truth.B)
    rng = np.random.default_rng(0)
    Xt = [rng.standard_normal((500, 4)) for _ in range(80)]
    mean_true = np.column_stack([x @ b for x, b in zip(Xt, truth.B)])

    def pred(beta):
        return np.column_stack([x @ b for x, b in zip(Xt, np.split(beta, 80))])

    def ridge(lam):
        return np.concatenate([np.linalg.solve(x.T @ x + lam * np.eye(4), x.T @ Y[:, j])
                               for j, x in enumerate(Xs)])

    b_ridge = min((ridge(lam) for lam in np.logspace(-2, 3, 26)),
                  key=lambda b: np.sum((b - b_true) ** 2))
    err_gls = mse(mean_true, pred(flat(fit.B)))
    assert err_gls < 0.5 * mse(mean_true, pred(orc.ols(Xs, Y)))
    assert err_gls < 0.5 * mse(mean_true, pred(b_ridge))
    assert np.sum((flat(fit.B) - b_true) ** 2) < 0.5 * np.sum((b_ridge - b_true) ** 2)


@pytest.mark.parametrize("N,K,k", [(60, 300, 2), (400, 150, 5), (2000, 30, 1)])
def test_stability_across_sizes(N, K, k):
    Xs, Y, truth = simulate_sur(N=N, K=K, p=2, k=k, seed=N + K)
    fit = als_gls(Xs, Y, k)
    assert fit.converged
    assert np.all(np.diff(fit.nll_trace) <= 1e-13 * abs(fit.nll))
    assert np.all(np.isfinite(fit.F)) and np.all(fit.D > 0)


def test_convergence_warning(medium_system):
    from alsgls import ConvergenceWarning

    Xs, Y, _ = medium_system
    with pytest.warns(ConvergenceWarning, match="sweeps"):
        fit = als_gls(Xs, Y, 3, max_sweeps=1)
    assert not fit.converged


def test_many_factors_stop_within_tol_after_eigen_catch_up():
    """N=1000, K=300, p=2, k=8: a late factor step finds its loose, unverified
    eigenpairs too inexact (their profile value above the NLL now), solves
    them tightly and so gains far more than a sweep's rate would; the
    stopping rule must not extrapolate from that jump (before this was
    handled, the fit stopped 8.6 tol*K above the optimum, now 0.2).  The
    promise checked: within tol*K per row of a tol=1e-14 run."""
    Xs, Y, _ = simulate_sur(N=1000, K=300, p=2, k=8, seed=1)
    fit = als_gls(Xs, Y, 8)
    ref = als_gls(Xs, Y, 8, tol=1e-14, max_iter=2000)
    assert fit.converged and ref.converged
    assert fit.nll - ref.nll <= 1e-10 * 300
    assert np.all(np.diff(fit.nll_trace) <= 1e-13 * abs(fit.nll))
