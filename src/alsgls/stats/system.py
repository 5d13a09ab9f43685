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
from typing import Any, Mapping, Sequence

import numpy as np

from .._labels import require_pandas as import_pandas
from ..core._missing_validation import (
    MISSING_POLICIES,
    MissingData,
    _as_float_nan_ok,
    apply_missing_policy,
    check_weights,
    validate_missing_system,
)
from .equations import Equation, build_equations
from ..core.problem import SystemData, check_rank, validate_system
from ..core.als import als_gls
from ..core.em import em_gls
from ..exceptions import IdentificationWarning
from ..core.missing import fit_missing

__all__ = ["SUR", "Equation", "import_pandas", "import_formulaic"]

#: Relative singular-value threshold below which the responses are taken to
#: be exactly fitted by the stacked regressors (unbounded unrestricted likelihood).
UNBOUNDED_RTOL = 1e-8
#: Skip the unboundedness check when ``N * P * min(N, P)`` exceeds this (flops).
UNBOUNDED_CHECK_FLOPS = 2e10


def import_formulaic():
    """Import formulaic or raise an ImportError that says how to install it."""
    try:
        import formulaic
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "SUR.from_formula needs formulaic: pip install 'alsgls[formula]'"
        ) from exc
    return formulaic


class SUR:
    """Seemingly unrelated regressions with a low-rank-plus-diagonal error covariance.

    ``y_j = X_j beta_j + e_j`` for equations ``j = 1..K`` on ``N`` rows; rows
    of ``E = [e_1 ... e_K]`` are i.i.d. ``N(0, Sigma)`` with
    ``Sigma = F F' + diag(D)``, ``F`` (K x rank).  Responses may be missing
    (unbalanced systems, ``docs/missing.md``).

    Parameters
    ----------
    equations : mapping
        ``{label: (dependent, exog)}`` (or ``{label: {"dependent": y, "exog": X}}``).
        ``dependent`` is a 1-D array or pandas Series (N,), ``exog`` a 2-D array
        or DataFrame (N, p_j).  No intercept is added: include a column of ones.
        As in linearmodels, a third element ``(dependent, exog, weights)`` or
        the key ``"weights"`` gives observation weights; alsgls needs them to
        be the same for every equation observed in a row (one weight per
        row; equations without weights count as weight 1).  pandas objects
        whose indexes differ are aligned on the union of their indexes; the
        gaps become missing responses.
    rank : int or "full"
        Number of factors ``k``, ``0 <= k < K``; ``"full"`` means ``K - 1``,
        the unrestricted SUR (any positive-definite Sigma).
    missing : {"ml", "drop", "raise"}, default "ml"
        What to do with NaN in a dependent (a missing response; NaN in the
        same row of that equation's exog is then allowed).  ``"ml"``: exact
        maximum likelihood on every observed response under missing at
        random (:func:`alsgls.missing.fit_missing`); rows with nothing
        observed are dropped with a note.  ``"drop"``: listwise deletion of
        every row with a NaN anywhere (what linearmodels and Stata do).
        ``"raise"``: ``ValueError``.
    weights : array_like or pandas Series, shape (N,), optional
        Non-negative row weights, rescaled to mean 1 over the rows used (as
        linearmodels does); each row's log-likelihood counts ``w_i`` times.
        With complete data this equals linearmodels' weighted SUR (data
        scaled by ``sqrt(w_i)``).  A Series is aligned on the equations' index.

    Raises
    ------
    ValueError, TypeError
        For mismatched lengths, duplicate labels, non-numeric columns,
        rank-deficient designs, NaN in an exog where its dependent is
        observed, an equation with fewer than ``p_j + 1`` observed rows, or
        bad weights; messages name the equation.

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

    def __init__(self, equations: Mapping, *, rank: int | str, missing: str = "ml",
                 weights: Any = None) -> None:
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
        self.missing = missing
        self._equations, self._index, spec_w = build_equations(equations)
        self._formulas = None
        self.rank = self._resolve_rank(rank)
        Xs = [e.X for e in self._equations]
        Y = np.column_stack([e.y for e in self._equations])
        self._weights_in = self._row_weights(weights, spec_w, Y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IdentificationWarning)
            try:
                self._data, self._rows = self._prepare(Xs, Y, self._weights_in)
            except ValueError as exc:
                raise ValueError(self._name_equations(str(exc))) from exc
        names = self.param_names
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"parameter names {dup} are ambiguous; rename labels or columns")

    # -- construction ------------------------------------------------------
    def _row_weights(self, weights: Any, spec_w: np.ndarray | None,
                     Y: np.ndarray) -> np.ndarray | None:
        """One weight per row from ``weights=`` or the equations' weights (N,)."""
        if weights is not None and spec_w is not None:
            raise ValueError("weights are given both in the equations and as weights=; "
                             "give them once")
        if weights is not None:
            if hasattr(weights, "index") and self._index is not None and hasattr(weights, "reindex"):
                if not weights.index.equals(self._index):
                    weights = weights.reindex(self._index)   # absent rows become NaN: an error
            return check_weights(weights, Y.shape[0])
        if spec_w is None:
            return None
        obs = ~np.isnan(Y)
        Wo = np.where(obs, spec_w, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows
            hi, lo = np.nanmax(Wo, axis=1), np.nanmin(Wo, axis=1)
        bad = np.flatnonzero(np.abs(hi - lo) > 1e-12 * np.abs(hi))
        if bad.size:
            i = int(bad[0])
            js = np.flatnonzero(obs[i])
            a = js[np.argmax(Wo[i, js])]
            b = js[np.argmin(Wo[i, js])]
            raise ValueError(
                f"equations {self._equations[a].label!r} and {self._equations[b].label!r} "
                f"have different weights in row {i} ({Wo[i, a]:g} vs {Wo[i, b]:g}); alsgls "
                "supports one weight per row, shared by every equation observed in it "
                "(pass weights=... or equal weights in every equation)")
        return check_weights(np.where(np.isnan(hi) & ~obs.any(axis=1), 1.0, hi), Y.shape[0])

    def _raise_on_nan(self, Xs: list, Y: np.ndarray) -> None:
        for j, e in enumerate(self._equations):
            for what, bad in (("dependent", np.isnan(Y[:, j])),
                              ("exog", np.isnan(Xs[j]).any(axis=1))):
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    where = f"row {i}" if self._index is None else f"row {self._index[i]!r}"
                    raise ValueError(
                        f"equation {e.label!r}: {what} has missing values (first at {where}) "
                        "and missing='raise'; pass missing='ml' (maximum likelihood on the "
                        "observed responses) or missing='drop' (listwise deletion)")

    def _prepare(self, Xs: list, Y: np.ndarray,
                 w: np.ndarray | None) -> tuple[SystemData | MissingData, np.ndarray]:
        """Apply the missing-data policy; return the internal data and the rows used."""
        N0 = Y.shape[0]
        has_nan = bool(np.isnan(Y).any() or any(np.isnan(x).any() for x in Xs))
        if not has_nan and w is None:
            return validate_system(Xs, Y, self.rank)[0], np.arange(N0)
        if has_nan and self.missing == "raise":
            self._raise_on_nan(Xs, Y)
        if has_nan and self.missing == "drop":
            Xs, Y, w, rows = apply_missing_policy(Xs, Y, "drop", w)
            if w is None:
                return validate_system(Xs, Y, self.rank)[0], rows
            data = validate_missing_system(Xs, Y, self.rank, w)[0]
            return data, rows[data.rows]
        data = validate_missing_system(Xs, Y, self.rank, w)[0]
        return data, data.rows

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
                    exog_names: Sequence[Sequence[str]] | None = None,
                    missing: str = "ml", weights: Any = None) -> "SUR":
        """Build a model from the solver's layout.

        Parameters
        ----------
        Xs : list of K array_like, each (N, p_j)
        Y : array_like, shape (N, K)
            NaN marks a missing response.
        rank : int or "full"
        labels : list of K str, optional
            Equation labels (default ``eq0, eq1, ...`` or Y's columns).
        exog_names : list of K lists of str, optional
            Regressor names per equation (default ``x0, x1, ...``).
        missing, weights
            As in :class:`SUR`.
        """
        cols = list(getattr(Y, "columns", []))
        Ya = _as_float_nan_ok(Y, "Y", 2)
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
        return cls(dict(eqs), rank=rank, missing=missing, weights=weights)

    @classmethod
    def from_formula(cls, formulas: Mapping[str, str], data: Any, *,
                     rank: int | str, missing: str = "ml", weights: Any = None) -> "SUR":
        """Build a model from ``{label: "y ~ 1 + x1 + x2"}`` formulas.

        Parameters
        ----------
        formulas : mapping of str to str
            One formula per equation.  As in linearmodels, an intercept is
            included only when the formula says ``1 +``; categorical columns
            are dummy-encoded by formulaic.
        data : pandas.DataFrame
            Holds every variable named in the formulas.  NaN is handled by
            ``missing`` (a NaN response is a missing response).
        rank : int or "full"
        missing : {"ml", "drop", "raise"}, default "ml"
            As in :class:`SUR`.
        weights : array_like (N,) or mapping {label: array_like (N,)}, optional
            Row weights, or linearmodels' per-equation mapping (which must
            agree across the equations observed in each row).

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
                                            na_action="ignore")
            except Exception as exc:  # formulaic raises its own error classes
                raise ValueError(f"equation {label!r}: cannot evaluate formula {f!r}: {exc}") from exc
            lhs, rhs = mm.lhs, mm.rhs
            if lhs.shape[1] != 1:
                raise ValueError(f"equation {label!r}: the left side of {f!r} must be one column")
            if rhs.shape[1] == 0:
                raise ValueError(f"equation {label!r}: formula {f!r} has no regressors")
            eqs[label] = (lhs.iloc[:, 0].rename(lhs.columns[0]), rhs)
            if isinstance(weights, Mapping) and label in weights:
                eqs[label] = eqs[label] + (weights[label],)
            specs[label] = rhs.model_spec
        if isinstance(weights, Mapping):
            unknown = sorted(set(map(str, weights)) - set(map(str, formulas)))
            if unknown:
                raise ValueError(f"weights names unknown equations {unknown}")
            weights = None
        mod = cls(eqs, rank=rank, missing=missing, weights=weights)
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
        """Rows N used in the fit (rows with at least one observed response)."""
        return self._data.N

    @property
    def nobs_equation(self) -> np.ndarray:
        """Observed rows ``n_j`` used by each equation (K,) int."""
        d = self._data
        return d.n_observed if isinstance(d, MissingData) else np.full(d.K, d.N, dtype=np.int64)

    @property
    def observed(self) -> np.ndarray | None:
        """Observation mask (N, K) over the rows used, or None when nothing is missing."""
        d = self._data
        if isinstance(d, MissingData) and not d.O.all():
            return d.O.T > 0
        return None

    @property
    def weights(self) -> np.ndarray | None:
        """Row weights over the rows used, rescaled to mean 1 (N,), or None."""
        if self._weights_in is None or not isinstance(self._data, MissingData):
            return None
        return self._data.w

    @property
    def rows(self) -> np.ndarray:
        """Positions of the rows used among the (aligned) input rows (N,)."""
        return self._rows

    @property
    def row_index(self) -> Any:
        """Labels of the rows used: the pandas index subset, the positions when
        rows were dropped from array input, else None."""
        full = self._rows.size == self._equations[0].y.shape[0]
        if self._index is not None:
            return self._index if full else self._index[self._rows]
        return None if full else self._rows

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
        extra = "" if self.observed is None else f", missing={self.missing!r}"
        return (f"SUR(K={self.K}, N={self.nobs}, rank={self.rank}, "
                f"P={int(self._data.p.sum())}{extra})")

    # -- fitting -----------------------------------------------------------
    def _check_bounded(self) -> None:
        """Refuse the unrestricted fit when some combination of the responses is
        fitted exactly by the stacked regressors: the likelihood is unbounded."""
        X, Yt = self._data.X, self._data.Yt
        if isinstance(self._data, MissingData):
            if self.observed is not None:
                return  # the check below assumes complete data
            sw = np.sqrt(self._data.w)
            X, Yt = X * sw[None, :, None], Yt * sw[None, :]
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
            (K x K memory; small systems only).  With missing responses both
            run the exact missing-data EM (:func:`alsgls.missing.fit_missing`).
        cov_type : {"unadjusted", "robust"}, default "unadjusted"
            Model-based ``A^-1`` or the heteroskedasticity-robust sandwich
            ``A^-1 B A^-1`` (aliases "nonrobust", "classic"; "heteroskedastic", "hc0").
        debiased : bool, default False
            Scale the covariance of coefficients in equations i, j by
            ``N / sqrt((N - p_i)(N - p_j))`` and use Student t (and F)
            reference distributions with ``N - p_j`` degrees of freedom
            (``n_j``, the equation's observed rows, in place of ``N`` when
            responses are missing).
        tol : float, default 1e-10
            Relative NLL tolerance of the solver.
        max_iter : int, optional
            Sweeps (ALS) or iterations (EM) limit.
        **solver_options
            Passed to :func:`alsgls.als_gls` or :func:`alsgls.em_gls`, or with
            missing responses to :func:`alsgls.missing.fit_missing`.

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
        d = self._data
        Xs = [e.X[self._rows] for e in self._equations]
        Y = d.Yt.T
        opts = dict(solver_options)
        if self.observed is not None:
            solver = fit_missing  # exact ML on the observed responses
            Xs = [d.X[j, :, : d.p[j]] for j in range(d.K)]          # zero where missing
            Y = np.where(d.O > 0, d.Yt, np.nan).T
            opts["weights"] = d.w
            if max_iter is not None:
                opts["max_iter"] = max_iter
        else:
            if isinstance(d, MissingData):  # weighted, complete: sqrt(w_i)-scaled rows
                sw = np.sqrt(d.w)
                Xs = [x * sw[:, None] for x in Xs]
                Y = Y * sw[:, None]
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
