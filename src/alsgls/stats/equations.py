"""Input side of the SUR model: equations in, validated and aligned arrays out.

``{label: (dependent, exog[, weights])}`` specs (arrays or pandas objects) are
coerced here; pandas objects whose indexes differ are aligned on the union of
their indexes, the gaps becoming missing responses (NaN).  The missing-data
policy and the weights are applied by :class:`alsgls.SUR`.

Two equations that are never observed in the same row (pandas indexes that
share no label, or NaN responses that never overlap) carry no information
on their covariance.  :func:`check_observed_together` refuses them when
Sigma is unrestricted (``rank = K - 1``: that covariance is not identified)
and warns when a factor rank ``0 < k < K - 1`` implies it through the
loadings the two equations share with the others.

The module also packs the equations' arrays for pickling
(:func:`pack_equations`): the responses as one array, a design shared by
several equations once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .._warnings import warn
from ..core.problem import as_float_matrix
from ..exceptions import MissingDataWarning

__all__ = ["Equation", "build_equations", "check_observed_together", "pack_equations",
           "unpack_equations"]

#: :func:`check_observed_together` compares the equations' observation
#: patterns in blocks of this many equations (memory ``block x K`` floats).
PAIR_BLOCK = 512


def _has_constant(X: np.ndarray) -> bool:
    """Whether some column of X is a non-zero constant (over its complete rows)."""
    if X.shape[0] and np.isnan(X.sum()):           # NaN somewhere: the complete rows
        X = X[~np.isnan(X).any(axis=1)]
    if X.shape[0] == 0:
        return False
    first = X[0]
    return bool(((X == first).all(axis=0) & (first != 0)).any())


@dataclass(frozen=True)
class Equation:
    """One validated equation (its arrays are read-only views of the caller's
    data when those are float64: nothing is copied here, so modifying the
    caller's arrays afterwards is not supported).

    Attributes
    ----------
    label : str
    dependent : str
        Name of the dependent variable.
    exog_names : tuple of str
        Names of the regressors (columns of ``X``).
    y : ndarray, shape (N,)
        NaN where the response is missing (after aligning all equations on
        the union of their indexes).
    X : ndarray, shape (N, p)
        May be NaN in rows where ``y`` is missing.
    """

    label: str
    dependent: str
    exog_names: tuple
    y: np.ndarray
    X: np.ndarray

    @property
    def has_constant(self) -> bool:
        """Whether some column of X is a non-zero constant over its complete rows
        (the model decides R^2 centring from its validated problem instead:
        :meth:`alsgls.core.problem.Problem.constant_columns`)."""
        return _has_constant(self.X)


def _as_float_nan_ok(a: Any, name: str, ndim: int) -> np.ndarray:
    """A read-only float64 view (a copy only when the dtype differs); NaN allowed."""
    v = as_float_matrix(a, name, ndim, allow_nan=True).view()
    v.flags.writeable = False
    return v


def _check_numeric_frame(obj: Any, where: str) -> None:
    """Raise TypeError naming the first non-numeric column of a pandas object."""
    dtypes = getattr(obj, "dtypes", None)
    if dtypes is None or not hasattr(obj, "to_numpy"):
        return
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    items = list(dtypes.items()) if hasattr(dtypes, "items") else [(getattr(obj, "name", None), dtypes)]
    for col, dt in items:
        if not (is_numeric_dtype(dt) or is_bool_dtype(dt)):
            raise TypeError(
                f"{where} column {col!r} is not numeric (dtype {dt}); encode it "
                "(e.g. pandas.get_dummies or a formula) before passing it"
            )


def _as_dependent(obj: Any, label: str) -> tuple[np.ndarray, str, Any]:
    _check_numeric_frame(obj, f"equation {label!r}: dependent")
    name = getattr(obj, "name", None)
    if hasattr(obj, "columns"):
        if obj.shape[1] != 1:
            raise ValueError(
                f"equation {label!r}: dependent must have one column, got {obj.shape[1]}"
            )
        name = obj.columns[0]
    index = getattr(obj, "index", None)
    arr = np.asarray(obj.to_numpy() if hasattr(obj, "to_numpy") else obj)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    y = _as_float_nan_ok(arr, f"equation {label!r}: dependent", 1)
    return y, str(name) if name is not None else label, index


def _as_weights(obj: Any, label: str) -> tuple[np.ndarray, Any]:
    index = getattr(obj, "index", None)
    arr = np.asarray(obj.to_numpy() if hasattr(obj, "to_numpy") else obj)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    return _as_float_nan_ok(arr, f"equation {label!r}: weights", 1), index


def _as_exog(obj: Any, label: str, N: int | None) -> tuple[np.ndarray, tuple, Any]:
    _check_numeric_frame(obj, f"equation {label!r}: exog")
    names = None
    if hasattr(obj, "columns"):
        names = tuple(str(c) for c in obj.columns)
    elif getattr(obj, "name", None) is not None and getattr(obj, "ndim", 0) == 1:
        names = (str(obj.name),)
    index = getattr(obj, "index", None)
    arr = np.asarray(obj.to_numpy() if hasattr(obj, "to_numpy") else obj)
    if arr.ndim == 1:
        arr = arr[:, None]
    X = _as_float_nan_ok(arr, f"equation {label!r}: exog", 2)
    if names is None:
        names = tuple(f"x{i}" for i in range(X.shape[1]))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"equation {label!r}: exog has duplicate column names {dup}")
    if N is not None and X.shape[0] != N:
        raise ValueError(
            f"equation {label!r}: exog has {X.shape[0]} rows but its dependent has {N}"
        )
    return X, names, index


def _unpack(spec: Any, label: str) -> tuple[Any, Any, Any]:
    if isinstance(spec, Mapping):
        missing = {"dependent", "exog"} - set(spec)
        if missing:
            raise ValueError(f"equation {label!r}: mapping lacks keys {sorted(missing)}")
        return spec["dependent"], spec["exog"], spec.get("weights")
    if isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
        return spec[0], spec[1], (spec[2] if len(spec) == 3 else None)
    raise TypeError(
        f"equation {label!r} must be a (dependent, exog) pair, a (dependent, exog, "
        "weights) triple or a mapping with keys 'dependent', 'exog' (and optionally "
        f"'weights'), got {type(spec).__name__}"
    )


def _union_index(raw: list) -> Any:
    """The union of the equations' pandas indexes, or None when they all agree.

    ``raw`` holds ``(label, [(array, index or None), ...])`` per equation.
    """
    idxs = [(lab, ix) for lab, parts in raw for _, ix in parts if ix is not None]
    if not idxs or all(idxs[0][1].equals(ix) for _, ix in idxs[1:]):
        return None
    for lab, parts in raw:
        if any(ix is None for _, ix in parts):
            raise ValueError(
                f"equation {lab!r}: the equations' indexes differ, so they are aligned on "
                "the union of their indexes, but this equation has data without an index; "
                "pass pandas Series/DataFrames for every equation or align the data first"
            )
    for lab, ix in idxs:
        if not ix.is_unique:
            raise ValueError(f"equation {lab!r}: its index has duplicate entries; "
                             "cannot align the equations on the union of their indexes")
    union = idxs[0][1]
    for _, ix in idxs[1:]:
        union = union.union(ix)
    return union


def _reindex(arr: np.ndarray, ix: Any, union: Any) -> np.ndarray:
    """Place the rows of ``arr`` (labelled ``ix``) on ``union``; NaN elsewhere."""
    out = np.full((len(union),) + arr.shape[1:], np.nan)
    out[union.get_indexer(ix)] = arr
    return out


def _spec_items(equations: Any) -> tuple[list, list[str]]:
    """The ``(label, spec)`` pairs of ``equations`` and their unique string labels."""
    if isinstance(equations, Mapping):
        items = list(equations.items())
    elif isinstance(equations, Sequence) and not isinstance(equations, (str, bytes)):
        items = list(equations)
        if not all(isinstance(it, tuple) and len(it) == 2 for it in items):
            raise TypeError("equations must be a mapping {label: (dependent, exog)} "
                            "or a list of (label, (dependent, exog)) pairs")
    else:
        raise TypeError(
            "equations must be a mapping {label: (dependent, exog)}, got "
            f"{type(equations).__name__}"
        )
    if not items:
        raise ValueError("equations is empty; a system needs at least one equation")
    labels = [str(lab) for lab, _ in items]
    if len(set(labels)) != len(labels):
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        raise ValueError(f"duplicate equation labels {dup}; labels must be unique")
    return items, labels


def build_equations(equations: Any) -> tuple[list[Equation], Any, np.ndarray | None]:
    """Validate the equations; align them on the union of their indexes when these differ.

    Returns the equations, the common index (or None) and the per-equation
    weights given in the specs as an (N, K) array (NaN where not given), or None.
    """
    items, labels = _spec_items(equations)
    raw = []
    for lab, (_, spec) in zip(labels, items):
        dep, exog, wts = _unpack(spec, lab)
        y, dname, yidx = _as_dependent(dep, lab)
        X, names, xidx = _as_exog(exog, lab, None)
        parts = [(y, yidx), (X, xidx)]
        if wts is not None:
            parts.append(_as_weights(wts, lab))
        raw.append((lab, parts, dname, names))
    union = _union_index([(lab, parts) for lab, parts, _, _ in raw])
    eqs, index, first, W = [], union, None, []
    for lab, parts, dname, names in raw:
        if union is not None:
            parts = [(_reindex(a, ix, union), union) for a, ix in parts]
        (y, yidx), (X, xidx) = parts[:2]
        if X.shape[0] != y.shape[0]:
            raise ValueError(
                f"equation {lab!r}: exog has {X.shape[0]} rows but its dependent has {y.shape[0]}"
            )
        if len(parts) == 3 and parts[2][0].shape[0] != y.shape[0]:
            raise ValueError(f"equation {lab!r}: weights has {parts[2][0].shape[0]} rows "
                             f"but its dependent has {y.shape[0]}")
        for idx in (yidx, xidx):
            if idx is not None and index is None:
                index = idx
            elif idx is not None and not index.equals(idx):  # pragma: no cover - aligned above
                raise ValueError(f"equation {lab!r}: its index differs from the others'")
        if first is None:
            first = (lab, y.shape[0])
        elif y.shape[0] != first[1]:
            raise ValueError(
                f"equation {lab!r} has {y.shape[0]} observations but equation "
                f"{first[0]!r} has {first[1]}; all equations must share the same rows "
                "(or be pandas objects, which are aligned on the union of their indexes)"
            )
        W.append(parts[2][0] if len(parts) == 3 else None)
        eqs.append(Equation(lab, dname, names, y, X))
    spec_w = None
    if any(w is not None for w in W):
        spec_w = np.column_stack([np.ones(first[1]) if w is None else w for w in W])
    return eqs, index, spec_w


# ---------------------------------------------------------------------------------
# Equations never observed together
# ---------------------------------------------------------------------------------

def never_observed_together(observed: np.ndarray) -> tuple[int, int, int] | None:
    """The first pair ``(i, j)`` of equations, ``i < j``, with no row where both
    are observed, and the number of such pairs; None when every pair (of
    equations observed at all) shares a row.

    ``observed`` is (N, K) bool.  A row observing every equation settles it at
    once; otherwise the distinct observation patterns (rows) are compared in
    blocks of :data:`PAIR_BLOCK` equations, ``O' O`` over the patterns, never
    a K x K array.
    """
    observed = np.asarray(observed, dtype=bool)
    if observed.shape[1] < 2 or observed.all(axis=1).any():
        return None
    patterns = np.unique(observed, axis=0).astype(np.float32)    # exact: counts < 2^24
    seen = patterns.any(axis=0)
    first, count = None, 0
    K = patterns.shape[1]
    for a in range(0, K, PAIR_BLOCK):
        together = patterns[:, a:a + PAIR_BLOCK].T @ patterns      # (block, K)
        never = (together == 0) & seen[a:a + PAIR_BLOCK, None] & seen[None, :]
        never &= np.arange(a, a + never.shape[0])[:, None] < np.arange(K)[None, :]
        n = int(never.sum())
        if n and first is None:
            i, j = np.argwhere(never)[0]
            first = (int(i) + a, int(j))
        count += n
    return None if first is None else (*first, count)


def check_observed_together(observed: np.ndarray | None, labels: Sequence[str],
                            rank: int | None, index: Any = None) -> None:
    """Refuse or flag equations that are never observed in the same row.

    Parameters
    ----------
    observed : ndarray of bool, shape (N, K), or None
        Which responses are observed (None: all of them).
    labels : list of K str
    rank : int or None
        The factor rank; None while a rank method has not chosen it yet
        (treated as a rank below ``K - 1``).
    index : pandas Index, optional
        The rows' labels, to name the rows each equation is observed on.

    Raises
    ------
    ValueError
        At ``rank = K - 1`` (unrestricted Sigma): the pair's covariance is not
        identified by the data.

    Warns
    -----
    MissingDataWarning
        At ``0 < rank < K - 1``: the pair's covariance is implied only by the
        factor structure (their loadings, identified through the other
        equations).  Rank 0 (a diagonal Sigma) says nothing about it.
    """
    if observed is None or rank == 0:
        return
    pair = never_observed_together(observed)
    if pair is None:
        return
    i, j, count = pair
    K = observed.shape[1]
    more = f" ({count - 1} more such pairs)" if count > 1 else ""
    where = f"equations {labels[i]!r} and {labels[j]!r}{more} are never observed in the same row"
    if index is not None:
        def span(c: int) -> str:
            rows = np.flatnonzero(observed[:, c])
            return f"{index[rows[0]]!s} .. {index[rows[-1]]!s}"
        where += f" ({labels[i]!r}: {span(i)}; {labels[j]!r}: {span(j)})"
    if rank == K - 1:
        lower = ("rank=0 (uncorrelated equations)" if K == 2 else
                 "a factor rank k < K - 1 (their covariance is then implied by the "
                 "loadings they share with the other equations) or rank=0")
        raise ValueError(
            f"{where}: the data carry no information on their covariance, which the "
            f"unrestricted Sigma (rank='full', K - 1 = {K - 1}) leaves free. Pass {lower}, "
            "fit them in separate models, or restrict the equations to common rows")
    k = "a rank method" if rank is None else f"rank={rank}"
    warn(f"{where}: their covariance is not observed; with {k} it is implied only by "
         "the factor structure (their loadings, identified through the other equations)",
         MissingDataWarning)


# ---------------------------------------------------------------------------------
# Pickling
# ---------------------------------------------------------------------------------

def pack_equations(equations: Sequence[Equation]) -> dict:
    """The equations' labels and arrays for pickling: the responses as one
    (N, K) array and each distinct design once (equations viewing the same
    memory the same way -- a shared design -- point at one array).  numpy
    pickles every view as a copy of its elements, so K views of one design
    would otherwise be stored K times."""
    designs, which, seen = [], [], {}
    for e in equations:
        x = e.X
        key = (x.__array_interface__["data"][0], x.shape, x.strides, x.dtype.str)
        if key not in seen:
            seen[key] = len(designs)
            designs.append(x)
        which.append(seen[key])
    return {"names": [(e.label, e.dependent, e.exog_names) for e in equations],
            "Y": np.column_stack([e.y for e in equations]), "designs": designs,
            "which": which}


def unpack_equations(packed: dict) -> tuple[list[Equation], np.ndarray, bool]:
    """The equations of :func:`pack_equations` (read-only views of the unpickled
    arrays), the responses (N, K) and whether one design serves every equation."""
    Y = packed["Y"]
    Y.flags.writeable = False
    designs = list(packed["designs"])
    for x in designs:
        x.flags.writeable = False
    which = packed["which"]
    eqs = [Equation(lab, dep, names, Y[:, j], designs[which[j]])
           for j, (lab, dep, names) in enumerate(packed["names"])]
    return eqs, Y, len(which) > 1 and len(designs) == 1
