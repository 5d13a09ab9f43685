"""The truncated eigen-correction (``method="lanczos"``) against the exact core.

Oracle: the exact Woodbury-core path of :class:`GLSCovariance` (itself checked
against the dense inverse in ``test_inference.py``), forced on problems small
enough for both.  The fixture (K = 50, N = 200, k = 3, intercepts,
``x_common = 0.5``) has k p = 9 large eigenvalues of M (0.98, 0.5) and a bulk
near k / K, so the truncation is genuinely active.

Tolerances: the computed variances never exceed the exact ones (Galerkin
projection) and fall short by at most the reported per-coefficient bound
(certified: it fails with probability 1e-9 over the random vectors, see
:mod:`alsgls.stats.lanczos`); SEs then agree to half that bound.  Solves
are PCG to ``rtol``: compared normwise at a small multiple of it.
"""

import warnings

import numpy as np
import pytest

from alsgls import simulate_sur
from alsgls.exceptions import ConvergenceWarning
from alsgls.stats.inference import DesignFactors, GLSCovariance
from alsgls.stats.lanczos import LanczosCorrection
from alsgls.core.ops import LowRankCovariance
from alsgls.stats.system import SUR


@pytest.fixture(scope="module")
def fitted():
    Xs, Y, _ = simulate_sur(N=200, K=50, p=3, k=3, seed=3, intercept=True, x_common=0.5,
                            factor_strength=1.5)
    Xs[7] = Xs[7][:, :2]                                  # unequal p_j: padding
    res = SUR.from_arrays(Xs, Y, rank=3).fit(tol=1e-10)
    d = res.model.data
    return d, res.sigma, res._Rt


@pytest.fixture(scope="module")
def masked():
    rng = np.random.default_rng(7)
    K, N, pm, k = 50, 200, 3, 3
    p = np.full(K, pm)
    p[4] = 2
    common = rng.standard_normal((N, pm))
    X = np.sqrt(0.5) * common[None] + np.sqrt(0.5) * rng.standard_normal((K, N, pm))
    X[:, :, 0] = 1.0
    X[4, :, 2] = 0.0
    F, D = 1.5 * rng.standard_normal((K, k)), rng.uniform(0.5, 1.5, K)
    mask = rng.random((N, K)) > 0.2                       # 20 % missing
    w = rng.uniform(0.3, 2.0, N)
    R = rng.standard_normal((K, N))
    Xn = np.where(mask.T[:, :, None], X, np.nan)
    return Xn, p, LowRankCovariance(F, D), np.where(mask.T, R, np.nan), mask, w


def _variances(inf):
    return np.einsum("jaa->ja", inf.diagonal_blocks)[inf.mask]


def _check_against_exact(ex, la):
    ve, vl = _variances(ex), _variances(la)
    rel = (ve - vl) / vl
    bounds = la.variance_bounds[la.mask]
    assert la.truncation_bound <= la.tol
    assert la.truncation_bound == pytest.approx(bounds.max())
    # never above the exact variance (rounding slack 1e-10) and within the bound
    assert rel.min() >= -1e-10
    assert np.all(rel <= bounds + 1e-10)
    np.testing.assert_allclose(np.sqrt(vl), np.sqrt(ve), rtol=0.5 * la.truncation_bound + 1e-10)
    return rel


@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_balanced_ses_within_reported_bound(fitted, tol):
    d, cov, Rt = fitted
    ex = GLSCovariance(d.X, d.p, cov, Rt, method="exact")
    la = GLSCovariance(d.X, d.p, cov, Rt, method="lanczos", tol=tol)
    assert la.method == "lanczos" and ex.truncation_bound == 0.0 and ex.eigen_info is None
    rel = _check_against_exact(ex, la)
    info = la.eigen_info
    assert info.converged and info.rank >= 9              # at least the k p large eigenvalues
    assert np.all(np.diff(info.eigenvalues) <= 1e-12) and info.eigenvalues[0] > 0.9
    assert info.rank < la.mask.sum()                      # truncated, not the whole space


def test_masked_weighted_ses_within_reported_bound(masked):
    X, p, cov, R, mask, w = masked
    ex = GLSCovariance(X, p, cov, R, mask=mask, weights=w, method="exact")
    la = GLSCovariance(X, p, cov, R, mask=mask, weights=w, method="lanczos", tol=1e-3)
    _check_against_exact(ex, la)


def test_solves_contrasts_and_robust_match_exact(fitted, masked):
    d, cov, Rt = fitted
    for args, kw in [((d.X, d.p, cov, Rt), {}),
                     (masked[:4], {"mask": masked[4], "weights": masked[5]})]:
        ex = GLSCovariance(*args, method="exact", **kw)
        la = GLSCovariance(*args, method="lanczos", tol=1e-2, rtol=1e-10, **kw)
        rng = np.random.default_rng(0)
        Z = rng.standard_normal((ex.K, ex.pmax, 3)) * ex.mask[:, :, None]
        xe, xl = ex.solve(Z), la.solve(Z)
        # PCG to rtol 1e-10 on I - M (condition <= 1/(1 - lam_1) ~ 1e2): normwise 1e-7
        assert np.linalg.norm(xl - xe) <= 1e-7 * np.linalg.norm(xe)
        assert la.solve_info.converged
        np.testing.assert_allclose(la.contrast_cov(Z), ex.contrast_cov(Z), rtol=1e-7)
        re, rl = (np.einsum("jaa->ja", g.robust_diagonal_blocks)[ex.mask] for g in (ex, la))
        # the sandwiches apply the Galerkin operator to the N scores (one product
        # with M for all of them): robust SEs within the certified robust_se_bounds
        bound = la.robust_se_bounds[ex.mask]
        err = np.abs(np.sqrt(rl) - np.sqrt(re)) / np.sqrt(rl)
        assert np.all(err <= bound + 1e-12) and 0 < bound.max() < 0.1


def test_auto_dispatch_and_exact_unchanged(fitted, monkeypatch):
    d, cov, Rt = fitted
    ex = GLSCovariance(d.X, d.p, cov, Rt)
    assert ex.method == "exact"
    before = ex.diagonal_blocks.copy()
    from alsgls.stats import inference
    # the exact core is the smaller of N k x N k and P x P (padded): below both
    monkeypatch.setattr(inference, "EXACT_CORE_LIMIT", min(d.N * cov.k, d.K * d.pmax) - 1)
    auto = GLSCovariance(d.X, d.p, cov, Rt)
    assert auto.method == "lanczos"
    with pytest.raises(MemoryError, match="lanczos"):
        GLSCovariance(d.X, d.p, cov, Rt, method="exact")
    monkeypatch.undo()
    # the exact path is bit-for-bit what it was
    np.testing.assert_array_equal(GLSCovariance(d.X, d.p, cov, Rt).diagonal_blocks, before)
    with pytest.raises(ValueError, match="method"):
        GLSCovariance(d.X, d.p, cov, Rt, method="dense")


def test_rank_cap_warns_and_reports_bound(fitted):
    d, cov, Rt = fitted
    # tol 1e-4 needs most of the bulk; 30 pairs capture the k p = 9 large ones
    la = GLSCovariance(d.X, d.p, cov, Rt, method="lanczos", tol=1e-4, max_rank=30)
    with pytest.warns(ConvergenceWarning, match="max_rank"):
        bound = la.truncation_bound
    info = la.eigen_info
    assert not info.converged and 9 <= info.rank <= 30 and la.tol < bound < 0.05
    ex = GLSCovariance(d.X, d.p, cov, Rt, method="exact")
    rel = (_variances(ex) - _variances(la)) / _variances(la)
    assert np.all(rel <= la.variance_bounds[la.mask] + 1e-10)   # still honest


def test_no_factors_and_identical_designs():
    # k = 0: nothing to correct, the exact path runs whatever is asked
    Xs, Y, _ = simulate_sur(N=60, K=5, p=2, k=1, seed=1)
    res = SUR.from_arrays(Xs, Y, rank=0).fit()
    d = res.model.data
    assert GLSCovariance(d.X, d.p, res.sigma, method="lanczos").method == "exact"
    # identical designs (Zellner): M has k p nonzero eigenvalues, the rest 0
    from alsgls import simulate_gls
    Xs, Y, _ = simulate_gls(N=80, K=30, p=2, k=2, seed=2)
    res = SUR.from_arrays(Xs, Y, rank=2).fit()
    d = res.model.data
    ex = GLSCovariance(d.X, d.p, res.sigma, method="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        la = GLSCovariance(d.X, d.p, res.sigma, method="lanczos")
        np.testing.assert_allclose(_variances(la), _variances(ex), rtol=1e-8)
    assert la.truncation_bound < 1e-12


class _PublicOnly:
    """The factors record with its private attributes hidden."""

    def __init__(self, factors):
        self._factors = factors

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._factors, name)


def test_lanczos_strategy_needs_only_the_public_factors(masked):
    # built from the factors record alone, through its public interface only,
    # it is the strategy GLSCovariance delegates to
    X, p, cov, R, mask, w = masked
    inf = GLSCovariance(X, p, cov, R, mask=mask, weights=w, method="lanczos", tol=1e-3)
    la = LanczosCorrection(_PublicOnly(DesignFactors(X, p, cov, mask=mask, weights=w)),
                           tol=1e-3)
    assert la.method == inf.method == "lanczos"
    np.testing.assert_array_equal(la.diagonal_blocks(), inf.diagonal_blocks)
    np.testing.assert_array_equal(la.variance_bounds, inf.variance_bounds)
    assert la.truncation_bound == inf.truncation_bound
    Z = np.random.default_rng(1).standard_normal((inf.K, inf.pmax, 2)) * inf.mask[:, :, None]
    np.testing.assert_array_equal(la.solve(Z), inf.solve(Z))
    assert la.solve_info == inf.solve_info and la.eigen_info.rank == inf.eigen_info.rank


def test_rank_cap_warning_points_at_the_callers_line(fitted):
    # a tiny max_rank and tol force the ConvergenceWarning of the eigen-correction;
    # it is raised inside cached properties but names this file, not functools
    d, cov, Rt = fitted
    la = GLSCovariance(d.X, d.p, cov, Rt, method="lanczos", tol=1e-6, max_rank=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _ = la.diagonal_blocks
    rank_cap = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert rank_cap and "max_rank" in str(rank_cap[0].message)
    assert rank_cap[0].filename == __file__


@pytest.mark.parametrize("max_rank", [1, 2, 3])
def test_small_max_rank_runs_and_never_overstates(fitted, max_rank):
    # the first Krylov block used to be wider than the basis (2 max_rank columns)
    d, cov, Rt = fitted
    ex = GLSCovariance(d.X, d.p, cov, Rt, method="exact")
    la = GLSCovariance(d.X, d.p, cov, Rt, method="lanczos", max_rank=max_rank)
    with pytest.warns(ConvergenceWarning, match="max_rank"):
        blocks = la.diagonal_blocks
    assert blocks.shape == (d.K, d.pmax, d.pmax)
    info = la.eigen_info
    assert not info.converged
    assert info.subspace_dim <= 2 * max_rank and info.rank <= max_rank
    # a Galerkin projection: never above the exact variance; the certified bound
    # holds even when the basis (2 max_rank < k p = 9 vectors) misses large
    # eigenvalues (the certificate finds them: the bound is large, or infinite)
    rel = (_variances(ex) - _variances(la)) / _variances(la)
    assert rel.min() >= -1e-10 and np.all(np.isfinite(rel))
    assert np.all(rel <= la.variance_bounds[la.mask] + 1e-10)


@pytest.mark.parametrize("option, value, error", [
    ("tol", 0.0, ValueError), ("tol", 1.5, ValueError), ("tol", "small", TypeError),
    ("rtol", 0.0, ValueError), ("rtol", None, TypeError),
    ("max_rank", 0, ValueError), ("max_rank", 2.5, TypeError), ("max_rank", True, TypeError),
])
def test_lanczos_options_name_the_wrong_option(fitted, option, value, error):
    d, cov, Rt = fitted
    with pytest.raises(error, match=rf"\b{option}\b"):
        GLSCovariance(d.X, d.p, cov, Rt, method="lanczos", **{option: value})


def test_lanczos_options_are_validated_once(fitted, monkeypatch):
    from alsgls.stats import inference, lanczos

    original, calls = lanczos.check_options, []

    def counting(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(inference, "check_options", counting)
    monkeypatch.setattr(lanczos, "check_options", counting)
    d, cov, Rt = fitted
    la = GLSCovariance(d.X, d.p, cov, Rt, method="lanczos", tol=1e-2, max_rank=50)
    assert len(calls) == 1
    assert (la.strategy.tol, la.strategy.max_rank, la.strategy.rtol) == (1e-2, 50, la.rtol)
