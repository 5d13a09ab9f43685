"""The fused kernels of the ALS beta-step and the cheaper boundary checks,
each against a dense textbook reference or the route it replaced.

What is checked, and against what:

* ``split_normal_matvec``, ``curvature`` (with and without workspaces): the GLS normal
  operator ``A = X' (Sigma^-1 kron I_N) X`` formed densely (block-diagonal X,
  Kronecker product), uniform and ragged (zero-padded) designs; their
  by-products against ``X v``, ``G' X v`` and ``X_j'X_j v_j`` formed directly.
* ``pcg`` / ``gls_pcg`` with a curvature callable: the first CG step computed
  densely (``alpha = r'M^-1 r / z'Az``), the ordinary ``pcg`` with
  ``maxiter=1`` and the exact change of the quadratic objective.
* ``gls_gradient`` with ``xr`` and ``Z``: the plain call and dense
  ``X' (Sigma^-1 kron I_N) vec(R)``.
* ``_predicted_pairs``: orthonormality and the old route (SVD of
  ``W orth(W'V)``); its QR fallback against the Gram route written out here.
* ``_State``: its caches' keys and invalidation, its NLL against the dense
  Gaussian NLL, the rotated NLL against an evaluation at the rotated loadings.
* ``Problem.ols(moments=True)``: the moments against ``X'r`` formed from the
  residuals; ``Problem.exact_fits``'s fast path against the full threshold.
* ``build_problem`` on 3-D designs: the refusals and the agreement with the
  list input; ``block_jacobi_inverse`` against ``np.linalg.inv``;
  ``CoefficientLayout.unpad``.
* ``als_gls`` with and without the single-step beta-steps: the same optimum.
* ``_moved_variances`` against a pass over the moved residuals; the factor
  step's NLL with deliberately inexact eigenpairs (never increases, and is
  the NLL of the state's point); ``Problem.xty`` and ``mean_squares`` from
  the Gram loop against the plain route.

Tolerances: the systems are small and well conditioned (cond(Sigma) and the
scaled condition of each design below about 1e2), so two float64 evaluations
of the same algebra in different orders agree to about 1e2 * eps * cond; the
comparisons use 1e-10 relative (or relative to the norm of the result) unless a
comment says otherwise.
"""

import numpy as np
import pytest

import alsgls
from alsgls.core import als, ops
from alsgls.core import problem as problem_mod
from alsgls.core.als_factor import _State
from alsgls.core.ops import CoefficientLayout, LowRankCovariance
from alsgls.core.problem import build_problem

from ._oracles import block_diag_design, dense_nll_per_row

EPS = np.finfo(float).eps
#: same algebra in two orders, well conditioned (see the module docstring)
RTOL = 1e-10


# ----------------------------------------------------------------------------------
# helpers: a small SUR system and its dense GLS normal matrix
# ----------------------------------------------------------------------------------

def _system(seed, ps=(3, 3, 3, 3, 3), N=40, k=2):
    """Designs, responses, Problem, covariance and the dense GLS normal matrix."""
    rng = np.random.default_rng(seed)
    K = len(ps)
    Xs = [rng.standard_normal((N, p)) for p in ps]
    Y = rng.standard_normal((N, K))
    prob = build_problem(Xs, Y)
    cov = LowRankCovariance(rng.standard_normal((K, k)), rng.uniform(0.5, 2.0, K))
    Sinv = np.linalg.inv(cov.to_dense())
    Zd = block_diag_design(Xs)                       # NK x P, equation by equation
    A = Zd.T @ np.kron(Sinv, np.eye(N)) @ Zd         # textbook GLS normal matrix
    return rng, Xs, Y, prob, cov, Sinv, Zd, A


def _random_v(rng, prob):
    """A (K, pmax) direction, zero on padded coordinates."""
    return rng.standard_normal((prob.K, prob.pmax)) * prob.mask


def _dense_U(Xs, V):
    return np.array([x @ V[j, : x.shape[1]] for j, x in enumerate(Xs)])


def _dense_gram_v(Xs, V, pmax):
    out = np.zeros((len(Xs), pmax))
    for j, x in enumerate(Xs):
        out[j, : x.shape[1]] = x.T @ x @ V[j, : x.shape[1]]
    return out


def _close(a, b, rtol=RTOL):
    """allclose relative to the norm of the reference (entries can be near zero)."""
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(np.linalg.norm(b), 1e-300))


SHAPES = {"uniform": (3, 3, 3, 3, 3), "ragged": (3, 1, 2, 3, 2)}


# ----------------------------------------------------------------------------------
# 1-2. the split operator and the curvature
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_split_normal_matvec_matches_dense_operator(shape):
    """A v and its by-products U, G'U, X_j'X_j v_j against dense algebra."""
    rng, Xs, _, prob, cov, Sinv, _, A = _system(1, SHAPES[shape])
    V = _random_v(rng, prob)
    work = ops.workspace((prob.K, prob.N))
    Av, (U, Zv, Gv) = ops.split_normal_matvec(prob.X, cov, V, prob.gram, work)

    lay = prob.layout
    dense = A @ lay.flatten(V)
    _close(lay.flatten(Av), dense)
    assert np.all(Av[~prob.mask] == 0)                  # padding: zero exactly
    _close(Av, ops.normal_matvec(prob.X, cov, V)[0])    # the unsplit operator

    # G is what Woodbury says (Sigma^-1 = D^-1 - G G'), so G'U is checked
    _close(np.diag(1 / cov.D) - cov.G @ cov.G.T, Sinv)
    _close(U, _dense_U(Xs, V))
    _close(Zv, cov.G.T @ _dense_U(Xs, V))
    _close(Gv, _dense_gram_v(Xs, V, prob.pmax))


@pytest.mark.parametrize("shape", SHAPES)
def test_curvature_is_vAv_of_dense_operator(shape):
    """curvature with and without workspaces: v'Av against the dense quadratic form."""
    rng, Xs, _, prob, cov, Sinv, _, A = _system(2, SHAPES[shape])
    V = _random_v(rng, prob)
    v = prob.layout.flatten(V)
    vav = float(v @ A @ v)
    work = ops.workspace((prob.K, prob.N))
    s_vav, (U, Zv, Gv) = ops.curvature(prob.X, cov, V, prob.gram, work)
    c_vav, (cU, cZv, cGv) = ops.curvature(prob.X, cov, V, prob.gram)
    # v'Av is a sum of positive and negative parts, v'Av > 0 bounded away from the
    # cancellation (cond(Sigma) ~ 1e1): relative 1e-10
    np.testing.assert_allclose(s_vav, vav, rtol=RTOL)
    np.testing.assert_allclose(c_vav, vav, rtol=RTOL)
    Av_ref = A @ v
    np.testing.assert_allclose(np.vdot(v, Av_ref), vav, rtol=1e-12)
    _close(U, _dense_U(Xs, V))
    _close(cU, _dense_U(Xs, V))
    _close(Zv, cov.G.T @ _dense_U(Xs, V))
    _close(cZv, Zv)
    _close(Gv, _dense_gram_v(Xs, V, prob.pmax))
    _close(cGv, Gv)
    # and A v completed from either's by-products is the dense A v
    _close(prob.layout.flatten(ops.complete_normal(prob.X, cov, V, (U, Zv, Gv))), Av_ref)
    _close(prob.layout.flatten(ops.complete_normal(prob.X, cov, V, (cU, cZv, cGv))), Av_ref)
    # a design shared by every equation (a zero-stride view): the same operator
    Xb = np.broadcast_to(prob.X[:1], prob.X.shape)
    Xsb = [prob.X[0, :, : prob.p[j]] if prob.p[j] == prob.pmax else None for j in range(prob.K)]
    if all(x is not None for x in Xsb):
        Ub = _dense_U(Xsb, V)
        A_b = block_diag_design(Xsb).T @ np.kron(Sinv, np.eye(prob.N)) @ block_diag_design(Xsb)
        Avb = ops.complete_normal(Xb, cov, V, (Ub, cov.G.T @ Ub, _dense_gram_v(Xsb, V, prob.pmax)))
        _close(prob.layout.flatten(Avb), A_b @ prob.layout.flatten(V))


# ----------------------------------------------------------------------------------
# 3. one CG step from the curvature
# ----------------------------------------------------------------------------------

def _first_step_dense(prob, Sinv, Zd, A, Rt, theta):
    """Textbook first PCG step: M = blockdiag((Sigma^-1)_jj X_j'X_j)."""
    lay = prob.layout
    Om = np.kron(Sinv, np.eye(prob.N))
    r = Zd.T @ Om @ Rt.ravel()
    blocks = [Sinv[j, j] * prob.gram[j, : p, : p] for j, p in enumerate(prob.p)]
    M = np.zeros((lay.P, lay.P))
    c = 0
    for b in blocks:
        M[c:c + b.shape[0], c:c + b.shape[0]] = b
        c += b.shape[0]
    z = np.linalg.solve(M, r)
    rz = r @ z
    alpha = rz / (z @ A @ z)
    return lay.flatten(theta) + alpha * z, 0.5 * rz, 0.5 * alpha * rz, alpha


@pytest.mark.parametrize("shape", SHAPES)
def test_single_step_pcg_is_first_cg_step(shape):
    """pcg with a curvature: exactly the first CG step, gap unknown after it."""
    _, Xs, Y, prob, cov, Sinv, Zd, A = _system(3, SHAPES[shape])
    theta0, Rt0 = prob.ols()
    X, gram, gram_inv = prob.X, prob.gram, prob.gram_inv
    r = ops.gls_gradient(X, cov, Rt0)
    lay = prob.layout
    th_ref, start_ref, dec_ref, alpha_ref = _first_step_dense(prob, Sinv, Zd, A, Rt0, theta0)
    _close(lay.flatten(r), Zd.T @ np.kron(Sinv, np.eye(prob.N)) @ Rt0.ravel())

    # the ordinary PCG stopped after one step
    th1, info1 = ops.gls_pcg(X, gram, gram_inv, cov, theta0, r, 0.0, 1)
    assert info1.iterations == 1 and np.isfinite(info1.final_gap)

    steps = []

    def on_step(alpha, d, aux):
        steps.append((alpha, tuple(a.copy() for a in aux)))

    work = ops.workspace((prob.K, prob.N))
    scale = cov.inverse_diagonal
    ths, infos = ops.pcg(lambda v: ops.split_normal_matvec(X, cov, v, gram, work),
                         lambda g: ops.apply_block(gram_inv, scale, g), theta0, r, 0.0, 50,
                         on_step, curvature=lambda v: ops.curvature(X, cov, v, gram, work))
    assert infos.iterations == 1
    assert np.isnan(infos.final_gap) and infos.converged is False
    _close(ths, th1)
    _close(lay.flatten(ths), th_ref)
    np.testing.assert_allclose(infos.start_gap, start_ref, rtol=RTOL)
    np.testing.assert_allclose(infos.start_gap, info1.start_gap, rtol=1e-13)
    np.testing.assert_allclose(infos.decrease, info1.decrease, rtol=RTOL)
    np.testing.assert_allclose(infos.decrease, dec_ref, rtol=RTOL)
    assert np.all(ths[~prob.mask] == 0)

    # on_step received the step and the by-products along d: U moves the residuals
    # to those of the new theta, Gv moves X'R, Zv moves G'R
    assert len(steps) == 1
    alpha, (U, Zv, Gv) = steps[0]
    np.testing.assert_allclose(alpha, alpha_ref, rtol=RTOL)
    Rt1 = prob.Yt - ops.design_matvec(X, ths)
    _close(Rt0 - alpha * U, Rt1)
    _close(ops.design_rmatvec(X, Rt0) - alpha * Gv, ops.design_rmatvec(X, Rt1))
    _close(cov.G.T @ Rt0 - alpha * Zv, cov.G.T @ Rt1)

    # the decrease is the exact change of the NLL (total, Sigma fixed); the
    # difference of two totals ~1e3 loses ~log10(total / decrease) digits: 1e-8
    R0, R1 = Rt0.T, Rt1.T
    drop = prob.N * (dense_nll_per_row(R0, cov.to_dense()) - dense_nll_per_row(R1, cov.to_dense()))
    np.testing.assert_allclose(infos.decrease, drop, rtol=1e-8)

    # gls_pcg(single=True) at K <= GAP_SAMPLE: the gap after the first step is
    # computed exactly (A v completed), so CG goes on as the full solve does
    th_full, info_full = ops.gls_pcg(X, gram, gram_inv, cov, theta0, r, 0.0, 50)
    for split in (True, False):
        thc, infoc = ops.gls_pcg(X, gram, gram_inv, cov, theta0, r, 0.0, 50, None, None,
                                 ops.workspace((prob.K, prob.N)) if split else None,
                                 split=split, single=True)
        assert infoc.iterations == info_full.iterations
        _close(thc, th_full)

    # pcg itself never forms A v when given a curvature
    def no_A(v):
        raise AssertionError("A v formed")

    thp, infop = ops.pcg(no_A, lambda g: ops.apply_block(gram_inv, scale, g), theta0, r,
                         0.0, 50, curvature=lambda v: ops.curvature(X, cov, v, gram))
    assert infop.iterations == 1
    _close(thp, th1)
    np.testing.assert_allclose(infop.decrease, info1.decrease, rtol=RTOL)


def test_sampled_gap_is_the_gap_after_one_step_when_every_equation_is_sampled(monkeypatch):
    """sampled_gap with every equation in the sample: the exact gap the first
    CG step leaves (the ordinary PCG's final gap after one step); None at
    K <= GAP_SAMPLE."""
    Xs, Y, _ = alsgls.simulate_sur(80, 40, 3, 2, seed=5)
    prob = build_problem(Xs, Y)
    rng = np.random.default_rng(5)
    cov = ops.LowRankCovariance(rng.standard_normal((40, 2)), rng.uniform(0.5, 2.0, 40))
    theta0, Rt0 = prob.ols()
    X, gram, gram_inv = prob.X, prob.gram, prob.gram_inv
    r = ops.gls_gradient(X, cov, Rt0)
    _, info1 = ops.gls_pcg(X, gram, gram_inv, cov, theta0, r, 0.0, 1)
    d = ops.apply_block(gram_inv, cov.inverse_diagonal, r)
    vav, aux = ops.curvature(X, cov, d, gram)
    alpha = float(np.vdot(r, d)) / vav
    monkeypatch.setattr(ops, "GAP_SAMPLE", 39)           # stride 1: all 40 equations
    # the two gaps come from the same algebra in different orders: 1e-10
    np.testing.assert_allclose(ops.sampled_gap(X, cov, gram_inv, alpha, aux, r),
                               info1.final_gap, rtol=1e-10)
    monkeypatch.setattr(ops, "GAP_SAMPLE", 40)
    assert ops.sampled_gap(X, cov, gram_inv, alpha, aux, r) is None


def test_single_step_pcg_takes_no_step_within_tolerance():
    """Start gap at or below gap_tol (or maxiter 0): no step, theta unchanged."""
    _, _, _, prob, cov, _, _, _ = _system(4, SHAPES["ragged"])
    theta0, Rt0 = prob.ols()
    r = ops.gls_gradient(prob.X, cov, Rt0)
    calls = []
    args = (prob.X, prob.gram, prob.gram_inv, cov, theta0, r)
    _, info = ops.gls_pcg(*args, 0.0, 1)
    for gap_tol, maxiter in ((info.start_gap, 5), (2 * info.start_gap, 5), (0.0, 0)):
        th, inf = ops.gls_pcg(*args, gap_tol, maxiter, lambda a, u: calls.append(a), None,
                              ops.workspace((prob.K, prob.N)), split=True, single=True)
        assert inf.iterations == 0 and inf.decrease == 0.0 and not calls
        assert inf.start_gap == info.start_gap
        np.testing.assert_array_equal(th, theta0)
        assert th is not theta0
    # a gap just above the tolerance: one step
    _, inf = ops.gls_pcg(*args, 0.99 * info.start_gap, 5, split=True, single=True)
    assert inf.iterations == 1


# ----------------------------------------------------------------------------------
# 4. the gradient from known moments
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_gls_gradient_from_moments(shape):
    """g = xr / D - X'(G Z) equals the plain gradient and dense X' Sigma^-1 r."""
    rng, _, _, prob, cov, Sinv, Zd, _ = _system(5, SHAPES[shape])
    Rt = rng.standard_normal((prob.K, prob.N))
    dense = Zd.T @ np.kron(Sinv, np.eye(prob.N)) @ Rt.ravel()
    xr = ops.design_rmatvec(prob.X, Rt)
    Z = cov.G.T @ Rt
    plain = ops.gls_gradient(prob.X, cov, Rt)
    fused = ops.gls_gradient(prob.X, cov, Rt, np.empty((prob.K, prob.N)), xr=xr, Z=Z)
    fused_noz = ops.gls_gradient(prob.X, cov, Rt, xr=xr)
    _close(fused, plain)
    _close(fused_noz, plain)
    _close(prob.layout.flatten(fused), dense)
    assert np.all(fused[~prob.mask] == 0)
    # the moments are really used: other moments, another gradient
    assert not np.allclose(ops.gls_gradient(prob.X, cov, Rt, xr=2 * xr, Z=Z), plain)


# ----------------------------------------------------------------------------------
# 5. predicted Ritz pairs
# ----------------------------------------------------------------------------------

def _pairs_problem(seed, top, pert, K=40, N=60, b=6, rank=None):
    """W (K, N) whose top b singular values are ``top`` (the rest below them),
    V (K, b) an orthonormal basis of their left singular vectors perturbed by
    ``pert`` (``pert=None``: a random basis, all of ``top`` the spectrum), and
    the products of one subspace iteration as top_eigenpairs forms them."""
    rng = np.random.default_rng(seed)
    m = min(K, N) if rank is None else rank
    Uw, _ = np.linalg.qr(rng.standard_normal((K, K)))
    Vw, _ = np.linalg.qr(rng.standard_normal((N, m)))
    sig = np.concatenate([top, top[-1] * np.linspace(0.8, 0.1, m - len(top))])
    W = (Uw[:, :m] * sig) @ Vw.T
    if pert is None:
        V, _ = np.linalg.qr(rng.standard_normal((K, b)))
    else:
        Rb, _ = np.linalg.qr(rng.standard_normal((b, b)))
        V, _ = np.linalg.qr(Uw[:, :b] @ Rb + pert * rng.standard_normal((K, b)))
    T = W.T @ V
    lam, S = np.linalg.eigh(V.T @ W @ W.T @ V)
    lam, S = lam[::-1], S[:, ::-1]
    Z = W @ W.T @ V @ S
    return W, V, T, S, Z, lam, Uw


def _svd_route(W, V):
    """The old route: Ritz pairs from the SVD of W Q, Q = orth(W'V)."""
    Q, _ = np.linalg.qr(W.T @ V)
    U, sv, _ = np.linalg.svd(W @ Q, full_matrices=False)
    return sv ** 2, U


def _gram_route(Z, lam):
    """The Gram route written out: SVD of Y = Z lam^-1/2 by eigh(Y'Y)."""
    Y = Z / np.sqrt(lam)
    s2, E = np.linalg.eigh(Y.T @ Y)
    s2, E = s2[::-1], E[:, ::-1]
    return s2, Y @ (E / np.sqrt(s2))


def _assert_same_pairs(got, ref, lam):
    """Values and (sign-aligned) vectors.  A route through a b x b Gram matrix
    resolves pair i to about eps * lam_1 / lam_i (its condition relative to that
    pair), the others to eps: 1e3 * eps * lam_1 / lam_i allows for b, K and the
    gaps (the errors measured here are at most 1e-2 of it)."""
    vals, U = got
    rvals, rU = ref
    assert U.shape == rU.shape
    tol = 1e3 * EPS * lam[0] / np.maximum(lam, 1e-300)
    np.testing.assert_array_less(np.abs(vals - rvals), tol * np.abs(rvals))
    sign = np.sign(np.einsum("ki,ki->i", U, rU))
    err = np.linalg.norm(U * sign - rU, axis=0)
    np.testing.assert_array_less(err, tol)


SPREADS = {
    # V near an invariant subspace: lam spans ~25, ~1e6 (Gram route), ~1e10 (QR)
    "moderate": (np.geomspace(1.0, 0.2, 6), 0.3, "gram", 40),
    "wide": (np.geomspace(1.0, 1e-3, 6), 1e-4, "gram", 40),
    "beyond_1e8": (np.geomspace(1.0, 1e-5, 6), 1e-6, "qr", 40),
    # a random 6-dimensional V in K = 8 dimensions (far from invariant):
    # interlacing keeps lam_6 within the spectrum's last three values
    "random_gram": (np.geomspace(1.0, 1e-3, 8), None, "gram", 8),
    "random_qr": (np.geomspace(1.0, 1e-6, 8), None, "qr", 8),
}


@pytest.mark.parametrize("case", SPREADS)
def test_predicted_pairs_match_svd_route(case):
    """Orthonormal U; the pairs of the SVD of W orth(W'V)."""
    top, pert, route, K = SPREADS[case]
    W, V, T, S, Z, lam, _ = _pairs_problem(6, top, pert, K=K)
    # the intended route is the one taken (the switch is lam_b vs 1e-8 lam_1)
    assert (lam[-1] > 1e-8 * lam[0]) == (route == "gram")
    got = ops._predicted_pairs(T, S, Z, lam)
    assert got is not None
    vals, U = got
    assert np.all(np.diff(vals) <= 0)
    assert np.abs(U.T @ U - np.eye(U.shape[1])).max() <= 1e-12
    _assert_same_pairs(got, _svd_route(W, V), lam)


def test_predicted_pairs_qr_fallback_matches_gram_route():
    """Beyond the 1e8 spread: the QR route agrees with the Gram route to the
    Gram route's own accuracy (pair by pair)."""
    top = np.geomspace(1.0, 10 ** -4.75, 6)         # lam spread ~3e9: just beyond 1e8
    W, V, T, S, Z, lam, _ = _pairs_problem(7, top, 1e-6)
    assert lam[-1] <= 1e-8 * lam[0] and lam[-1] > 1e-11 * lam[0]
    got = ops._predicted_pairs(T, S, Z, lam)
    gram = _gram_route(Z, lam)
    assert gram[0][-1] > 0                          # the Gram route still resolves every pair
    _assert_same_pairs(got, gram, lam)
    _assert_same_pairs(got, _svd_route(W, V), lam)


def test_predicted_pairs_none_when_rank_deficient():
    """W'V rank deficient (V leaves the range of W): None."""
    W, V, T, S, Z, lam, Uw = _pairs_problem(8, np.geomspace(1.0, 0.2, 6), 0.0, rank=30)
    V = V.copy()
    V[:, -1] = Uw[:, -1]                            # orthogonal to range(W) and to V
    V, _ = np.linalg.qr(V)
    T = W.T @ V
    lam, S = np.linalg.eigh(T.T @ T)
    lam, S = lam[::-1], S[:, ::-1]
    assert ops._predicted_pairs(T, S, W @ T @ S, lam) is None


# ----------------------------------------------------------------------------------
# 6. the ALS state's caches
# ----------------------------------------------------------------------------------

def _state(seed=9, K=8, N=50, k=2):
    rng = np.random.default_rng(seed)
    Rt = rng.standard_normal((K, N))
    F = rng.standard_normal((K, k))
    D = rng.uniform(0.5, 2.0, K)
    return rng, _State(theta=None, Rt=Rt, F=F, D=D)


def test_state_lowrank_cache_keyed_by_identity():
    """lowrank: (cov, G'Rt), reused for the very F and D objects only."""
    rng, st = _state()
    F, D = st.F, st.D
    cov, Z = st.lowrank(F, D)
    _close(cov.to_dense(), F @ F.T + np.diag(D))
    # Z = G'Rt, checked through Woodbury: sum r'D^-1 r - ||Z||^2 = tr(Sigma^-1 R'R)
    Rt = st.Rt
    quad = np.trace(np.linalg.solve(F @ F.T + np.diag(D), Rt @ Rt.T))
    np.testing.assert_allclose(np.sum(Rt ** 2 / D[:, None]) - np.sum(Z ** 2), quad, rtol=1e-12)
    cov2, Z2 = st.lowrank(F, D)
    assert cov2 is cov and Z2 is Z
    cov3, Z3 = st.lowrank(F.copy(), D)               # equal values, another object
    assert cov3 is not cov and Z3 is not Z
    _close(Z3, Z)
    # the cache now holds the copy: the original F misses, as does a copy of D
    cov4, _ = st.lowrank(F, D)
    assert cov4 is not cov3
    assert st.lowrank(F, D.copy())[0] is not cov4


def test_state_rebinding_residuals_clears_caches():
    """st.Rt = ... clears z_cache, xr and s_cache; other fields do not."""
    rng, st = _state()
    st.lowrank(st.F, st.D)
    st.variances()
    st.xr = np.ones((st.Rt.shape[0], 2))
    st.theta = np.zeros((st.Rt.shape[0], 2))           # not the residuals: kept
    st.D = st.D
    assert st.z_cache is not None and st.s_cache is not None and st.xr is not None
    Rt2 = rng.standard_normal(st.Rt.shape)
    st.Rt = Rt2
    assert st.z_cache is None and st.s_cache is None and st.xr is None
    cov, Z = st.lowrank(st.F, st.D)
    _close(Z, cov.G.T @ Rt2)                          # the new residuals'
    _close(st.variances(), (Rt2 ** 2).mean(axis=1))
    st.Rt = st.Rt                                     # even the same array: cleared
    assert st.z_cache is None and st.s_cache is None


def test_state_nll_and_rotated_nll():
    """nll_of against the dense Gaussian NLL; nll_rotated against nll_of."""
    rng, st = _state()
    F, D, R = st.F, st.D, st.Rt.T
    # the NLL per row is ~1e1 from terms ~1e1: relative 1e-12
    np.testing.assert_allclose(st.nll_of(F, D), dense_nll_per_row(R, F @ F.T + np.diag(D)),
                               rtol=1e-12)
    np.testing.assert_allclose(st.nll_of(F[:, :0], D), dense_nll_per_row(R, np.diag(D)),
                               rtol=1e-12)
    st.nll_of(st.F, st.D)
    assert st.z_cache is not None and st.z_cache[0] is st.F and st.z_cache[1] is st.D
    for seed in range(3):
        Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((F.shape[1],) * 2))
        FQ = F @ Q
        rot = st.nll_rotated(FQ)
        assert st.z_cache[0] is st.F                  # the rotated evaluation kept the cache
        direct = _State(theta=None, Rt=st.Rt, F=FQ, D=D).nll_of(FQ, D)
        np.testing.assert_allclose(rot, direct, rtol=1e-12)
        np.testing.assert_allclose(rot, dense_nll_per_row(R, F @ F.T + np.diag(D)), rtol=1e-12)


# ----------------------------------------------------------------------------------
# 7. OLS moments
# ----------------------------------------------------------------------------------

def _ols_system(seed, intercept, offset, weights=False, missing=False, K=5, N=60):
    rng = np.random.default_rng(seed)
    Xs = []
    for j in range(K):
        x = rng.standard_normal((N, 2 + j % 2))
        if intercept:
            x = np.column_stack([np.ones(N), x])
        Xs.append(x)
    Y = rng.standard_normal((N, K)) + offset
    if missing:
        Y[rng.random((N, K)) < 0.1] = np.nan
    w = rng.uniform(0.2, 2.0, N) if weights else None
    return Xs, Y, w


def _check_moments(prob, Rt, xr):
    """xr against X'W r formed from the residuals, within 1e-12 ||X_j|| ||r_j||
    (the rounding the normal equations' route is bounded by, with room)."""
    Wr = Rt if prob.w is None else Rt * prob.w
    ref = ops.design_rmatvec(prob.X, Wr)
    Xn = np.linalg.norm(prob.X, axis=(1, 2))
    bound = 1e-12 * Xn * np.linalg.norm(Wr, axis=1)
    assert np.all(np.abs(xr - ref).max(axis=1) <= bound), (np.abs(xr - ref).max(axis=1), bound)


@pytest.mark.parametrize("intercept,offset,weights,missing", [
    (False, 0.0, False, False), (True, 0.0, False, False), (True, 10.0, False, False),
    (False, 10.0, False, False), (True, 10.0, True, False), (True, 10.0, False, True)])
def test_ols_moments_from_normal_equations(intercept, offset, weights, missing):
    """ols(moments=True): X'r without a pass, as accurate as one."""
    Xs, Y, w = _ols_system(10, intercept, offset, weights, missing)
    prob = build_problem(Xs, Y, weights=w, notes=False)
    theta, Rt, ss, xr = prob.ols(sumsq=True, moments=True)
    assert xr is not None                             # well conditioned: no refinement
    _check_moments(prob, Rt, xr)
    th2, Rt2 = prob.ols()                              # the same OLS without moments
    np.testing.assert_array_equal(theta, th2)
    np.testing.assert_array_equal(Rt, Rt2)
    Wr = Rt if prob.w is None else Rt * prob.w
    np.testing.assert_allclose(ss, np.einsum("kn,kn->k", Wr, Rt), rtol=1e-12)
    # and the OLS itself against lstsq on the observed rows (weighted)
    for j, x in enumerate(Xs):
        obs = ~np.isnan(Y[:, j])
        sw = np.ones(obs.sum()) if w is None else np.sqrt(w[obs] / w.mean())
        b = np.linalg.lstsq(x[obs] * sw[:, None], Y[obs, j] * sw, rcond=None)[0]
        np.testing.assert_allclose(theta[j, : x.shape[1]], b, rtol=1e-9, atol=1e-12)


def test_ols_moments_with_offset_regressor(monkeypatch):
    """A column 2000 + t: the refinement runs; xr is None or the direct moments."""
    rng = np.random.default_rng(11)
    N, K = 60, 4
    t = np.arange(N, dtype=float)
    Xs = [np.column_stack([np.ones(N), 2000.0 + t, rng.standard_normal(N)]) for _ in range(K)]
    Y = 0.01 * (2000.0 + t)[:, None] + rng.standard_normal((N, K))
    prob = build_problem(Xs, Y)
    passes = []
    real = problem_mod.design_rmatvec
    monkeypatch.setattr(problem_mod, "design_rmatvec",
                        lambda X, W: passes.append(1) or real(X, W))
    theta, Rt, ss, xr = prob.ols(sumsq=True, moments=True)
    assert len(passes) == 2                           # X'y, then the refinement's X'r
    if xr is not None:
        _check_moments(prob, Rt, xr)
    # the refined residuals are orthogonal to the designs to round-off (about
    # eps ||X_j|| ||y_j||, and ||y_j|| ~ 20 ||r_j|| here)
    _check_moments(prob, Rt, np.zeros_like(theta))


# ----------------------------------------------------------------------------------
# 8. exact fits
# ----------------------------------------------------------------------------------

def _exact_system(seed, exact, intercept=True, offset=10.0, K=6, N=50):
    rng = np.random.default_rng(seed)
    Xs = [rng.standard_normal((N, 2)) for _ in range(K)]
    if intercept:
        Xs = [np.column_stack([np.ones(N), x]) for x in Xs]
    Y = rng.standard_normal((N, K)) + offset
    for j in exact:                                   # exact combination (plus offset)
        Y[:, j] = Xs[j][:, -2:] @ np.array([2.0, -1.0]) + (offset if intercept else 0.0)
    return Xs, Y


@pytest.mark.parametrize("exact,intercept,offset", [
    ((), True, 10.0), ((), False, 0.0), ((2,), True, 10.0), ((2,), False, 0.0),
    ((1, 4), True, 1e6)])
def test_exact_fits_fast_path_agrees_with_threshold(exact, intercept, offset):
    """The early return flags what the full threshold flags; exact fits refused."""
    Xs, Y = _exact_system(12, exact, intercept, offset)
    prob = build_problem(Xs, Y)
    assert "zero_variance_threshold" not in prob.__dict__
    _, Rt, ss = prob.ols(sumsq=True)
    s, bad = prob.exact_fits(Rt, ss)
    fast = "zero_variance_threshold" not in prob.__dict__   # returned early
    ref = build_problem(Xs, Y)
    s_ref = ss / ref.n_weighted
    flagged = np.flatnonzero(s_ref <= ref.zero_variance_threshold)
    np.testing.assert_array_equal(bad, flagged)
    np.testing.assert_array_equal(bad, exact)
    np.testing.assert_allclose(s, s_ref, rtol=1e-15)
    assert fast == (len(exact) == 0)
    if exact:
        more = rf" \(and {len(exact) - 1} more\)" if len(exact) > 1 else ""
        with pytest.raises(ValueError, match=rf"equation {exact[0]}{more} has zero residual"):
            ref.residual_variances(Rt, ss)
    if len(exact) == 1:
        # (two exact equations at rank 1 are refused earlier, by the existence check)
        with pytest.raises(ValueError, match=rf"equation {exact[0]}\b.*zero residual variance"):
            alsgls.als_gls(Xs, Y, 1)
    # the slow path on the same problem, now with the threshold cached, agrees
    np.testing.assert_array_equal(prob.exact_fits(Rt, ss)[1], bad)


# ----------------------------------------------------------------------------------
# 9. build_problem on a 3-D design
# ----------------------------------------------------------------------------------

def _xy3(seed=13, K=4, N=30, p=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((K, N, p)), rng.standard_normal((N, K))


def test_build_problem_3d_refusals():
    """inf -> names Xs; an overflowing column -> names the design and column."""
    X3, Y = _xy3()
    X = X3.copy()
    X[2, 5, 1] = np.inf
    with pytest.raises(ValueError, match=r"Xs contains NaN or inf"):
        build_problem(X, Y)
    X = X3.copy()
    X[1, :, 2] *= 1e200
    with pytest.raises(ValueError, match=r"Xs\[1\] column 2 is too large"):
        build_problem(X, Y)
    X = X3.copy()
    X[2, 5, 1] = np.nan                               # where Y[5, 2] is observed
    with pytest.raises(ValueError, match=r"Xs\[2\] has NaN in row 5"):
        build_problem(X, Y)
    # responses: an inf is refused by name, huge finite values are data (their
    # sums of squares overflow, so the responses are searched for NaN and inf)
    Yi = Y.copy()
    Yi[3, 1] = -np.inf
    with pytest.raises(ValueError, match=r"Y contains NaN or inf"):
        build_problem(X3, Yi)
    Yh = Y.copy()
    Yh[:, 1] *= 1e160
    assert build_problem(X3, Yh).complete
    # X3 was never modified by any of these
    np.testing.assert_array_equal(X3, _xy3()[0])


def _same_problem(a, b):
    for name in ("X", "Yt", "gram"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-14, atol=0)
    for name in ("O", "w"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None)
        if va is not None:
            np.testing.assert_allclose(va, vb, rtol=1e-15)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.p, b.p)


def test_build_problem_3d_nan_where_response_missing():
    """NaN in the design only where the response is NaN: accepted (missing='ml')."""
    X3, Y = _xy3()
    X3[2, 5, :] = np.nan
    X3[0, 7, 1] = np.nan
    Y[5, 2] = Y[7, 0] = np.nan
    prob = build_problem(X3, Y, missing="ml")
    _same_problem(prob, build_problem(list(X3), Y, missing="ml"))
    assert prob.O[2, 5] == 0 and prob.O[0, 7] == 0 and prob.O.sum() == Y.size - 2
    assert np.all(np.isfinite(prob.X)) and np.all(prob.X[2, 5] == 0)
    obs = ~np.isnan(Y[:, 2])
    x = X3[2][obs]
    np.testing.assert_allclose(prob.gram[2], x.T @ x, rtol=1e-13)


def test_build_problem_3d_zero_weight_and_float32():
    """Zero weights and float32 3-D input: the same Problem as the list input."""
    X3, Y = _xy3()
    w = np.random.default_rng(1).uniform(0.5, 2.0, Y.shape[0])
    w[[3, 11]] = 0.0
    a = build_problem(X3, Y, weights=w, notes=False)
    _same_problem(a, build_problem(list(X3), Y, weights=w, notes=False))
    assert a.N == Y.shape[0] - 2 and not np.isin([3, 11], a.rows).any()
    wr = w[a.rows] / w[a.rows].mean()
    x = X3[1][a.rows]
    np.testing.assert_allclose(a.gram[1], x.T @ (x * wr[:, None]), rtol=1e-13)
    X32 = X3.astype(np.float32)
    b = build_problem(X32, Y)
    assert b.X.dtype == np.float64
    np.testing.assert_array_equal(b.X, X32.astype(np.float64))
    _same_problem(b, build_problem(list(X32.astype(np.float64)), Y))


# ----------------------------------------------------------------------------------
# 10-11. block-Jacobi inverse, unpad
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_unit_diagonal_extremes_match_eigvalsh(p):
    """The closed-form extreme eigenvalues (p <= 3) against eigvalsh, on
    column-scaled Gram matrices from well conditioned to nearly collinear
    (condition numbers up to ~1e18): the condition numbers agree to 1e-8
    relative (the closed form's absolute error, a few eps, is at most ~1e-9 of
    an eigenvalue it keeps; smaller ones come from eigvalsh itself)."""
    rng = np.random.default_rng(p)
    K, N = 400, 30
    X = rng.standard_normal((K, N, p))
    if p > 1:
        eps = 10.0 ** rng.uniform(-9, 0, K)
        X[:, :, -1] = X[:, :, 0] * rng.standard_normal(K)[:, None] + eps[:, None] * X[:, :, -1]
    g = np.einsum("knp,knq->kpq", X, X)
    d = np.sqrt(np.einsum("kpp->kp", g))
    C = g / d[:, :, None] / d[:, None, :]
    lo, hi = problem_mod._unit_diagonal_extremes(C)
    ev = np.linalg.eigvalsh(C)
    np.testing.assert_allclose(hi, ev[:, -1], rtol=1e-8)
    # where the smallest eigenvalue is above round-off, the condition numbers
    # agree; below it both are round-off (and the designs refused alike)
    ok = ev[:, 0] > 1e-12
    np.testing.assert_allclose(hi[ok] / lo[ok], ev[ok, -1] / ev[ok, 0], rtol=1e-8)
    assert np.all(lo[~ok] < 1e-10)
    assert p == 1 or np.any(ev[:, 0] < problem_mod.CLOSED_FORM_MIN_EIG)
    # a zero column (a test fold's rare dummy): eigvalsh for that equation, the
    # closed form for the others
    g0 = g.copy()
    g0[0, -1, :] = 0.0
    g0[0, :, -1] = 0.0
    lo0, cond0 = problem_mod._scaled_condition(g0)
    np.testing.assert_allclose(lo0[0], np.linalg.eigvalsh(
        np.where(np.eye(p, dtype=bool), np.sign(np.diag(g0[0])), C[0] * (g0[0] != 0)))[0],
        atol=1e-12)
    ok[0] = False
    np.testing.assert_allclose(cond0[ok], ev[ok, -1] / ev[ok, 0], rtol=1e-8)


def test_block_jacobi_inverse_matches_inv():
    """Each block's inverse (well conditioned, unequal column scales), symmetric."""
    rng = np.random.default_rng(14)
    scales = np.array([1e3, 1.0, 1e-2])
    X = rng.standard_normal((6, 40, 3)) * scales
    gram = np.einsum("knp,knq->kpq", X, X)
    inv = ops.block_jacobi_inverse(gram)
    ref = np.linalg.inv(gram)
    # scaled condition < 1e1: relative error ~ eps * 1e1 per scaled entry; compare
    # the scaled inverses (entries of (X'X)^-1 span 12 orders across columns)
    d = np.sqrt(np.einsum("kpp->kp", gram))
    si, sr = inv * d[:, :, None] * d[:, None, :], ref * d[:, :, None] * d[:, None, :]
    for j in range(6):
        assert np.linalg.norm(si[j] - sr[j]) <= 1e-12 * np.linalg.norm(sr[j])
    # and it inverts: (D^-1 G D^-1)(D G^-1 D) = I, in the scaled (unit-diagonal) form
    sg = gram / d[:, :, None] / d[:, None, :]
    np.testing.assert_allclose(sg @ si, np.broadcast_to(np.eye(3), sg.shape), atol=1e-13)
    # a padded Gram matrix: the unit diagonal on padding inverts to itself
    prob = build_problem([rng.standard_normal((40, p)) for p in (3, 1, 2)],
                         rng.standard_normal((40, 3)))
    pinv = ops.block_jacobi_inverse(prob.gram)
    for j in range(3):
        _close(pinv[j], np.linalg.inv(prob.gram[j]), rtol=1e-12)
    assert pinv[1, 1, 1] == 1.0 and pinv[1, 2, 2] == 1.0 and pinv[1, 0, 1] == 0.0


def test_block_jacobi_inverse_is_exactly_symmetric():
    """The inverses of exactly symmetric Gram matrices are exactly symmetric."""
    rng = np.random.default_rng(15)
    X = rng.standard_normal((6, 40, 3)) * np.array([1e3, 1.0, 1e-2])
    gram = np.einsum("knp,knq->kpq", X, X)
    gram = 0.5 * (gram + gram.transpose(0, 2, 1))      # exactly symmetric input
    prob = build_problem([rng.standard_normal((40, p)) for p in (3, 1, 2)],
                         rng.standard_normal((40, 3)))
    for g in (gram, np.asarray(prob.gram)):
        np.testing.assert_array_equal(g, g.transpose(0, 2, 1))
        inv = ops.block_jacobi_inverse(g)
        np.testing.assert_array_equal(inv, inv.transpose(0, 2, 1))


@pytest.mark.parametrize("p", [(2, 3, 1), (3, 3, 3)])
def test_unpad_returns_independent_copies(p):
    """unpad: (p_j, 1) arrays equal to theta's rows; writing one leaves theta alone."""
    lay = CoefficientLayout(np.array(p))
    theta = lay.unflatten(np.arange(1.0, lay.P + 1))
    keep = theta.copy()
    B = lay.unpad(theta)
    assert len(B) == len(p)
    for j, b in enumerate(B):
        assert b.shape == (p[j], 1)
        np.testing.assert_array_equal(b[:, 0], theta[j, : p[j]])
    B[0][0, 0] = -99.0
    B[-1][:] = 7.0
    np.testing.assert_array_equal(theta, keep)
    assert B[0][0, 0] == -99.0 and np.all(B[-1] == 7.0)
    np.testing.assert_array_equal(lay.pad(lay.unpad(keep)), keep)


# ----------------------------------------------------------------------------------
# 12. the single-step beta-steps change the path, not the optimum
# ----------------------------------------------------------------------------------

def test_single_step_beta_steps_reach_the_same_optimum(monkeypatch):
    """als_gls with and without single-step beta-steps: same NLL and B."""
    Xs, Y, _ = alsgls.simulate_sur(200, 12, 2, 2, seed=3)
    calls = []
    real = ops.curvature
    monkeypatch.setattr(ops, "curvature", lambda *a: calls.append(1) or real(*a))
    on = alsgls.als_gls(Xs, Y, 2)
    n_single = len(calls)
    # every beta-step a full CG solve
    full = als._BetaBlock.solve
    monkeypatch.setattr(als._BetaBlock, "solve",
                        lambda self, grad, a, b, rel=1e-2, single=False:
                        full(self, grad, a, b, rel, False))
    calls.clear()
    off = alsgls.als_gls(Xs, Y, 2)
    assert n_single > 0 and not calls                 # both paths really differ
    assert on.converged and off.converged
    # both stop within tol = 1e-10 per row and equation of the optimum
    np.testing.assert_allclose(on.nll, off.nll, rtol=1e-10)
    B_on = np.concatenate([b.ravel() for b in on.B])
    B_off = np.concatenate([b.ravel() for b in off.B])
    # an NLL gap of 1e-10 leaves beta ~sqrt(1e-10) ~ 1e-5 free in the worst
    # direction; in practice both fits land far closer (1e-6)
    assert np.linalg.norm(B_on - B_off) <= 1e-6 * np.linalg.norm(B_off)


# ----------------------------------------------------------------------------------
# 12. residual variances moved along a step; the factor step's monotonicity
# ----------------------------------------------------------------------------------

def test_moved_variances_match_a_pass_over_the_residuals():
    """_moved_variances from K x p quantities against ||r - alpha X d||^2 / N
    formed from the moved residuals (1e-12 relative: the step changes each
    ||r_j||^2 by far less than it, so no digits cancel); None when a step
    removes nearly all of some ||r_j||^2."""
    from alsgls.core.als_factor import _moved_variances

    rng, Xs, Y, prob, *_ = _system(21, SHAPES["ragged"])
    Rt = rng.standard_normal((prob.K, prob.N))
    d = _random_v(rng, prob)
    xr = ops.design_rmatvec(prob.X, Rt)
    gd = np.einsum("kpq,kq->kp", prob.gram, d)
    s = (Rt ** 2).mean(axis=1)
    alpha = 0.1
    moved = Rt - alpha * _dense_U(Xs, d)
    np.testing.assert_allclose(_moved_variances(s, prob.N, alpha, d, xr, gd),
                               (moved ** 2).mean(axis=1), rtol=1e-12)
    # residuals that the step removes almost entirely: r_0 = X_0 d_0 / alpha
    Rt[0] = alpha * _dense_U(Xs, d)[0] * (1 + 1e-6)
    xr = ops.design_rmatvec(prob.X, Rt)
    s = (Rt ** 2).mean(axis=1)
    assert _moved_variances(s, prob.N, alpha, d, xr, gd) is None


def test_factor_step_never_raises_the_nll_with_inexact_pairs(monkeypatch):
    """Eigenpairs from an unverified iteration can put the closed-form profile
    value above the NLL now; the factor step then still never raises the
    NLL (it compares with the NLL now, and solves the pairs tightly before
    backtracking): loadings perturbed by 1e-3 at loose tolerances."""
    from alsgls.core import als_factor

    real = als_factor._whitened_eigenpairs

    def sloppy(st, D, k, rng, maxiter, rtol=als_factor.EIG_RTOL):
        lam, F, it = real(st, D, k, rng, maxiter, rtol)
        if rtol > als_factor.EIG_RTOL:
            F = F * (1 + 1e-3 * np.random.default_rng(0).standard_normal(F.shape))
            lam = lam * (1 - 1e-3)
        return lam, F, it

    monkeypatch.setattr(als_factor, "_whitened_eigenpairs", sloppy)
    Xs, Y, _ = alsgls.simulate_sur(N=120, K=80, p=2, k=2, seed=4)
    prob = build_problem(Xs, Y)
    theta, Rt = prob.ols()
    s = (Rt ** 2).mean(axis=1)
    st = _State(theta=theta, Rt=Rt, F=np.zeros((prob.K, 2)), D=s.copy(), floor=1e-8 * s)
    st.nll = st.nll_of(st.F[:, :0], st.D)
    rng = np.random.default_rng(0)
    trace = [st.nll]
    for _ in range(8):
        als_factor._factor_step(st, 2, 1e-8, rng, 200, 1e-3)
        trace.append(st.nll)
        # the recorded NLL is the NLL of the state's point
        np.testing.assert_allclose(st.nll, st.nll_of(st.F, st.D), rtol=1e-13)
    assert np.all(np.diff(trace) <= 0), np.diff(trace)


def test_moments_from_the_gram_pass_match_the_plain_route():
    """build_problem's 3-D fast path fills Problem.xty and mean_squares from
    the Gram loop's blocks: against design_rmatvec and the row sums of
    squares (same sums in another order: 1e-12 relative to the norms)."""
    rng = np.random.default_rng(5)
    X3 = rng.standard_normal((7, 50, 3))
    Y = rng.standard_normal((50, 7)) + 3.0
    prob = build_problem(X3, Y)
    assert "xty" in prob.__dict__ and "mean_squares" in prob.__dict__
    ref = ops.design_rmatvec(prob.X, prob.Yt)
    _close(prob.xty, ref, 1e-12)
    np.testing.assert_allclose(prob.mean_squares, (Y ** 2).mean(axis=0), rtol=1e-12)
    assert not prob.xty.flags.writeable
    # the list route computes them on demand: the same values
    prob_list = build_problem(list(X3), Y)
    _close(prob_list.xty, ref, 1e-12)


def test_sur_responses_viewed_not_copied():
    """SUR.from_arrays keeps its Y's columns as views; the model's response
    matrix is then a view of that one array (no copy), equal to the stacked
    columns; responses from separate arrays are stacked as before."""
    from alsgls import SUR
    from alsgls.stats.system import _stack_columns

    rng = np.random.default_rng(8)
    Y = rng.standard_normal((40, 5))
    Xs = [rng.standard_normal((40, 2)) for _ in range(5)]
    ys = [Y[:, j] for j in range(5)]
    view = _stack_columns(ys)
    assert np.shares_memory(view, Y) and not view.flags.writeable
    np.testing.assert_array_equal(view, Y)
    apart = [y.copy() for y in ys]
    stacked = _stack_columns(apart)
    assert not np.shares_memory(stacked, Y)
    np.testing.assert_array_equal(stacked, Y)
    np.testing.assert_array_equal(_stack_columns(ys[::-1]), Y[:, ::-1])      # not in order: a copy
    a = SUR.from_arrays(Xs, Y, rank=1).fit()
    b = SUR({f"eq{j}": (apart[j], Xs[j]) for j in range(5)}, rank=1).fit()
    np.testing.assert_array_equal(a.params, b.params)
