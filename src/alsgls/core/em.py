"""The dense EM baseline: the same model and likelihood through dense K x K algebra.

This is the reference the ALS path is compared with, and the memory baseline:
it forms the dense ``Sigma^-1`` (K x K), the residual covariance ``S`` (K x K)
and the GLS normal matrix (P x P).  Each iteration is an ECM cycle

1. beta <- dense GLS given Sigma (Cholesky of the P x P normal matrix);
2. (F, D) <- one latent-factor EM step on ``S = R'R / N`` (DESIGN.md section 3):
   ``m_i = C^-1 F' Psi^-1 r_i``, ``F = S_ry S_yy^-1``, ``D = diag(S - F S_ry')``,

which is monotone in the likelihood (up to the floor ``D_j >= d_floor *
s_j``, which moves with the residual variance ``s_j``: the core returns the
best point it has seen, whose NLL the trace ends with).  Under linear restrictions ``R beta = q``
(:mod:`alsgls.core.restriction`) step 1 is the restricted GLS
``beta_u - A^-1 R' (R A^-1 R')^-1 (R beta_u - q)`` (the KKT solution) and the
start is restricted OLS.  SQUAREM (Varadhan & Roland, 2008) extrapolates the
cycle on ``(beta, F, log D)``, with a fall-back to the plain cycle whenever
the extrapolated point would raise the NLL or is not a valid covariance.

**Stopping: a Newton certificate, not a rate extrapolation.**  A rule built
on the last decreases (``gap ~ decrease * rho / (1 - rho)``) is fooled by
SQUAREM's uneven steps: with Cauchy noise it stopped 9e-6 per row above the
optimum.  Here, once a cycle gains less than :data:`CHECK_AFTER` times the
tolerance (and after :data:`FORCE_CHECK`, twice, four times as many cycles
in any case), the point is certified by the Newton decrement
``g' (H + mu I)^-1 g / 2`` of the NLL per row (:class:`_Newton`): ``g`` the
analytic gradient; ``H`` the observed information, exact (:func:`_hessian`;
in beta it is ``X'(Sigma^-1 (x) I)X / N``); coordinates whitened (beta by
the GLS normal matrix, ``F_j`` by ``s_j^1/2``, ``D_j`` by ``s_j``); the rotation of F fixed by pivot
rows; ``D_j`` at the floor with the gradient pushing below it held fixed
(the bound is active); ``mu`` = :data:`CURVATURE_FLOOR` for directions the
data do not identify.  It is the gap to the optimum of the local quadratic
model -- equal to the true gap to third order near the optimum, an estimate
(not a bound) farther out; a negative curvature refuses the certificate
(and the step is shifted, Levenberg-Marquardt).
``converged`` means this gap is at most ``tol * K`` per row.  When it is
not, damped Newton steps (halved until the NLL decreases) polish the point,
so a slow EM (Heywood cases, heavy tails) still ends certified; with
``accelerate=False`` (plain EM, for comparison) the point is only certified,
never polished.  When two failed certificates in a row find the floor
deciding the point (:func:`alsgls.core.existence.floor_collapse`: equations
at the floor with collinear residuals) the core stops unconverged: there is
no interior optimum to certify, and the dispatcher says why.

**Scale.**  The core works in per-equation units: equation j is divided by
``c_j``, its OLS residual standard deviation (after a division by
``max |y_j|``, so nothing under- or overflows), and the result is mapped back
exactly (``B_j c_j``, ``F_j c_j``, ``D_j c_j^2``, NLL ``+ sum log c_j``).
Rescaling an equation therefore rescales its outputs to round-off (measured:
1e-15 relative for factors 1e-6..1e6, and at |Y| ~ 1e-100 or 1e100), at any
scale whose variances float64 represents (|Y| within about 1e-150..1e150;
beyond, a ValueError says so).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, qr, solve_triangular

from .existence import floor_collapse
from .fit_result import IterationRecord, SolverRun
from .missing_em import equation_scales
from .ops import LOG_2PI, design_matvec, design_rmatvec, lawley_loadings
from .options import SolverOptions
from .problem import Problem
from .restriction import LinearRestriction

__all__ = ["run_em"]

#: The certificate is computed once a cycle gains at most this multiple of
#: ``tol * K`` per row (it costs ``O(K^2 (k^2 + N p) + (K (k + 1))^3)``).
CHECK_AFTER = 1e3
#: EM cycles between certificates that failed and could not polish.
CHECK_EVERY = 10
#: A certificate (and Newton polish) is also tried after this many cycles,
#: then after twice as many, ...: EM crawling towards a Heywood case gains
#: more than the trigger per cycle for thousands of cycles.
FORCE_CHECK = 30
#: Curvature assumed for directions the data do not identify (whitened units,
#: where identified directions have curvature of order 1).
CURVATURE_FLOOR = 1e-8
#: Newton steps per polish, and halvings of one step before it is refused.
NEWTON_STEPS = 20
MAX_HALVINGS = 12


class _DenseProblem:
    """Dense quantities of one system, in units where equation j is divided by c_j."""

    def __init__(self, data: Problem, c: np.ndarray,
                 restriction: LinearRestriction | None = None) -> None:
        self.data, self.c = data, c
        lay = self.layout = data.layout
        self.Yt = data.Yt / c[:, None]
        XtX = np.einsum("jna,lnb->jalb", data.X, data.X)      # (K, pmax, K, pmax)
        self.XtX = XtX[lay.eq, lay.col][:, lay.eq, lay.col]    # P x P
        self.owner = lay.eq                                    # equation of each coefficient
        self.R = self.q = None
        if restriction is not None:                            # R beta = (R C) beta~ = q
            self.R, self.q = restriction.R * c[self.owner][None, :], restriction.q

    def theta(self, beta: np.ndarray) -> np.ndarray:
        return self.layout.unflatten(beta)

    def residuals(self, beta: np.ndarray) -> np.ndarray:
        return self.Yt - design_matvec(self.data.X, self.theta(beta))

    def normal(self, W: np.ndarray) -> np.ndarray:
        """The GLS normal matrix ``X' (W (x) I) X`` (P x P)."""
        return self.XtX * W[np.ix_(self.owner, self.owner)]

    def gls(self, W: np.ndarray) -> np.ndarray:
        """Dense GLS: solve (X' (Sigma^-1 (x) I) X) beta = X' (Sigma^-1 (x) I) y,
        subject to R beta = q when restricted."""
        b = self.layout.flatten(design_rmatvec(self.data.X, W @ self.Yt))
        cho = cho_factor(self.normal(W))
        beta = cho_solve(cho, b)
        if self.R is not None:
            AiRt = cho_solve(cho, self.R.T)                  # (P, m)
            lam = np.linalg.solve(self.R @ AiRt, self.R @ beta - self.q)
            beta = beta - AiRt @ lam
        return beta

    def gradient(self, W: np.ndarray, Rt: np.ndarray, S: np.ndarray, F: np.ndarray):
        """Gradient of the NLL per row: ``(g_beta (P,), g_F (K, k), g_D (K,))``.

        ``dNLL = tr(G dSigma) - tr(W R' dR) / N`` with ``G = (W - W S W) / 2``:
        ``g_F = 2 G F``, ``g_D = diag(G)``, ``g_beta_j = -X_j' (W R')_j / N``.
        """
        WS = W @ S
        G = 0.5 * (W - WS @ W)
        G = 0.5 * (G + G.T)
        g_beta = -self.layout.flatten(design_rmatvec(self.data.X, W @ Rt)) / Rt.shape[1]
        return g_beta, 2.0 * G @ F, np.diag(G).copy()


def _sigma_inv(F: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, float]:
    """``Sigma^-1`` and ``log|Sigma|`` (LinAlgError when Sigma is not positive definite)."""
    c, low = cho_factor(F @ F.T + np.diag(D))
    return cho_solve((c, low), np.eye(len(D))), 2.0 * float(np.sum(np.log(np.diag(c))))


def _dense_nll(S: np.ndarray, F: np.ndarray, D: np.ndarray) -> float:
    W, logdet = _sigma_inv(F, D)
    return 0.5 * (len(D) * LOG_2PI + logdet + float(np.sum(W * S)))


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


def _try(cycle, *x):
    """``cycle(*x)``, or None when the point is not a valid covariance (a
    SQUAREM extrapolation can leave the cone) or its NLL is not finite."""
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = cycle(*x)
    except (LinAlgError, np.linalg.LinAlgError, ValueError):
        return None
    return out if np.isfinite(out[3]) else None


def _squarem(cycle, state: tuple, pack, unpack) -> tuple[tuple, int]:
    """One SQUAREM (S3) step from ``state``; returns the new point (with its NLL)
    and 1 if the extrapolated point was rejected for the plain double cycle."""
    t1 = cycle(*state)
    t2 = cycle(*t1[:3])
    r = pack(*t1[:3]) - pack(*state)
    v = pack(*t2[:3]) - pack(*t1[:3]) - r
    nv = np.linalg.norm(v)
    alpha = min(-np.linalg.norm(r) / nv, -1.0) if nv > 0 else -1.0
    t3 = _try(cycle, *unpack(pack(*state) - 2 * alpha * r + alpha ** 2 * v))
    if t3 is not None and t3[3] <= t2[3]:
        return t3, 0
    return t2, 1


@dataclasses.dataclass
class _Point:
    """A point of the scaled problem with what the certificate needs."""

    beta: np.ndarray
    F: np.ndarray
    D: np.ndarray
    nll: float
    Rt: np.ndarray
    S: np.ndarray
    W: np.ndarray


def _evaluate(prob: _DenseProblem, beta, F, D) -> _Point | None:
    try:
        W, logdet = _sigma_inv(F, D)
    except (LinAlgError, np.linalg.LinAlgError):
        return None
    Rt = prob.residuals(beta)
    S = Rt @ Rt.T / Rt.shape[1]
    nll = 0.5 * (len(D) * LOG_2PI + logdet + float(np.sum(W * S)))
    return _Point(beta, F, D, nll, Rt, S, W) if np.isfinite(nll) else None


def _hessian(prob: _DenseProblem, x: _Point, F: np.ndarray):
    """The exact Hessian of the NLL per row in ``(F, D)`` and its cross block
    with beta, at ``x`` with loadings ``F`` (any rotation of ``x.F``).

    With ``W = Sigma^-1``, ``V = W S W``, ``G = (W - V) / 2`` and two
    directions ``Sigma_1``, ``Sigma_2``: ``d2 NLL = -tr(W S1 W S2) / 2 +
    tr(S1 W S2 V) + tr(G S12)`` (``S12`` the second derivative of Sigma: ``e_i
    e_j' + e_j e_i'`` for ``F_ia, F_ja``), and ``d g_beta = X' (W S2 W R') / N``.
    Written out for ``dSigma = e_i f_a' + f_a e_i'`` (``F_ia``) and ``e_j e_j'``
    (``D_j``), with ``M = F'WF``, ``Q = F'VF``:

    * ``F_ia, F_jb``: ``W_ij (Q - M)_ab + V_ij M_ab + 2 d_ab G_ij +
      (WF)_ja ((VF) - (WF))_ib + (WF)_ib (VF)_ja``;
    * ``F_ia, D_j``: ``(WF)_ja (V - W)_ij + W_ij (VF)_ja``;
    * ``D_i, D_j``: ``W_ij V_ij - W_ij^2 / 2``;
    * beta: ``D_j -> W_lj X_l'(W R')_j / N``, ``F_ja -> (W_lj X_l' (R W F)_a +
      (WF)_la X_l' (W R')_j) / N`` for equation l.

    Returns ``H_FF (K, k, K, k)``, ``H_FD (K, k, K)``, ``H_DD (K, K)`` and the
    cross blocks ``X_F (K, k, P)``, ``X_D (K, P)``.  A test checks all of it
    against central differences of the gradient.
    """
    W, S, Rt = x.W, x.S, x.Rt
    K, k, N = F.shape[0], F.shape[1], Rt.shape[1]
    V = W @ S @ W
    V = 0.5 * (V + V.T)
    G = 0.5 * (W - V)
    WF, VF = W @ F, V @ F
    M, Q = F.T @ WF, F.T @ VF
    H_FF = (np.einsum("ij,ab->iajb", W, Q - M) + np.einsum("ij,ab->iajb", V, M)
            + 2.0 * np.einsum("ij,ab->iajb", G, np.eye(k))
            + np.einsum("ja,ib->iajb", WF, VF - WF) + np.einsum("ib,ja->iajb", WF, VF))
    H_FD = np.einsum("ja,ij->iaj", WF, V - W) + np.einsum("ij,ja->iaj", W, VF)
    H_DD = W * V - 0.5 * W * W
    X = prob.data.X
    WR = W @ Rt                                                  # (K, N)
    T = np.einsum("lnp,jn->ljp", X, WR)                          # X_l' (W R')_j
    U = np.einsum("lnp,an->lap", X, WF.T @ Rt)                   # X_l' (R W F)_a
    X_D = W[:, :, None] * T / N                                  # [l, j, p]
    X_F = (W[:, :, None, None] * U[:, None, :, :]
           + WF[:, None, :, None] * T[:, :, None, :]) / N        # [l, j, a, p]
    flat = prob.layout
    X_D = flat.flatten(X_D.transpose(0, 2, 1)).T                 # (K, P)
    X_F = flat.flatten(X_F.reshape(K, K * k, X.shape[2]).transpose(0, 2, 1)).T.reshape(K, k, flat.P)
    return H_FF, H_FD, H_DD, X_F, X_D


class _Newton:
    """Newton decrement and damped Newton step at a point (module docstring).

    Coordinates ``(u, phi, delta)``: ``beta = beta0 + T u`` with
    ``T' A T = I`` on the restricted set (``A`` the exact beta-Hessian),
    ``F = F0 + diag(s^1/2) phi`` over the free loadings (pivot rows fix the
    rotation) and ``D = D0 + s delta`` over the free noise variances --
    linear in units of ``s_j``, not logarithmic: near a Heywood case the NLL
    is smooth and about linear in ``D_j`` down to the floor (``Sigma`` stays
    non-singular), so a (clipped) Newton step lands on the floor, where in
    ``log D_j`` each step would only divide ``D_j`` by about e and the
    curvature would vanish like ``D_j^2``.  The Hessian is exact
    (:func:`_hessian`); its beta block is I in these coordinates.
    """

    def __init__(self, prob: _DenseProblem, x: _Point, floor: np.ndarray) -> None:
        self.prob, self.x, self.floor = prob, x, floor
        K, k, N = len(x.D), x.F.shape[1], x.Rt.shape[1]
        self.F0 = self._lower_triangular(x.F)
        g_beta, g_F, g_D = prob.gradient(x.W, x.Rt, x.S, self.F0)
        self.T = self._whitening(prob.normal(x.W) / N)
        self.sd = np.sqrt(np.diag(x.S))
        self.free_F = np.ones((K, k), dtype=bool)
        if k:
            piv = qr(self.F0.T, pivoting=True, mode="r")[1][:k]
            for i, j in enumerate(piv):
                self.free_F[j, i + 1:] = False
        at_floor = x.D <= floor * (1 + 1e-9)
        self.free_D = ~(at_floor & (g_D > 0))
        self.g = np.concatenate([self.T.T @ g_beta, (g_F * self.sd[:, None])[self.free_F],
                                 (g_D * self.sd ** 2)[self.free_D]])

    @staticmethod
    def _lower_triangular(F: np.ndarray) -> np.ndarray:
        """F rotated so that it is lower triangular in its pivot rows."""
        k = F.shape[1]
        if k < 2:
            return F.copy()
        piv = qr(F.T, pivoting=True, mode="r")[1][:k]
        Q, _ = np.linalg.qr(F[piv].T)                      # F[piv] Q lower triangular
        return F @ Q

    def _whitening(self, A: np.ndarray) -> np.ndarray:
        """``T`` with ``T' A T = I`` on the null space of the restriction."""
        if self.prob.R is not None:
            Z = np.linalg.svd(self.prob.R)[2][self.prob.R.shape[0]:].T   # (P, P - m)
            L = np.linalg.cholesky(Z.T @ A @ Z)
            return Z @ solve_triangular(L, np.eye(L.shape[0]), lower=True).T
        L = np.linalg.cholesky(A)
        return solve_triangular(L, np.eye(L.shape[0]), lower=True).T

    def _blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """The covariance block ``H_ss`` (n, n) and the cross block ``C`` (n, nu)
        of the Hessian over the free, scaled coordinates."""
        K, k = self.F0.shape
        H_FF, H_FD, H_DD, X_F, X_D = _hessian(self.prob, self.x, self.F0)
        sF = np.broadcast_to(self.sd[:, None], (K, k))[self.free_F]
        sD = (self.sd ** 2)[self.free_D]
        fF, fD = self.free_F.reshape(-1), self.free_D
        HFF = H_FF.reshape(K * k, K * k)[np.ix_(fF, fF)] * np.outer(sF, sF)
        HFD = H_FD.reshape(K * k, K)[np.ix_(fF, fD)] * np.outer(sF, sD)
        HDD = H_DD[np.ix_(fD, fD)] * np.outer(sD, sD)
        Hs = np.block([[HFF, HFD], [HFD.T, HDD]])
        C = np.concatenate([X_F.reshape(K * k, X_F.shape[2])[fF] * sF[:, None],
                            X_D[fD] * sD[:, None]]) @ self.T
        return 0.5 * (Hs + Hs.T), C

    def decrement(self) -> tuple[float, np.ndarray | None]:
        """``(gap, Newton direction)``: ``g' (H + mu I)^-1 g / 2``; the gap is
        ``inf`` when H has a clearly negative curvature (the direction is then
        shifted by twice that curvature, Levenberg-Marquardt)."""
        nu = self.T.shape[1]
        Hs, C = self._blocks()
        schur = Hs - C @ C.T                               # H_ss - C C' (the beta block is I)
        mu, V = np.linalg.eigh(schur)
        concave = bool(mu.size) and mu[0] < -max(CURVATURE_FLOOR, 1e-6 * abs(mu[-1]))
        shift = 2.0 * -mu[0] if concave else 0.0     # Levenberg-Marquardt past a saddle
        gu, gs = self.g[:nu], self.g[nu:]
        y = V @ ((V.T @ (gs - C @ gu)) / np.maximum(mu + shift, CURVATURE_FLOOR))
        x = gu - C.T @ y
        step = -np.concatenate([x, y])
        return (np.inf if concave else 0.5 * float(-(self.g @ step))), step

    def _sigma_point(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(F, D)`` at covariance coordinates ``v = (phi, delta)``."""
        nF = int(self.free_F.sum())
        F = self.F0.copy()
        F[self.free_F] += np.broadcast_to(self.sd[:, None], F.shape)[self.free_F] * v[:nF]
        D = self.x.D.copy()
        D[self.free_D] += self.sd[self.free_D] ** 2 * v[nF:]
        return F, D

    def point(self, step: np.ndarray, t: float) -> _Point | None:
        """The point ``t`` of the way along ``step``, D clipped to the floor."""
        nu = self.T.shape[1]
        beta = self.x.beta + self.T @ (t * step[:nu])
        F, D = self._sigma_point(t * step[nu:])
        Rt = self.prob.residuals(beta)
        floor = self.floor / np.diag(self.x.S) * np.einsum("kn,kn->k", Rt, Rt) / Rt.shape[1]
        return _evaluate(self.prob, beta, F, np.maximum(D, floor))


def _polish(prob: _DenseProblem, x: _Point, d_floor: float, scale: float,
            budget: int) -> tuple[list, float, bool]:
    """Certify ``x``; while not certified, damped Newton steps (at most
    ``budget``; 0 certifies only).  Returns the accepted points with their halvings, the last gap, and whether it is
    certified (gap at most ``scale``).  A certified point still takes its
    full Newton step when that lowers the NLL (it squares the gap)."""
    steps: list = []
    gap = np.inf
    for _ in range(min(NEWTON_STEPS, budget) + 1):
        try:
            newton = _Newton(prob, x, d_floor * np.diag(x.S))
        except (LinAlgError, np.linalg.LinAlgError):   # beta-Hessian not positive definite
            return steps, np.inf, False
        gap, step = newton.decrement()
        if gap <= scale and step is not None and len(steps) < budget:
            new = newton.point(step, 1.0)          # certified: the free last step
            if new is not None and new.nll < x.nll:
                steps.append((new, 0))
        if gap <= scale or step is None or len(steps) >= budget:
            break
        t, new = 1.0, None
        for halvings in range(MAX_HALVINGS + 1):
            new = newton.point(step, t)
            if new is not None and new.nll < x.nll:
                break
            t, new = t / 2, None
        if new is None:
            break
        x = new
        steps.append((x, halvings))
    return steps, gap, gap <= scale


def run_em(problem: Problem, k: int, options: SolverOptions, *,
           restriction: LinearRestriction | None = None) -> SolverRun:
    """The dense ECM core on a complete, unweighted problem (module docstring).

    ``converged`` when the Newton decrement of the NLL per row, at a point
    where a cycle gained at most ``CHECK_AFTER * tol * K``, is at most
    ``tol * K`` (the ALS tolerance's units).  With a ``restriction`` every
    beta is the restricted GLS (restricted MLE).
    """
    c = equation_scales(problem)
    prob = _DenseProblem(problem, c, restriction)
    N, K, d_floor = problem.N, problem.K, options.d_floor
    beta = prob.gls(np.eye(K))                                     # (restricted) OLS
    Rt = prob.residuals(beta)
    S0 = Rt @ Rt.T / N
    s = np.diag(S0).copy()
    F, D = _initial_point(S0, d_floor * s, s, k)

    def cycle(beta, F, D):
        beta = prob.gls(_sigma_inv(F, D)[0])
        R = prob.residuals(beta)
        S = R @ R.T / N
        F, D = _em_factor_step(S, F, D, d_floor * np.diag(S))
        return beta, F, D, _dense_nll(S, F, D)

    def pack(beta, F, D):
        return np.concatenate([beta, F.ravel(), np.log(D)])

    def unpack(v):
        P = len(beta)
        return v[:P], v[P:P + K * k].reshape(K, k), np.exp(np.minimum(v[P + K * k:], 700.0))

    state, trace, backs = (beta, F, D), [_dense_nll(S0, F, D)], []
    best = state
    last, gap, converged, next_check, collapsed = np.inf, np.inf, False, 0, 0
    forced = FORCE_CHECK
    scale = options.tol * K  # as in ALS: gap per row and equation
    limit = options.iterations("em")
    plain = options.accelerate in (False, "em")     # the textbook cycle: no SQUAREM, no Newton
    while len(trace) - 1 < limit:
        if plain:
            new, rej = cycle(*state), 0
        else:
            new, rej = _squarem(cycle, state, pack, unpack)
        state = new[:3]
        last = trace[-1] - new[3]
        if new[3] <= trace[-1]:
            best = state
        trace.append(min(new[3], trace[-1]))  # the NLL at `best`
        backs.append(rej)
        it = len(trace) - 1
        if not (it >= forced or (last <= CHECK_AFTER * scale and it >= next_check)):
            continue
        if it >= forced:
            forced *= 2
        x = _evaluate(prob, *state)
        if x is None:
            break
        budget = 0 if plain else limit - (len(trace) - 1)
        steps, gap, converged = _polish(prob, x, d_floor, scale, budget)
        for pt, halvings in steps:
            if pt.nll <= trace[-1]:
                best = (pt.beta, pt.F, pt.D)
            trace.append(min(pt.nll, trace[-1]))
            backs.append(halvings)
        if steps:
            state = (steps[-1][0].beta, steps[-1][0].F, steps[-1][0].D)
        if converged:
            break
        xs = steps[-1][0] if steps else x
        collapsed = collapsed + 1 if floor_collapse(xs.F, xs.D, d_floor * np.diag(xs.S)) else 0
        if collapsed >= 2:           # the floor decides: no optimum to certify
            break
        next_check = len(trace) - 1 + CHECK_EVERY
    # A cycle can raise the NLL by a little when D sits on a floor that moves with
    # the residuals; the trace holds the best NLL, so return the point that has it.
    return _unscaled_run(problem, prob, best, trace, backs, converged, gap, last, d_floor)


def _unscaled_run(problem: Problem, prob: _DenseProblem, state: tuple, trace: list,
                  backs: list, converged: bool, gap: float, last: float,
                  d_floor: float) -> SolverRun:
    """The outcome in the caller's units: ``B_j c_j``, ``F_j c_j``, ``D_j c_j^2``,
    NLL ``+ sum_j log c_j``."""
    c, K, N = prob.c, problem.K, problem.N
    beta, F, D = state
    shift = float(np.sum(np.log(c)))
    Rs = prob.residuals(beta)
    Ss = Rs @ Rs.T / N
    theta = prob.theta(beta) * c[:, None]
    D_out = D * c ** 2
    if not (np.all(np.isfinite(D_out)) and np.all(D_out > 0)):
        j = int(np.flatnonzero(~(np.isfinite(D_out) & (D_out > 0)))[0])
        raise ValueError(f"{problem.equation(j)}: its noise variance ({D[j]:.3g} * "
                         f"{c[j]:.3g}^2) is not representable in float64 -- variances "
                         "scale as Y^2, so |Y| must lie within about 1e-150..1e150; "
                         "rescale that response (the fit is equivariant)")
    note = (f"Newton-decrement NLL gap {gap / K:.2e} per row and equation"
            if np.isfinite(gap) else f"last NLL decrease per row and equation {last / K:.2e}")
    return SolverRun(
        theta=theta, F=F * c[:, None], D=D_out,
        Rt=problem.Yt - design_matvec(problem.X, theta),
        trace=[t + shift for t in trace], converged=converged,
        nll_at=lambda Fr: _dense_nll(Ss, Fr / c[:, None], D) + shift,
        floor=d_floor * np.diag(Ss) * c ** 2, method="em", note=note,
        iterations=[IterationRecord(backtracks=b) for b in backs])
