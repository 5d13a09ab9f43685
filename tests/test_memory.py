"""The ALS path never allocates K x K: peak memory at K = 4000 under tracemalloc."""

import tracemalloc

import numpy as np

from alsgls import als_gls


def test_no_k_by_k_allocation_at_k4000():
    K, N, p, k = 4000, 40, 2, 2
    rng = np.random.default_rng(0)
    X = rng.standard_normal((K, N, p))
    F = rng.standard_normal((K, k))
    Y = np.einsum("knp,kp->nk", X, rng.standard_normal((K, p))) \
        + rng.standard_normal((N, k)) @ F.T + rng.standard_normal((N, K))
    data_bytes = X.nbytes + Y.nbytes  # 2.6 MB + 1.3 MB
    tracemalloc.start()
    fit = als_gls(X, Y, k, max_sweeps=20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fit.F.shape == (K, k)
    dense = K * K * 8  # 128 MB for one K x K float64 matrix
    # the fit holds a handful of copies of the data plus O(K k) state
    assert peak < dense / 8, f"peak {peak / 1e6:.1f} MB vs K x K {dense / 1e6:.0f} MB"
    assert peak < 12 * data_bytes
