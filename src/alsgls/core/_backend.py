"""The solver's array backends: NumPy arrays in memory, Dask arrays on a cluster.

The ALS sweep (:mod:`alsgls.core.als`, :mod:`alsgls.core.als_factor`) and its
kernels (:mod:`alsgls.core.ops`) are written once, against the NumPy API
(stacked ``matmul``, ``einsum``, elementwise arithmetic), which Dask arrays
also implement (``__array_function__``, ``__array_ufunc__``).  What differs
is *when* values exist: a Dask expression is a task graph, evaluated only
when asked.  The few places where that matters call the hooks here:

* :func:`materialize` -- a small reduced quantity (``O(K (k + p))`` or
  ``O(N k)`` numbers: a gradient, the product of the residuals with a
  subspace basis, residual variances) that the driver needs as numbers;
* :func:`persist` -- a large ``K x N`` quantity that stays distributed,
  evaluated once and held in the workers' memory instead of being
  recomputed from its graph at each use; :func:`settle_residuals` does that
  for the residuals after the coefficients change, or, when the workers
  cannot hold them beside the data, re-expresses them as ``Yt - X theta``
  (fused into each later pass);
* :func:`compute_many` -- several small reductions in one pass over the data.

For NumPy arrays every hook returns its argument after one type check
(tens of nanoseconds), so the in-memory path is unchanged.  Dask itself is
imported only when a Dask array is met (:func:`require_dask` names the extra
to install when it is missing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_lazy", "materialize", "persist", "settle_residuals", "compute_many",
           "is_broadcast",
           "require_dask", "gram_top_eigenpairs", "DASK_EXTRA"]

#: How to install the optional Dask support.
DASK_EXTRA = "pip install 'alsgls[dask]'  (dask[array] and distributed)"


def is_lazy(a: Any) -> bool:
    """True for a Dask collection (anything with a task graph), False for a
    NumPy array and everything else."""
    return type(a) is not np.ndarray and hasattr(a, "__dask_graph__")


#: Values of the last few Dask arrays materialized, by name.  A Dask array's
#: name is a token of its whole computation, so equal names mean equal
#: values: the sweep asks for some reductions twice (the residual variances
#: of one residual array in the coupled phase), and a round trip to a
#: cluster costs tens of milliseconds.  Values are read-only.
_RECENT: dict = {}
RECENT_VALUES = 8


def materialize(a: Any) -> Any:
    """The value of ``a`` as a NumPy array: computed for a Dask array (meant for
    small reduced quantities; read-only, cached by the array's name), ``a``
    itself otherwise."""
    if type(a) is np.ndarray or not hasattr(a, "__dask_graph__"):
        return a
    name = getattr(a, "name", None)
    value = _RECENT.get(name)
    if value is None:
        value = np.asarray(a.compute())
        value.flags.writeable = False
        if name is not None:
            _RECENT[name] = value
            for old in list(_RECENT)[:-RECENT_VALUES]:
                del _RECENT[old]
    return value


def persist(a: Any) -> Any:
    """A Dask array evaluated once into (distributed) memory, its graph
    replaced by the stored chunks; ``a`` itself for anything else."""
    if type(a) is np.ndarray or not hasattr(a, "__dask_graph__"):
        return a
    return a.persist()


def settle_residuals(problem: Any, Rt: Any, theta: np.ndarray) -> Any:
    """The residuals ``Rt`` (K, N) after an update of the coefficients ``theta``:
    ``Rt`` itself for NumPy; for Dask, ``problem.settle(Rt, theta)`` -- the
    residuals persisted, or re-expressed as ``Yt - X theta`` when the workers
    cannot hold them (:class:`alsgls.core.lazy_problem.LazyProblem`)."""
    if type(Rt) is np.ndarray or not hasattr(Rt, "__dask_graph__"):
        return Rt
    return problem.settle(Rt, theta)


def compute_many(*arrays: Any) -> tuple:
    """The values of several arrays, the Dask ones evaluated together in one
    graph (shared inputs read once); NumPy arrays are passed through."""
    lazy = [i for i, a in enumerate(arrays) if is_lazy(a)]
    if not lazy:
        return arrays
    import dask

    values = dask.compute(*(arrays[i] for i in lazy))
    out = list(arrays)
    for i, v in zip(lazy, values):
        out[i] = np.asarray(v)
    return tuple(out)


def is_broadcast(X: Any) -> bool:
    """``X`` (K, ...) is one array seen K times (a zero-stride NumPy view, as
    ``Problem`` stores a design shared by every equation); False for a Dask
    array, whose kernels take the general path."""
    strides = getattr(X, "strides", None)
    return strides is not None and X.shape[0] > 1 and strides[0] == 0


def require_dask(what: str = "Dask support") -> Any:
    """``dask.array``, or ``ImportError`` naming the extra to install."""
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - exercised without dask
        raise ImportError(f"{what} needs the optional dependency dask: {DASK_EXTRA}") from exc
    return da


def gram_top_eigenpairs(Rt: Any, scale: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of ``W W'``, ``W = diag(scale) Rt`` (K, N) Dask, when
    ``min(K, N)`` is small: the lazy counterpart of the thin SVD of
    :func:`alsgls.core.ops.top_eigenpairs`.

    The small Gram matrix (``W W'`` when ``K <= N``; else ``W'W``, N x N) is
    one reduction, factored in the driver by ``eigh``; for ``W'W`` the
    eigenvectors are ``W v / sqrt(mu)``, one more pass.  Eigenvalues are
    exact to ``eps * lam_1`` (enough for the top k); directions whose
    eigenvalue is at round-off are completed to an orthonormal set.
    """
    from scipy.linalg import eigh

    K, N = Rt.shape
    W = scale[:, None] * Rt
    if K <= N:
        mu, E = eigh(materialize(W @ W.T))
        return mu[::-1][:k].clip(min=0.0), E[:, ::-1][:, :k]
    mu, E = eigh(materialize(W.T @ W))
    mu, E = mu[::-1][:k].clip(min=0.0), E[:, ::-1][:, :k]
    tiny = mu <= 1e-13 * max(float(mu[0]) if mu.size else 0.0, np.finfo(float).tiny)
    U = materialize(W @ (E / np.sqrt(np.where(tiny, 1.0, mu))))
    if tiny.any():      # null directions: any orthonormal completion will do
        Q, _ = np.linalg.qr(np.column_stack([U[:, ~tiny], np.eye(K, int(tiny.sum()))]))
        U = U.copy()
        U[:, tiny] = Q[:, int((~tiny).sum()):]
    return mu, U
