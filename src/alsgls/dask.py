"""Fitting, predicting and standard errors on Dask arrays.

:func:`alsgls.als_gls` accepts Dask arrays -- the designs as one ``(K, N, p)``
array (or one ``(N, p)`` design shared by every equation), the responses as
an ``(N, K)`` array, chunked along equations, along rows, or both -- and runs
the same ALS sweep as in memory: every ``K x N`` (or ``K x N x p``) quantity
stays a distributed array, persisted once, and each step computes only the
small reductions it needs (``O(K (k + p))`` or ``O(N k)`` numbers) in the
driver.  The result is the same :class:`~alsgls.GLSFit`, with the same
stopping rule and diagnostics.  This module gathers what else works on Dask
data: predictions, the NLL, and model-based standard errors of the
coefficients, each a map-reduce over chunks of equations.

Dask is an optional dependency (``pip install 'alsgls[dask]'``); it is
imported when a function here (or ``als_gls`` with a Dask array) first
needs it.  See ``docs/dask.md`` for fitting from a Zarr store or files, on a
``LocalCluster`` or a real cluster, and the memory model.

Examples
--------
>>> import numpy as np
>>> import dask.array as da
>>> from alsgls import als_gls, simulate_sur
>>> import alsgls.dask as ad
>>> Xs, Y, _ = simulate_sur(N=200, K=20, p=2, k=2, seed=0)
>>> X = da.from_array(np.stack(Xs), chunks=(10, 200, 2))   # chunked along equations
>>> Yd = da.from_array(Y, chunks=(200, 10))
>>> fit = als_gls(X, Yd, k=2)                               # scheduler: threads here
>>> fit.converged, ad.predict(fit, X).shape
(True, (200, 20))
>>> bool(abs(ad.nll_per_row(fit, X, Yd) - fit.nll) < 1e-10 * abs(fit.nll))
True
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .core._backend import is_lazy, require_dask
from .core.api import als_gls
from .core.fit_result import GLSFit
from .core.dispatch import fit_problem
from .core.lazy_problem import build_lazy_problem, check_chunks, lazy_fitted_means
from .core.metrics import nll_per_row as _nll_per_row
from .core.ops import CoefficientLayout, triangular_inverse
from .core.options import solver_options

__all__ = ["als_gls", "fit", "check_chunks", "predict", "residuals", "nll_per_row",
           "coefficient_covariance", "standard_errors", "SE_CHUNK_BYTES"]

#: Bytes of the per-task temporaries of the standard errors (a chunk of the
#: columns of the ``N k x P`` operator ``V``, and its triangular solve).
SE_CHUNK_BYTES = 64 * 2**20


def fit(Xs: Any, Y: Any, k: int, *, residuals: str = "auto",
        labels: Sequence[str] | None = None, **options: Any) -> GLSFit:
    """:func:`alsgls.als_gls` on Dask arrays, with the memory model explicit.

    Parameters
    ----------
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
        Designs (each equation's ``p`` columns one chunk), or one design
        shared by every equation.
    Y : dask.array.Array, shape (N, K)
        Responses, chunked like ``Xs`` along rows and equations.
    k : int
        Number of factors.
    residuals : {"auto", "store", "recompute"}, default "auto"
        ``"store"``: persist the residuals after each update, ``(p + 2) K N``
        doubles held by the workers (data and residuals) and one more ``K N``
        during an update; ``"recompute"``: never store them -- each pass that
        needs them reads ``X`` and ``Y`` and forms ``Y - X B`` on the fly
        (``(p + 1) K N`` doubles, the inputs alone); ``"auto"``: store when
        that fits in half of the workers' memory limits.
    labels : list of K str, optional
        Equation labels for messages.
    **options
        Solver options, as for :func:`alsgls.als_gls` (``tol``, ``max_iter``,
        ``cg_maxiter``, ``eig_maxiter``, ``d_floor``, ``random_state``,
        ``blas_threads``).

    Returns
    -------
    GLSFit
        The same record as the in-memory fit.
    """
    opts = solver_options(None, "alsgls.dask.fit", **options)
    problem = build_lazy_problem(Xs, Y, labels=labels, residuals=residuals)
    return fit_problem(problem, k, opts, solver="als")[0]


def _check_fit(fit: Any) -> GLSFit:
    if not isinstance(fit, GLSFit):
        raise TypeError(f"fit must be a GLSFit (from als_gls), got {type(fit).__name__}")
    return fit


def predict(fit: GLSFit, Xs: Any) -> Any:
    """Fitted means ``X_j B_j`` for Dask designs, lazily.

    Parameters
    ----------
    fit : GLSFit
        A fit of the system (on Dask or NumPy data).
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
        Designs of the rows to predict (or one design shared by every
        equation); columns beyond an equation's ``p_j`` are ignored.

    Returns
    -------
    dask.array.Array, shape (N, K)
        Chunked as ``Xs`` along rows and equations; nothing is computed.
    """
    return lazy_fitted_means(Xs, _check_fit(fit).B)


def residuals(fit: GLSFit, Xs: Any, Y: Any) -> Any:
    """Residuals ``Y - X B`` (N, K) of Dask data under ``fit``, lazily.

    Parameters
    ----------
    fit : GLSFit
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
    Y : dask.array.Array, shape (N, K)

    Returns
    -------
    dask.array.Array, shape (N, K)
    """
    mean = predict(fit, Xs)
    if tuple(Y.shape) != tuple(mean.shape):
        raise ValueError(f"Y has shape {tuple(Y.shape)} but the designs give {mean.shape}")
    return Y - mean


def nll_per_row(fit: GLSFit, Xs: Any, Y: Any) -> float:
    """Gaussian NLL per row of Dask data under ``fit`` (one pass, nothing gathered).

    Parameters
    ----------
    fit : GLSFit
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
    Y : dask.array.Array, shape (N, K)

    Returns
    -------
    float
        ``1/2 [K log 2 pi + log|Sigma|] + 1/(2N) sum_i r_i' Sigma^-1 r_i`` with
        ``Sigma = F F' + diag(D)`` of the fit: on the training data, ``fit.nll``.
    """
    return _nll_per_row(residuals(fit, Xs, Y), fit.F, fit.D)


def _designs(Xs: Any, K: int, da: Any) -> Any:
    """``Xs`` as a float64 Dask array (K, N, p)."""
    X = Xs if is_lazy(Xs) else da.from_array(np.asarray(Xs, dtype=np.float64))
    X = X.astype(np.float64)
    if X.ndim == 2:
        X = da.broadcast_to(X[None], (K,) + X.shape, chunks=((K,),) + X.chunks)
    if X.ndim != 3 or X.shape[0] != K:
        raise ValueError(f"Xs must be a (K, N, p) Dask array with K={K} equations or one "
                         f"(N, p) design, got shape {Xs.shape}")
    return X


def _whitening(gram: np.ndarray, mask: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``T_j`` (K, p, p) with ``T_j T_j' = D_j (X_j'X_j)^-1`` on each equation's
    own columns, zero on the padding (as ``alsgls.stats.factors.DesignFactors.T``)."""
    both = mask[:, :, None] & mask[:, None, :]
    g = np.where(both, gram, 0.0) + np.eye(gram.shape[1]) * ~mask[:, :, None]
    s = np.sqrt(np.einsum("kpp->kp", g))
    L = np.linalg.cholesky(g / s[:, :, None] / s[:, None, :])
    return np.sqrt(D)[:, None, None] * (triangular_inverse(L).transpose(0, 2, 1)
                                        / s[:, :, None]) * both


def _V_columns(Xc: np.ndarray, Tc: np.ndarray, Gc: np.ndarray) -> np.ndarray:
    """Columns of ``V = [g_j (x) X_j T_j]_j`` for a chunk of equations:
    (k N, c p), rows ordered (l, i)."""
    k, N = Gc.shape[1], Xc.shape[1]
    return np.einsum("jl,jna->lnja", Gc, np.matmul(Xc, Tc)).reshape(k * N, -1)


def _core_part(Xc: np.ndarray, Tc: np.ndarray, Gc: np.ndarray) -> np.ndarray:
    """This chunk's share of ``V V'`` (k N, k N)."""
    Vc = _V_columns(Xc, Tc, Gc)
    return Vc @ Vc.T


def _block_part(Xc: np.ndarray, Tc: np.ndarray, Gc: np.ndarray, L: np.ndarray) -> np.ndarray:
    """``(A^-1)_jj = T_j (I + W_j'W_j) T_j'`` for a chunk, ``W = L^-1 V``: (c, p, p)."""
    from scipy.linalg import solve_triangular

    p = Tc.shape[1]
    W = solve_triangular(L, _V_columns(Xc, Tc, Gc), lower=True, check_finite=False)
    W = W.reshape(W.shape[0], -1, p)
    inner = np.eye(p) + np.einsum("mja,mjb->jab", W, W)
    return np.einsum("jab,jbc,jdc->jad", Tc, inner, Tc)


def coefficient_covariance(fit: GLSFit, Xs: Any, *,
                           chunk_bytes: int = SE_CHUNK_BYTES) -> np.ndarray:
    """Model-based covariance blocks ``Var(beta_j) = (A^-1)_jj`` on Dask designs.

    ``A = X'(Sigma^-1 (x) I_N)X`` is the GLS information at the fitted
    ``Sigma``; its inverse's diagonal blocks are exact (to rounding), by the
    Woodbury identity through the ``N k x N k`` core ``C = I - V V'`` of
    :class:`alsgls.stats.exact.ExactCore` (rows space).  Both passes are
    map-reduces over chunks of equations: ``V V' = sum_chunks V_c V_c'`` (a
    tree sum of ``N k x N k`` partials), factored in the driver, then each
    chunk's blocks from ``L^-1 V_c`` with ``L`` sent to every worker once.
    Nothing of size K x N is gathered.

    Parameters
    ----------
    fit : GLSFit
        The fit (its ``F``, ``D`` and coefficient counts).
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
        The designs the fit was made on.
    chunk_bytes : int, default SE_CHUNK_BYTES
        Target size of a chunk's columns of ``V`` (``8 k N c p`` bytes for
        ``c`` equations): equations are regrouped into such chunks, each
        holding whole rows.

    Returns
    -------
    ndarray, shape (K, p, p)
        ``(A^-1)_jj``, zero outside each equation's own ``p_j`` columns.

    Notes
    -----
    Cost: ``O(K p (N k)^2)`` flops in each pass and ``8 (N k)^2`` bytes for
    the core and each partial -- the in-memory ``se_method="exact"``.  The
    core grows with ``N``: at ``N k`` beyond a few thousand it is the
    limit (the in-memory Lanczos correction is not ported to Dask).
    """
    da = require_dask("standard errors on Dask arrays")
    import dask
    from scipy.linalg import cholesky

    _check_fit(fit)
    K, k = fit.K, fit.k
    layout = CoefficientLayout(np.array([np.size(b) for b in fit.B], dtype=np.int64))
    X = _designs(Xs, K, da)
    _, N, p = X.shape
    if p < layout.pmax:
        raise ValueError(f"Xs has {p} columns but the fit has equations with {layout.pmax}")
    mask = np.arange(p)[None, :] < layout.p[:, None]
    gram = np.asarray(da.einsum("knp,knq->kpq", X, X).compute())
    T = _whitening(gram, mask, fit.D)
    if k == 0:
        return np.einsum("jab,jdb->jad", T, T)
    G = fit.cov.G
    c = int(max(1, min(K, chunk_bytes // max(8 * k * N * p, 1))))
    Xr = X.rechunk({0: c, 1: -1, 2: -1})            # whole rows per task
    blocks = Xr.to_delayed().ravel()
    starts = np.cumsum((0,) + Xr.chunks[0])
    parts = [dask.delayed(_core_part)(b, T[a:e], G[a:e])
             for b, a, e in zip(blocks, starts[:-1], starts[1:])]
    while len(parts) > 1:           # a tree sum of the (N k)^2 partials
        parts = [dask.delayed(np.add)(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    C = -np.asarray(dask.compute(parts[0])[0])
    C[np.diag_indices_from(C)] += 1.0
    try:
        L = cholesky(C, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError as exc:
        raise np.linalg.LinAlgError(
            "the GLS information matrix X'(Sigma^-1 (x) I)X is numerically singular "
            "(Sigma-hat nearly singular or designs nearly collinear across equations); "
            "standard errors are not available") from exc
    Ld = dask.delayed(L, pure=True)
    out = dask.compute(*(dask.delayed(_block_part)(b, T[a:e], G[a:e], Ld)
                         for b, a, e in zip(blocks, starts[:-1], starts[1:])))
    return np.concatenate(out)


def standard_errors(fit: GLSFit, Xs: Any, *, chunk_bytes: int = SE_CHUNK_BYTES) -> np.ndarray:
    """Model-based standard errors of the coefficients on Dask designs.

    Parameters
    ----------
    fit : GLSFit
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
        The designs the fit was made on.
    chunk_bytes : int, default SE_CHUNK_BYTES
        As in :func:`coefficient_covariance`.

    Returns
    -------
    ndarray, shape (K, p)
        ``sqrt(diag((A^-1)_jj))``; zero past each equation's ``p_j``.
        The same numbers as ``SUR(...).fit().bse`` (``cov_type="unadjusted"``,
        ``se_method="exact"``) in memory.
    """
    blocks = coefficient_covariance(fit, Xs, chunk_bytes=chunk_bytes)
    return np.sqrt(np.maximum(np.einsum("jaa->ja", blocks), 0.0))
