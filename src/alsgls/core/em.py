"""The dense EM baseline: the same model and likelihood through dense K x K algebra.

This is the reference the ALS path is compared with, and the memory baseline:
it forms the dense ``Sigma^-1`` (K x K), the residual covariance ``S`` (K x K)
and the GLS normal matrix (P x P).  Each iteration is an ECM cycle

1. beta <- dense GLS given Sigma (Cholesky of the P x P normal matrix);
2. (F, D) <- one latent-factor EM step on ``S = R'R / N`` (DESIGN.md section 3):
   ``m_i = C^-1 F' Psi^-1 r_i``, ``F = S_ry S_yy^-1``, ``D = diag(S - F S_ry')``,

which is monotone in the likelihood.  SQUAREM (Varadhan & Roland, 2008)
extrapolates the cycle on ``(beta, F, log D)``, with a fall-back to the plain
cycle whenever the extrapolated point would raise the NLL.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .._threads import blas_threads as _blas_threads
from .problem import SystemData, check_residual_variance, validate_system
from ..exceptions import ConvergenceWarning
from .fit_result import GLSFit, canonical_loadings, unpad_coefficients
from .ops import LOG_2PI

__all__ = ["em_gls"]


class _DenseProblem:
    """Dense quantities of one system: padded designs flattened to P columns."""

    def __init__(self, data: SystemData) -> None:
        self.data = data
        K, N, pm = data.X.shape
        self.idx = np.flatnonzero(data.mask.ravel())  # real coefficients in (K*pmax)
        XtX = np.einsum("jna,lnb->jalb", data.X, data.X).reshape(K * pm, K * pm)
        self.XtX = XtX[np.ix_(self.idx, self.idx)]            # P x P
        self.owner = np.repeat(np.arange(K), pm)[self.idx]    # equation of each coefficient

    def theta(self, beta: np.ndarray) -> np.ndarray:
        K, _, pm = self.data.X.shape
        th = np.zeros(K * pm)
        th[self.idx] = beta
        return th.reshape(K, pm)

    def residuals(self, beta: np.ndarray) -> np.ndarray:
        return self.data.Yt - np.einsum("knp,kp->kn", self.data.X, self.theta(beta))

    def gls(self, Sinv: np.ndarray) -> np.ndarray:
        """Dense GLS: solve (X' (Sigma^-1 (x) I) X) beta = X' (Sigma^-1 (x) I) y."""
        A = self.XtX * Sinv[np.ix_(self.owner, self.owner)]
        W = Sinv @ self.data.Yt                              # (K, N)
        b = np.einsum("knp,kn->kp", self.data.X, W).ravel()[self.idx]
        return cho_solve(cho_factor(A), b)


def _dense_nll(S: np.ndarray, F: np.ndarray, D: np.ndarray) -> float:
    Sigma = F @ F.T + np.diag(D)
    c, low = cho_factor(Sigma)
    logdet = 2.0 * np.sum(np.log(np.diag(c)))
    return 0.5 * (len(D) * LOG_2PI + logdet + np.trace(cho_solve((c, low), S)))


def _sigma_inv(F: np.ndarray, D: np.ndarray) -> np.ndarray:
    Sigma = F @ F.T + np.diag(D)
    return cho_solve(cho_factor(Sigma), np.eye(len(D)))


def _em_factor_step(S: np.ndarray, F: np.ndarray, D: np.ndarray, floor: np.ndarray):
    """One latent-factor EM step for (F, D) given the residual covariance S."""
    k = F.shape[1]
    if k == 0:
        return F, np.maximum(np.diag(S).copy(), floor)
    PsiF = F / D[:, None]
    C = np.eye(k) + F.T @ PsiF
    beta_f = cho_solve(cho_factor(C), PsiF.T)                  # (k, K): E[z | r] = beta_f r
    S_ry = S @ beta_f.T                                        # (K, k)
    S_yy = beta_f @ S_ry + cho_solve(cho_factor(C), np.eye(k))  # E[z z'] averaged
    F_new = np.linalg.solve(S_yy, S_ry.T).T
    D_new = np.diag(S) - np.einsum("ij,ij->i", F_new, S_ry)
    return F_new, np.maximum(D_new, floor)


def em_gls(
    Xs: Any,
    Y: Any,
    k: int,
    *,
    tol: float = 1e-10,
    max_iter: int = 5000,
    d_floor: float = 1e-6,
    accelerate: bool = True,
    blas_threads: int | None = 1,
) -> GLSFit:
    """Dense EM baseline for the SUR likelihood with ``Sigma = F F' + diag(D)``.

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), or ndarray (K, N, p)
    Y : array_like, shape (N, K)
    k : int
        Number of latent factors, ``0 <= k < K``.
    tol : float, default 1e-10
        Stop when the NLL decrease of a cycle, and its linear-rate
        extrapolation, are below ``tol * K`` (per row; as in :func:`als_gls`).
    max_iter : int, default 5000
        Maximum number of (SQUAREM) cycles; reaching it warns.
    d_floor : float, default 1e-6
        Relative floor ``D_j >= d_floor * s_j`` (as in :func:`als_gls`).
    accelerate : bool, default True
        Use SQUAREM extrapolation (monotone safeguarded).
    blas_threads : int or None, default 1
        BLAS threads inside the fit, as in :func:`als_gls`.

    Returns
    -------
    GLSFit
        With ``method="em"``; ``cg_iterations`` and ``eig_iterations`` are zeros.

    Notes
    -----
    Memory O(K^2 + P^2 + N K); time O(P^3 + K^3) per cycle.  Meant for K up
    to a few hundred, as an independent check on :func:`als_gls`.

    Examples
    --------
    >>> from alsgls import em_gls, simulate_sur
    >>> Xs, Y, _ = simulate_sur(N=200, K=8, p=2, k=1, seed=0)
    >>> em_gls(Xs, Y, k=1).converged
    True
    """
    with _blas_threads(blas_threads):
        return _em(Xs, Y, k, tol, max_iter, d_floor, accelerate)


def _em(Xs, Y, k, tol, max_iter, d_floor, accelerate) -> GLSFit:
    data, k, _ = validate_system(Xs, Y, k)
    prob = _DenseProblem(data)
    N = data.N
    beta = prob.gls(np.diag(np.ones(data.K)))                 # OLS
    Rt = prob.residuals(beta)
    s = check_residual_variance(Rt, data.Yt)
    floor = d_floor * s
    S = Rt @ Rt.T / N
    corr = S / np.sqrt(np.outer(s, s))
    lam, U = np.linalg.eigh(corr)
    F = np.sqrt(s)[:, None] * U[:, ::-1][:, :k] * np.sqrt(np.maximum(lam[::-1][:k] - 1, 1e-3))
    D = np.maximum(s - np.einsum("ij,ij->i", F, F), np.maximum(floor, 0.05 * s))

    def cycle(beta, F, D):
        beta = prob.gls(_sigma_inv(F, D))
        R = prob.residuals(beta)
        S = R @ R.T / N
        F, D = _em_factor_step(S, F, D, d_floor * np.diag(S))
        return beta, F, D, _dense_nll(S, F, D)

    def pack(beta, F, D):
        return np.concatenate([beta, F.ravel(), np.log(D)])

    def unpack(v):
        P, K = len(beta), data.K
        return v[:P], v[P:P + K * k].reshape(K, k), np.exp(v[P + K * k:])

    state = (beta, F, D)
    trace = [_dense_nll(S, F, D)]
    last, prev = np.inf, np.inf
    converged = False
    for it in range(max_iter):
        t1 = cycle(*state)
        if accelerate:
            t2 = cycle(*t1[:3])
            r = pack(*t1[:3]) - pack(*state)
            v = pack(*t2[:3]) - pack(*t1[:3]) - r
            alpha = -np.linalg.norm(r) / max(np.linalg.norm(v), 1e-300)
            alpha = min(alpha, -1.0)
            ext = unpack(pack(*state) - 2 * alpha * r + alpha ** 2 * v)
            t3 = cycle(*ext)
            new = t3 if np.isfinite(t3[3]) and t3[3] <= t2[3] else t2
        else:
            new = t1
        nll = min(new[3], trace[-1])  # guard the trace against round-off
        state = new[:3]
        prev, last = last, trace[-1] - new[3]
        trace.append(nll)
        scale = float(data.K)  # as in als_gls: gap per row and equation
        rho = min(max(last, 0.0) / prev, 0.99) if prev > 0 and np.isfinite(prev) else 0.0
        if it > 0 and max(abs(last), max(last, 0.0) * rho / (1 - rho)) <= tol * scale:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"em_gls stopped after {max_iter} iterations without meeting tol={tol:g}",
            ConvergenceWarning,
            stacklevel=3,
        )
    beta, F, D = state
    Rt = prob.residuals(beta)
    heywood = D <= d_floor * np.einsum("kn,kn->k", Rt, Rt) / N * (1 + 1e-9)
    n = len(trace) - 1
    return GLSFit(
        B=unpad_coefficients(prob.theta(beta), data.p),
        F=canonical_loadings(F, D),
        D=D.copy(),
        nll_trace=np.asarray(trace),
        n_iter=n,
        converged=converged,
        heywood=heywood,
        method="em",
        cg_iterations=np.zeros(n, dtype=int),
        beta_gap=np.zeros(0),
        eig_iterations=np.zeros(n, dtype=int),
        backtracks=np.zeros(n, dtype=int),
        tol=tol,
    )
