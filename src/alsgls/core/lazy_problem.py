"""A validated SUR system held in Dask arrays: :class:`LazyProblem`.

``als_gls`` routes Dask inputs here instead of to
:func:`alsgls.core.problem.build_problem`; the result is a
:class:`~alsgls.core.problem.Problem` whose ``X`` (K, N, p) and ``Yt`` (K, N)
are Dask arrays, persisted once, and whose small quantities -- the Gram
matrices, the design column sums, per-equation sums of the responses -- are
NumPy arrays computed in one validation pass.  The dispatcher
(:func:`alsgls.core.dispatch.fit_problem`) and the ALS core run on it
unchanged: the kernels of :mod:`alsgls.core.ops` are NumPy-API expressions
that Dask evaluates lazily, and the hooks of :mod:`alsgls.core._backend`
compute the small reductions (``O(K (k + p))`` numbers) and persist the
residuals (``K x N``) where the sweep needs them.

What a :class:`LazyProblem` overrides are the methods of ``Problem`` that
write into arrays in place or index the data: least squares
(:meth:`LazyProblem.ols`), the exact-fit test and the variance statistics
(from the validation pass), and the existence check of
:mod:`alsgls.core.existence` -- bit-identical responses from per-chunk
hashes before the fit, the search among the equations at the floor after it
on those equations' data alone, gathered (:meth:`LazyProblem.relation_at_rank`).

Restrictions (a deliberate scope): one ``(K, N, p)`` array (or one ``(N, p)``
design shared by every equation), complete responses (no NaN: the
missing-data EM runs in memory), no weights; chunks of the designs and the
responses must agree along equations and rows, and a design's ``p`` columns
must be one chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from ._backend import compute_many, is_lazy, materialize, persist, require_dask
from .ops import CoefficientLayout, design_matvec, design_rmatvec
from .problem import (
    REFINE_RTOL,
    ROUNDOFF_FACTOR,
    Problem,
    _check_counts,
    _readonly,
    check_designs,
    check_missing,
)

__all__ = ["LazyProblem", "LazySums", "build_lazy_problem", "lazy_fitted_means",
           "check_chunks"]


#: Values of ``residuals=`` (:func:`build_lazy_problem`).
RESIDUAL_MODES = ("auto", "store", "recompute")
#: ``residuals="auto"`` stores the residuals when data, residuals and one
#: update take at most this share of the workers' memory limits (dask starts
#: spilling a worker's data to disk at 60% of its limit).
RESIDUAL_MEMORY_SHARE = 0.5
#: The existence check of a Dask problem before the fit factors ``[X, Y]``
#: (N x (P + K)) only up to this many columns (its R factor: 8 (P + K)^2 bytes).
SKETCH_COLUMNS = 2048


@dataclass(frozen=True)
class LazySums:
    """The per-equation reductions of the validation pass (NumPy, small).

    Attributes
    ----------
    xsum : ndarray, shape (K, p)
        ``X_j' 1``: column sums of each design.
    ysq : ndarray, shape (K,)
        ``sum_i y_ij^2``.
    ydev, ydevsq : ndarray, shape (K,)
        ``sum_i (y_ij - y_0j)`` and ``sum_i (y_ij - y_0j)^2`` about the first
        row (a shift that keeps the centred variance free of cancellation).
    hashes : ndarray of int64, shape (K, row chunks)
        A hash of each equation's responses in each row chunk (identical
        responses have identical rows of hashes).
    """

    xsum: np.ndarray
    ysq: np.ndarray
    ydev: np.ndarray
    ydevsq: np.ndarray
    hashes: np.ndarray


@dataclass(frozen=True, eq=False)
class LazyProblem(Problem):
    """A :class:`~alsgls.core.problem.Problem` whose data are Dask arrays.

    ``X`` (K, N, p) and ``Yt`` (K, N) are persisted Dask arrays with the same
    chunks along equations and rows; ``gram``, ``layout`` and ``sums`` are
    NumPy.  Built by :func:`build_lazy_problem`.

    Attributes
    ----------
    sums : LazySums
        Reductions of the validation pass.
    shared_design : bool
        One design for every equation (``X`` broadcasts it).
    store_residuals : bool
        Persist the residuals after each update (``(p + 2) K N`` doubles in
        the workers); False: re-express them as ``Yt - X theta``, fused into
        each pass (``(p + 1) K N`` doubles, each pass over the residuals
        reads the data instead).
    """

    sums: LazySums | None = None
    shared_design: bool = False
    store_residuals: bool = True

    @property
    def shared(self) -> bool:
        return self.shared_design

    def constant_columns(self) -> np.ndarray:
        """(K, pmax) bool, as :meth:`Problem.constant_columns` (one pass)."""
        hi, lo, first = compute_many(self.X.max(axis=1), self.X.min(axis=1), self.X[:, 0, :])
        return (hi == lo) & (first != 0) & np.isfinite(hi) & self.mask

    def take(self, rows: np.ndarray, what: str = "the selected rows", *,
             check: bool = True) -> Problem:
        raise NotImplementedError("row subsets (cross-validation folds) of Dask data are "
                                  "not supported; slice the Dask arrays and fit again")

    def __getstate__(self) -> dict:
        raise TypeError("a problem of Dask arrays is not pickled; pickle the fit instead")

    def settle(self, Rt: Any, theta: np.ndarray) -> Any:
        """The residuals after the coefficients became ``theta``
        (:func:`alsgls.core._backend.settle_residuals`): ``Rt`` persisted, or
        ``Yt - X theta`` (the same values to round-off, a short graph)."""
        if self.store_residuals:
            return persist(Rt)
        return self.Yt - design_matvec(self.X, theta)

    # -- least squares and the statistics of the validation pass ----------------------
    def ols(self, sumsq: bool = False, moments: bool = False) -> tuple:
        """:meth:`Problem.ols` on Dask data: coefficients (K, p) NumPy, residuals
        (K, N) Dask (persisted), and with ``sumsq=True`` their sums of squares;
        two passes, the refinement's test in the second.  ``moments=True``
        appends None (the Dask beta-step forms its gradients from the residuals)."""
        theta = self.solve_gram(materialize(design_rmatvec(self.X, self.Yt)))
        Rt = self.Yt - design_matvec(self.X, theta)
        g, ss = compute_many(design_rmatvec(self.X, Rt), self._sumsq(Rt))
        delta = self.solve_gram(g)
        if np.any(np.einsum("kp,kp->k", delta, g) > REFINE_RTOL ** 2 * ss):
            theta = theta + delta
            Rt = Rt - design_matvec(self.X, delta)
            ss = None
        Rt = self.settle(Rt, theta)
        out = (theta, Rt)
        if sumsq:
            out += (materialize(self._sumsq(Rt)) if ss is None else ss,)
        return out + (None,) if moments else out

    @cached_property
    def spans_constant(self) -> np.ndarray:
        """As :attr:`Problem.spans_constant`, from the column sums ``X_j' 1``."""
        c = self.sums.xsum
        rho = 1.0 - np.einsum("kp,kp->k", c, self.solve_gram(c)) / self.n_weighted
        return rho <= ROUNDOFF_FACTOR ** 2 * np.finfo(float).eps * self.condition ** 2

    @cached_property
    def total_variances(self) -> tuple[np.ndarray, np.ndarray]:
        """As :attr:`Problem.total_variances`; the centred variance from the
        sums about the first row (no second pass)."""
        n = self.n_weighted
        msq = self.sums.ysq / n
        d = self.sums.ydev / n
        centred = np.maximum(self.sums.ydevsq / n - d * d, 0.0)
        return np.where(self.spans_constant, centred, msq), msq

    def exact_fits(self, Rt: Any, sumsq: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Problem.exact_fits` (one reduction of the residuals)."""
        s = (materialize(self._sumsq(Rt)) if sumsq is None else sumsq) / self.n_weighted
        return s, np.flatnonzero(s <= self.zero_variance_threshold)

    # -- the existence check (alsgls.core.existence) --------------------------------
    def relation_at_rank(self, k: int, candidates: np.ndarray | None = None):
        """:func:`alsgls.core.existence.relation_at_rank` on Dask data.

        Before a fit (``candidates`` None): two equations with bit-identical
        responses, from the hashes of the validation pass (then verified);
        then, where the in-memory check would search, the same search on the
        R factor of ``[X_1 ... X_K, Y]`` (:meth:`_sketch`); otherwise
        undecided, so the dispatcher checks the fit's end point.
        After it (the equations at the floor): the exact search on those
        equations' data, gathered (``len(candidates) x N x (p + 1)`` numbers).
        """
        from .existence import ExactRelation, ExistenceCheck, relation_at_rank

        if candidates is None:
            pair = self._identical_pair()
            if pair is not None:
                return ExistenceCheck(ExactRelation(pair, np.array([1.0, -1.0]), self.N,
                                                    True), True)
            sketch = self._sketch(k)
            return ExistenceCheck(None, False) if sketch is None else relation_at_rank(sketch, k)
        C = np.asarray(candidates, dtype=int)
        check = relation_at_rank(self._gather(C), k, candidates=np.arange(C.size))
        if check.relation is None:
            return check
        rel = dataclasses.replace(check.relation, equations=C[check.relation.equations])
        return ExistenceCheck(rel, check.decided)

    def _sketch(self, k: int) -> "_Gathered | None":
        """An in-memory stand-in with the same existence answer: the designs and
        responses replaced by the columns of the R factor of the stacked
        ``A = [X_1 ... X_K, Y]`` (N x (P + K); one shared design once).

        ``A = Q R`` with orthonormal ``Q``, so every quantity the search uses
        -- column norms, projections onto spans of columns, null spaces and
        singular values of column subsets -- is the same on ``R``'s
        ``min(N, P + K)`` rows, to the backward error of Householder QR.  R
        comes from a map-reduce over row chunks (TSQR, one pass).  None --
        undecided -- where the in-memory check would not search either, or
        where ``N (P + K)^2`` exceeds its budget or ``P + K`` exceeds
        :data:`SKETCH_COLUMNS`.
        """
        from .existence import EXISTENCE_CHECK_FLOPS, SUBSET_BUDGET, _subsets

        K, N, p = self.K, self.N, self.pmax
        regressors = p if self.shared else min(N, K * p)
        if k < K - 1 and regressors + K > N and _subsets(K, k + 1) > SUBSET_BUDGET:
            return None
        cols = (p if self.shared else K * p) + K
        if cols > SKETCH_COLUMNS or float(N) * cols * cols > EXISTENCE_CHECK_FLOPS:
            return None
        da = require_dask()
        X = self.X[0] if self.shared else self.X.transpose(1, 0, 2).reshape(N, K * p)
        A = da.concatenate([X, self.Yt.T], axis=1).rechunk({1: -1})
        Rb = A.map_blocks(lambda b: np.linalg.qr(b, mode="r"), dtype=np.float64,
                          chunks=(tuple(min(c, cols) for c in A.chunks[0]), (cols,)))
        R = np.linalg.qr(materialize(Rb), mode="r")
        m = R.shape[0]
        if self.shared:
            Xr = np.broadcast_to(R[:, :p], (K, m, p))
        else:
            Xr = np.ascontiguousarray(R[:, : K * p].reshape(m, K, p).transpose(1, 0, 2))
        return _Gathered(
            X=_readonly(Xr), Yt=_readonly(np.ascontiguousarray(R[:, -K:].T)),
            layout=self.layout, gram=self.gram, labels=self.labels, rows=self.rows,
            n_rows_in=self.n_rows_in, names=tuple(self.equation(j) for j in range(K)),
            parent_K=K, parent_N=N)

    def gathered(self, rel):
        """The equations of the relation ``rel`` as an in-memory problem (named
        as in this one) and ``rel`` in its numbering: for
        :func:`alsgls.core.existence.describe`."""
        J = np.asarray(rel.equations, dtype=int)
        return self._gather(J), dataclasses.replace(rel, equations=np.arange(J.size))

    def _gather(self, J: np.ndarray) -> "_Gathered":
        X, Yt = compute_many(self.X[J], self.Yt[J])
        return _Gathered(
            X=_readonly(np.ascontiguousarray(X)), Yt=_readonly(np.ascontiguousarray(Yt)),
            layout=CoefficientLayout(self.p[J]), gram=self.gram[J], labels=self.labels,
            rows=self.rows, n_rows_in=self.n_rows_in,
            names=tuple(self.equation(int(j)) for j in J), parent_K=self.K)

    def _identical_pair(self) -> np.ndarray | None:
        """The smallest pair of equations with bit-identical responses, or None:
        equal rows of hashes (:func:`alsgls.core.existence.tied_pairs`), each
        candidate verified on the data."""
        from .existence import tied_pairs

        for i, j in tied_pairs(self.sums.hashes):
            if bool(materialize((self.Yt[i] == self.Yt[j]).all())):
                return np.array([i, j])
        return None


@dataclass(frozen=True, eq=False)
class _Gathered(Problem):
    """Some equations of a :class:`LazyProblem`, in memory, for the existence
    check: named as in the whole problem, whose K they report."""

    names: tuple = ()
    parent_K: int = 0
    parent_N: int = 0

    @property
    def K(self) -> int:
        return self.parent_K

    @property
    def N(self) -> int:
        return self.parent_N or self.Yt.shape[1]

    def equation(self, j: int) -> str:
        return self.names[j]


class _Materializing:
    """Indexing computes: ``check_designs`` reads one design only on failure."""

    def __init__(self, a: Any) -> None:
        self.a = a

    def __getitem__(self, index: Any) -> np.ndarray:
        return materialize(self.a[index])


def _hash_rows(block: np.ndarray) -> np.ndarray:
    """A deterministic 64-bit hash of each row of a block: (c, n) -> (c, 1)."""
    block = np.ascontiguousarray(block)
    return np.array([[int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(),
                                     "little", signed=True)] for r in block],
                    dtype=np.int64).reshape(block.shape[0], 1)


def _as_dask_float(a: Any, name: str, da: Any) -> Any:
    """A Dask array as float64 (lazily), checking its type and dtype."""
    if not isinstance(a, da.Array):
        raise TypeError(f"{name} must be a Dask array or a NumPy array, got "
                        f"{type(a).__name__} (a Dask DataFrame: .to_dask_array(lengths=True))")
    dt = np.dtype(a.dtype)
    if dt == object or not (np.issubdtype(dt, np.number) or dt == bool):
        raise TypeError(f"{name} must be numeric, got dtype {dt}")
    if np.issubdtype(dt, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {dt}")
    return a if dt == np.float64 else a.astype(np.float64)


def _coerce(Xs: Any, Y: Any, da: Any) -> tuple[Any, Any]:
    """Both inputs as Dask arrays; a NumPy one is chunked like the other."""
    if isinstance(Xs, (list, tuple)):
        raise TypeError("with Dask arrays, pass the designs as one (K, N, p) array (or one "
                        "(N, p) design shared by every equation), not a list: "
                        "da.stack(Xs) stacks equal-width designs")
    if not is_lazy(Y):
        Ya = np.asarray(Y, dtype=np.float64) if not hasattr(Y, "to_numpy") else Y.to_numpy()
        Xd = _as_dask_float(Xs, "Xs", da)
        if Ya.ndim != 2:
            raise ValueError(f"Y must be 2-D, got an array of shape {Ya.shape}")
        rows = Xd.chunks[1] if Xd.ndim == 3 else Xd.chunks[0]
        eqs = Xd.chunks[0] if Xd.ndim == 3 else (Ya.shape[1],)
        if Ya.shape[0] != sum(rows) or (Xd.ndim == 3 and Ya.shape[1] != sum(eqs)):
            return Xd, da.from_array(Ya)        # shapes are reported by the caller
        return Xd, da.from_array(Ya, chunks=(rows, eqs))
    Yd = _as_dask_float(Y, "Y", da)
    if not is_lazy(Xs):
        Xa = np.asarray(Xs, dtype=np.float64)
        if Xa.ndim == 3 and Xa.shape[:2] == (Yd.shape[1], Yd.shape[0]):
            return da.from_array(Xa, chunks=(Yd.chunks[1], Yd.chunks[0], -1)), Yd
        if Xa.ndim == 2 and Xa.shape[0] == Yd.shape[0]:
            return da.from_array(Xa, chunks=(Yd.chunks[0], -1)), Yd
        return da.from_array(Xa), Yd
    return _as_dask_float(Xs, "Xs", da), Yd


def check_chunks(Xs: Any, Y: Any) -> None:
    """Check that Dask designs ``Xs`` (K, N, p) or (N, p) and responses ``Y``
    (N, K) can be fitted together: shapes, and chunks that agree.

    Parameters
    ----------
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
    Y : dask.array.Array, shape (N, K)

    Raises
    ------
    ValueError
        Mismatched shapes; a design chunked along its ``p`` columns; chunks of
        ``Xs`` and ``Y`` that differ along the equations or the rows.  The
        message names the arguments and the ``rechunk`` that fixes it.
    """
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (N, K), got an array of shape {Y.shape}")
    N, K = Y.shape
    if Xs.ndim not in (2, 3):
        raise ValueError(f"Xs must be a (K, N, p) Dask array or one (N, p) design shared by "
                         f"every equation, got an array of shape {Xs.shape}")
    shared = Xs.ndim == 2
    if not shared and Xs.shape[0] != K:
        raise ValueError(f"Xs has {Xs.shape[0]} equations but Y has K={K} columns")
    if Xs.shape[-2] != N:
        raise ValueError(f"Xs has {Xs.shape[-2]} rows but Y has {N}")
    if Xs.shape[-1] == 0:
        raise ValueError("Xs has no columns; every equation needs a regressor")
    if len(Xs.chunks[-1]) != 1:
        raise ValueError(
            f"Xs is chunked along its regressors (chunks {Xs.chunks[-1]} of its last axis); "
            f"each equation's {Xs.shape[-1]} columns must be one chunk: "
            f"Xs = Xs.rechunk({{{Xs.ndim - 1}: -1}})")
    if Xs.chunks[-2] != Y.chunks[0]:
        raise ValueError(
            f"Xs and Y are chunked differently along the rows: Xs.chunks[{Xs.ndim - 2}] = "
            f"{Xs.chunks[-2]} but Y.chunks[0] = {Y.chunks[0]}; rechunk one like the other, "
            f"e.g. Y = Y.rechunk({{0: Xs.chunks[{Xs.ndim - 2}]}})")
    if not shared and Xs.chunks[0] != Y.chunks[1]:
        raise ValueError(
            f"Xs and Y are chunked differently along the equations: Xs.chunks[0] = "
            f"{Xs.chunks[0]} but Y.chunks[1] = {Y.chunks[1]}; rechunk one like the other, "
            "e.g. Y = Y.rechunk({1: Xs.chunks[0]})")


def _persist_together(X: Any, Y: Any, da: Any, dask: Any) -> tuple[Any, Any]:
    """``X`` and ``Yt = Y'`` (equation-major, contiguous blocks) persisted with
    the blocks of one equation-and-row chunk on the same worker.

    Every pass over the residuals ``Yt - X theta`` combines a block of ``X``
    with the block of ``Yt`` of the same equations and rows; persisted
    independently they land on different workers and each pass moves one of
    them (measured: 1 GB per sweep at K = 100 000, N = 500 on two workers).
    Each pair is therefore made by one task (a block of ``[X, Yt]``) and
    split where it is; later tasks run where their largest input is.
    """
    Yt = Y.T
    if X.ndim == 2:                                   # a shared design: small, broadcast
        return dask.persist(X, Yt.map_blocks(np.ascontiguousarray))
    both = da.concatenate([X, Yt[:, :, None]], axis=2).rechunk({2: -1})
    p = X.shape[2]
    Xp = both[:, :, :p].map_blocks(np.ascontiguousarray)
    Ytp = both[:, :, p].map_blocks(np.ascontiguousarray)
    return dask.persist(Xp, Ytp)


def _first(flags: np.ndarray) -> int:
    return int(np.flatnonzero(flags)[0])


def _workers_hold(nbytes: float) -> bool:
    """Whether the workers of the default distributed client (if any) have
    ``nbytes`` to spare under :data:`RESIDUAL_MEMORY_SHARE` of their memory
    limits; True without a client or without limits."""
    try:
        from distributed import default_client

        workers = default_client().scheduler_info()["workers"].values()
    except (ImportError, ValueError):
        return True
    limits = [w.get("memory_limit") or 0 for w in workers]
    return not all(limits) or nbytes <= RESIDUAL_MEMORY_SHARE * sum(limits)


def build_lazy_problem(Xs: Any, Y: Any, *, weights: Any = None, missing: str = "ml",
                       labels: Sequence[str] | None = None,
                       residuals: str = "auto") -> LazyProblem:
    """Validate a SUR system held in Dask arrays and return its :class:`LazyProblem`.

    The counterpart of :func:`alsgls.core.problem.build_problem` for Dask
    data: the inputs are persisted once (read from their source -- files, a
    Zarr store -- into the workers' memory) and checked in one pass that also
    computes the Gram matrices and the per-equation sums the solvers need.

    Parameters
    ----------
    Xs : dask.array.Array, shape (K, N, p) or (N, p)
        Designs (every equation with ``p`` regressors), or one design shared
        by every equation.  A NumPy array is chunked like ``Y``.
    Y : dask.array.Array, shape (N, K)
        Responses.  A NumPy array is chunked like ``Xs``.
    weights : None
        Not supported with Dask data (``ValueError`` otherwise).
    missing : {"ml", "drop", "raise"}, default "ml"
        Validated and recorded; Dask responses must be complete whatever the
        policy (``ValueError`` naming the first equation with a NaN).
    labels : list of K str, optional
        Equation labels for messages.
    residuals : {"auto", "store", "recompute"}, default "auto"
        Whether the fit persists its residuals (``LazyProblem.store_residuals``);
        ``"auto"``: store them when data, residuals and one update
        (``(p + 3) K N`` doubles) fit in :data:`RESIDUAL_MEMORY_SHARE` of the
        workers' memory limits (always without a distributed client).

    Returns
    -------
    LazyProblem

    Raises
    ------
    ImportError
        Dask is not installed.
    TypeError, ValueError
        Non-numeric data, a list of designs, mismatched shapes or chunks
        (:func:`check_chunks`), NaN or inf, a zero or collinear design
        column, too few rows.
    """
    da = require_dask("fitting Dask arrays")
    import dask

    check_missing(missing)
    if residuals not in RESIDUAL_MODES:
        raise ValueError(f"residuals must be one of {RESIDUAL_MODES}, got {residuals!r}")
    if weights is not None:
        raise ValueError("weights are not supported with Dask arrays; fold sqrt(w_i) into "
                         "the rows of Xs and Y (unweighted ML on those rows is weighted ML "
                         "up to the scale of the NLL) or fit in memory")
    X, Y = _coerce(Xs, Y, da)
    check_chunks(X, Y)
    N, K = Y.shape
    shared = X.ndim == 2 and K > 1
    p = X.shape[-1]
    labels = tuple(str(lab) for lab in labels) if labels is not None else None
    names = (["Xs (the design shared by every equation)"] * K if X.ndim == 2
             else [f"Xs[{j}]" for j in range(K)])
    eq = (lambda j: f"equation {labels[j]!r}") if labels else (lambda j: f"equation {j}")
    X, Yt = _persist_together(X, Y, da, dask)        # read the sources once
    X0 = X if X.ndim == 3 else X[None]
    y0 = Yt[:, :1]
    hashes = Yt.map_blocks(_hash_rows, dtype=np.int64,
                           chunks=(Yt.chunks[0], (1,) * len(Yt.chunks[1])))
    (gram, xsum, xbad, ynan, yinf, ysq, ydev, ydevsq, hashes) = compute_many(
        da.einsum("knp,knq->kpq", X0, X0), X0.sum(axis=1),
        (~da.isfinite(X0)).any(axis=(1, 2)), da.isnan(Yt).any(axis=1),
        da.isinf(Yt).any(axis=1), (Yt * Yt).sum(axis=1), (Yt - y0).sum(axis=1),
        ((Yt - y0) ** 2).sum(axis=1), hashes)
    if ynan.any():
        raise ValueError(
            f"Y has missing values (NaN), first in {eq(_first(ynan))}: Dask responses must "
            "be complete -- the missing-data EM (missing='ml') runs in memory; drop the "
            "rows with a NaN from both arrays, or compute them and call als_gls on NumPy "
            "arrays")
    if yinf.any():
        raise ValueError(f"Y contains inf, first in {eq(_first(yinf))}")
    if xbad.any():
        raise ValueError(f"{names[_first(xbad)]} contains NaN or inf")
    layout = CoefficientLayout(np.full(K, p, dtype=np.int64))
    _check_counts(layout, N, eq)
    if shared:
        gram = np.broadcast_to(gram[0], (K, p, p))
        xsum = np.broadcast_to(xsum[0], (K, p))
        X = da.broadcast_to(X[None], (K, N, p), chunks=(Yt.chunks[0], X.chunks[0], (p,)))
    elif X.ndim == 2:                                 # K = 1
        X = X[None]
    check_designs(_Materializing(X), _readonly(gram), layout, names.__getitem__)
    sums = LazySums(xsum=xsum, ysq=ysq, ydev=ydev, ydevsq=ydevsq, hashes=hashes)
    store = (residuals == "store" or residuals == "auto"
             and _workers_hold(8.0 * K * N * ((1 if shared else p) + 3)))
    return LazyProblem(X=X, Yt=Yt, layout=layout, gram=_readonly(gram), labels=labels,
                       rows=np.arange(N), n_rows_in=N, missing=missing, sums=sums,
                       shared_design=shared, store_residuals=store)


def lazy_fitted_means(Xs: Any, B: list, *, name: str = "Xs", rows: int | None = None) -> Any:
    """``X_j b_j`` for Dask designs ``Xs`` (K, N, p) or (N, p): a lazy (N, K)
    Dask array (:func:`alsgls.core.fit_result.fitted_means` for Dask data).

    Columns of ``Xs`` beyond an equation's ``p_j`` coefficients are ignored
    (zero-padded coefficients)."""
    da = require_dask("predicting from Dask arrays")
    K = len(B)
    p = np.array([np.size(b) for b in B], dtype=np.int64)
    theta = CoefficientLayout(p).pad(B) if K else np.zeros((0, 0))
    X = _as_dask_float(Xs, name, da)
    if X.ndim == 2:
        X = da.broadcast_to(X[None], (K,) + X.shape, chunks=((K,),) + X.chunks)
    if X.ndim != 3 or X.shape[0] != K:
        raise ValueError(f"{name} must be a (K, N, p) Dask array with K={K} equations or "
                         f"one (N, p) design, got shape {Xs.shape}")
    if rows is not None and X.shape[1] != rows:
        raise ValueError(f"{name} has {X.shape[1]} rows but {rows} are expected")
    if X.shape[2] < theta.shape[1]:
        j = int(np.argmax(p))
        raise ValueError(f"{name} has {X.shape[2]} columns but equation {j} was fitted "
                         f"with {int(p[j])}")
    if len(X.chunks[2]) != 1:
        X = X.rechunk({2: -1})
    theta = np.pad(theta, ((0, 0), (0, X.shape[2] - theta.shape[1])))
    return design_matvec(X, theta).T
