"""Prediction from a fitted SUR system (:meth:`SURResults.get_prediction`).

New designs come as ``{label: (N_new, p_j)}``, a list of K arrays, or a
DataFrame for models built with ``SUR.from_formula``.  Standard errors use
the diagonal blocks of the coefficient covariance only:
``se_mean_ij^2 = x_ij' Cov(beta_j) x_ij`` and
``se_obs_ij^2 = se_mean_ij^2 + Sigma_jj``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from .._labels import _frame
from ..core.ops import design_matvec
from ..core.problem import as_float_matrix

__all__ = ["PredictionResults", "get_prediction", "new_designs"]


def new_designs(model: Any, exog: Any, data: Any) -> tuple[list[np.ndarray], Any]:
    """Validated designs (N_new, p_j) for prediction and their row index.

    Every design is finite with the equation's number of columns and the same
    number of rows; messages name the equation by its label.
    """
    eqs = model.equations
    if data is not None:
        Xs, index = model.design_matrices(data), getattr(data, "index", None)
    elif exog is None:   # the estimation sample as given (NaN where a design is missing)
        return [e.X for e in eqs], model.index
    else:
        if isinstance(exog, dict):
            missing = [e.label for e in eqs if e.label not in exog]
            if missing:
                raise ValueError(f"exog lacks equations {missing[:5]}")
            items = [exog[e.label] for e in eqs]
        else:
            items = list(exog)
            if len(items) != len(eqs):
                raise ValueError(f"exog has {len(items)} entries but the model has "
                                 f"{len(eqs)} equations")
        index = getattr(items[0], "index", None)
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


def get_prediction(res: Any, exog: Any = None, *, data: Any = None) -> "PredictionResults":
    """:meth:`SURResults.get_prediction` for the fitted results ``res``
    (public attributes only)."""
    Xs, index = new_designs(res.model, exog, data)
    lay = res.problem.layout
    X = np.zeros((lay.K, Xs[0].shape[0], lay.pmax))
    for j, x in enumerate(Xs):
        X[j, :, : x.shape[1]] = x
    mean = design_matvec(X, lay.pad(res.fit_result.B)).T
    blocks = res.cov_estimator.diagonal_blocks
    n = np.asarray(res.nobs_equation, dtype=float)
    s = np.sqrt(n / (n - lay.p)) if res.debiased else np.ones(lay.K)
    var_mean = np.einsum("kna,kab,knb->nk", X, blocks, X) * s[None, :] ** 2
    var_obs = var_mean + res.sigma.diagonal[None, :]
    df = (n - lay.p) if res.debiased else None
    return PredictionResults(mean, np.sqrt(var_mean), np.sqrt(var_obs), index,
                             res.model.labels, df)


@dataclass(frozen=True)
class PredictionResults:
    """Predictions with standard errors.

    Attributes
    ----------
    mean, se_mean, se_obs : ndarray, shape (N_new, K)
    """

    mean: np.ndarray
    se_mean: np.ndarray
    se_obs: np.ndarray
    index: Any
    labels: list
    df: Any = None

    @property
    def predicted_mean(self) -> Any:
        return _frame(self.mean, self.index, self.labels)

    def conf_int(self, alpha: float = 0.05, obs: bool = False) -> tuple[Any, Any]:
        """Lower and upper bounds (each N_new x K): of the mean, or with
        ``obs=True`` prediction intervals for a new observation."""
        q = stats.t.ppf(1 - alpha / 2, self.df) if self.df is not None else stats.norm.ppf(1 - alpha / 2)
        se = self.se_obs if obs else self.se_mean
        return (_frame(self.mean - q * se, self.index, self.labels),
                _frame(self.mean + q * se, self.index, self.labels))

