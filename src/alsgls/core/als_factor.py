"""The (F, D) half of the ALS solver: factor steps on fixed residuals.

Given residuals ``R`` (equation-major ``Rt``, K x N) with ``s_j = ||r_j||^2 / N``,
the likelihood of ``Sigma = F F' + diag(D)`` is maximised over F in closed
form (Lawley & Maxwell, 1971): with ``(lam, U)`` the top-k eigenpairs of the
whitened covariance ``D^-1/2 S D^-1/2``, ``F = D^1/2 U diag(max(lam - 1, 0))^1/2``.
What remains is the *profile* in D (Joreskog, 1967), per row

    ``f(D) = 1/2 [K log 2 pi + sum log D_j + sum_{lam_i > 1} (log lam_i - lam_i + 1)
    + sum s_j / D_j]``,  ``df / dlog D_j = ((F F')_jj + D_j - s_j) / (2 D_j)``,

subject to the relative floor ``D_j >= d_floor * s_j``.  Two ways down it:

* :func:`_factor_step` -- one step of the D map ``D <- max(s - diag(F F'), floor)``,
  Anderson-accelerated in log D and backtracked so that the NLL never
  increases (the plain ALS sweeps);
* :func:`_profile_lbfgs` -- L-BFGS-B on the profile to convergence: the exact ML
  factor analysis of the residuals (the coupled phase of :mod:`alsgls.core.als`).

:func:`_profile_gap` estimates the decrease still available from D, for the
stopping rule, and :func:`_settled_gap` measures the gap left after a step
(F part and D part); :func:`_newton_d` is a projected Newton step in
``log D`` with the Fisher curvature.  The steps update a :class:`_State` in
place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._backend import materialize
from .ops import LOG_2PI, LowRankCovariance, lawley_loadings, thin_q, top_eigenpairs

#: Extra columns carried by the subspace iteration beyond the k wanted.  Four,
#: not eight: over the 60 shapes of ``benchmarks/stopping_gaps.py`` (measured
#: when the change was made, before the rescaled warm starts and the span of
#: the products of ``ops.top_eigenpairs``) the subspace iterations rose 3%
#: (828 against 801) and the sweeps did not (319 against 322), while each
#: iteration's products and small dense work shrank with the block (paired
#: timing: K = 100 0.90, K = 1000 0.94-0.95, K = 4000 0.96 of the fit with
#: eight).  Two: one shape then stopped 1.01 tol * K short, and the
#: iterations rose again (795 against 770).
OVERSAMPLE = 4
#: Use a thin SVD of the whitened residuals when min(K, N) is this small.
DENSE_EIG_LIMIT = 64
#: Relative Ritz-residual tolerance for the top-k eigenpairs: the final one,
#: and the loosest used in the sweeps (an inexact F only lowers the NLL less;
#: the D step's backtracking keeps every sweep monotone).
EIG_RTOL = 1e-10
EIG_RTOL_MAX = 3e-5
#: The first factor step (from the OLS residuals, far from the optimum) solves
#: to this looser tolerance: one subspace iteration instead of two at K = 1000.
EIG_RTOL_FIRST = 1e-3
#: :func:`_settled_gap` solves its eigenpairs to this times ``sqrt(tol)``: the
#: D gap it measures errs by about the square of the loadings' error, against
#: a threshold proportional to ``tol``.  On the shapes of
#: ``benchmarks/stopping_gaps.py --settle RTOL`` (tol = 1e-10), the measured
#: gap over the exact one (dense eigenpairs), with the rescaled warm starts
#: and the predicted pairs of ``ops.top_eigenpairs``: 0.978-1.000 at this
#: setting (eigenpairs to 1e-7, one subspace iteration at K = 1000),
#: 0.970-1.000 at 1e-5, 1.000 at 1e-9 (9 measurements each: the factor
#: steps' pairs are now accurate enough that the measurement is needed less
#: often).  Before those (verified pairs from an unscaled start): 0.82-1.03 at
#: 1e-7 with block k + 4, and with block k + 8 0.71-1.00 at 1e-7 and
#: 0.45-1.31 at 1e-5 (26-31 measurements).
SETTLE_RTOL_SCALE = 1e-2
#: At or above this tolerance (early sweeps) the subspace iteration may end on
#: predicted rather than verified accuracy (``ops.top_eigenpairs``);
#: :func:`_settled_gap` allows it at any tolerance (its own docstring says why).
PREDICTED_RTOL = 1e-5
#: Memory of the Anderson acceleration of the D map, and its largest step in log D.
ANDERSON_M = 3
ANDERSON_MAX_STEP = 2.0
#: The exact factor analysis puts ``D_j`` on its floor when L-BFGS-B ended
#: within this distance of it in ``log D_j`` with the gradient pushing down:
#: near a Heywood case the NLL is about linear in ``D_j`` and L-BFGS-B creeps.
SNAP = 0.05
#: Relative round-off below which a variance difference counts as zero.
ROUNDOFF = 64 * np.finfo(float).eps


@dataclass
class _State:
    """Mutable iteration state of one ALS fit."""

    theta: np.ndarray | None   # (K, pmax) coefficients, padded (None: residuals only)
    Rt: np.ndarray             # (K, N) residuals Y - X B, equation-major
    F: np.ndarray              # (K, k)
    D: np.ndarray              # (K,)
    basis: np.ndarray | None = None   # warm start of the subspace iteration
    basis_d: np.ndarray | None = None   # the D whose whitened pairs ``basis`` holds
    nll: float = float("nan")
    d_gap: float = float("inf")   # NLL decrease still available from Sigma (estimate)
    hist: list = field(default_factory=list)   # (log D, map residual) for Anderson
    grad: np.ndarray | None = None   # GLS gradient X'(Sigma^-1 (x) I) r at the last beta-step
    floor: np.ndarray | None = None  # (K,) the floor d_floor * s_j D was last set against
    work: tuple | None = None        # two (K, N) workspaces of the beta-step (ops.workspace)
    s_cache: np.ndarray | None = None   # residual variances of Rt (variances())
    #: ``(F, D, LowRankCovariance(F, D), G' Rt)`` of the last NLL evaluation at
    #: the current residuals (:meth:`lowrank`)
    z_cache: tuple | None = None
    xr: np.ndarray | None = None     # X' Rt (K, pmax) for the current residuals, if known
    #: a loose eigen-solve proved too inexact while the sweeps still gained more
    #: than the tolerance (:func:`alsgls.core.als._sweeps`): the factor steps
    #: from then on solve the eigenpairs to the final tolerance
    tight: bool = False

    def __setattr__(self, name: str, value) -> None:
        if name == "Rt":                 # new residuals: what was derived from them is stale
            object.__setattr__(self, "s_cache", None)
            object.__setattr__(self, "z_cache", None)
            object.__setattr__(self, "xr", None)
        object.__setattr__(self, name, value)

    def lowrank(self, F: np.ndarray, D: np.ndarray) -> tuple[LowRankCovariance, np.ndarray]:
        """``(cov, Z)``: ``cov = LowRankCovariance(F, D)`` and ``Z = G' Rt`` at the
        current residuals, reused when the last evaluation was at these very
        ``F`` and ``D`` (the factor step's accepted point is the next beta-step's
        covariance: its pass over ``Rt`` is not repeated)."""
        c = self.z_cache
        if c is not None and c[0] is F and c[1] is D:
            return c[2], c[3]
        cov = LowRankCovariance._trusted(F, D)
        Z = cov.G.T @ self.Rt
        self.z_cache = (F, D, cov, Z)
        return cov, Z

    def nll_of(self, F: np.ndarray, D: np.ndarray) -> float:
        """NLL per row of the current residuals under ``F F' + diag(D)``, their
        row sums of squares from :meth:`variances` (one pass over ``Rt``, for
        the low-rank part, when ``F`` has columns and ``G' Rt`` is not known
        from :meth:`lowrank`; none when it has not)."""
        rowsq = self.Rt.shape[1] * self.variances()
        if F.shape[1] == 0 or type(self.Rt) is not np.ndarray:
            return LowRankCovariance._trusted(F, D).nll_per_row(self.Rt, rowsq=rowsq)
        cov, Z = self.lowrank(F, D)
        return cov.nll_per_row(self.Rt, rowsq=rowsq, Z=Z)

    def nll_rotated(self, F: np.ndarray) -> float:
        """:meth:`nll_of` at ``F = F_0 Q`` (``F_0 = self.F``, ``Q`` orthogonal k x k,
        e.g. the canonical rotation) and ``self.D``: ``G' Rt`` from the cached
        ``G_0' Rt`` (``F' D^-1 Rt = Q' L_0 G_0' Rt``), without a pass over ``Rt``.
        The likelihood is invariant under rotations; this evaluates it at
        ``F`` as formed, to round-off."""
        c = self.z_cache
        if (F.shape[1] == 0 or c is None or c[0] is not self.F or c[1] is not self.D
                or type(self.Rt) is not np.ndarray):
            return self.nll_of(F, self.D)
        cov0, Z0 = c[2], c[3]
        Q = np.linalg.lstsq(self.F, F, rcond=None)[0]
        cov = LowRankCovariance._trusted(F, self.D)
        Z = np.linalg.solve(cov.chol, Q.T @ cov0.chol) @ Z0           # k x k, then k x N
        return cov.nll_per_row(self.Rt, rowsq=self.Rt.shape[1] * self.variances(), Z=Z)

    def variances(self) -> np.ndarray:
        """``s_j = ||r_j||^2 / N`` of the current residuals, computed once while
        they do not change (the factor steps alone, ``update_beta=False``,
        never change them).  Code that changes ``Rt`` in place must clear
        ``s_cache`` (rebinding ``Rt`` does)."""
        if self.s_cache is None:
            self.s_cache = _residual_variances(self.Rt)
        return self.s_cache


def _residual_variances(Rt: np.ndarray) -> np.ndarray:
    return materialize(np.einsum("kn,kn->k", Rt, Rt)) / Rt.shape[1]


def _moved_variances(s: np.ndarray, N: int, alpha: float, d: np.ndarray, xr: np.ndarray,
                    gd: np.ndarray) -> np.ndarray | None:
    """The residual variances after the step ``R <- R - alpha U``, ``U_j = X_j d_j``,
    from ``s`` before it, ``xr = X'R`` and ``gd = X_j'X_j d_j`` (K x p quantities,
    no pass over ``R``): ``||r - alpha u||^2 = ||r||^2 - 2 alpha r'u + alpha^2 ||u||^2``
    with ``r_j'u_j = xr_j' d_j`` and ``||u_j||^2 = d_j' gd_j``.  None (compute
    them from ``R``) when the step removes more than 1 - 1e-3 of some
    ``||r_j||^2``: the difference would keep fewer than 12 digits."""
    ss = N * s
    new = ss - 2.0 * alpha * np.einsum("kp,kp->k", xr, d) + alpha * alpha * np.einsum(
        "kp,kp->k", d, gd)
    if not np.all(new >= 1e-3 * ss):
        return None
    return new / N


def _whitened_eigenpairs(st: _State, D: np.ndarray, k: int, rng: np.random.Generator,
                         maxiter: int, rtol: float = EIG_RTOL,
                         predicted_rtol: float = PREDICTED_RTOL
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k eigenpairs of ``D^-1/2 S D^-1/2`` (``S = R R' / N``) and the Lawley
    loadings they give: ``(lam, F, subspace iterations)``; warm-starts from
    ``st.basis`` (and records its D in ``st.basis_d``).

    A basis solved at another D is first rescaled to the new whitening,
    ``diag(sqrt(D_old / D)) V`` re-orthonormalised: when the factors stand
    above the noise, the top eigenvectors of the whitened covariance move to
    first order exactly so (``S ~ U Lam U'`` plus noise, so
    ``P S P ~ (P U) Lam (P U)'`` for ``P = diag(sqrt(D_old / D))``).  After
    the first factor step (from ``D = s``) the first iteration's Ritz
    residual falls from 0.27 to 6.5e-3 at K = 1000, after a step late in a
    fit from 2.3e-5 to 4.9e-7."""
    if st.basis is not None and st.basis_d is not None and st.basis_d is not D:
        st.basis = thin_q(np.sqrt(st.basis_d / D)[:, None] * st.basis)
    lam, U, st.basis, it = top_eigenpairs(
        st.Rt, 1.0 / np.sqrt(D * st.Rt.shape[1]), k, basis=st.basis, rng=rng,
        maxiter=maxiter, rtol=rtol, oversample=OVERSAMPLE, dense_limit=DENSE_EIG_LIMIT,
        predicted_rtol=predicted_rtol)
    st.basis_d = D
    return lam, lawley_loadings(U, lam, D), it


def _profile_gap(F: np.ndarray, D: np.ndarray, s: np.ndarray, floor: np.ndarray) -> float:
    """Estimated NLL-per-row decrease still available from D (F profiled out).

    The profile gradient in ``log D_j`` is ``g_j = ((F F')_jj + D_j - s_j) / (2 D_j)``
    (Joreskog, 1967).  Its curvature is taken from the Fisher information of
    ``log D_j``, ``h_j = (D_j (Sigma^-1)_jj)^2 / 2``, so a Newton step gains
    ``g_j^2 / (2 h_j) = g_j^2 / (D_j (Sigma^-1)_jj)^2``.  (The second
    derivative of the ``sum s_j / D_j`` term alone, ``s_j / (2 D_j)``, is
    mostly cancelled by the profiled loadings: with it the gap of an equation
    with communality ``1 - D_j / s_j`` came out ``s_j / D_j`` times too small
    -- measured 4x on a K = 300 system, where the fit then stopped 2.4
    ``tol * K`` short.  The Fisher form agreed with the exact profile gap to
    15% on that system's residuals mid-fit, to 1-2% on the K = 120 system of
    ``tests/test_stopping_gaps.py``.)  An equation whose gradient points at its floor gains at most
    ``g_j log(D_j / floor_j)`` (the linear model up to the bound; near a
    Heywood case the NLL is about linear in ``D_j``).  Differences at the
    round-off of ``s_j`` count as zero.
    """
    g = _log_d_gradient(F, D, s, roundoff=True)
    gap = (g / _fisher_factors(F, D)) ** 2
    bound = g * np.log(np.maximum(D / floor, 1.0))      # the linear model up to the floor
    return float(np.sum(np.where(g > 0, np.minimum(gap, bound), gap)))


def _log_d_gradient(F: np.ndarray, D: np.ndarray, s: np.ndarray, *,
                    roundoff: bool = False) -> np.ndarray:
    """The profile's gradient in ``log D``, ``g_j = ((F F')_jj + D_j - s_j) / (2 D_j)``
    (per row); ``roundoff``: differences at the round-off of ``s_j`` count as
    zero (for the gap estimate; the steps and L-BFGS-B take the gradient as
    computed: zeroing it there cost near-floor fits their convergence)."""
    FF = np.einsum("ij,ij->i", F, F)
    num = FF + D - s
    if roundoff:
        num[np.abs(num) <= ROUNDOFF * (FF + D + s)] = 0.0
    return 0.5 * num / D


def _d_map(F: np.ndarray, s: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """The D map ``max(s - diag(F F'), floor)``: the D that zeroes the gradient
    given the loadings ``F``."""
    return np.maximum(s - np.einsum("ij,ij->i", F, F), floor)


def _fisher_factors(F: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``D_j (Sigma^-1)_jj`` (K,), in (0, 1]: the Fisher information of
    ``log D_j`` is half its square; at least ``eps``.

    ``1 - (Fs (I + Fs'Fs)^-1 Fs')_jj`` with ``Fs = D^-1/2 F``, a difference of
    quantities of order one (k x k work; the explicit inverse's error, eps
    times the core's condition, measured at most 2e-11 relative on Heywood
    configurations), rather than ``D`` times
    :attr:`LowRankCovariance.inverse_diagonal`, which subtracts ``(G G')_jj``
    from ``1 / D_j``, both of order ``1 / floor`` at a Heywood case: with it,
    one of the 56 small systems of ``benchmarks/stopping_gaps.py`` ended
    unconverged 19 tol * K short instead of converging.
    """
    Fs = F / np.sqrt(D)[:, None]
    core = Fs.T @ Fs
    core.flat[:: core.shape[0] + 1] += 1.0
    return np.maximum(1.0 - np.einsum("ij,ij->i", Fs @ np.linalg.inv(core), Fs),
                      np.finfo(float).eps)


def _newton_d(F: np.ndarray, D: np.ndarray, s: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """A projected Newton step on the profile in ``log D`` with the Fisher
    curvature (:func:`_profile_gap`): ``log D_j - g_j / h_j``, at least the
    floor, at most ``ANDERSON_MAX_STEP`` in ``log D``.  The D map
    ``max(s - diag(F F'), floor)`` steps ``-2 g_j``, ``1 / (D_j (Sigma^-1)_jj)^2``
    times less: near a Heywood case it crawls towards the floor."""
    step = np.clip(-2.0 * _log_d_gradient(F, D, s) / _fisher_factors(F, D) ** 2,
                   -ANDERSON_MAX_STEP, ANDERSON_MAX_STEP)
    return np.maximum(D * np.exp(step), floor)


def _settled_gap(st: _State, k: int, d_floor: float, rng: np.random.Generator,
                 eig_maxiter: int, tol: float) -> int:
    """The Sigma gap at the current ``(F, D)`` itself, into ``st.d_gap``:
    returns the subspace iterations it took.

    A factor step leaves in ``st.d_gap`` the D gap *before* its step
    (:func:`_profile_gap` at the old D), which the Anderson-accelerated step
    usually removes almost entirely (by 50x at K = 1000) but not always (by
    1.3x on a K = 300 system).  Here the eigenpairs at the new D give the gap
    after it: the F part ``NLL(F, D) - f(D)`` (the profile ``f`` in closed
    form from the eigenvalues) plus the D part at the new D, with eigenpairs
    to ``SETTLE_RTOL_SCALE * sqrt(tol)`` (the measured accuracy is there).
    The sweeps call it when only this gap stands between them and the
    stopping test, so that the test uses a measurement, not the previous
    step's gap.

    The warm start is the step's basis rescaled to the new whitening
    (:func:`_whitened_eigenpairs`), and the iteration may end on the
    predicted accuracy of its products (``ops.top_eigenpairs``,
    ``predicted_rtol``), which is about one more iteration's: one subspace
    iteration at K = 1000 instead of two (``benchmarks/stopping_gaps.py
    --settle``: see ``SETTLE_RTOL_SCALE``).
    """
    s = st.variances()
    rtol = float(np.clip(SETTLE_RTOL_SCALE * np.sqrt(tol), EIG_RTOL, EIG_RTOL_MAX))
    lam, F, it = _whitened_eigenpairs(st, st.D, k, rng, eig_maxiter, rtol, predicted_rtol=0.0)
    st.d_gap = max(st.nll - _profile_nll(lam, st.D, s), 0.0) + _profile_gap(
        F, st.D, s, d_floor * s)
    return it


def _anderson(st: _State, x: np.ndarray, target: np.ndarray, lo: np.ndarray) -> np.ndarray | None:
    """Anderson-accelerated D from the history of the D map in log D.

    The plain map ``x -> log max(s - diag(F(x) F(x)'), floor)`` converges
    linearly (rate ~0.1-0.2 at K ~ 100); Anderson mixing (type II, memory
    ``ANDERSON_M``) on the residuals ``g = target - x`` extrapolates it.  The
    caller accepts the result only if the NLL does not increase.
    """
    g = target - x
    st.hist.append((x, g))
    del st.hist[:-ANDERSON_M - 1]
    if len(st.hist) < 2:
        return None
    dX = np.column_stack([b[0] - a[0] for a, b in zip(st.hist[:-1], st.hist[1:])])
    dG = np.column_stack([b[1] - a[1] for a, b in zip(st.hist[:-1], st.hist[1:])])
    gamma, *_ = np.linalg.lstsq(dG, g, rcond=1e-10)
    step = g - (dX + dG) @ gamma
    step = np.clip(step, -ANDERSON_MAX_STEP, ANDERSON_MAX_STEP)
    return np.exp(np.maximum(x + step, lo))


def _factor_step(
    st: _State, k: int, d_floor: float, rng: np.random.Generator, eig_maxiter: int,
    eig_rtol: float = EIG_RTOL,
) -> tuple[int, int, bool]:
    """One Lawley/Joreskog profile step on the current residuals (in place).

    Returns ``(subspace iterations, rejected proposals, resolved)``: a
    rejected Anderson step counts one, and so does each halving of the D
    update; ``resolved`` says that the eigenpairs of a loose tolerance proved
    too inexact and were solved again to the final one.
    """
    s = st.variances()
    floor = d_floor * s
    D = st.D
    eig_it = 0
    if st.tight:
        eig_rtol = EIG_RTOL
    if k > 0:
        lam, F, eig_it = _whitened_eigenpairs(st, D, k, rng, eig_maxiter, eig_rtol)
    else:
        lam = np.zeros(0)
        F = st.F
    # NLL at (F(D), D) in closed form: the profile likelihood (no pass over R).
    # It is at most the NLL now (st.nll, before the beta-step that followed):
    # accepted steps never rise above either
    nll_F = _profile_nll(lam, D, s)
    ref = min(nll_F, st.nll)
    D_target = _d_map(F, s, floor)
    D_acc = _anderson(st, np.log(D), np.log(D_target), np.log(floor))
    rejected = halvings = 0
    resolved = False
    step = None                     # the accepted (D, NLL)
    if D_acc is not None:
        nll_acc = st.nll_of(F, D_acc)
        step, rejected = ((D_acc, nll_acc), 0) if nll_acc <= ref else (None, 1)
    if step is None:
        # pairs whose profile value exceeds the NLL now are inexact (an
        # unverified early iteration): the full D step alone is tried with
        # them, then they are solved to the final tolerance before backtracking
        inexact = k > 0 and nll_F > st.nll and eig_rtol > EIG_RTOL
        D_try, nll_try, halvings = _backtrack(st, F, D, D_target, floor, ref,
                                              0 if inexact else 30)
        resolved = inexact and nll_try > ref
        if resolved:
            lam, F, it = _whitened_eigenpairs(st, D, k, rng, eig_maxiter, EIG_RTOL)
            eig_it += it
            ref = min(_profile_nll(lam, D, s), st.nll)
            D_target = _d_map(F, s, floor)
            D_try, nll_try, more = _backtrack(st, F, D, D_target, floor, ref, 30)
            halvings += 1 + more
        if nll_try <= ref:
            step = D_try, nll_try
    st.d_gap = _profile_gap(F, D, s, floor)
    if step is not None:
        st.F, st.D, st.nll, st.floor = F, step[0], step[1], floor
    else:  # D step could not improve: keep D, take the F step alone if it gains
        nll_f = st.nll_of(F, D)
        if nll_f <= st.nll:
            st.F, st.nll = F, nll_f
    return eig_it, rejected + halvings, resolved


def _backtrack(st: _State, F: np.ndarray, D: np.ndarray, D_target: np.ndarray,
               floor: np.ndarray, ref: float, max_halvings: int
               ) -> tuple[np.ndarray, float, int]:
    """The D step ``D + t (D_target - D)`` (floored), halving ``t`` from 1 until
    its NLL is at most ``ref`` or ``max_halvings`` halvings: ``(D, NLL, halvings)``."""
    t, halvings = 1.0, 0
    while True:
        D_try = np.maximum(D + t * (D_target - D), floor)
        nll_try = st.nll_of(F, D_try)
        if nll_try <= ref or halvings >= max_halvings:
            return D_try, nll_try, halvings
        t *= 0.5
        halvings += 1


def _profile_nll(lam: np.ndarray, D: np.ndarray, s: np.ndarray) -> float:
    """The profile NLL per row at ``D`` (F profiled out) from the top eigenvalues
    ``lam`` of the whitened covariance (module docstring)."""
    big = lam > 1.0
    return 0.5 * (len(D) * LOG_2PI + np.sum(np.log(D)) + np.sum(s / D)
                  + np.sum(np.log(lam[big]) - lam[big] + 1.0))


def _profile_lbfgs(
    st: _State, k: int, d_floor: float, rng: np.random.Generator, eig_maxiter: int,
    ftol: float,
) -> tuple[int, int]:
    """Minimise the profile NLL over log D (F profiled out) by L-BFGS-B: the
    exact ML factor analysis of the current residuals, warm-started from ``st.D``.

    The factor step of the coupled phase of :mod:`alsgls.core.als`; the profile
    and its gradient are in the module docstring.  Bounds ``D_j >= d_floor * s_j``.
    L-BFGS-B stops when a step gains at most ``ftol`` (relative) or the
    projected gradient is below 1e-12.  Updates ``st`` in place (F, D, NLL,
    floor and D gap, if the NLL did not increase); returns ``(subspace
    iterations, profile evaluations)``.
    """
    from scipy.optimize import minimize

    K = st.Rt.shape[0]
    s = st.variances()
    eig_total = [0]

    # in z = log(D / s), minimising f - 1/2 sum log(2 pi s_j): the same problem
    # whatever the scale of each response, so L-BFGS-B's steps and relative
    # ftol, and the fit, are equivariant
    def profile(z: np.ndarray):
        if not np.all(z < 700.0):   # a trial step of L-BFGS-B far out: no finite value
            return np.inf, np.zeros_like(z)
        D = s * np.exp(z)
        lam, F, it = _whitened_eigenpairs(st, D, k, rng, eig_maxiter)
        eig_total[0] += it
        big = lam > 1.0
        f = 0.5 * (np.sum(z) + np.sum(np.log(lam[big]) - lam[big] + 1.0) + np.sum(np.exp(-z)))
        return f, _log_d_gradient(F, D, s)

    lo = np.full(K, np.log(d_floor))
    z0 = np.maximum(np.log(st.D / s), lo)
    res = minimize(profile, z0, jac=True, method="L-BFGS-B", bounds=[(lo[0], None)] * K,
                   options={"ftol": ftol, "gtol": 1e-12, "maxiter": 1000, "maxcor": 20})
    z, f = res.x, res.fun
    # L-BFGS-B creeps towards a bound the gradient barely pushes at (a Heywood
    # case: the NLL is about linear in D_j there); put such D_j on the floor
    near = (res.jac > 0) & (z < lo + SNAP)
    if near.any():
        z_snap = np.where(near, lo, z)
        f_snap, _ = profile(z_snap)
        # f cancels terms of size s_j / D_j: compare within their round-off
        if f_snap <= f + ROUNDOFF / 16 * float(np.sum(np.exp(-z_snap))):
            z = z_snap
    D = s * np.exp(z)
    _, F, _ = _whitened_eigenpairs(st, D, k, rng, eig_maxiter)
    st.d_gap = _profile_gap(F, D, s, d_floor * s)
    nll = st.nll_of(F, D)
    if nll <= st.nll:
        st.F, st.D, st.nll, st.floor = F, D, nll, d_floor * s
    return eig_total[0], int(res.nfev)


