"""EM kernels for the unbalanced SUR likelihood (see :mod:`alsgls.missing`).

Named steps on a fixed problem record: ``estep`` (per-row k x k cores,
posterior factor moments and the observed-data NLL), ``mstep`` (per-equation
regression of ``y_j`` on ``[X_j, m]``, then the parameter-expanded (PX-EM)
reduction ``F <- F chol(Phi)``, ``Phi = sum_i w_i (m_i m_i' + V_i) / N``, Liu,
Rubin & Wu 1998), and two monotone accelerators of the EM map ``T`` on
``x = (beta, F, log D)``:

* Anderson acceleration (type II, memory ``ANDERSON_MEMORY``), the default:
  the proposal is kept only if its NLL is not above the current one,
  otherwise the plain EM step is taken and the history restarts;
* SQUAREM (Varadhan & Roland, 2008, scheme S3), kept for comparison.

Why PX-EM: with strong factors the plain EM map barely moves the scale of F
(its rate is about ``1 - 1/lambda`` for ``lambda`` the eigenvalues of
``F' Psi^-1 F``, which grow with K).  Measured at K = 1000, N = 500, k = 5
with 20 % of the responses missing in staggered blocks, to a relative NLL
gap below 1e-12: plain EM did not get there in 450 maps and SQUAREM stalled
(150 cycles); PX-EM needed 5 maps, with Anderson 5 and SQUAREM 3 cycles.
At K = 200, N = 300: EM 556 maps vs PX-EM 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._missing_validation import MissingData
from .ops import LOG_2PI

#: Subspace iterations for the initial loadings (an initial guess only).
INIT_EIG_ITER = 3
#: Initial noise variances are at least this fraction of the OLS residual variance.
INIT_D_FRACTION = 0.05
#: Past EM steps used by Anderson acceleration.
ANDERSON_MEMORY = 10
#: The EM decrement underestimates the gap to the optimum by the factor
#: 1 / (1 - rate of EM); the stopping rule asks for this fraction of tol.
DECREMENT_SAFETY = 0.05
#: SQUAREM step-length halvings before falling back to the plain EM step.
MAX_BACKTRACK = 8


@dataclass
class EStats:
    """E-step output at one parameter point."""

    M: np.ndarray      # (N, k) posterior means of the factors
    V: np.ndarray      # (N, k, k) posterior covariances C_i^-1
    nll: float         # weighted observed-data NLL per row at that point


@dataclass
class LoopResult:
    """Outcome of an accelerated EM run."""

    x: tuple           # (theta (K, pmax), F (K, k), D (K,))
    trace: list        # NLL per row after each iteration, entry 0 at the start
    rejected: list     # per iteration: 1 if the acceleration fell back to EM
    decrement: float   # EM decrement at the returned point (NLL-per-row units)
    converged: bool


class Problem:
    """Fixed quantities of one unbalanced system (weights and masks folded in).

    Parameters
    ----------
    data : MissingData
    k : int
    floor : ndarray, shape (K,)
        Lower bound on ``D``.
    """

    def __init__(self, data: MissingData, k: int, floor: np.ndarray) -> None:
        X, Yt = data.X, data.Yt
        K, N, pm = X.shape
        self.data, self.k, self.floor = data, k, floor
        self.Om = data.O * data.w                                # (K, N) weights on observed
        XW = X * self.Om[:, :, None]
        self.XWt = np.ascontiguousarray(XW.transpose(0, 2, 1)).reshape(K * pm, N)
        gram = np.einsum("knp,knq->kpq", XW, X)
        gram[:, np.arange(pm), np.arange(pm)] += np.arange(pm)[None, :] >= data.p[:, None]
        self.gram = gram                                         # (K, pm, pm), padded
        self.OmY = self.Om * Yt
        self.XtWy = np.einsum("knp,kn->kp", X, self.OmY)
        self.yWy = np.einsum("kn,kn->k", self.OmY, Yt)
        self.n = self.Om.sum(axis=1)                             # weighted rows per equation
        self.n_i = data.O.sum(axis=0)                            # observed entries per row

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        """``Y - X B`` (K, N), zero where missing."""
        return self.data.Yt - (self.data.X @ theta[:, :, None])[..., 0]

    def estep(self, theta: np.ndarray, F: np.ndarray, D: np.ndarray) -> EStats:
        """Posterior moments of the factors and the observed-data NLL per row.

        ``C_i = I + sum_{j in O_i} F_j F_j' / D_j`` for all rows in one GEMM,
        ``m_i = C_i^-1 F' Psi^-1 r_i`` (r zero where missing), ``V_i = C_i^-1``,
        and ``2 l_i = n_i log 2pi + sum_{O_i} log D + log|C_i| + sum_{O_i} r^2/D
        - b_i' C_i^-1 b_i``.
        """
        k, N, O, w = self.k, self.data.N, self.data.O, self.data.w
        Rt = self.residuals(theta)
        FD = F / D[:, None]                                      # Psi^-1 F (K, k)
        outer = (FD[:, :, None] * F[:, None, :]).reshape(F.shape[0], k * k)
        C = (O.T @ outer).reshape(N, k, k)                       # the masked GEMM
        C[:, np.arange(k), np.arange(k)] += 1.0
        L = np.linalg.cholesky(C)
        Linv = np.linalg.solve(L, np.broadcast_to(np.eye(k), C.shape))
        V = np.einsum("nji,njl->nil", Linv, Linv)                # C^-1 = L^-T L^-1
        b = Rt.T @ FD                                            # (N, k)
        u = np.einsum("nij,nj->ni", Linv, b)
        quad = np.einsum("kn,kn,k->n", Rt, Rt, 1.0 / D) - np.einsum("ni,ni->n", u, u)
        logdet = O.T @ np.log(D) + 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
        ell = 0.5 * (self.n_i * LOG_2PI + logdet + quad)
        return EStats(M=np.einsum("nij,nj->ni", V, b), V=V, nll=float(w @ ell) / N)

    def mstep(self, e: EStats, x: tuple | None = None) -> tuple[tuple, float]:
        """Exact M-step: per equation, regress ``y_j`` on ``[X_j, m]``.

        Returns the new point and, when the current point ``x`` is given, its
        EM decrement ``(sum_j d_j' G_j d_j / D_j + sum_j n_j dlogD_j^2 / 2) / (2N)``
        (``d_j`` the step in ``[beta_j; F_j]``, ``G_j`` the M-step Gram): the
        NLL-per-row decrease a Newton step on the complete-data likelihood
        would predict, a lower estimate of the gap to the optimum.
        """
        K, N, pm = self.data.X.shape
        k, M = self.k, e.M
        G = np.empty((K, pm + k, pm + k))
        G[:, :pm, :pm] = self.gram
        XtM = (self.XWt @ M).reshape(K, pm, k)
        G[:, :pm, pm:] = XtM
        G[:, pm:, :pm] = XtM.transpose(0, 2, 1)
        MM = M[:, :, None] * M[:, None, :] + e.V
        G[:, pm:, pm:] = (self.Om @ MM.reshape(N, k * k)).reshape(K, k, k)
        c = np.concatenate([self.XtWy, self.OmY @ M], axis=1)
        d = np.sqrt(np.einsum("kii->ki", G))                     # Jacobi scaling
        sol = np.linalg.solve(G / d[:, :, None] / d[:, None, :], (c / d)[..., None])[..., 0] / d
        D = np.maximum((self.yWy - np.einsum("ki,ki->k", sol, c)) / self.n, self.floor)
        if k > 0:  # PX-EM reduction: z ~ N(0, Phi) -> F chol(Phi)
            Phi = np.einsum("n,nij->ij", self.data.w, MM) / N
            sol[:, pm:] = sol[:, pm:] @ np.linalg.cholesky(Phi)
        dec = np.nan
        if x is not None:
            step = sol - np.concatenate([x[0], x[1]], axis=1)
            quad = np.einsum("ki,kij,kj->k", step, G, step) / D
            dec = float(np.sum(quad) + 0.5 * np.sum(self.n * np.log(D / x[2]) ** 2)) / (2 * N)
        return (sol[:, :pm], sol[:, pm:], D), dec


def _orthonormal(Z: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of ``Z`` by symmetric eigen-orthogonalisation."""
    lam, S = np.linalg.eigh(Z.T @ Z)
    keep = lam > lam[-1] * 1e-13
    return Z @ (S[:, keep] / np.sqrt(lam[keep]))


def _rough_top_eigenpairs(W: np.ndarray, k: int, rng: np.random.Generator):
    """Approximate top-k eigenpairs of ``W W'`` (an initial guess only):
    ``INIT_EIG_ITER`` block power iterations with Rayleigh-Ritz, no K x K."""
    K = W.shape[0]
    V = _orthonormal(rng.standard_normal((K, min(k + 8, K))))
    for _ in range(INIT_EIG_ITER):
        V = _orthonormal(W @ (W.T @ V))
    lam, S = np.linalg.eigh(V.T @ (W @ (W.T @ V)))
    return lam[::-1][:k], (V @ S[:, ::-1])[:, :k]


def initial_point(prob: Problem, s: np.ndarray, rng: np.random.Generator) -> tuple:
    """OLS on observed rows; loadings from the zero-filled whitened residuals."""
    data, k = prob.data, prob.k
    theta = np.linalg.solve(prob.gram, prob.XtWy[..., None])[..., 0]
    if k == 0:
        return theta, np.zeros((data.K, 0)), s.copy()
    Rt = prob.residuals(theta)
    # W W' approximates the residual correlation (each equation scaled by its
    # own observed weight, so the diagonal is 1); nothing K x K is formed.
    W = Rt * np.sqrt(data.w)[None, :] / np.sqrt(s * prob.n)[:, None]
    lam, U = _rough_top_eigenpairs(W, k, rng)
    F = np.sqrt(s)[:, None] * U * np.sqrt(np.maximum(lam - 1.0, 1e-2))
    D = np.maximum(s - np.einsum("ij,ij->i", F, F), np.maximum(prob.floor, INIT_D_FRACTION * s))
    return theta, F, D


def pack(x: tuple) -> np.ndarray:
    """``(theta, F, D) -> [theta, F, log D]`` flat."""
    return np.concatenate([x[0].ravel(), x[1].ravel(), np.log(x[2])])


def unpack(v: np.ndarray, prob: Problem) -> tuple:
    """Inverse of :func:`pack`; D is clipped to the floor."""
    K, pm, k = prob.data.K, prob.data.X.shape[2], prob.k
    theta = v[: K * pm].reshape(K, pm)
    F = v[K * pm: K * (pm + k)].reshape(K, k)
    D = np.maximum(np.exp(np.minimum(v[K * (pm + k):], 700.0)), prob.floor)
    return theta, F, D


def _try_estep(prob: Problem, x: tuple) -> EStats | None:
    try:
        e = prob.estep(*x)
    except np.linalg.LinAlgError:
        return None
    return e if np.isfinite(e.nll) else None


def _anderson_step(prob, x, e, t, hist):
    """Anderson proposal from the history; ``(x, e, rejected)``, monotone."""
    xp, f = pack(x), pack(t) - pack(x)
    hist.append((xp, f))
    del hist[: max(len(hist) - ANDERSON_MEMORY - 1, 0)]
    if len(hist) > 1:
        Xh = np.array([h[0] for h in hist])
        Fh = np.array([h[1] for h in hist])
        dX, dF = np.diff(Xh, axis=0).T, np.diff(Fh, axis=0).T
        scale = np.linalg.norm(dF, axis=0)
        scale[scale == 0] = 1.0
        gam = np.linalg.lstsq(dF / scale, f, rcond=1e-12)[0] / scale
        xa = unpack(xp + f - (dX + dF) @ gam, prob)
        ea = _try_estep(prob, xa)
        if ea is not None and ea.nll <= e.nll:
            return xa, ea, 0
    del hist[:-1]  # restart from the plain EM step
    return t, prob.estep(*t), 1


def _squarem_step(prob, x0, e0, x1):
    """SQUAREM S3 cycle from ``x0`` given ``x1 = T(x0)``; ``(x, e, rejected)``.

    ``x' = x0 - 2a r + a^2 v`` (``r = x1 - x0``, ``v = x2 - 2 x1 + x0``,
    ``a = -|r|/|v| <= -1``), kept if its NLL is not above ``nll(x1)``, else
    ``a`` is moved halfway to -1 (where ``x' = x2``); then ``x3 = T(x')``.
    """
    e1 = prob.estep(*x1)
    x2, _ = prob.mstep(e1)
    p0, p1, p2 = pack(x0), pack(x1), pack(x2)
    r, v = p1 - p0, p2 - 2 * p1 + p0
    nv = np.linalg.norm(v)
    alpha = min(-np.linalg.norm(r) / nv, -1.0) if nv > 0 else -1.0
    back = 0
    while alpha < -1.0 and back < MAX_BACKTRACK:
        xe = unpack(p0 - 2 * alpha * r + alpha ** 2 * v, prob)
        ee = _try_estep(prob, xe)
        if ee is not None and ee.nll <= e1.nll:
            break
        alpha, back = min((alpha - 1.0) / 2.0, -1.0), back + 1
    else:
        xe, ee = x2, prob.estep(*x2)
    x3, _ = prob.mstep(ee)
    e3 = prob.estep(*x3)
    return (x3, e3, int(back > 0)) if e3.nll <= ee.nll else (xe, ee, int(back > 0))


def run_em(prob: Problem, x: tuple, tol: float, max_iter: int, method: str) -> LoopResult:
    """Accelerated EM from ``x`` until the NLL decrease of the last iteration
    is below ``tol * max(|nll|, 1)`` and the EM decrement below
    ``DECREMENT_SAFETY`` times that.

    ``method`` is ``"anderson"``, ``"squarem"`` or ``"em"`` (plain EM).  The
    NLL never increases: every accepted point is at least as good as the
    current one.
    """
    e = prob.estep(*x)
    trace, rejected, hist = [e.nll], [], []
    last, dec, converged = np.inf, np.inf, False
    for it in range(max_iter + 1):
        t, dec = prob.mstep(e, x)
        scale = tol * max(abs(e.nll), 1.0)
        if it > 0 and last <= scale and dec <= DECREMENT_SAFETY * scale:
            converged = True
            break
        if it == max_iter:
            break
        if method == "anderson":
            x, e_new, rej = _anderson_step(prob, x, e, t, hist)
        elif method == "squarem":
            x, e_new, rej = _squarem_step(prob, x, e, t)
        else:
            x, e_new, rej = t, prob.estep(*t), 0
        last = max(trace[-1] - e_new.nll, 0.0)
        e = e_new
        trace.append(min(e.nll, trace[-1]))  # guard the trace against round-off
        rejected.append(rej)
    return LoopResult(x=x, trace=trace, rejected=rejected, decrement=dec, converged=converged)
