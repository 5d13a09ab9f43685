"""Kernels of the sandwich standard errors (``alsgls.stats.lanczos``).

Oracles: a column-by-column search for the shared columns, the dense
``M = V'V`` product of ``DesignFactors.apply_M`` for :class:`MOperator`, and
:meth:`LanczosCorrection.galerkin_solve` column batch by batch for the Gram
form of :meth:`LanczosCorrection.galerkin_columns` (the same operator: equal
up to single-precision rounding of both (measured 7e-8), asserted at 1e-5 relative to the
largest entry).
"""

from __future__ import annotations

import numpy as np
import pytest

from alsgls.core.ops import LowRankCovariance
from alsgls.stats.factors import DesignFactors
from alsgls.stats.lanczos import LanczosCorrection, MOperator, shared_columns


def _designs(rng, K=7, N=60, p=(3, 2, 4, 3, 2, 4, 3)):
    """Padded designs with unequal p; an intercept in a different slot per
    equation, and column 1 of equation 0 repeated in equation 3 only."""
    pmax = max(p)
    X = np.zeros((K, N, pmax))
    slots = []
    for j, pj in enumerate(p):
        X[j, :, :pj] = rng.standard_normal((N, pj))
        s = j % pj
        X[j, :, s] = 1.0
        slots.append(s)
    X[3, :, (slots[3] + 1) % p[3]] = X[0, :, (slots[0] + 1) % p[0]]
    mask = np.arange(pmax)[None, :] < np.array(p)[:, None]
    return X, np.array(p), mask, np.array(slots)


def test_shared_columns_finds_the_intercept_in_any_slot():
    rng = np.random.default_rng(0)
    X, p, mask, slots = _designs(rng)
    K, N, pmax = X.shape
    found = shared_columns(X, mask)
    assert found.shape == (1, K)
    np.testing.assert_array_equal(found[0], np.arange(K) * pmax + slots)
    # a column equal to the intercept on the first rows only is not shared
    X2 = X.copy()
    X2[4, N - 1, slots[4]] = 2.0
    assert shared_columns(X2, mask).shape == (0, K)


@pytest.fixture(scope="module")
def factors():
    rng = np.random.default_rng(1)
    X, p, mask, _ = _designs(rng)
    K = X.shape[0]
    F = rng.standard_normal((K, 2))
    D = rng.uniform(0.5, 1.5, K)
    return DesignFactors(X, p, LowRankCovariance(F, D))


def test_m_operator_is_the_dense_m(factors):
    f = factors
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((f.K * f.pmax, 5)) * f.mask.reshape(-1, 1)
    op = MOperator(f)
    assert len(op.shared) == 1
    ref = f.apply_M(Y)
    np.testing.assert_allclose(op(Y), ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def test_gram_form_of_the_score_solves_is_galerkin_solve(factors, monkeypatch):
    f = factors
    la = LanczosCorrection(f, tol=1e-2)
    op = la.apply_M
    assert isinstance(op, MOperator)
    monkeypatch.setattr(MOperator, "gram_cheaper", lambda self, m: True)
    monkeypatch.setattr("alsgls.stats.lanczos.SINGLE_MIN_ERROR", -1.0)   # single precision
    calls = []
    gram_rest = MOperator.gram_rest
    monkeypatch.setattr(MOperator, "gram_rest",
                        lambda self, Zr: calls.append(1) or gram_rest(self, Zr))
    rng = np.random.default_rng(3)
    m = 23
    cols = rng.standard_normal((f.K, f.pmax, m)) * f.mask[:, :, None]
    got = la.galerkin_columns(m, lambda bs: cols[:, :, bs].copy())
    assert calls, "the Gram form was not taken"
    ref = la.galerkin_solve(cols)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
