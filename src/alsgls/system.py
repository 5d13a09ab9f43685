"""The SUR system model: equations in, a fitted :class:`~alsgls.results.SURResults` out.

``SUR({label: (dependent, exog)}, rank=k)`` follows linearmodels' convention
(arrays, pandas Series/DataFrames; labels and column names flow into every
output); :meth:`SUR.from_formula` takes ``{label: "y ~ 1 + x1 + x2"}`` strings
(formulaic, optional) and :meth:`SUR.from_arrays` the solver's ``(Xs, Y)``.
The error covariance is ``Sigma = F F' + diag(D)`` with ``F`` of rank ``k``;
``rank = K - 1`` (or ``"full"``) is the unrestricted SUR.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ._validation import as_float_matrix, check_rank, validate_system
from .als import als_gls
from .em import em_gls
from .exceptions import IdentificationWarning

__all__ = ["SUR", "Equation", "import_pandas", "import_formulaic"]

#: Relative singular-value threshold below which the responses are taken to
#: be exactly fitted by the stacked regressors (unbounded unrestricted likelihood).
UNBOUNDED_RTOL = 1e-8
#: Skip the unboundedness check when ``N * P * min(N, P)`` exceeds this (flops).
UNBOUNDED_CHECK_FLOPS = 2e10


def import_pandas():
    """Import pandas or raise an ImportError that says how to install it."""
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "this feature needs pandas: pip install 'alsgls[pandas]'"
        ) from exc
    return pandas


def import_formulaic():
    """Import formulaic or raise an ImportError that says how to install it."""
    try:
        import formulaic
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "SUR.from_formula needs formulaic: pip install 'alsgls[formula]'"
        ) from exc
    return formulaic


@dataclass(frozen=True)
class Equation:
    """One validated equation.

    Attributes
    ----------
    label : str
    dependent : str
        Name of the dependent variable.
    exog_names : tuple of str
        Names of the regressors (columns of ``X``).
    y : ndarray, shape (N,)
    X : ndarray, shape (N, p)
    """

    label: str
    dependent: str
    exog_names: tuple
    y: np.ndarray
    X: np.ndarray

    @property
    def has_constant(self) -> bool:
        """Whether some column of X is a non-zero constant."""
        return bool(np.any(np.all(self.X == self.X[:1], axis=0) & (self.X[0] != 0)))


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
    y = as_float_matrix(arr, f"equation {label!r}: dependent", ndim=1)
    return y, str(name) if name is not None else label, index


def _as_exog(obj: Any, label: str, N: int) -> tuple[np.ndarray, tuple, Any]:
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
    X = as_float_matrix(arr, f"equation {label!r}: exog")
    if names is None:
        names = tuple(f"x{i}" for i in range(X.shape[1]))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"equation {label!r}: exog has duplicate column names {dup}")
    if X.shape[0] != N:
        raise ValueError(
            f"equation {label!r}: exog has {X.shape[0]} rows but its dependent has {N}"
        )
    return X, names, index


def _unpack(spec: Any, label: str) -> tuple[Any, Any]:
    if isinstance(spec, Mapping):
        missing = {"dependent", "exog"} - set(spec)
        if missing:
            raise ValueError(f"equation {label!r}: mapping lacks keys {sorted(missing)}")
        return spec["dependent"], spec["exog"]
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return spec[0], spec[1]
    raise TypeError(
        f"equation {label!r} must be a (dependent, exog) pair or a mapping with "
        f"keys 'dependent' and 'exog', got {type(spec).__name__}"
    )


def _build_equations(equations: Any) -> tuple[list[Equation], Any]:
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
    eqs, index, first = [], None, None
    for lab, (raw_label, spec) in zip(labels, items):
        dep, exog = _unpack(spec, lab)
        y, dname, yidx = _as_dependent(dep, lab)
        X, names, xidx = _as_exog(exog, lab, y.shape[0])
        for idx in (yidx, xidx):
            if idx is not None and index is None:
                index = idx
            elif idx is not None and not index.equals(idx):
                raise ValueError(
                    f"equation {lab!r}: its index differs from that of the first "
                    "equation; align the data (all equations must share the same rows)"
                )
        if first is None:
            first = (lab, y.shape[0])
        elif y.shape[0] != first[1]:
            raise ValueError(
                f"equation {lab!r} has {y.shape[0]} observations but equation "
                f"{first[0]!r} has {first[1]}; all equations must share the same rows"
            )
        eqs.append(Equation(lab, dname, names, y, X))
    return eqs, index


class SUR:
    """Seemingly unrelated regressions with a low-rank-plus-diagonal error covariance.

    ``y_j = X_j beta_j + e_j`` for equations ``j = 1..K`` observed on the same
    ``N`` rows; rows of ``E = [e_1 ... e_K]`` are i.i.d. ``N(0, Sigma)`` with
    ``Sigma = F F' + diag(D)``, ``F`` (K x rank).

    Parameters
    ----------
    equations : mapping
        ``{label: (dependent, exog)}`` (or ``{label: {"dependent": y, "exog": X}}``).
        ``dependent`` is a 1-D array or pandas Series (N,), ``exog`` a 2-D array
        or DataFrame (N, p_j).  No intercept is added: include a column of ones.
    rank : int or "full"
        Number of factors ``k``, ``0 <= k < K``; ``"full"`` means ``K - 1``,
        the unrestricted SUR (any positive-definite Sigma).

    Raises
    ------
    ValueError, TypeError
        For mismatched lengths, duplicate labels, non-numeric columns or
        rank-deficient designs; messages name the equation.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import simulate_sur
    >>> from alsgls.system import SUR
    >>> Xs, Y, _ = simulate_sur(N=100, K=4, p=2, k=1, seed=0)
    >>> mod = SUR({f"eq{j}": (Y[:, j], Xs[j]) for j in range(4)}, rank=1)
    >>> res = mod.fit()
    >>> res.params.shape
    (8,)
    """

    def __init__(self, equations: Mapping, *, rank: int | str) -> None:
        self._equations, self._index = _build_equations(equations)
        self._formulas = None
        self.rank = self._resolve_rank(rank)
        Xs = [e.X for e in self._equations]
        Y = np.column_stack([e.y for e in self._equations])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IdentificationWarning)
            try:
                self._data, _, _ = validate_system(Xs, Y, self.rank)
            except ValueError as exc:
                raise ValueError(self._name_equations(str(exc))) from exc
        names = self.param_names
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"parameter names {dup} are ambiguous; rename labels or columns")

    # -- construction ------------------------------------------------------
    def _resolve_rank(self, rank: Any) -> int:
        K = len(self._equations)
        if isinstance(rank, str):
            if rank == "full":
                return K - 1
            raise ValueError(f"rank must be an integer or 'full', got {rank!r}")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
            raise TypeError(f"rank must be an integer or 'full', got {rank!r}")
        return check_rank(int(rank), K, name="rank", warn_ledermann=False)

    def _name_equations(self, msg: str) -> str:
        """Replace solver positions ``Xs[j]`` / ``equation j`` by labels."""
        import re

        def rep(m: re.Match) -> str:
            j = int(m.group(2))
            lab = self._equations[j].label if j < len(self._equations) else str(j)
            return f"equation {lab!r}"

        return re.sub(r"(Xs\[|equation )(\d+)\]?", rep, msg)

    @classmethod
    def from_arrays(cls, Xs: Sequence, Y: Any, *, rank: int | str,
                    labels: Sequence[str] | None = None,
                    exog_names: Sequence[Sequence[str]] | None = None) -> "SUR":
        """Build a model from the solver's layout.

        Parameters
        ----------
        Xs : list of K array_like, each (N, p_j)
        Y : array_like, shape (N, K)
        rank : int or "full"
        labels : list of K str, optional
            Equation labels (default ``eq0, eq1, ...`` or Y's columns).
        exog_names : list of K lists of str, optional
            Regressor names per equation (default ``x0, x1, ...``).
        """
        cols = list(getattr(Y, "columns", []))
        Ya = as_float_matrix(Y, "Y")
        K = Ya.shape[1]
        if isinstance(Xs, np.ndarray) and Xs.ndim == 3:
            Xs = list(Xs)
        if not isinstance(Xs, Sequence) or len(Xs) != K:
            n = len(Xs) if isinstance(Xs, Sequence) else type(Xs).__name__
            raise ValueError(f"Xs has {n} equations but Y has K={K} columns")
        labels = list(labels) if labels is not None else (
            [str(c) for c in cols] if cols else [f"eq{j}" for j in range(K)])
        if len(labels) != K:
            raise ValueError(f"labels has {len(labels)} entries but Y has K={K} columns")
        eqs = []
        for j, (lab, x) in enumerate(zip(labels, Xs)):
            if exog_names is not None:
                pd = import_pandas()
                x = pd.DataFrame(np.asarray(x), columns=list(exog_names[j]))
            eqs.append((lab, (Ya[:, j], x)))
        if len(set(labels)) != len(labels):
            dup = sorted({lab for lab in labels if labels.count(lab) > 1})
            raise ValueError(f"duplicate equation labels {dup}; labels must be unique")
        return cls(dict(eqs), rank=rank)

    @classmethod
    def from_formula(cls, formulas: Mapping[str, str], data: Any, *,
                     rank: int | str) -> "SUR":
        """Build a model from ``{label: "y ~ 1 + x1 + x2"}`` formulas.

        Parameters
        ----------
        formulas : mapping of str to str
            One formula per equation.  As in linearmodels, an intercept is
            included only when the formula says ``1 +``; categorical columns
            are dummy-encoded by formulaic.
        data : pandas.DataFrame
            Holds every variable named in the formulas.
        rank : int or "full"

        Raises
        ------
        ValueError
            When a formula names a column absent from ``data`` or has no ``~``.
        """
        formulaic = import_formulaic()
        from formulaic.parser import DefaultFormulaParser

        if not isinstance(formulas, Mapping):
            raise TypeError("formulas must be a mapping {label: 'y ~ x1 + x2'}")
        parser = DefaultFormulaParser(include_intercept=False)
        eqs, specs = {}, {}
        for label, f in formulas.items():
            if not isinstance(f, str) or "~" not in f:
                raise ValueError(f"equation {label!r}: formula {f!r} must look like 'y ~ x1 + x2'")
            try:
                mm = formulaic.model_matrix(formulaic.Formula(f, _parser=parser), data,
                                            na_action="raise")
            except Exception as exc:  # formulaic raises its own error classes
                raise ValueError(f"equation {label!r}: cannot evaluate formula {f!r}: {exc}") from exc
            lhs, rhs = mm.lhs, mm.rhs
            if lhs.shape[1] != 1:
                raise ValueError(f"equation {label!r}: the left side of {f!r} must be one column")
            if rhs.shape[1] == 0:
                raise ValueError(f"equation {label!r}: formula {f!r} has no regressors")
            eqs[label] = (lhs.iloc[:, 0].rename(lhs.columns[0]), rhs)
            specs[label] = rhs.model_spec
        mod = cls(eqs, rank=rank)
        mod._formulas = {"formulas": dict(formulas), "specs": specs}
        return mod

    # -- properties --------------------------------------------------------
    @property
    def equations(self) -> list[Equation]:
        return list(self._equations)

    @property
    def labels(self) -> list[str]:
        """Equation labels (K,)."""
        return [e.label for e in self._equations]

    @property
    def K(self) -> int:
        return len(self._equations)

    @property
    def nobs(self) -> int:
        """Rows N (observations per equation)."""
        return self._data.N

    @property
    def param_names(self) -> list[str]:
        """``"<label>_<regressor>"`` for every coefficient, equation by equation."""
        return [f"{e.label}_{n}" for e in self._equations for n in e.exog_names]

    @property
    def data(self):
        """Validated internal data (``SystemData``)."""
        return self._data

    @property
    def index(self) -> Any:
        """The pandas index of the rows, or None for array input."""
        return self._index

    def __repr__(self) -> str:
        return (f"SUR(K={self.K}, N={self.nobs}, rank={self.rank}, "
                f"P={int(self._data.p.sum())})")

    # -- fitting -----------------------------------------------------------
    def _check_bounded(self) -> None:
        """Refuse the unrestricted fit when some combination of the responses is
        fitted exactly by the stacked regressors: the likelihood is unbounded."""
        X, Yt = self._data.X, self._data.Yt
        N, P = self._data.N, int(self._data.p.sum())
        if N * P * min(N, P) > UNBOUNDED_CHECK_FLOPS:
            return
        Xall = np.concatenate([X[j, :, : p] for j, p in enumerate(self._data.p)], axis=1)
        Xall = Xall / np.linalg.norm(Xall, axis=0)
        U, s, _ = np.linalg.svd(Xall, full_matrices=False)
        r = int(np.sum(s > s[0] * max(N, P) * np.finfo(float).eps))
        Yn = Yt.T / np.linalg.norm(Yt, axis=1)
        resid = Yn - U[:, :r] @ (U[:, :r].T @ Yn)
        sv = np.linalg.svd(resid, compute_uv=False)
        if r + self.K > N or sv.size == 0 or sv[-1] <= UNBOUNDED_RTOL:
            raise ValueError(
                f"the unrestricted SUR (rank={self.rank} = K-1) has no finite maximum-"
                f"likelihood estimate: a combination of the {self.K} responses is fitted "
                f"exactly by the {P} stacked regressors (their rank {r} plus K={self.K} "
                f"exceeds or reaches N={N}), so Sigma-hat collapses to a singular matrix "
                "and iterated GLS diverges; choose a lower rank (a factor structure), "
                "fewer regressors or more observations"
            )

    def fit(self, *, method: str = "als", cov_type: str = "unadjusted",
            debiased: bool = False, tol: float = 1e-10, max_iter: int | None = None,
            **solver_options: Any):
        """Fit by maximum likelihood and return a :class:`~alsgls.results.SURResults`.

        Parameters
        ----------
        method : {"als", "em"}, default "als"
            ``"als"`` is the matrix-free solver; ``"em"`` the dense EM baseline
            (K x K memory; small systems only).
        cov_type : {"unadjusted", "robust"}, default "unadjusted"
            Model-based ``A^-1`` or the heteroskedasticity-robust sandwich
            ``A^-1 B A^-1`` (aliases "nonrobust", "classic"; "heteroskedastic", "hc0").
        debiased : bool, default False
            Scale the covariance of coefficients in equations i, j by
            ``N / sqrt((N - p_i)(N - p_j))`` and use Student t (and F)
            reference distributions with ``N - p_j`` degrees of freedom.
        tol : float, default 1e-10
            Relative NLL tolerance of the solver.
        max_iter : int, optional
            Sweeps (ALS) or iterations (EM) limit.
        **solver_options
            Passed to :func:`alsgls.als_gls` or :func:`alsgls.em_gls`.

        Raises
        ------
        ValueError
            For an unknown option, or when ``rank = K - 1`` and the unrestricted
            likelihood is unbounded (no finite MLE).
        """
        from .results import SURResults, _normalise_cov_type

        cov_type = _normalise_cov_type(cov_type)
        if method not in ("als", "em"):
            raise ValueError(f"method must be 'als' or 'em', got {method!r}")
        if self.rank == self.K - 1 and self.K > 1:
            self._check_bounded()
        Xs = [e.X for e in self._equations]
        Y = self._data.Yt.T
        opts = dict(solver_options)
        if max_iter is not None:
            opts["max_sweeps" if method == "als" else "max_iter"] = max_iter
        solver = als_gls if method == "als" else em_gls
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = solver(Xs, Y, self.rank, tol=tol, **opts)
        for w in caught:  # re-emit, naming equations by label
            if not issubclass(w.category, IdentificationWarning):
                warnings.warn(self._name_equations(str(w.message)), w.category, stacklevel=2)
        return SURResults(self, fit, cov_type=cov_type, debiased=bool(debiased))
