"""Offsets and scales: a fit is equivariant under ``Y -> a Y + b`` with ``b`` in the
designs' span, and the exact-fit test and every floor are relative to the data.

Issue 10 ("Offsets and scales"): ``Y + 1e7`` with an intercept in every design
was refused as an exact fit (the test compared with ``mean(y^2)``), ``ALSGLS``
fell silently to rank 0, and the rank-0 noise-variance floor was absolute.
The exact-fit test is now relative to the centred total sum of squares when
the design spans a constant (:attr:`Problem.total_variances`), with a round-off
allowance for the design's condition (:attr:`Problem.zero_variance_threshold`),
and ``Problem.ols`` refines the normal-equation solution once, so that offsets
(and regressors such as calendar years) cost no digits.

Tolerances: ``Y + 1e7`` rounds ``Y`` to multiples of ``eps * 1e7 ~ 2e-9``
(noise sd ~ 1), so the oracle is the fit of exactly those data without the
offset, ``(Y + 1e7) - 1e7`` (exact in floating point, Sterbenz).  Residuals
computed at the offset carry round-off ``eps * 1e7`` per entry (the OLS
residuals agree to 1e-9 absolute), so the two fits stop at slightly different
points: the NLL agrees to 1e-9 relative, while ``D`` and ``F F'`` are fixed
by the NLL-based stopping rule only to about the square root of its gap
(measured 2.4e-7 between two ALS runs, 1.2e-7 between ALS and EM on the same
data), asserted at 1e-6 (EM: 1e-5, its stopping rule is looser at the same
tol) -- the style's tolerance for fixed points.
Per-equation rescaling by powers within 1e-6..1e6 is exact in floating point
up to one rounding per entry, and every ALS step is equivariant, so the fits
agree to round-off, asserted at 1e-8.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import alsgls
from alsgls import SUR, als_gls, em_gls, fit_missing, simulate_sur
from alsgls.core.problem import ZERO_VARIANCE_RTOL, build_problem
from alsgls.learn.estimator import ExactFitWarning

OFFSET = 1e7


def _rounded(Y):
    """The data that ``Y + OFFSET`` represents, without the offset (exact)."""
    return (Y + OFFSET) - OFFSET


@pytest.fixture(scope="module")
def system():
    """K = 10, N = 200, p = 3 with an intercept (column 0) in every design, k = 2."""
    return simulate_sur(N=200, K=10, p=3, k=2, seed=21, intercept=True)


def _cov(fit):
    return fit.F @ fit.F.T + np.diag(fit.D)


def _slopes(fit):
    return np.concatenate([b[1:, 0] for b in fit.B])


def _intercepts(fit):
    return np.array([b[0, 0] for b in fit.B])


# --------------------------------------------------------------------------
# Y + 1e7 with an intercept in every design
# --------------------------------------------------------------------------

@pytest.mark.parametrize("solver, rtol", [(als_gls, 1e-6), (em_gls, 1e-5)])
def test_offset_fits_with_intercepts(system, solver, rtol):
    """Oracle: the same fit without the offset; only the intercepts move, by 1e7."""
    Xs, Y, _ = system
    base = solver(Xs, _rounded(Y), 2, tol=1e-12, max_iter=5000)
    off = solver(Xs, Y + OFFSET, 2, tol=1e-12, max_iter=5000)
    assert off.converged
    np.testing.assert_allclose(off.D, base.D, rtol=rtol)
    np.testing.assert_allclose(_cov(off), _cov(base), rtol=rtol, atol=rtol * base.D.max())
    np.testing.assert_allclose(_slopes(off), _slopes(base), rtol=0, atol=rtol)
    np.testing.assert_allclose(_intercepts(off) - OFFSET, _intercepts(base), rtol=0, atol=1e-6)
    assert off.nll == pytest.approx(base.nll, rel=1e-9)


@pytest.mark.parametrize("offset", [1e9, 1e11])
def test_large_offset_is_no_exact_relation(system, offset):
    """Pins: the existence check scaled each response by its *uncentred* norm,
    so at ``Y + 1e9`` every pair of responses looked exactly related (their
    projected residuals ~1e-9 of that norm, below the 1e-8 threshold) and the
    fit was refused as having no finite maximum.  Oracle: the fit of the same
    data without the offset -- the likelihood is finite and the fit converges;
    the slopes agree to the round-off the offset leaves in ``Y`` (eps * offset
    per entry, amplified by the fit: asserted at 1e3 times that)."""
    Xs, Y, _ = system
    Yo = Y + offset
    base = als_gls(Xs, Yo - offset, 2)
    fit = als_gls(Xs, Yo, 2)
    assert fit.converged
    np.testing.assert_allclose(_slopes(fit), _slopes(base), rtol=0,
                               atol=1e3 * np.finfo(float).eps * offset)


def test_exact_relation_is_refused_at_a_large_offset(system):
    """An exact relation between two responses stays one at ``Y + 1e9``: the
    threshold grows with the round-off the offset leaves in the projection
    (existence.OFFSET_ROUNDOFF), not beyond it."""
    Xs, Y, _ = system
    Y = Y.copy()
    Y[:, 1] = 2.0 * Y[:, 0] + Xs[0][:, 1] - 0.5 * Xs[1][:, 2]
    for offset in (0.0, 1e9):
        with pytest.raises(ValueError, match="no finite maximum: the responses of equation 0, "
                                             "equation 1 satisfy an exact linear relation"):
            als_gls(Xs, Y + offset, 2)


def test_offset_fits_through_sur(system):
    """SUR: the same log-likelihood and slopes with and without the offset."""
    Xs, Y, _ = system
    base = SUR.from_arrays(Xs, _rounded(Y), rank=2).fit(tol=1e-12)
    off = SUR.from_arrays(Xs, Y + OFFSET, rank=2).fit(tol=1e-12)
    assert off.llf == pytest.approx(base.llf, rel=1e-9)
    slopes = np.asarray(base.params).reshape(10, 3)[:, 1:]
    np.testing.assert_allclose(np.asarray(off.params).reshape(10, 3)[:, 1:], slopes,
                               rtol=0, atol=1e-6)


def test_offset_with_missing_responses(system):
    """The missing-data EM sees the same problem up to the offset (loose: EM tol)."""
    Xs, Y, _ = system
    Ym = Y.copy()
    Ym[::7, 3] = np.nan
    base = fit_missing(Xs, _rounded(Ym), 2, tol=1e-12)
    off = fit_missing(Xs, Ym + OFFSET, 2, tol=1e-12)
    np.testing.assert_allclose(off.D, base.D, rtol=1e-5)


def test_offset_regressor_and_offset_response():
    """A calendar-year regressor (2000 + t) beside the intercept, and Y + 1e7: the
    first normal-equation residuals are wrong in the third digit here; the refined
    OLS is exact to the round-off of Y, and so is the fit.  Oracle: lstsq on the
    centred data, and the fit of the centred problem."""
    rng = np.random.default_rng(3)
    N, K = 150, 6
    Xs, Y, _ = simulate_sur(N=N, K=K, p=3, k=1, seed=4, intercept=True)
    years = [np.column_stack([x[:, 0], 2000.0 + x[:, 1], x[:, 2]]) for x in Xs]
    Yo = Y + OFFSET + rng.standard_normal(K)
    _, Rt = build_problem(years, Yo).ols()
    for j in range(K):
        Xc = Xs[j][:, 1:] - Xs[j][:, 1:].mean(axis=0)
        yc = (Yo[:, j] - OFFSET) - (Yo[:, j] - OFFSET).mean()
        ref = yc - Xc @ np.linalg.lstsq(Xc, yc, rcond=None)[0]
        assert np.abs(Rt[j] - ref).max() < 64 * np.finfo(float).eps * OFFSET
    base = als_gls(Xs, Yo - OFFSET, 1, tol=1e-12)       # the same data, centred
    fit = als_gls(years, Yo, 1, tol=1e-12)
    # fixed points: D to about sqrt(tol K) = 2.4e-6 (module docstring)
    assert fit.nll == pytest.approx(base.nll, rel=1e-9)
    np.testing.assert_allclose(fit.D, base.D, rtol=1e-5)
    np.testing.assert_allclose(_slopes(fit), _slopes(base), rtol=0, atol=1e-5)


def test_weighted_offset(system):
    """Weights scale rows by sqrt(w): the exact-fit test stays the weighted one
    (about the weighted mean), so the offset is still no exact fit."""
    Xs, Y, _ = system
    w = np.random.default_rng(5).uniform(0.5, 2.0, Y.shape[0])
    base = als_gls(Xs, _rounded(Y), 2, tol=1e-12, weights=w)
    off = als_gls(Xs, Y + OFFSET, 2, tol=1e-12, weights=w)
    np.testing.assert_allclose(off.D, base.D, rtol=1e-6)


@pytest.mark.parametrize("form", ["shared", "system"])
def test_alsgls_keeps_the_rank_with_an_offset(form):
    """ALSGLS(rank="auto") chooses the same rank with Y + 1e7 (it fell to 0)."""
    Xs, Y, _ = simulate_sur(N=300, K=20, p=2, k=3, seed=8, factor_strength=2.0)
    X = Xs[0] if form == "shared" else Xs
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExactFitWarning)
        base = alsgls.ALSGLS(tol=1e-12).fit(X, _rounded(Y))
        off = alsgls.ALSGLS(tol=1e-12).fit(X, Y + OFFSET)
    assert base.rank_ == 3
    assert off.rank_ == base.rank_
    np.testing.assert_allclose(off.noise_variance_, base.noise_variance_, rtol=1e-6)
    np.testing.assert_allclose(off.intercept_ - OFFSET, base.intercept_, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# Per-equation rescaling
# --------------------------------------------------------------------------

def _scales(K):
    """Powers of ten from 1e-6 to 1e6, in shuffled order, one per equation."""
    return np.random.default_rng(0).permutation(np.logspace(-6, 6, K))


@pytest.mark.parametrize("solver, rtol", [(als_gls, 1e-8), (em_gls, 1e-5)])
def test_per_equation_rescaling(system, solver, rtol):
    """Y[:, j] -> c_j Y[:, j]: B_j -> c_j B_j, F F' -> C F F' C, D -> c^2 D, and
    the NLL per row shifts by sum(log c).  Oracle: the unscaled fit.  Every ALS
    step is equivariant (1e-8); the dense EM reaches the same fixed point but
    its SQUAREM step length is a norm in parameter space, not equivariant, so
    it agrees to its stopping tolerance (measured 9e-7 on D).

    D is pinned less tightly than B: the NLL is flat to round-off
    (``eps |NLL|``, 1e-15 per row here) over a relative change of about 3e-8
    in ``D_j``, and the steps' acceptance tests compare NLLs, so two fits
    whose rounding differs stop up to that far apart (measured 2.3e-8 between
    the scaled and unscaled ALS fits, and between ALS at ``tol`` 1e-12 and
    1e-15); D is compared to ``10 * rtol``."""
    Xs, Y, _ = system
    c = _scales(Y.shape[1])
    base = solver(Xs, Y, 2, tol=1e-12)
    fit = solver(Xs, Y * c, 2, tol=1e-12)
    for j in range(len(c)):
        np.testing.assert_allclose(fit.B[j], c[j] * base.B[j], rtol=rtol,
                                   atol=rtol * c[j] * np.abs(base.B[j]).max())
    np.testing.assert_allclose(fit.D, c ** 2 * base.D, rtol=10 * rtol)
    cc = np.outer(c, c)
    scale = np.sqrt(np.outer(np.diag(_cov(base)), np.diag(_cov(base))))   # correlation units
    np.testing.assert_allclose((fit.F @ fit.F.T) / cc / scale,
                               (base.F @ base.F.T) / scale, rtol=0, atol=rtol)
    assert fit.nll == pytest.approx(base.nll + np.log(c).sum(), rel=rtol, abs=rtol)


# --------------------------------------------------------------------------
# ALSGLS(rank=0): noise variances are the residual variances at any scale
# --------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1e-100, 1e-7, 1.0, 1e7, 1e100])
def test_rank0_noise_variances_are_residual_variances(scale):
    """Oracle: lstsq residual mean squares (divisor N) of the centred data."""
    rng = np.random.default_rng(2)
    N, K, p = 120, 5, 3
    X = rng.standard_normal((N, p))
    Y = (X @ rng.standard_normal((p, K)) + rng.standard_normal((N, K))) * scale
    est = alsgls.ALSGLS(rank=0).fit(X, Y)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    R = Yc - Xc @ np.linalg.lstsq(Xc, Yc, rcond=None)[0]
    np.testing.assert_allclose(est.noise_variance_, (R * R).mean(axis=0), rtol=1e-10)


@pytest.mark.parametrize("scale, offset", [(1e-7, 0.0), (1.0, 0.0), (1e7, 0.0), (1.0, OFFSET)])
def test_rank0_with_an_exact_output(scale, offset):
    """An output the regressors fit exactly: rank 0 (with ExactFitWarning); the
    other outputs keep their residual variances, and the exact one's noise
    variance is the exact-fit threshold, relative to its spread about its mean
    (it was floored at 1e-12 mean(y^2): 100 for an output at 1e7)."""
    rng = np.random.default_rng(6)
    N, K, p = 150, 6, 2
    X = rng.standard_normal((N, p))
    Y = X @ rng.standard_normal((p, K)) + rng.standard_normal((N, K))
    Y[:, 2] = X @ np.array([1.5, -0.5]) + 0.25       # fitted exactly (with the intercept)
    Y = Y * scale + offset
    with pytest.warns(ExactFitWarning, match="output 2"):
        est = alsgls.ALSGLS().fit(X, Y)
    assert est.rank_ == 0 and est.n_iter_ == 0
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    s = ((Yc - Xc @ np.linalg.lstsq(Xc, Yc, rcond=None)[0]) ** 2).mean(axis=0)
    others = np.arange(K) != 2
    np.testing.assert_allclose(est.noise_variance_[others], s[others], rtol=1e-8)
    spread = Yc[:, 2].var()
    assert est.noise_variance_[2] == pytest.approx(ZERO_VARIANCE_RTOL * spread, rel=1e-6)


# --------------------------------------------------------------------------
# Exact fits are still detected
# --------------------------------------------------------------------------

def _with_exact(Xs, Y, j, offset=0.0):
    Y = Y.copy()
    Y[:, j] = Xs[j] @ np.arange(1.0, Xs[j].shape[1] + 1) + offset
    return Y


@pytest.mark.parametrize("solver", [als_gls, em_gls, fit_missing])
@pytest.mark.parametrize("offset", [0.0, OFFSET])
def test_exact_fit_is_refused(system, solver, offset):
    Xs, Y, _ = system
    Ye = _with_exact(Xs, Y + offset, 4, offset)
    # refused by the existence check or by the solver's exact-fit test
    with pytest.raises(ValueError, match=r"equation 4\b.*(zero residual variance|exact "
                                         r"linear relation)"):
        solver(Xs, Ye, 2)


@pytest.mark.parametrize("offset", [0.0, OFFSET])
def test_exact_fit_message(system, offset):
    """The exact-fit test itself (every core calls it on the OLS residuals)."""
    Xs, Y, _ = system
    prob = build_problem(Xs, _with_exact(Xs, Y + offset, 4, offset))
    with pytest.raises(ValueError, match=r"equation 4 has zero residual variance: its "
                                         r"response is an exact linear combination"):
        prob.residual_variances(prob.ols()[1])


def test_exact_fit_is_named_by_sur(system):
    Xs, Y, _ = system
    Ye = _with_exact(Xs, Y + OFFSET, 7, OFFSET)
    eqs = {f"firm{j}": (Ye[:, j], Xs[j]) for j in range(Ye.shape[1])}
    with pytest.raises(ValueError, match=r"equation 'firm7'.*(zero residual variance|exact "
                                         r"linear relation)"):
        SUR(eqs, rank=2).fit()


def test_exact_fit_without_a_constant():
    """No constant in the span: the test is relative to mean(y^2)."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((80, 2)) + 5.0
    Y = rng.standard_normal((80, 3))
    Y[:, 1] = X @ np.array([2.0, -1.0])
    prob = build_problem(X, Y)
    assert not prob.spans_constant.any()
    assert prob.exact_fits(prob.ols()[1])[1].tolist() == [1]


def test_constant_response_with_an_intercept():
    """A constant response is fitted exactly by an intercept (its centred total
    is zero; the round-off allowance decides)."""
    rng = np.random.default_rng(10)
    X = np.column_stack([np.ones(60), rng.standard_normal(60)])
    Y = rng.standard_normal((60, 3))
    Y[:, 0] = 3.0e5
    prob = build_problem(X, Y)
    assert prob.exact_fits(prob.ols()[1])[1].tolist() == [0]


def test_small_but_real_noise_is_no_exact_fit():
    """Noise 1e-5 of the spread (a variance ratio of 1e-10, above
    ZERO_VARIANCE_RTOL = 1e-12) on a response at 1e7: fitted, not refused."""
    rng = np.random.default_rng(11)
    N = 200
    X = np.column_stack([np.ones(N), rng.standard_normal((N, 2))])
    Y = rng.standard_normal((N, 4)) + OFFSET
    Y[:, 2] = OFFSET + X[:, 1:] @ np.array([1.0, 2.0]) + 1e-5 * rng.standard_normal(N)
    prob = build_problem(X, Y)
    s, exact = prob.exact_fits(prob.ols()[1])
    assert exact.size == 0
    assert s[2] == pytest.approx(1e-10, rel=0.3)


def test_dummies_of_every_level_span_the_constant():
    """No intercept column, but dummies summing to one: the constant is in the
    span, so an offset is no exact fit and the total is about the mean."""
    rng = np.random.default_rng(12)
    N = 90
    level = np.arange(N) % 3
    X = np.column_stack([level == 0, level == 1, level == 2, rng.standard_normal(N)]).astype(float)
    Y = rng.standard_normal((N, 3)) + OFFSET
    prob = build_problem(X, Y)
    assert prob.spans_constant.all()
    total, _ = prob.total_variances
    np.testing.assert_allclose(total, (Y - OFFSET).var(axis=0), rtol=1e-8)
    assert prob.exact_fits(prob.ols()[1])[1].size == 0


def test_constant_on_the_observed_rows_only():
    """With missing responses the span is judged on each equation's observed
    rows: a column constant there is an intercept for that equation."""
    rng = np.random.default_rng(13)
    N = 100
    X = [np.column_stack([np.ones(N), rng.standard_normal(N)]),
         np.column_stack([np.where(np.arange(N) < 50, 1.0, 2.0), rng.standard_normal(N)])]
    Y = rng.standard_normal((N, 2)) + OFFSET
    Y[50:, 1] = np.nan
    prob = build_problem(X, Y)
    assert prob.spans_constant.tolist() == [True, True]
    full = build_problem([X[1]], Y[:, :1], missing="raise")
    assert full.spans_constant.tolist() == [False]
