"""Prediction from a fitted SUR system (:meth:`SURResults.get_prediction`).

New designs come as ``{label: (N_new, p_j)}``, a list of K arrays, one 2-D
array or DataFrame ``(N_new, p)`` shared by every equation (when all have
``p`` regressors), or a DataFrame for models built with ``SUR.from_formula``
(``data=``).  Without new designs the estimation sample is predicted.
Standard errors use the diagonal blocks of the coefficient covariance only:
``se_mean_ij^2 = x_ij' Cov(beta_j) x_ij`` and
``se_obs_ij^2 = se_mean_ij^2 + Sigma_jj``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .._labels import _frame
from ..core.ops import CoefficientLayout, design_matvec
from ..core.problem import as_float_matrix
from .hypothesis import critical_value

__all__ = ["PredictionResults", "get_prediction", "new_designs", "pad_designs"]

_EXOG_FORMS = ("exog must be a mapping {label: (N_new, p_j) design}, a list of K designs, "
               "or one 2-D design (N_new, p) shared by every equation")


def _single_design(exog: Any) -> bool:
    """A 2-D array or a DataFrame: one design, not one per equation."""
    return hasattr(exog, "columns") or (isinstance(exog, np.ndarray) and exog.ndim == 2)


def _exog_items(model: Any, exog: Any) -> list:
    """The K designs of ``exog`` in equation order (not yet coerced)."""
    labels = model.labels
    if isinstance(exog, Mapping):
        unknown = [key for key in exog if key not in labels]
        if unknown:
            raise ValueError(f"exog names unknown equations {unknown[:5]}; the model's "
                             f"equations are {labels[:10]}")
        missing = [lab for lab in labels if lab not in exog]
        if missing:
            raise ValueError(f"exog lacks equations {missing[:5]}")
        return [exog[lab] for lab in labels]
    if _single_design(exog):
        widths = sorted({e.X.shape[1] for e in model.equations})
        if len(widths) > 1:
            raise ValueError(f"{_EXOG_FORMS}; got one 2-D design of shape {np.shape(exog)}, "
                             f"but the equations have different numbers of regressors {widths}")
        return [exog] * len(labels)
    if isinstance(exog, (str, bytes)) or not isinstance(exog, (Sequence, np.ndarray)):
        raise TypeError(f"{_EXOG_FORMS}; got {type(exog).__name__}")
    items = list(exog)
    if len(items) != len(labels):
        raise ValueError(f"exog has {len(items)} entries but the model has "
                         f"{len(labels)} equations")
    return items


def _common_index(items: list, labels: list) -> Any:
    """The pandas index the designs share (None when none has one); ``ValueError``
    naming two equations whose indexes differ (rows are never matched by position)."""
    indexed = [(lab, x.index) for lab, x in zip(labels, items) if hasattr(x, "index")]
    for lab, ix in indexed[1:]:
        if not ix.equals(indexed[0][1]):
            raise ValueError(
                f"exog for equations {indexed[0][0]!r} and {lab!r} have different indexes; "
                "a prediction row combines the designs of every equation, so align them "
                "on one index first")
    return indexed[0][1] if indexed else None


def new_designs(model: Any, exog: Any, data: Any) -> tuple[list[np.ndarray], Any]:
    """Validated designs (N_new, p_j) for prediction and their row index.

    Every design is finite with the equation's number of columns and the same
    number of rows; messages name the equation by its label.  Without ``exog``
    and ``data``: the estimation sample as given (NaN where a design is missing).
    """
    eqs = model.equations
    if data is not None:
        Xs, index = model.design_matrices(data), getattr(data, "index", None)
    elif exog is None:
        return [e.X for e in eqs], model.index
    else:
        items = _exog_items(model, exog)
        index = _common_index(items, model.labels)
        Xs = [np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x) for x in items]
        Xs = [x[:, None] if x.ndim == 1 else x for x in Xs]
    out = []
    for e, x in zip(eqs, Xs):
        xa = as_float_matrix(x, f"equation {e.label!r}: exog", 2)
        if xa.shape[1] != e.X.shape[1]:
            raise ValueError(f"equation {e.label!r}: exog has {xa.shape[1]} columns, "
                             f"the model has {e.X.shape[1]}")
        if out and xa.shape[0] != out[0].shape[0]:
            raise ValueError(f"equation {e.label!r}: exog has {xa.shape[0]} rows, "
                             f"the first equation has {out[0].shape[0]}")
        out.append(xa)
    return out, index


def pad_designs(Xs: list, layout: CoefficientLayout) -> np.ndarray:
    """K designs (N, p_j) as the zero-padded (K, N, pmax) array, through the layout."""
    return layout.unflatten(np.concatenate(Xs, axis=1).T).transpose(0, 2, 1)


def _designs(res: Any, exog: Any, data: Any) -> tuple[np.ndarray, Any]:
    """The padded designs (K, N_new, pmax) to predict at, and their row index.

    In sample, the validated problem's designs serve when they hold every
    input row unchanged (nothing missing or dropped); otherwise the model's
    equations (NaN where a design is missing: the prediction is NaN there).
    """
    prob = res.problem
    if exog is None and data is None and prob.O is None and prob.rows.size == prob.n_rows_in:
        return prob.X, res.model.index
    Xs, index = new_designs(res.model, exog, data)
    return pad_designs(Xs, prob.layout), index


def get_prediction(res: Any, exog: Any = None, *, data: Any = None) -> "PredictionResults":
    """:meth:`SURResults.get_prediction` for the fitted results ``res``
    (public attributes only)."""
    X, index = _designs(res, exog, data)
    mean = design_matvec(X, res.problem.layout.pad(res.fit_result.B)).T
    blocks = res.cov_estimator.diagonal_blocks
    s = res.debias_factor
    var_mean = np.einsum("kna,kab,knb->nk", X, blocks, X) * s[None, :] ** 2
    var_obs = var_mean + res.sigma.diagonal[None, :]
    df = np.asarray(res.df_resid_equation, dtype=float) if res.debiased else None
    return PredictionResults(mean, np.sqrt(var_mean), np.sqrt(var_obs), index,
                             res.model.labels, df)


@dataclass(frozen=True)
class PredictionResults:
    """Predictions with standard errors.

    Attributes
    ----------
    mean, se_mean, se_obs : ndarray, shape (N_new, K)
        Predicted means and the standard errors of the mean and of a new
        observation.
    index : pandas.Index or None
        Labels of the predicted rows.
    labels : list of str
        Equation labels (the columns).
    df : ndarray, shape (K,), or None
        Student t degrees of freedom ``n_j - p_j`` when debiased; None: normal.
    """

    mean: np.ndarray
    se_mean: np.ndarray
    se_obs: np.ndarray
    index: Any
    labels: list
    df: Any = None

    @property
    def predicted_mean(self) -> Any:
        """Predicted means (N_new, K), labelled when pandas is installed."""
        return _frame(self.mean, self.index, self.labels)

    def conf_int(self, alpha: float = 0.05, obs: bool = False) -> tuple[Any, Any]:
        """Lower and upper bounds (each N_new x K): of the mean, or with
        ``obs=True`` prediction intervals for a new observation.

        Parameters
        ----------
        alpha : float, default 0.05
            In (0, 1): the intervals have coverage ``1 - alpha``.
        obs : bool, default False
            Intervals for a new observation instead of the mean.

        Returns
        -------
        tuple of DataFrame or ndarray
            ``(lower, upper)``.
        """
        q = critical_value(alpha, self.df)
        se = self.se_obs if obs else self.se_mean
        return (_frame(self.mean - q * se, self.index, self.labels),
                _frame(self.mean + q * se, self.index, self.labels))

