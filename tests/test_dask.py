"""Fits on Dask arrays, on a dask.distributed LocalCluster of two worker processes.

Oracle: the in-memory fit of the same data (``als_gls`` on NumPy arrays).  The
Dask path runs the same sweep (``alsgls.core._backend`` hooks only decide
when values are computed), so the two follow the same trajectory and differ
by the order of floating-point sums over chunks: the issue's tolerances --
NLL to 1e-10 relative, coefficients to 1e-8 -- are far above that round-off
(observed about 1e-15), and the iteration counts must agree exactly.
Standard errors: the in-memory exact strategy (``GLSCovariance(...,
method="exact")``), the same mathematics factored the same way (rtol 1e-10).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from alsgls import GLSCovariance, als_gls, em_gls, mse, nll_per_row, simulate_sur  # noqa: E402
import alsgls.dask as ad  # noqa: E402

K, N, P, RANK = 40, 300, 2, 2


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the cluster's own start-up notes
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           dashboard_address=None, silence_logs=50)
        c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    Xs, Y, _ = simulate_sur(N=N, K=K, p=P, k=RANK, seed=3)
    X3 = np.stack(Xs)
    return X3, Y, als_gls(X3, Y, RANK)


def _dask(X3, Y, eq_chunk, row_chunk):
    return (da.from_array(X3, chunks=(eq_chunk, row_chunk, X3.shape[2])),
            da.from_array(Y, chunks=(row_chunk, eq_chunk)))


def _assert_same_fit(f_dask, f_mem, counts=True):
    assert f_dask.converged and f_mem.converged
    assert f_dask.n_iter == f_mem.n_iter
    assert abs(f_dask.nll - f_mem.nll) <= 1e-10 * abs(f_mem.nll)
    B0, B1 = np.stack(f_mem.B), np.stack(f_dask.B)
    assert np.max(np.abs(B1 - B0)) <= 1e-8 * np.max(np.abs(B0))
    # Sigma is determined to about sqrt(tol) by the stopping rule; on the same
    # trajectory it agrees to round-off, but where L-BFGS-B decides (the coupled
    # phase: its termination compares NLL differences at round-off) only to that
    tight = 1e-8 if counts else 1e-6
    np.testing.assert_allclose(f_dask.F @ f_dask.F.T, f_mem.F @ f_mem.F.T, rtol=tight,
                               atol=tight * np.abs(f_mem.F).max() ** 2)
    np.testing.assert_allclose(f_dask.D, f_mem.D, rtol=tight)
    np.testing.assert_allclose(f_dask.nll_trace, f_mem.nll_trace, rtol=1e-10)
    if counts:      # the same trajectory: the same diagnostics
        for name in ("cg_iterations", "eig_iterations", "backtracks", "profile_evaluations"):
            np.testing.assert_array_equal(getattr(f_dask, name), getattr(f_mem, name))


@pytest.mark.parametrize("chunks, residuals", [
    ((K // 2, N), "auto"), ((K, N // 2), "recompute"), ((K // 2, N // 2), "store")],
    ids=["equations", "rows", "both"])
def test_fit_equals_in_memory_fit(client, data, chunks, residuals):
    """Residuals stored (persisted after each update) or recomputed (Yt - X theta
    inside each pass): the same numbers up to round-off either way."""
    X3, Y, f_mem = data
    Xd, Yd = _dask(X3, Y, *chunks)
    f_dask = als_gls(Xd, Yd, RANK) if residuals == "auto" else ad.fit(
        Xd, Yd, RANK, residuals=residuals)
    _assert_same_fit(f_dask, f_mem)
    # predictions and the NLL on the Dask data, lazily, nothing gathered
    pred = f_dask.predict(Xd)
    assert isinstance(pred, da.Array) and pred.shape == (N, K)
    np.testing.assert_allclose(pred.compute(), f_mem.predict(X3), rtol=1e-8, atol=1e-12)
    assert abs(ad.nll_per_row(f_dask, Xd, Yd) - f_dask.nll) <= 1e-12 * abs(f_dask.nll)
    assert abs(nll_per_row(Yd - pred, f_dask.F, f_dask.D) - f_dask.nll) <= 1e-12 * f_dask.nll
    assert mse(Yd, pred) == pytest.approx(mse(Y, f_mem.predict(X3)), rel=1e-10)


def test_subspace_iteration_path_and_standard_errors(client):
    """min(K, N) > 64: the factor step's subspace iteration (not the Gram
    eigenpairs); the model-based SEs from two map-reduces over equations."""
    Xs, Y, _ = simulate_sur(N=100, K=70, p=2, k=1, seed=0, factor_strength=2.0)
    X3 = np.stack(Xs)
    f_mem = als_gls(X3, Y, 1)
    Xd, Yd = _dask(X3, Y, 35, 100)
    f_dask = als_gls(Xd, Yd, 1)
    _assert_same_fit(f_dask, f_mem)
    assert f_dask.eig_iterations.sum() > 0
    ref = GLSCovariance(X3, np.full(70, 2), f_dask.cov, method="exact").diagonal_blocks
    blocks = ad.coefficient_covariance(f_dask, Xd, chunk_bytes=8 * 1 * 100 * 2 * 20)
    np.testing.assert_allclose(blocks, ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ad.standard_errors(f_dask, Xd),
                               np.sqrt(np.einsum("jaa->ja", ref)), rtol=1e-10)


def test_shared_design_and_mixed_inputs(client):
    """One (N, p) Dask design for every equation: the Kruskal shortcut (GLS =
    OLS) as in memory; a NumPy Y is chunked like the designs."""
    Xs, Y, _ = simulate_sur(N=120, K=12, p=2, k=1, seed=3)
    f_mem = als_gls(Xs[0], Y, 1)
    f_dask = als_gls(da.from_array(Xs[0], chunks=(60, 2)), Y, 1)
    _assert_same_fit(f_dask, f_mem, counts=False)


@pytest.mark.parametrize("shape, k", [((25, 6, 4), 1), ((60, 5, 2), 4)],
                         ids=["coupled-phase", "full-rank"])
def test_coupled_phase_and_full_rank(shape, k):
    """A short panel (the coupled phase: Anderson in beta, L-BFGS-B on the
    profile) and k = K - 1 (the unrestricted Sigma step), on the synchronous
    scheduler: hundreds of small reductions, each a round trip on a cluster."""
    import dask

    n, K_, p = shape
    Xs, Y, _ = simulate_sur(N=n, K=K_, p=p, k=1, seed=3 if k == 1 else 4)
    X3 = np.stack(Xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # the Ledermann note at k = K - 1
        f_mem = als_gls(X3, Y, k, tol=1e-12)
        with dask.config.set(scheduler="synchronous"):
            f_dask = als_gls(*_dask(X3, Y, 3, n // 2), k, tol=1e-12)
    _assert_same_fit(f_dask, f_mem, counts=False)


def test_unbounded_likelihood_is_refused_as_in_memory(client, data):
    X3, Y, _ = data
    Y2 = Y.copy()
    Y2[:, 7] = Y2[:, 3]
    with pytest.raises(ValueError) as mem:
        als_gls(X3, Y2, RANK)
    with pytest.raises(ValueError) as lazy:
        als_gls(*_dask(X3, Y2, 10, N), RANK)
    assert str(lazy.value) == str(mem.value)
    assert "same dependent variable" in str(lazy.value)


@pytest.mark.parametrize("make, match", [
    (lambda X, Y: (X.rechunk({2: 1}), Y), r"chunked along its regressors.*rechunk\(\{2: -1\}\)"),
    (lambda X, Y: (X, Y.rechunk({1: 8})), r"differently along the equations.*Y.rechunk"),
    (lambda X, Y: (X, Y.rechunk({0: 50})), r"differently along the rows.*Y.rechunk"),
    (lambda X, Y: (X[:, :-1], Y), rf"Xs has {N - 1} rows but Y has {N}"),
    (lambda X, Y: (X, da.where(da.arange(N)[:, None] == 5, np.nan, Y)),
     r"missing values \(NaN\).*equation 0.*must be complete"),
    (lambda X, Y: (X.astype(np.complex128), Y), r"Xs must be real"),
    (lambda X, Y: (list(X), Y), r"not a list"),
], ids=["p-chunked", "equation-chunks", "row-chunks", "rows", "nan", "complex", "list"])
def test_bad_inputs_are_refused_clearly(client, data, make, match):
    X3, Y, _ = data
    Xd, Yd = make(*_dask(X3, Y, 10, 100))
    with pytest.raises((ValueError, TypeError), match=match):
        als_gls(Xd, Yd, RANK)


def test_other_entry_points_refuse_dask_instead_of_gathering(data):
    X3, Y, _ = data
    Xd, Yd = _dask(X3, Y, 10, 100)
    with pytest.raises(TypeError, match="Dask arrays are fitted by als_gls"):
        em_gls(Xd, Yd, RANK)
    with pytest.raises(ValueError, match="weights are not supported with Dask"):
        als_gls(Xd, Yd, RANK, weights=np.ones(N))


def test_module_examples():
    """The examples of alsgls.dask's docstring (synchronous scheduler: they
    show the API, not the cluster)."""
    import doctest

    import dask

    with dask.config.set(scheduler="synchronous"):
        res = doctest.testmod(ad, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0

