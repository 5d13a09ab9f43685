"""The dense EM baseline: the same model and likelihood through dense K x K algebra.

This is the reference the ALS path is compared with, and the memory baseline:
it forms the dense ``Sigma^-1`` (K x K), the residual covariance ``S`` (K x K)
and the GLS normal matrix (P x P).  Each iteration is an ECM cycle

1. beta <- dense GLS given Sigma (Cholesky of the P x P normal matrix);
2. (F, D) <- one latent-factor EM step on ``S = R'R / N`` (DESIGN.md section 3):
   ``m_i = C^-1 F' Psi^-1 r_i``, ``F = S_ry S_yy^-1``, ``D = diag(S - F S_ry')``,

which is monotone in the likelihood.  Under linear restrictions ``R beta = q``
(:mod:`alsgls.core.restriction`) step 1 is the restricted GLS
``beta_u - A^-1 R' (R A^-1 R')^-1 (R beta_u - q)`` (the KKT solution) and the
start is restricted OLS.  SQUAREM (Varadhan & Roland, 2008)
extrapolates the cycle on ``(beta, F, log D)``, with a fall-back to the plain
cycle whenever the extrapolated point would raise the NLL.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .fit_result import IterationRecord, SolverRun
from .ops import LOG_2PI, design_matvec, design_rmatvec, lawley_loadings
from .options import SolverOptions
from .problem import Problem
from .restriction import LinearRestriction

__all__ = ["run_em"]


class _DenseProblem:
    """Dense quantities of one system: padded designs flattened to P columns."""

    def __init__(self, data: Problem, restriction: LinearRestriction | None = None) -> None:
        self.data = data
        self.restriction = restriction
        lay = self.layout = data.layout
        XtX = np.einsum("jna,lnb->jalb", data.X, data.X)      # (K, pmax, K, pmax)
        self.XtX = XtX[lay.eq, lay.col][:, lay.eq, lay.col]    # P x P
        self.owner = lay.eq                                    # equation of each coefficient

    def theta(self, beta: np.ndarray) -> np.ndarray:
        return self.layout.unflatten(beta)

    def residuals(self, beta: np.ndarray) -> np.ndarray:
        return self.data.Yt - design_matvec(self.data.X, self.theta(beta))

    def gls(self, Sinv: np.ndarray) -> np.ndarray:
        """Dense GLS: solve (X' (Sigma^-1 (x) I) X) beta = X' (Sigma^-1 (x) I) y,
        subject to R beta = q when restricted."""
        A = self.XtX * Sinv[np.ix_(self.owner, self.owner)]
        W = Sinv @ self.data.Yt                              # (K, N)
        b = self.layout.flatten(design_rmatvec(self.data.X, W))
        cho = cho_factor(A)
        beta = cho_solve(cho, b)
        con = self.restriction
        if con is not None:
            AiRt = cho_solve(cho, con.R.T)                   # (P, m)
            lam = np.linalg.solve(con.R @ AiRt, con.R @ beta - con.q)
            beta = beta - AiRt @ lam
        return beta


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


def _initial_point(S: np.ndarray, floor: np.ndarray, s: np.ndarray, k: int) -> tuple:
    """Loadings from the top eigenpairs of the OLS residual correlation (``S`` the
    OLS residual covariance, ``s`` its diagonal)."""
    corr = S / np.sqrt(np.outer(s, s))
    lam, U = np.linalg.eigh(corr)
    F = lawley_loadings(U[:, ::-1][:, :k], lam[::-1][:k], s, min_excess=1e-3)
    D = np.maximum(s - np.einsum("ij,ij->i", F, F), np.maximum(floor, 0.05 * s))
    return F, D


def _squarem(cycle, state: tuple, pack, unpack) -> tuple[tuple, int]:
    """One SQUAREM (S3) step from ``state``; returns the new point (with its NLL)
    and 1 if the extrapolated point was rejected for the plain double cycle."""
    t1 = cycle(*state)
    t2 = cycle(*t1[:3])
    r = pack(*t1[:3]) - pack(*state)
    v = pack(*t2[:3]) - pack(*t1[:3]) - r
    alpha = min(-np.linalg.norm(r) / max(np.linalg.norm(v), 1e-300), -1.0)
    t3 = cycle(*unpack(pack(*state) - 2 * alpha * r + alpha ** 2 * v))
    if np.isfinite(t3[3]) and t3[3] <= t2[3]:
        return t3, 0
    return t2, 1


def run_em(problem: Problem, k: int, options: SolverOptions, *,
           restriction: LinearRestriction | None = None) -> SolverRun:
    """The dense ECM core on a complete, unweighted problem (module docstring).

    Stops when the NLL decrease of a cycle, and its linear-rate
    extrapolation, are below ``tol * K`` per row (as the ALS rule).  With a
    ``restriction`` every beta is the restricted GLS (restricted MLE).
    """
    prob = _DenseProblem(problem, restriction)
    N, K, d_floor = problem.N, problem.K, options.d_floor
    beta = prob.gls(np.eye(K))                                     # (restricted) OLS
    Rt = prob.residuals(beta)
    s = problem.residual_variances(Rt)
    S0 = Rt @ Rt.T / N
    F, D = _initial_point(S0, d_floor * s, s, k)

    def cycle(beta, F, D):
        beta = prob.gls(_sigma_inv(F, D))
        R = prob.residuals(beta)
        S = R @ R.T / N
        F, D = _em_factor_step(S, F, D, d_floor * np.diag(S))
        return beta, F, D, _dense_nll(S, F, D)

    def pack(beta, F, D):
        return np.concatenate([beta, F.ravel(), np.log(D)])

    def unpack(v):
        P = len(beta)
        return v[:P], v[P:P + K * k].reshape(K, k), np.exp(v[P + K * k:])

    state, trace, backs = (beta, F, D), [_dense_nll(S0, F, D)], []
    last, prev, converged = np.inf, np.inf, False
    scale = options.tol * K  # as in ALS: gap per row and equation
    for it in range(options.iterations("em")):
        if options.accelerate in (False, "em"):
            new, rej = cycle(*state), 0
        else:
            new, rej = _squarem(cycle, state, pack, unpack)
        state = new[:3]
        prev, last = last, trace[-1] - new[3]
        trace.append(min(new[3], trace[-1]))  # guard the trace against round-off
        backs.append(rej)
        rho = min(max(last, 0.0) / prev, 0.99) if prev > 0 and np.isfinite(prev) else 0.0
        if it > 0 and max(abs(last), max(last, 0.0) * rho / (1 - rho)) <= scale:
            converged = True
            break
    beta, F, D = state
    Rt = prob.residuals(beta)
    return SolverRun(
        theta=prob.theta(beta), F=F, D=D, Rt=Rt, trace=trace, converged=converged,
        nll_at=lambda Fr: _dense_nll(Rt @ Rt.T / N, Fr, D),
        floor=d_floor * np.einsum("kn,kn->k", Rt, Rt) / N, method="em",
        note=f"last NLL decrease per row and equation {last / K:.2e}",
        iterations=[IterationRecord(backtracks=b) for b in backs])
