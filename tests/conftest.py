"""Seeded fixtures shared by the test modules."""

import numpy as np
import pytest

from alsgls import simulate_sur


@pytest.fixture
def small_system():
    """K = 12 equations, N = 200, p = 2, k = 2 strong factors."""
    return simulate_sur(N=200, K=12, p=2, k=2, seed=11, factor_strength=1.0)


@pytest.fixture
def medium_system():
    """K = 60, N = 300, p = 3 with intercepts and correlated regressors, k = 3."""
    return simulate_sur(N=300, K=60, p=3, k=3, seed=5, intercept=True, x_common=0.5)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
