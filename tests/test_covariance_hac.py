"""Kernel (HAC) and clustered covariances, and the OLS covariance, against dense
textbook formulas.

Oracle: the P x P sandwich ``A^-1 Gamma' Omega Gamma A^-1`` formed densely
row by row (``A = sum_i w_i X_i' Sigma_O^-1 X_i``, ``g_i = w_i X_i' Sigma_O^-1
r_i``; for OLS ``Sigma_O^-1 -> I``), with the N x N middle ``Omega`` written
out from its definition (Toeplitz kernel weights, cluster indicators).  Same
mathematics two ways on well-conditioned fixtures: rtol 1e-10.
"""

import numpy as np
import pytest

from alsgls import simulate_sur
from alsgls.core.ops import LowRankCovariance
from alsgls.stats import covariance as cv
from alsgls.stats.covariance import (
    Clustered,
    CovarianceConfig,
    Kernel,
    automatic_bandwidth,
    covariance_config,
)
from alsgls.stats.inference import GLSCovariance
from alsgls.stats.ols_covariance import OLSCovariance
from alsgls.stats.system import SUR

RTOL = 1e-10


# -- dense oracles ------------------------------------------------------------------
def dense_parts(X, p, cov, Rt, mask=None, weights=None, ols=False):
    """(bread A^-1, scores Gamma (N, P), OLS model middle) formed row by row."""
    K, N, _ = X.shape
    cols = [(j, a) for j in range(K) for a in range(p[j])]
    P = len(cols)
    S = cov.to_dense()
    w = np.ones(N) if weights is None else weights
    obs = np.ones((N, K), bool) if mask is None else mask
    A, M, G = np.zeros((P, P)), np.zeros((P, P)), np.zeros((N, P))
    for i in range(N):
        O = np.flatnonzero(obs[i])
        Xi = np.zeros((O.size, P))
        for c, (j, a) in enumerate(cols):
            if obs[i, j]:
                Xi[list(O).index(j), c] = X[j, i, a]
        W = np.eye(O.size) if ols else np.linalg.inv(S[np.ix_(O, O)])
        A += w[i] * Xi.T @ W @ Xi
        G[i] = w[i] * Xi.T @ W @ Rt[O, i]
        M += w[i] * Xi.T @ S[np.ix_(O, O)] @ Xi
    return np.linalg.inv(A), G, M


def textbook_weights(kernel, bw, N):
    """Kernel weight of every lag 0..N-1 from the definitions."""
    out = np.zeros(N)
    for lag in range(N):
        if kernel == "bartlett":
            m = int(bw)
            out[lag] = max(0.0, 1 - lag / (m + 1)) if lag <= m else 0.0
        elif kernel == "parzen":
            m = int(bw)
            z = lag / (m + 1)
            out[lag] = (1 - 6 * z**2 + 6 * z**3 if z <= 0.5 else 2 * (1 - z) ** 3) if lag <= m else 0
        else:
            if lag == 0:
                out[lag] = 1.0
            elif bw > 0:
                x = 6 * np.pi * lag / bw / 5
                out[lag] = 3 / x**2 * (np.sin(x) / x - np.cos(x))
    return out


def kernel_middle(kernel, bw, N):
    w = textbook_weights(kernel, bw, N)
    return np.array([[w[abs(s - t)] for t in range(N)] for s in range(N)])


def cluster_middle(codes, N, group_debias=False):
    def one(c):
        E = (c[:, None] == np.unique(c)[None, :]).astype(float)
        g = E.shape[1]
        return E @ E.T * ((g / (g - 1)) * (N - 1) / N if group_debias else 1.0)
    codes = np.asarray(codes).reshape(N, -1)
    if codes.shape[1] == 1:
        return one(codes[:, 0])
    both = np.array([hash((a, b)) for a, b in codes])
    return one(codes[:, 0]) + one(codes[:, 1]) - one(both)


def textbook_bandwidth(G, kernel):
    """Newey-West (1994) rule on the standardized, summed scores (loop form)."""
    q, c, a = {"bartlett": (1, 1.1447, 2 / 9), "parzen": (2, 2.6614, 4 / 25),
               "qs": (2, 1.3221, 2 / 25)}[kernel]
    N = G.shape[0]
    x = (G / G.std(axis=0)).sum(axis=1)
    n = int(np.ceil(4 * (N / 100) ** a))
    s = [sum(x[t] * x[t - j] for t in range(j, N)) / N for j in range(n + 1)]
    s0 = s[0] + 2 * sum(s[1:])
    sq = 2 * sum(j**q * s[j] for j in range(1, n + 1))
    m = c * ((sq / s0) ** 2) ** (1 / (2 * q + 1)) * N ** (1 / (2 * q + 1))
    return min(int(np.ceil(m)), N - 1)


def flat(gls, blocks):
    """Diagonal of the padded diagonal blocks in stacked order (P,)."""
    return np.concatenate([np.diag(blocks[j])[: gls.p[j]] for j in range(gls.K)])


def pad_contrasts(gls, R):
    """(m, P) stacked contrasts -> padded (K, pmax, m)."""
    L = np.zeros((gls.K, gls.pmax, R.shape[0]))
    edges = np.concatenate([[0], np.cumsum(gls.p)])
    for j in range(gls.K):
        L[j, : gls.p[j]] = R[:, edges[j]:edges[j + 1]].T
    return L


def check(gls, est, V):
    """Diagonal blocks and contrasts of ``est`` against the dense ``V``."""
    np.testing.assert_allclose(flat(gls, est.diagonal_blocks), np.diag(V), rtol=RTOL,
                               atol=1e-14 * np.abs(np.diag(V)).max())   # exact zeros
    edges = np.concatenate([[0], np.cumsum(gls.p)])
    for j in (0, gls.K - 1):
        blk = V[edges[j]:edges[j + 1], edges[j]:edges[j + 1]]
        np.testing.assert_allclose(est.diagonal_blocks[j, : gls.p[j], : gls.p[j]], blk,
                                   rtol=RTOL, atol=RTOL * np.abs(blk).max())
    R = np.random.default_rng(7).standard_normal((4, V.shape[0]))
    ref = R @ V @ R.T
    np.testing.assert_allclose(est.contrast_cov(pad_contrasts(gls, R)), ref, rtol=RTOL,
                               atol=RTOL * np.abs(ref).max())


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml_fit():
    """An ML fit at K = 8 with unequal p_j and AR(1) errors over the rows."""
    Xs, Y, _ = simulate_sur(N=48, K=8, p=3, k=2, seed=11, intercept=True, x_common=0.3)
    rng = np.random.default_rng(1)
    e = rng.standard_normal(Y.shape)
    for t in range(1, Y.shape[0]):
        e[t] += 0.6 * e[t - 1]
    Y = Y + 0.5 * e
    Xs[2] = Xs[2][:, :2]
    res = SUR.from_arrays(Xs, Y, rank=2).fit(tol=1e-12)
    d = res.model.data
    gls = res.covariance
    Ainv, G, _ = dense_parts(d.X, d.p, res.sigma, res._Rt)
    return res, gls, Ainv, G


def _masked_problem(seed=5, K=9, N=40, pm=3, k=2):
    rng = np.random.default_rng(seed)
    p = np.full(K, pm)
    p[3] = 2
    X = rng.standard_normal((K, N, pm))
    X[3, :, 2] = 0.0
    mask = rng.random((N, K)) > 0.2
    mask[:, 0] = True
    w = rng.uniform(0.3, 2.0, N)
    cov = LowRankCovariance(rng.standard_normal((K, k)), rng.uniform(0.5, 1.5, K))
    R = rng.standard_normal((K, N))
    return X, p, cov, R, mask, w


@pytest.fixture(scope="module")
def masked_gls():
    X, p, cov, R, mask, w = _masked_problem()
    gls = GLSCovariance(X, p, cov, np.where(mask.T, R, np.nan), mask=mask, weights=w,
                        method="exact")
    Ainv, G, _ = dense_parts(X, p, cov, R, mask, w)
    return gls, Ainv, G


@pytest.fixture(scope="module")
def ols_cases():
    """OLSCovariance complete and with mask + weights, and their dense parts."""
    out = []
    X, p, cov, R, mask, w = _masked_problem(seed=8, K=7, N=36)
    for m, wt in ((None, None), (mask, w)):
        gls = OLSCovariance(X, p, cov, R, mask=m, weights=wt)
        Ainv, G, M = dense_parts(X, p, cov, R, m, wt, ols=True)
        out.append((gls, Ainv, G, M))
    return out


KERNEL_CASES = [("bartlett", 3.0), ("bartlett", 3.7), ("bartlett", 40.0), ("parzen", 5.0),
                ("parzen", 0.0), ("qs", 2.5), ("qs", 0.0), ("bartlett", None),
                ("parzen", None), ("qs", None)]


# -- kernel ---------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,bw", KERNEL_CASES)
def test_kernel_ml_fit_equals_dense(ml_fit, kernel, bw):
    _, gls, Ainv, G = ml_fit
    cfg = covariance_config("kernel", gls.N, kernel=kernel, bandwidth=bw)
    est = gls.estimator("kernel", cfg)
    used = textbook_bandwidth(G, kernel) if bw is None else bw
    assert est.bandwidth == used
    V = Ainv @ G.T @ kernel_middle(kernel, used, gls.N) @ G @ Ainv
    check(gls, est, V)


@pytest.mark.parametrize("kernel,bw", [("bartlett", 2.0), ("qs", 1.5), ("parzen", None)])
def test_kernel_masked_weighted_equals_dense(masked_gls, kernel, bw):
    gls, Ainv, G = masked_gls
    est = Kernel(gls, covariance_config("hac", gls.N, kernel=kernel, bandwidth=bw))
    used = textbook_bandwidth(G, kernel) if bw is None else bw
    check(gls, est, Ainv @ G.T @ kernel_middle(kernel, used, gls.N) @ G @ Ainv)


def test_kernel_aliases_and_lag_paths(ml_fit, monkeypatch):
    _, gls, _, _ = ml_fit
    a = gls.estimator("kernel", covariance_config("kernel", gls.N, kernel="Newey-West",
                                                  bandwidth=4))
    b = gls.estimator("hac", covariance_config("hac", gls.N, kernel="bartlett", bandwidth=4.0))
    assert a is b and a.kernel == "bartlett"
    for alias, name in (("gallant", "parzen"), ("andrews", "qs"), ("Quadratic-Spectral", "qs")):
        assert covariance_config("kernel", 10, kernel=alias).kernel == name
    # the shifted-add loop and the FFT convolution give the same middle
    cfg = covariance_config("kernel", gls.N, kernel="bartlett", bandwidth=20)
    loop = Kernel(gls, cfg).diagonal_blocks
    monkeypatch.setattr(cv, "LAG_LOOP_MAX", 0)
    np.testing.assert_allclose(Kernel(gls, cfg).diagonal_blocks, loop, rtol=1e-12, atol=0)


def test_kernel_shares_the_solved_scores(ml_fit):
    _, gls, _, _ = ml_fit
    rob = gls.estimator("robust")
    ker = gls.estimator("kernel", covariance_config("kernel", gls.N, bandwidth=2))
    clu = gls.estimator("clustered", covariance_config("clustered", gls.N,
                                                       clusters=np.arange(gls.N) // 4))
    assert ker.factor is rob.factor and clu.factor is rob.factor
    # bandwidth 0 is the robust covariance
    zero = gls.estimator("kernel", covariance_config("kernel", gls.N, bandwidth=0))
    np.testing.assert_allclose(zero.diagonal_blocks, rob.diagonal_blocks, rtol=1e-13)


def test_automatic_bandwidth_function(ml_fit):
    _, _, _, G = ml_fit
    for kernel in ("bartlett", "parzen", "qs"):
        assert automatic_bandwidth(G.T, kernel) == textbook_bandwidth(G, kernel)
    with pytest.raises(ValueError, match="needs at least 4 rows"):
        automatic_bandwidth(np.ones((2, 3)), "bartlett")
    with pytest.raises(ValueError, match="needs at least 6 rows"):
        automatic_bandwidth(np.ones((2, 5)), "qs")
    const = np.vstack([np.random.default_rng(0).standard_normal(30), np.zeros(30)])
    with pytest.raises(ValueError, match="not finite"):
        automatic_bandwidth(const, "bartlett")


# -- clustered ------------------------------------------------------------------------
def _two_way(N):
    return np.column_stack([np.arange(N) // 6, np.arange(N) % 5])


@pytest.mark.parametrize("two_way", [False, True])
@pytest.mark.parametrize("group_debias", [False, True])
def test_clustered_ml_fit_equals_dense(ml_fit, two_way, group_debias):
    _, gls, Ainv, G = ml_fit
    codes = _two_way(gls.N) if two_way else np.arange(gls.N) // 6
    cfg = covariance_config("clustered", gls.N, clusters=codes, group_debias=group_debias)
    est = gls.estimator("clustered", cfg)
    V = Ainv @ G.T @ cluster_middle(codes, gls.N, group_debias) @ G @ Ainv
    check(gls, est, V)
    assert est.nclusters == ([8, 5] if two_way else [8])


@pytest.mark.parametrize("two_way", [False, True])
def test_clustered_masked_weighted_equals_dense(masked_gls, two_way):
    gls, Ainv, G = masked_gls
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 6, (gls.N, 2 if two_way else 1))
    est = Clustered(gls, covariance_config("clustered", gls.N, clusters=codes,
                                           group_debias=True))
    check(gls, est, Ainv @ G.T @ cluster_middle(codes, gls.N, True) @ G @ Ainv)


def test_clusters_any_labels_and_no_clusters(ml_fit):
    pd = pytest.importorskip("pandas")
    _, gls, _, _ = ml_fit
    N = gls.N
    codes = np.arange(N) // 6
    labels = pd.Series([f"firm{c}" for c in codes[::-1]])          # strings, other order
    a = gls.estimator("clustered", covariance_config("clustered", N, clusters=codes[::-1]))
    b = gls.estimator("clustered", covariance_config("clustered", N, clusters=labels))
    assert a is b                                          # equal codes, equal config
    df = pd.DataFrame({"firm": codes, "year": [f"y{t % 5}" for t in range(N)]})
    c = covariance_config("clustered", N, clusters=df)
    np.testing.assert_array_equal(c.clusters, covariance_config(
        "clustered", N, clusters=_two_way(N)).clusters)
    # no clusters: each row its own cluster, the robust covariance (as linearmodels)
    none = gls.estimator("clustered", covariance_config("clustered", N))
    np.testing.assert_allclose(none.diagonal_blocks, gls.estimator("robust").diagonal_blocks,
                               rtol=1e-13)
    own = gls.estimator("clustered", covariance_config("clustered", N, clusters=np.arange(N)))
    np.testing.assert_allclose(own.diagonal_blocks, none.diagonal_blocks, rtol=1e-12)


# -- through the results, debiased both ways -----------------------------------------
@pytest.mark.parametrize("debiased", [False, True])
def test_results_kernel_and_clustered_debiased(ml_fit, debiased):
    res, _, Ainv, G = ml_fit
    d = res.model.data
    scale = np.sqrt(d.N / (d.N - d.p))[d.layout.eq] if debiased else np.ones(len(d.layout.eq))
    for cov_type, opts, Om in (
            ("kernel", dict(kernel="parzen", bandwidth=4), kernel_middle("parzen", 4, d.N)),
            ("clustered", dict(clusters=np.arange(d.N) // 4, group_debias=True),
             cluster_middle(np.arange(d.N) // 4, d.N, True))):
        r = res.with_cov_type(cov_type, debiased=debiased, **opts)
        V = Ainv @ G.T @ Om @ G @ Ainv * np.outer(scale, scale)
        np.testing.assert_allclose(r.bse.to_numpy(), np.sqrt(np.diag(V)), rtol=RTOL)
        names = r.param_names[:2] + r.param_names[-1:]
        idx = [0, 1, len(r.param_names) - 1]
        np.testing.assert_allclose(r.cov_params(names).to_numpy(), V[np.ix_(idx, idx)],
                                   rtol=RTOL, atol=RTOL * np.abs(V).max())
        assert getattr(r.cov_estimator, "variance_scale", 1.0) == 1.0


# -- OLS --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [0, 1], ids=["complete", "masked-weighted"])
def test_ols_model_based_equals_dense(ols_cases, case):
    gls, Ainv, _, M = ols_cases[case]
    check(gls, gls.estimator("unadjusted"), Ainv @ M @ Ainv)
    # diagonal blocks are sigma_jj (X_j'X_j)^-1
    np.testing.assert_allclose(gls.diagonal_blocks, gls.estimator("unadjusted").diagonal_blocks)


@pytest.mark.parametrize("case", [0, 1], ids=["complete", "masked-weighted"])
def test_ols_sandwiches_equal_dense(ols_cases, case):
    gls, Ainv, G, _ = ols_cases[case]
    N = gls.N
    check(gls, gls.estimator("robust"), Ainv @ G.T @ G @ Ainv)
    for kernel, bw in (("bartlett", 3), ("qs", None)):
        est = gls.estimator("kernel", covariance_config("kernel", N, kernel=kernel, bandwidth=bw))
        used = textbook_bandwidth(G, kernel) if bw is None else bw
        check(gls, est, Ainv @ G.T @ kernel_middle(kernel, used, N) @ G @ Ainv)
    codes = _two_way(N)
    est = gls.estimator("clustered", covariance_config("clustered", N, clusters=codes,
                                                        group_debias=True))
    check(gls, est, Ainv @ G.T @ cluster_middle(codes, N, True) @ G @ Ainv)


def test_ols_debiased_equals_dfk_sigma(ols_cases):
    # linearmodels' debiased OLS covariance scales Sigma by N / sqrt((N-p_i)(N-p_j));
    # the results' per-equation factor on both sides gives the same matrix
    gls, Ainv, _, _ = ols_cases[0]
    N, p = gls.N, gls.p
    s = np.sqrt(N / (N - p))
    S = gls.cov.to_dense() * np.outer(s, s)
    cols = np.repeat(np.arange(gls.K), p)
    Mdfk = np.zeros_like(Ainv)
    X = gls.X
    edges = np.concatenate([[0], np.cumsum(p)])
    for i in range(gls.K):
        for j in range(gls.K):
            Mdfk[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = (
                S[i, j] * X[i, :, : p[i]].T @ X[j, :, : p[j]])
    V = Ainv @ Mdfk @ Ainv
    R = np.eye(len(cols))[[0, 4, len(cols) - 1]]
    L = pad_contrasts(gls, R * s[cols][None, :])
    np.testing.assert_allclose(gls.estimator("unadjusted").contrast_cov(L), R @ V @ R.T,
                               rtol=RTOL)


def test_ols_interface(ols_cases):
    gls = ols_cases[1][0]
    assert gls.method == "exact" and gls.truncation_bound == 0 and gls.eigen_info is None
    assert gls.estimator("unadjusted") is gls.estimator("nonrobust")
    Z = np.random.default_rng(0).standard_normal((gls.K, gls.pmax)) * gls.mask
    np.testing.assert_allclose(gls.matvec(gls.solve(Z)), Z, atol=1e-12)
    assert np.all(gls.variance_bounds == 0)
    with pytest.raises(TypeError, match="LowRankCovariance"):
        OLSCovariance(gls.X, gls.p, np.eye(gls.K))
    with pytest.raises(ValueError, match="residuals are required for the kernel"):
        _ = OLSCovariance(gls.X, gls.p, gls.cov).estimator("kernel").diagonal_blocks


# -- options and errors ---------------------------------------------------------------
def test_config_values_and_equality():
    assert covariance_config("robust", 10) == CovarianceConfig()
    cfg = covariance_config("kernel", 10)
    assert (cfg.kernel, cfg.bandwidth) == ("bartlett", None)
    assert covariance_config("kernel", 10, bandwidth=3) == covariance_config("hac", 10,
                                                                              bandwidth=3.0)
    assert hash(covariance_config("clustered", 6, clusters=[1, 1, 2, 2, 3, 3])) == hash(
        covariance_config("clustered", 6, clusters=["a", "a", "b", "b", "c", "c"]))
    c = covariance_config("clustered", 6, clusters=[1, 1, 2, 2, 3, 3], group_debias=True)
    assert c.group_debias and c.clusters.shape == (6, 1) and not c.clusters.flags.writeable
    # defaults count as not given
    assert covariance_config("robust", 10, kernel=None, group_debias=False) == CovarianceConfig()


@pytest.mark.parametrize("cov_type,opts,exc,match", [
    ("kernel", dict(lags=3), TypeError, "unknown covariance option.*'lags'"),
    ("robust", dict(debiased=True), TypeError, "debiased is an argument of its own"),
    ("robust", dict(kernel="qs"), TypeError, "'kernel' do not apply to cov_type='robust'"),
    ("unadjusted", dict(clusters=[0, 1]), TypeError, "accepts no options"),
    ("kernel", dict(clusters=[0, 1], group_debias=True), TypeError,
     "'clusters', 'group_debias' do not apply.*kernel, bandwidth"),
    ("clustered", dict(bandwidth=2), TypeError, "'bandwidth' do not apply"),
    ("kernel", dict(kernel="triangle"), ValueError, r"kernel must be one of \['andrews'"),
    ("kernel", dict(kernel=3), TypeError, "kernel must be the name"),
    ("kernel", dict(bandwidth=-1), ValueError, "non-negative"),
    ("kernel", dict(bandwidth=np.nan), ValueError, "finite"),
    ("kernel", dict(bandwidth="3"), TypeError, None),
    ("kernel", dict(bandwidth=True), TypeError, "bandwidth must be None or a number"),
    ("kernel", dict(bandwidth="wide"), TypeError, "bandwidth must be None or a number"),
    ("kernel", dict(bandwidth=10), ValueError, "only N = 10 rows"),
    ("clustered", dict(clusters=np.zeros((9, 1))), ValueError, r"shape \(N,\) or \(N, c\)"),
    ("clustered", dict(clusters=np.zeros((10, 3))), ValueError, "c = 1 or 2"),
    ("clustered", dict(clusters=np.zeros((10, 2, 1))), ValueError, "shape"),
    ("clustered", dict(clusters=np.r_[np.nan, np.arange(9.0)]), ValueError, "missing values"),
    ("clustered", dict(clusters=np.zeros(10)), ValueError, "single group"),
    ("clustered", dict(clusters=np.c_[np.arange(10) // 2, np.arange(10) // 4]), ValueError,
     "nested"),
    ("clustered", dict(clusters=np.arange(10) * 1j), TypeError, "complex"),
    ("clustered", dict(clusters=np.arange(10), group_debias="yes"), TypeError,
     "group_debias must be True or False"),
])
def test_config_errors(cov_type, opts, exc, match):
    if opts.get("bandwidth") == "3":        # a numeric string converts, like linearmodels
        assert covariance_config(cov_type, 10, **opts).bandwidth == 3.0
        return
    with pytest.raises(exc, match=match):
        covariance_config(cov_type, 10, **opts)


def test_estimator_errors(ml_fit):
    _, gls, _, _ = ml_fit
    with pytest.raises(ValueError, match="clusters have 5 rows but the fit used N = 48"):
        Clustered(gls, covariance_config("clustered", 5, clusters=[0, 0, 1, 1, 2]))
    tiny = GLSCovariance(gls.X[:, :3], gls.p, gls.cov, gls.Rt[:, :3])
    with pytest.raises(ValueError, match="needs at least 4 rows"):
        _ = tiny.estimator("kernel").diagonal_blocks


def test_sandwiches_use_the_restricted_bread(ml_fit):
    # under R beta = q every sandwich is B Gamma' Omega Gamma B with the restricted
    # bread B = A^-1 - A^-1 R'(R A^-1 R')^-1 R A^-1 (linearmodels' constrained
    # covariance); the estimators see it through gls.solve
    res, gls, Ainv, G = ml_fit
    d = res.model.data
    P = Ainv.shape[0]
    R = np.zeros((2, P))
    R[0, [1, 4]] = 1.0, -1.0
    R[1, P - 1] = 1.0
    rgls = GLSCovariance(d.X, d.p, res.sigma, res._Rt, restriction=pad_contrasts(gls, R))
    B = Ainv - Ainv @ R.T @ np.linalg.solve(R @ Ainv @ R.T, R @ Ainv)
    Om = kernel_middle("bartlett", 3, d.N)
    check(rgls, rgls.estimator("kernel", covariance_config("kernel", d.N, bandwidth=3)),
          B @ G.T @ Om @ G @ B)
    codes = np.arange(d.N) // 6
    check(rgls, rgls.estimator("clustered", covariance_config("clustered", d.N, clusters=codes)),
          B @ G.T @ cluster_middle(codes, d.N) @ G @ B)
