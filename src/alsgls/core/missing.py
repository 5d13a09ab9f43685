"""Exact maximum likelihood for unbalanced SUR systems (missing responses, weights).

Row ``i`` observes the equations ``O_i`` (``Y[i, j]`` not NaN).  Under
missing-at-random the likelihood of the row is that of its observed entries
(DESIGN.md section 6),

    y_{i,O} ~ N(X_{i,O} beta, F_O F_O' + Psi_O),

evaluated with per-row k x k cores ``C_i = I + F_O' Psi_O^-1 F_O = L_i L_i'``
(determinant lemma and Woodbury, as in :class:`alsgls.ops.LowRankCovariance`):

    2 l_i = n_i log 2pi + sum_{j in O_i} log D_j + 2 sum log diag L_i
            + r_O' Psi_O^-1 r_O - ||L_i^-1 F_O' Psi_O^-1 r_O||^2.

All cores come from one masked GEMM ``O' (F_j F_j' / D_j)_j`` (N x K times K x k^2).

The solver is the EM algorithm with latent factors ``z_i ~ N(0, I)``,
``y_ij = x_ij' beta_j + F_j' z_i + e_ij``:

* E-step: ``m_i = C_i^-1 F_O' Psi_O^-1 r_{i,O}``, ``V_i = C_i^-1``;
* M-step, per equation over its own rows: regress ``y_j`` on ``[X_j, m]`` with
  ``sum_i w_i (m_i m_i' + V_i)`` in the factor block (a (p_j + k)-square
  system), ``theta_j = [beta_j; F_j]``, ``D_j = (sum w y^2 - theta_j' c_j) / n_j``,

which is exact (the complete-data likelihood separates over equations given
z), hence monotone; the parameter-expanded reduction ``F <- F chol(Phi)``,
``Phi = sum_i w_i (m_i m_i' + V_i) / N`` (PX-EM, Liu, Rubin & Wu 1998)
removes the slow scale mode of EM with strong factors.  Anderson acceleration of the EM map on
``(beta, F, log D)`` (SQUAREM as an option), falling back to the plain EM step
whenever the accelerated point is worse, keeps the NLL trace monotone.
When EM is slow (Heywood cases, weak factors) or its end point fails the
secant gap check, L-BFGS-B on the observed-data NLL over ``(beta, F, D)``
(analytic gradient, batched over rows like the NLL) finishes the fit and
certifies the gap (:mod:`alsgls._missing_em`).

Weights multiply each row's log-likelihood (``sum_i w_i l_i``), after rescaling
to mean 1; integer weights are equivalent to duplicating rows.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._missing_validation import (
    MISSING_POLICIES,
    MissingData,
    MissingDataWarning,
    apply_missing_policy,
    check_weights,
    validate_missing_system,
)
from .missing_em import Problem, initial_point, run_em
from .als import als_gls
from ..exceptions import ConvergenceWarning, HeywoodWarning
from .fit_result import GLSFit, canonical_loadings, pad_coefficients, unpad_coefficients
from .ops import LOG_2PI

__all__ = [
    "MissingGLSFit",
    "MissingDataWarning",
    "als_gls_missing",
    "fit_missing",
    "observed_nll_per_row",
    "impute",
]

#: Accepted values of ``accelerate`` (True means the default, Anderson).
ACCELERATORS = ("anderson", "squarem", "em")


@dataclass(frozen=True)
class MissingGLSFit(GLSFit):
    """:class:`~alsgls.GLSFit` of an unbalanced or weighted system.

    Additional attributes
    ---------------------
    n_observed : ndarray of int, shape (K,)
        Rows used by each equation (observed response, positive weight).
    rows : ndarray of int, shape (n,)
        Indices of the caller's rows that entered the fit.
    weights : ndarray, shape (n,) or None
        The weights used, rescaled to mean 1 over ``rows``; None if unweighted.
    missing : str
        The policy applied: ``"ml"``, ``"drop"`` or ``"raise"``.
    quasi_newton : ndarray of int, shape (n_iter,)
        1 where the iteration was a quasi-Newton (L-BFGS-B) step rather than
        an EM step (``fit_missing`` only; empty otherwise).
    gap : float
        ``fit_missing``: estimated NLL-per-row decrease still available at the
        returned point (the quantity the stopping rule certifies); NaN otherwise.

    ``nll_trace`` is the (weighted) observed-data NLL per retained row,
    ``sum_i w_i l_i / n``.
    """

    n_observed: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    rows: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    weights: np.ndarray | None = None
    missing: str = "ml"
    quasi_newton: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    gap: float = float("nan")


def _accelerator(accelerate: bool | str) -> str:
    if accelerate is True:
        return "anderson"
    if accelerate is False:
        return "em"
    if accelerate not in ACCELERATORS:
        raise ValueError(f"accelerate must be True, False or one of {ACCELERATORS}, "
                         f"got {accelerate!r}")
    return accelerate


def fit_missing(
    Xs: Any,
    Y: Any,
    k: int,
    *,
    weights: Any = None,
    tol: float = 1e-10,
    max_iter: int = 1000,
    d_floor: float = 1e-6,
    accelerate: bool | str = True,
    random_state: int = 0,
) -> MissingGLSFit:
    """Maximum likelihood for a SUR system with missing responses (accelerated
    EM, then quasi-Newton when EM is slow).

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), or ndarray (K, N, p)
        Designs.  Rows may be NaN where that equation's response is missing.
    Y : array_like, shape (N, K)
        Responses; NaN marks a missing response (assumed missing at random).
    k : int
        Number of latent factors, ``0 <= k < K``.
    weights : array_like, shape (N,), optional
        Non-negative row weights; rescaled to mean 1 over the retained rows.
        Row ``i``'s log-likelihood is multiplied by ``w_i``.
    tol : float, default 1e-10
        Relative NLL gap to certify.  With ``scale = tol * max(|nll|, 1)``, EM
        stops when its last decrease is below ``scale``, its decrement below
        ``0.05 * scale`` and the secant gap estimate along the EM step (which,
        unlike the decrement, sees EM's slow modes) below ``scale``.  If that
        estimate is too large, or EM has not converged in 30 iterations
        (Heywood cases, weak factors), the fit switches to L-BFGS-B on the
        observed-data NLL over ``(beta, F, D)`` with the analytic gradient,
        and stops when an iteration gains less than ``0.1 * scale`` and
        ``g' H^-1 g / 2`` (L-BFGS inverse Hessian) is below ``scale``.
    max_iter : int, default 1000
        Maximum iterations; reaching it emits a ``ConvergenceWarning``.
    d_floor : float, default 1e-6
        Relative floor ``D_j >= d_floor * s_j`` (``s_j``: OLS residual variance
        on the observed rows); equations at the floor are flagged as Heywood.
    accelerate : bool or {"anderson", "squarem", "em"}, default True
        ``True``/``"anderson"``: Anderson acceleration (memory 10);
        ``"squarem"``: SQUAREM (3 EM maps per iteration); ``False``/``"em"``:
        plain EM.  Every variant is monotone: an accelerated point is kept only
        if its NLL is not above the current one.  The quasi-Newton switch
        (see ``tol``) applies to all three.
    random_state : int, default 0
        Seed of the initial subspace iteration.

    Returns
    -------
    MissingGLSFit
        With ``method="em-missing"``; ``n_iter`` counts iterations (EM maps
        and L-BFGS-B iterations), ``backtracks[t]`` is 1 where iteration ``t``
        rejected the accelerated point and took the plain EM step,
        ``quasi_newton[t]`` is 1 where it was an L-BFGS-B iteration, and
        ``gap`` is the certified gap estimate.

    Notes
    -----
    Each EM map costs O(N K (p + k)^2) flops and two passes over the designs;
    an L-BFGS-B evaluation (NLL and gradient, one E-step plus two GEMMs
    against the mask) costs less;
    memory beyond the data is O(N k^2 + K (p + k)^2).  No K x K matrix is formed.
    Rows with every response missing (or zero weight) are dropped with a
    :class:`MissingDataWarning`.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import simulate_sur
    >>> Xs, Y, _ = simulate_sur(N=200, K=10, p=2, k=1, seed=0)
    >>> Y[np.random.default_rng(0).random(Y.shape) < 0.2] = np.nan
    >>> fit = fit_missing(Xs, Y, k=1)
    >>> fit.converged, int(fit.n_observed.min()) < 200
    (True, True)
    """
    method = _accelerator(accelerate)
    data, k, s = validate_missing_system(Xs, Y, k, weights)
    prob = Problem(data, k, d_floor * s)
    x0 = initial_point(prob, s, np.random.default_rng(random_state))
    res = run_em(prob, x0, tol, max_iter, method)
    if not res.converged:
        warnings.warn(
            f"fit_missing stopped after {max_iter} iterations without meeting tol={tol:g} "
            f"(estimated NLL gap {res.gap:.2e}, EM decrement {res.decrement:.2e} per row); "
            "raise max_iter or loosen tol",
            ConvergenceWarning, stacklevel=2)
    theta, F, D = res.x
    trace, backs, converged = res.trace, res.rejected, res.converged
    heywood = D <= prob.floor * (1 + 1e-9)
    if k > 0 and heywood.any():
        warnings.warn(
            f"{int(heywood.sum())} equation(s) have D_j at the floor d_floor*s_j (Heywood "
            f"cases), e.g. equation {int(np.flatnonzero(heywood)[0])}; see fit.heywood",
            HeywoodWarning, stacklevel=2)
    n = len(trace) - 1
    return MissingGLSFit(
        B=unpad_coefficients(theta, data.p), F=canonical_loadings(F, D), D=D.copy(),
        nll_trace=np.asarray(trace), n_iter=n, converged=converged, heywood=heywood,
        method="em-missing", cg_iterations=np.zeros(n, dtype=int), beta_gap=np.zeros(0),
        eig_iterations=np.zeros(n, dtype=int), backtracks=np.asarray(backs, dtype=int),
        tol=tol, n_observed=data.n_observed, rows=data.rows,
        weights=None if weights is None else data.w.copy(), missing="ml",
        quasi_newton=np.asarray(res.qn, dtype=int), gap=float(res.gap),
    )


def _theta_from_B(B: list, p: np.ndarray) -> np.ndarray:
    if len(B) != len(p):
        raise ValueError(f"B has {len(B)} equations but the system has K={len(p)}")
    for j, b in enumerate(B):
        if np.size(b) != p[j]:
            raise ValueError(f"B[{j}] has {np.size(b)} coefficients but Xs[{j}] has {int(p[j])} columns")
    return pad_coefficients(B, int(p.max()))


def _problem_at(Xs: Any, Y: Any, F: Any, D: Any, weights: Any) -> tuple[Problem, np.ndarray, np.ndarray]:
    F = np.asarray(F, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    if F.ndim == 1:
        F = F[:, None]
    with warnings.catch_warnings():  # identification and dropped-row notes are irrelevant here
        warnings.simplefilter("ignore", MissingDataWarning)
        warnings.simplefilter("ignore", UserWarning)
        data, k, _ = validate_missing_system(Xs, Y, 0, weights)
    if F.shape != (data.K, F.shape[1]) or D.shape != (data.K,):
        raise ValueError(f"F must be (K, k) and D (K,) with K={data.K}, got {F.shape} and {D.shape}")
    if not (np.all(np.isfinite(D)) and np.all(D > 0) and np.all(np.isfinite(F))):
        raise ValueError("F must be finite and D finite and strictly positive")
    return Problem(data, F.shape[1], np.zeros(data.K)), F, D


def observed_nll_per_row(
    Xs: Any, Y: Any, B: list, F: Any, D: Any, *, weights: Any = None
) -> float:
    """Observed-data Gaussian NLL per row of an unbalanced system.

    Parameters
    ----------
    Xs : list of K array_like (N, p_j), or ndarray (K, N, p)
    Y : array_like, shape (N, K)
        NaN marks a missing response.
    B : list of K array_like, each (p_j,) or (p_j, 1)
    F : array_like, shape (K, k)
    D : array_like, shape (K,)
    weights : array_like, shape (N,), optional
        Rescaled to mean 1 over the rows with an observed response.

    Returns
    -------
    float
        ``sum_i w_i l_i / n`` over the ``n`` rows with at least one observed
        response, ``l_i`` the NLL of ``y_{i,O}`` under
        ``N(X_{i,O} beta, F_O F_O' + diag(D_O))`` (the module docstring gives
        the per-row Woodbury form).  This is the quantity ``fit_missing``
        minimises and reports in ``nll_trace``.

    Examples
    --------
    >>> import numpy as np
    >>> Y = np.array([[1.0, np.nan], [0.5, -1.0], [np.nan, 2.0]])
    >>> Xs = [np.ones((3, 1)), np.ones((3, 1))]
    >>> round(observed_nll_per_row(Xs, Y, [[0.0], [0.0]], np.zeros((2, 1)), np.ones(2)), 6)
    2.266918
    """
    prob, F, D = _problem_at(Xs, Y, F, D, weights)
    return prob.estep(_theta_from_B(B, prob.data.p), F, D).nll


def impute(fit: GLSFit, Xs: Any, Y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Conditional mean and variance of the missing responses under a fitted model.

    Parameters
    ----------
    fit : GLSFit
        Any fit of the system (``fit_missing``, ``als_gls``, ...).
    Xs : list of K array_like (N, p_j), or ndarray (K, N, p)
        Designs.  Where ``Xs[j]`` is NaN in a row with ``Y[i, j]`` missing, the
        conditional mean of that entry is NaN (its regressors are unknown).
    Y : array_like, shape (N, K)
        NaN marks the responses to impute.

    Returns
    -------
    mean : ndarray, shape (N, K)
        ``Y`` where observed; ``E[y_ij | y_{i,O}] = x_ij' beta_j + F_j' m_i`` where missing.
    var : ndarray, shape (N, K)
        0 where observed; ``Var[y_ij | y_{i,O}] = D_j + F_j' C_i^-1 F_j`` where missing.

    Notes
    -----
    ``m_i = C_i^-1 F_O' Psi_O^-1 r_{i,O}`` and ``C_i = I + F_O' Psi_O^-1 F_O``;
    a row with nothing observed gets the marginal mean and ``diag(Sigma)``.
    Only the variances are returned, not the covariances between the missing
    entries of a row.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import als_gls, simulate_sur
    >>> Xs, Y, _ = simulate_sur(N=100, K=6, p=2, k=1, seed=0)
    >>> fit = als_gls(Xs, Y, k=1)
    >>> Ym = Y.copy(); Ym[0, 0] = np.nan
    >>> mean, var = impute(fit, Xs, Ym)
    >>> bool(var[0, 0] > 0 and var[0, 1] == 0 and mean[0, 1] == Y[0, 1])
    True
    """
    from ._missing_validation import _as_float_nan_ok, _designs

    Ya = _as_float_nan_ok(Y, "Y", 2)
    mats = _designs(Xs, Ya.shape[0])
    if len(mats) != Ya.shape[1] or len(fit.B) != Ya.shape[1]:
        raise ValueError(f"Y has K={Ya.shape[1]} columns but Xs has {len(mats)} "
                         f"equations and fit has {len(fit.B)}")
    obs = ~np.isnan(Ya)
    mu = np.column_stack([x @ np.asarray(b, dtype=np.float64).ravel() for x, b in zip(mats, fit.B)])
    if np.isnan(mu[obs]).any():
        j = int(np.flatnonzero(np.isnan(np.where(obs, mu, 0.0)).any(axis=0))[0])
        raise ValueError(f"Xs[{j}] has NaN in a row where Y[:, {j}] is observed")
    F, D, k = fit.F, fit.D, fit.F.shape[1]
    Rt = np.where(obs, Ya - mu, 0.0).T                          # (K, N)
    O = obs.T.astype(np.float64)
    FD = F / D[:, None]
    C = (O.T @ (FD[:, :, None] * F[:, None, :]).reshape(F.shape[0], k * k)).reshape(O.shape[1], k, k)
    C[:, np.arange(k), np.arange(k)] += 1.0
    L = np.linalg.cholesky(C)
    Linv = np.linalg.solve(L, np.broadcast_to(np.eye(k), C.shape))
    V = np.einsum("nji,njl->nil", Linv, Linv)
    M = np.einsum("nij,nj->ni", V, Rt.T @ FD)                   # (N, k)
    mean = np.where(obs, Ya, mu + M @ F.T)
    var = D[None, :] + np.einsum("jk,nkl,jl->nj", F, V, F)
    return mean, np.where(obs, 0.0, var)


def _as_missing_fit(fit: GLSFit, n_obs: np.ndarray, rows: np.ndarray,
                    w: np.ndarray | None, missing: str) -> MissingGLSFit:
    fields = {f.name: getattr(fit, f.name) for f in dataclasses.fields(GLSFit)}
    return MissingGLSFit(**fields, n_observed=n_obs, rows=rows, weights=w, missing=missing)


def _balanced_fit(Xs: list, Y: np.ndarray, k: int, w: np.ndarray | None, rows: np.ndarray,
                  missing: str, als_kw: dict) -> MissingGLSFit:
    """als_gls on complete data; weights enter as sqrt(w_i) row scaling.

    With weights rescaled to mean 1, ``sum_i w_i l_i / N`` equals the unweighted
    NLL per row of the data ``sqrt(w_i) (y_i, X_i)``, so the balanced ALS solver
    is exact for weighted ML.  Zero-weight rows are dropped first.
    """
    if w is not None:
        pos = np.flatnonzero(w > 0)
        if pos.size < w.size:
            warnings.warn(f"dropped {w.size - pos.size} row(s) with zero weight",
                          MissingDataWarning, stacklevel=3)
        rows, w = rows[pos], w[pos] * (pos.size / w[pos].sum())
        sw = np.sqrt(w)
        Xs = [np.asarray(x, dtype=np.float64)[pos] * sw[:, None] for x in Xs]
        Y = np.asarray(Y, dtype=np.float64)[pos] * sw[:, None]
    fit = als_gls(Xs, Y, k, **als_kw)
    return _as_missing_fit(fit, np.full(len(fit.B), rows.size, dtype=np.int64), rows, w, missing)


_ALS_KW = ("tol", "max_sweeps", "cg_maxiter", "eig_maxiter", "d_floor", "random_state")
_EM_KW = ("tol", "max_iter", "d_floor", "accelerate", "random_state")


def als_gls_missing(
    Xs: Any, Y: Any, k: int, *, missing: str = "ml", weights: Any = None, **kw: Any
) -> MissingGLSFit:
    """SUR maximum likelihood with a missing-data policy and observation weights.

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), or ndarray (K, N, p)
        Designs; may be NaN in rows where the equation's response is missing.
    Y : array_like, shape (N, K)
        Responses; NaN marks a missing response.
    k : int
        Number of latent factors.
    missing : {"ml", "drop", "raise"}, default "ml"
        ``"ml"``: exact maximum likelihood on every observed response under
        missing-at-random (:func:`fit_missing`; rows with nothing observed
        are dropped with a note).  ``"drop"``: listwise deletion -- rows with
        any NaN in ``Y`` or ``Xs`` are removed, then the balanced fit.
        ``"raise"``: ``ValueError`` if there is any NaN.
    weights : array_like, shape (N,), optional
        Non-negative row weights, rescaled to mean 1 over the rows used
        (as linearmodels does): row ``i``'s log-likelihood counts ``w_i`` times.
        Zero-weight rows are dropped.
    **kw
        Solver options.  Complete data: those of :func:`alsgls.als_gls`
        (``tol, max_sweeps, cg_maxiter, eig_maxiter, d_floor, random_state``).
        Missing responses: those of :func:`fit_missing` (``tol, max_iter,
        d_floor, accelerate, random_state``).  Options of the other path are
        ignored, so one call works for both.

    Returns
    -------
    MissingGLSFit
        ``method`` is ``"als"`` when the data used are complete (balanced,
        possibly weighted) and ``"em-missing"`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls import simulate_sur
    >>> Xs, Y, _ = simulate_sur(N=200, K=10, p=2, k=1, seed=0)
    >>> Y[:50, :3] = np.nan                      # three equations start late
    >>> als_gls_missing(Xs, Y, k=1).method
    'em-missing'
    >>> als_gls_missing(Xs, Y, k=1, missing="drop").rows.size
    150
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    unknown = set(kw) - set(_ALS_KW) - set(_EM_KW)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}")
    als_kw = {a: kw[a] for a in _ALS_KW if a in kw}
    if missing in ("drop", "raise"):
        Xs2, Y2, w, rows = apply_missing_policy(Xs, Y, missing, weights)
        return _balanced_fit(Xs2, Y2, k, w, rows, missing, als_kw)
    Ya = np.asarray(Y.to_numpy() if hasattr(Y, "to_numpy") else Y)
    if Ya.ndim == 2 and np.issubdtype(Ya.dtype, np.number) and not np.isnan(Ya).any():
        w = check_weights(weights, Ya.shape[0])
        return _balanced_fit(Xs, Ya, k, w, np.arange(Ya.shape[0]), "ml", als_kw)
    return fit_missing(Xs, Y, k, weights=weights, **{a: kw[a] for a in _EM_KW if a in kw})
