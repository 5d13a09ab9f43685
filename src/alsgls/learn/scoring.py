"""A scikit-learn scorer for model selection: held-out Gaussian log-likelihood.

``GridSearchCV(ALSGLS(), {"rank": [0, 1, 2, 3]}, scoring=loglik_scorer)``
chooses the rank by the likelihood of the held-out rows.  The default score of
a regressor, R², cannot: with one design shared by every output the GLS
coefficients equal OLS whatever the rank (Zellner), so every rank predicts
the same means and ties at R² (scikit-learn then keeps the first candidate,
usually rank 0).  The likelihood sees the covariance ``F F' + diag(D)``.

This module does not import scikit-learn: a scorer is any callable
``scorer(estimator, X, Y) -> float`` (greater is better).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.missing_em import EMProblem
from ..core.ops import CoefficientLayout, LowRankCovariance
from ..core.problem import Problem, as_float_matrix

__all__ = ["loglik_scorer", "observed_loglik_per_row"]


def _final_step(estimator: Any) -> Any:
    """The step that holds the covariance: the estimator itself or the last step
    of a ``Pipeline``."""
    if hasattr(estimator, "get_covariance"):
        return estimator
    steps = getattr(estimator, "steps", None)
    if steps and hasattr(steps[-1][1], "get_covariance"):
        return steps[-1][1]
    raise TypeError(
        f"loglik_scorer needs a fitted ALSGLS (or a Pipeline ending in one), got "
        f"{type(estimator).__name__}: the log-likelihood needs the error covariance")


def observed_loglik_per_row(cov: LowRankCovariance, R: np.ndarray) -> float:
    """Gaussian log-likelihood per row of residuals ``R`` (N, K), NaN where a
    response is missing: the mean over the rows with at least one observed
    response of ``log N(r_{i,O}; 0, Sigma_O)``.

    Complete rows: ``-1/2 [K log 2 pi + log|Sigma| + r' Sigma^-1 r]``
    (:meth:`LowRankCovariance.nll_rows`).  With missing responses: the
    observed-data likelihood of each row through its k x k core, the E-step of
    the missing-data solver (:meth:`alsgls.core.missing_em.EMProblem.estep`),
    the quantity :func:`alsgls.observed_nll_per_row` reports and
    ``fit_missing`` maximises.  NaN when no response is observed at all.
    """
    obs = ~np.isnan(R)
    if obs.all():
        return -float(np.mean(cov.nll_rows(R.T)))
    keep = obs.any(axis=1)
    if not keep.any():
        return float("nan")
    R, obs = R[keep], obs[keep]
    N, K = R.shape
    # the residuals as a system with one zero coefficient on a unit design, so
    # the missing-data E-step evaluates their observed-data NLL
    ones = np.broadcast_to(np.ones((1, N, 1)), (K, N, 1))
    O = obs.T.astype(np.float64)
    data = Problem(X=ones, Yt=np.where(obs.T, R.T, 0.0),
                   layout=CoefficientLayout(np.ones(K, dtype=np.int64)),
                   gram=np.broadcast_to(np.ones((1, 1, 1)), (K, 1, 1)), O=O,
                   rows=np.arange(N), n_rows_in=N)
    return -EMProblem(data, cov.k, np.zeros(K)).estep(np.zeros((K, 1)), cov.F, cov.D).nll


def loglik_scorer(estimator: Any, X: Any, Y: Any) -> float:
    """Held-out Gaussian log-likelihood per row of a fitted ``ALSGLS`` on ``(X, Y)``.

    A scikit-learn scorer (greater is better):
    ``GridSearchCV(ALSGLS(), {"rank": [0, 1, 2, 3]}, scoring=loglik_scorer)``.

    Parameters
    ----------
    estimator : ALSGLS or Pipeline ending in ALSGLS
        Fitted.
    X : array_like (N, p), or list of K array_like (N, p_j)
        Designs in the form used in ``fit``.
    Y : array_like, shape (N, K)
        Responses; NaN marks a missing one when the estimator was fitted with
        ``missing="ml"`` or ``"drop"``.

    Returns
    -------
    float
        ``(1/n) sum_i log N(y_{i,O_i}; mu_{i,O_i}, Sigma_{O_i})`` over the ``n``
        rows with at least one observed response: with ``missing="ml"`` the
        observed-data log-likelihood of every row (the likelihood the fit
        maximises); with ``missing="drop"`` the rows with every response
        observed (listwise, as the fit); without NaN, the plain Gaussian
        log-likelihood per row (``estimator.log_likelihood(X, Y) / N``).

    Raises
    ------
    ValueError
        NaN in ``Y`` when the estimator refuses missing responses
        (``missing="raise"``), or ``Y`` of the wrong shape.

    Notes
    -----
    Per row rather than total, so folds of different sizes compare.  The rank
    it selects is the predictive choice (as ``rank="cv"``); with a shared
    design the means do not depend on the rank, and only the covariance part
    of the likelihood decides.
    """
    step = _final_step(estimator)
    mean = np.asarray(estimator.predict(X), dtype=np.float64)
    Ya = as_float_matrix(Y, "Y", 2, allow_nan=True)
    if Ya.shape != mean.shape:
        raise ValueError(f"Y must have shape {mean.shape} (n_samples, n_outputs), got {Ya.shape}")
    R = Ya - mean
    missing = np.isnan(R)
    if missing.any():
        policy = getattr(step, "missing", "raise")
        if policy == "raise":
            raise ValueError("Y contains NaN but the estimator was fitted with "
                             "missing='raise'; use ALSGLS(missing='ml') to score the "
                             "observed responses")
        if policy == "drop":
            R = R[~missing.any(axis=1)]
            if R.shape[0] == 0:
                return float("nan")
    return observed_loglik_per_row(step.get_covariance(), R)
