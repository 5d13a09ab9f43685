"""ops.py against dense textbook algebra (same mathematics two ways: rtol 1e-10)."""

import numpy as np
import pytest

from alsgls import BlockDesignOperator, GLSNormalOperator, LowRankCovariance, pcg
from alsgls.core.problem import build_problem
from alsgls.core.ops import apply_block, block_jacobi_inverse, gls_gradient, normal_matvec

from ._oracles import block_diag_design, dense_nll_per_row


@pytest.fixture
def cov(rng):
    K, k = 15, 3
    return LowRankCovariance(rng.standard_normal((K, k)), rng.uniform(0.5, 2.0, K))


def test_woodbury_solve_logdet_diag(cov, rng):
    S = cov.to_dense()
    V = rng.standard_normal((cov.K, 4))
    # Woodbury vs dense solve: well conditioned (cond(S) < 1e3), rtol 1e-10
    np.testing.assert_allclose(cov.solve(V), np.linalg.solve(S, V), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov.solve(V[:, 0]), np.linalg.solve(S, V[:, 0]), rtol=1e-10)
    np.testing.assert_allclose(cov.logdet, np.linalg.slogdet(S)[1], rtol=1e-12)
    np.testing.assert_allclose(cov.inverse_diagonal, np.diag(np.linalg.inv(S)), rtol=1e-10)
    np.testing.assert_allclose(cov.inverse_to_dense(), np.linalg.inv(S), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov.matvec(V), S @ V, rtol=1e-12)
    np.testing.assert_allclose(cov.diagonal, np.diag(S), rtol=1e-12)


def test_nll_matches_dense(cov, rng):
    R = rng.standard_normal((40, cov.K))
    np.testing.assert_allclose(cov.nll_per_row(R.T.copy()), dense_nll_per_row(R, cov.to_dense()),
                               rtol=1e-12)


def test_zero_rank_and_bad_arguments():
    c = LowRankCovariance(np.zeros((3, 0)), np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(c.logdet, np.log(8.0))
    with pytest.raises(ValueError, match="strictly positive"):
        LowRankCovariance(np.zeros((2, 1)), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="F must be"):
        LowRankCovariance(np.zeros((3, 1)), np.ones(2))


def _system(rng, K=5, N=30, ps=(2, 3, 1, 2, 3)):
    Xs = [rng.standard_normal((N, p)) for p in ps]
    Y = rng.standard_normal((N, K))
    data = build_problem(Xs, Y)
    return Xs, Y, data, data.gram


def test_design_operator_matches_dense_and_adjoint(rng):
    Xs, Y, data, _ = _system(rng)
    op = BlockDesignOperator(data.X, data.p)
    Z = block_diag_design(Xs)
    v = rng.standard_normal(op.shape[1])
    w = rng.standard_normal(op.shape[0])
    np.testing.assert_allclose(op.matvec(v), Z @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(w), Z.T @ w, rtol=1e-12, atol=1e-12)
    # adjoint identity <Zv, w> = <v, Z'w>
    np.testing.assert_allclose(np.dot(op.matvec(v), w), np.dot(v, op.rmatvec(w)), rtol=1e-12)


def test_normal_operator_matches_dense(rng, cov):
    Xs, Y, data, _ = _system(rng)
    c = LowRankCovariance(cov.F[:5], cov.D[:5])
    A = GLSNormalOperator(data.X, data.p, c)
    Z = block_diag_design(Xs)
    A_dense = Z.T @ np.kron(np.linalg.inv(c.to_dense()), np.eye(30)) @ Z
    v = rng.standard_normal(A.shape[1])
    np.testing.assert_allclose(A.matvec(v), A_dense @ v, rtol=1e-10, atol=1e-12)


def test_pcg_solves_normal_equations(rng, cov):
    Xs, Y, data, gram = _system(rng)
    c = LowRankCovariance(cov.F[:5], cov.D[:5])
    Z = block_diag_design(Xs)
    A_dense = Z.T @ np.kron(np.linalg.inv(c.to_dense()), np.eye(30)) @ Z
    b = rng.standard_normal(A_dense.shape[0])
    op = GLSNormalOperator(data.X, data.p, c)
    theta0 = np.zeros((5, data.pmax))
    r0 = np.zeros_like(theta0)
    r0[op.layout.eq, op.layout.col] = b
    Minv = block_jacobi_inverse(gram)
    theta, info = pcg(lambda v: normal_matvec(data.X, c, v),
                      lambda r: apply_block(Minv, c.inverse_diagonal, r),
                      theta0, r0, 1e-24, 100)
    assert info.converged and info.iterations <= 14  # P = 11 unknowns (+ round-off)
    np.testing.assert_allclose(theta[op.layout.eq, op.layout.col], np.linalg.solve(A_dense, b), rtol=1e-8)
    assert np.all(theta[~data.mask] == 0)  # padded coefficients never move
    # exact quadratic decrease: 1/2 b'A^-1 b from zero
    np.testing.assert_allclose(info.decrease, 0.5 * b @ np.linalg.solve(A_dense, b), rtol=1e-10)


def test_gls_gradient_matches_dense(rng, cov):
    Xs, Y, data, _ = _system(rng)
    c = LowRankCovariance(cov.F[:5], cov.D[:5])
    Z = block_diag_design(Xs)
    R = rng.standard_normal((30, 5))
    dense = Z.T @ np.kron(np.linalg.inv(c.to_dense()), np.eye(30)) @ R.T.ravel()
    g = gls_gradient(data.X, c, R.T.copy())
    op = BlockDesignOperator(data.X, data.p)
    np.testing.assert_allclose(g[op.layout.eq, op.layout.col], dense, rtol=1e-10, atol=1e-12)
    assert np.all(g[~data.mask] == 0)


def test_nll_rows_is_the_dense_gaussian_log_density(rng):
    """Per-row NLL against scipy's dense multivariate normal; it sums to
    nll_per_row times N."""
    from scipy.stats import multivariate_normal

    F, D = rng.standard_normal((6, 2)), rng.uniform(0.5, 2.0, 6)
    cov = LowRankCovariance(F, D)
    Rt = rng.standard_normal((6, 40))
    dense = -multivariate_normal(np.zeros(6), cov.to_dense()).logpdf(Rt.T)
    np.testing.assert_allclose(cov.nll_rows(Rt), dense, rtol=1e-12)
    np.testing.assert_allclose(cov.nll_rows(Rt).sum(), 40 * cov.nll_per_row(Rt), rtol=1e-12)


def test_shared_design_kernels_equal_the_stacked_ones(rng, cov):
    """A design shared by every equation (a zero-stride view) takes GEMM fast
    paths; they equal the stacked products on a materialised copy."""
    from alsgls.core.ops import design_matvec, design_rmatvec

    K, N, p = cov.K, 30, 3
    X0 = rng.standard_normal((N, p))
    shared = np.broadcast_to(X0, (K, N, p))
    full = np.ascontiguousarray(shared)
    theta, W = rng.standard_normal((K, p)), rng.standard_normal((K, N))
    gram = full.transpose(0, 2, 1) @ full
    np.testing.assert_allclose(design_matvec(shared, theta), design_matvec(full, theta),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(design_rmatvec(shared, W), design_rmatvec(full, W),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gls_gradient(shared, cov, W), gls_gradient(full, cov, W),
                               rtol=1e-12, atol=1e-12)
    for a, b in zip(normal_matvec(shared, cov, theta), normal_matvec(full, cov, theta)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # the workspace path (in-place BLAS) equals the allocating one and the Gram form
    for X in (shared, full):
        work = (np.empty((K, N)), np.empty((K, N)))
        Av, U = normal_matvec(X, cov, theta, work)
        assert U is work[0]
        np.testing.assert_allclose(U, design_matvec(full, theta), rtol=1e-12, atol=1e-12)
        dense = (gram @ theta[:, :, None])[:, :, 0] / cov.D[:, None] - np.einsum(
            "kpn,nl,kl->kp", full.transpose(0, 2, 1), (cov.G.T @ U).T, cov.G)
        np.testing.assert_allclose(Av, dense, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gls_gradient(X, cov, W, work[1]), gls_gradient(full, cov, W),
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov.solve(W, out=np.empty((K, N))), cov.solve(W),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("strength", [30.0, 3.0, 1.2])
def test_top_eigenpairs_meet_rtol_verified_or_predicted(strength):
    """Oracle: numpy's dense eigh of W W'.  With a warm start near the answer
    the iteration may end on predicted accuracy (``predicted_rtol``); the
    returned pairs must still meet ``rtol`` -- for strong factors (large gap
    ratio: prediction used) and weak ones (prediction refused, verified)."""
    from alsgls.core.ops import top_eigenpairs

    rng = np.random.default_rng(7)
    K, N, k = 300, 200, 3
    L = rng.standard_normal((K, k)) * np.sqrt(strength / K) * np.array([3.0, 2.0, 1.0])
    Rt = L @ rng.standard_normal((k, N)) * np.sqrt(N) + rng.standard_normal((K, N))
    scale = 1.0 / np.sqrt(N * rng.uniform(0.8, 1.2, K))
    W = scale[:, None] * Rt
    ev, E = np.linalg.eigh(W @ W.T)
    ev, E = ev[::-1][:k], E[:, ::-1][:, :k]
    # a warm start: the exact basis at another scale (D moved by up to 30%)
    _, _, basis, _ = top_eigenpairs(Rt, scale * rng.uniform(0.7, 1.3, K), k, basis=None,
                                    rng=rng, maxiter=200, rtol=1e-12)
    saved = 0
    for rtol in (1e-3, 1e-4, 1e-5):
        lam, U, _, it = top_eigenpairs(Rt, scale, k, basis=basis.copy(), rng=rng,
                                       maxiter=200, rtol=rtol, predicted_rtol=1e-5)
        res = np.linalg.norm(W @ (W.T @ U) - U * lam, axis=0)
        assert np.all(res <= rtol * max(ev[0], 1.0)), (rtol, it, res)
        np.testing.assert_allclose(lam, ev, rtol=10 * rtol)
        verified = top_eigenpairs(Rt, scale, k, basis=basis.copy(), rng=rng, maxiter=200,
                                  rtol=rtol)[3]
        saved += verified - it
    assert saved >= 1        # the prediction ended some solve an iteration early
