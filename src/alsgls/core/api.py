"""The functional API of the core: thin wrappers over one boundary and one dispatcher.

Each function validates its input once (:func:`alsgls.core.problem.build_problem`),
its options once (:func:`alsgls.core.options.solver_options`) and hands both to
:func:`alsgls.core.dispatch.fit_problem`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._warnings import warn
from ..exceptions import MissingDataWarning  # noqa: F401  (re-exported: alsgls.missing of 0.1)
from ._backend import is_lazy
from .dispatch import fit_problem
from .fit_result import GLSFit, MissingGLSFit, fitted_means
from .missing_em import EMProblem
from .ops import row_core_inverse
from .options import solver_options
from .ops import LowRankCovariance, row_core_solve
from .options import SolverOptions
from .lazy_problem import build_lazy_problem
from .problem import as_float_matrix, build_problem

__all__ = ["als_gls", "em_gls", "fit_missing", "als_gls_missing", "observed_nll_per_row",
           "impute"]

#: The defaults of the keyword arguments below are those of the options record.
_D = SolverOptions()


def als_gls(
    Xs: Any,
    Y: Any,
    k: int,
    *,
    tol: float = _D.tol,
    max_iter: int | None = _D.max_iter,
    cg_maxiter: int = _D.cg_maxiter,
    eig_maxiter: int = _D.eig_maxiter,
    d_floor: float = _D.d_floor,
    random_state: int = _D.random_state,
    blas_threads: int | None = _D.blas_threads,
    missing: str = "ml",
    weights: Any = None,
    **deprecated: Any,
) -> GLSFit:
    """Gaussian maximum likelihood for a SUR system with ``Sigma = F F' + diag(D)``.

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), ndarray (K, N, p), or ndarray (N, p)
        Design of each equation; a 2-D array is one design shared by every
        equation (stored once).  Integer and float32 inputs are computed in
        float64; inputs are never modified.  A Dask array ``(K, N, p)`` or
        ``(N, p)`` runs the same sweep on Dask's scheduler (a cluster once a
        ``distributed.Client`` exists), see :mod:`alsgls.dask`.
    Y : array_like, shape (N, K)
        Responses, one column per equation (a Dask array chunked like ``Xs``).
    k : int
        Number of latent factors, ``0 <= k < K``.  ``k = K - 1`` is the
        unrestricted SUR (any positive-definite Sigma).
    tol : float, default 1e-10
        Tolerance on the NLL gap per row *and per equation* (the NLL per row is
        O(K), so this is about a relative gap, and unlike one it is invariant
        to rescaling ``Y``): stop when the decrease still available -- from
        beta (preconditioned gradient norm), from D (Newton estimate on the
        profile likelihood) and from the linear-rate extrapolation of the last
        two sweeps -- is below ``tol * K`` (and the last sweep's decrease below
        100 times that).
    max_iter : int, optional
        Maximum number of sweeps (default 200); reaching it emits a
        ``ConvergenceWarning``.  With missing responses: iterations of the
        missing-data solver (default 1000).  ``max_sweeps`` is the deprecated
        spelling.
    cg_maxiter : int, default 500
        Maximum CG iterations per beta-step.
    eig_maxiter : int, default 100
        Maximum subspace iterations per factor step.
    d_floor : float, default 1e-6
        Relative floor on the noise variances: ``D_j >= d_floor * s_j`` with
        ``s_j`` the residual variance of equation ``j``; equations at the floor
        are flagged as Heywood cases.
    random_state : int, default 0
        Seed of the random start of the subspace iteration (results agree
        across seeds to the tolerance).
    blas_threads : int or None, default 1
        BLAS threads inside the fit (needs ``threadpoolctl``, the extra
        ``alsgls[fast]``), on every path; ``None`` leaves the process setting alone.  The
        fit's GEMMs are memory-bound and many: one thread avoids the
        thread hand-off cliff of OpenBLAS on loaded machines.
    missing : {"ml", "drop", "raise"}, default "ml"
        What NaN in ``Y`` (a missing response) means.  ``"ml"``: exact
        maximum likelihood of every observed response under
        missing-at-random (:func:`alsgls.fit_missing`; rows of
        ``Xs`` may be NaN where the response is missing); ``"drop"``:
        listwise deletion of rows with any NaN; ``"raise"``: refuse NaN.
        With no NaN and no weights the three are the same balanced fit.
    weights : array_like, shape (N,), optional
        Non-negative row weights, rescaled to mean 1 (as linearmodels does):
        row ``i``'s log-likelihood counts ``w_i`` times.

    Returns
    -------
    GLSFit
        Coefficients ``B``, loadings ``F``, noise variances ``D``, the NLL
        trace and solver diagnostics; a
        :class:`~alsgls.MissingGLSFit` (which adds ``n_observed``,
        ``rows``, ``weights``) when ``Y`` has NaN, ``weights`` is given or
        ``missing`` is not ``"ml"``.

    Raises
    ------
    ValueError, TypeError
        For invalid inputs or options; messages name the argument (or option)
        and the equation.

    Notes
    -----
    The NLL per row is
    ``1/2 [K log 2 pi + log|Sigma|] + 1/(2N) sum_i r_i' Sigma^-1 r_i``,
    evaluated through the determinant lemma and Woodbury identity in
    O(N K k).  No K x K or P x P matrix is formed (except a thin SVD of the
    whitened residuals when ``min(K, N) <= 64``).

    Examples
    --------
    >>> from alsgls import als_gls, simulate_sur
    >>> Xs, Y, truth = simulate_sur(N=300, K=30, p=2, k=2, seed=0)
    >>> fit = als_gls(Xs, Y, k=2)
    >>> fit.converged, len(fit.B), fit.F.shape
    (True, 30, (30, 2))
    >>> bool(np.all(np.diff(fit.nll_trace) <= 1e-12 * abs(fit.nll)))
    True
    """
    unknown = sorted(set(deprecated) - {"max_sweeps"})
    if unknown:
        raise TypeError(f"als_gls got unexpected keyword argument(s) {unknown}")
    options = solver_options(None, "als_gls", tol=tol, max_iter=max_iter,
                             cg_maxiter=cg_maxiter, eig_maxiter=eig_maxiter, d_floor=d_floor,
                             random_state=random_state, blas_threads=blas_threads,
                             **deprecated)
    problem = (build_lazy_problem(Xs, Y, weights=weights, missing=missing)  # Dask arrays
               if is_lazy(Xs) or is_lazy(Y) else
               build_problem(Xs, Y, weights=weights, missing=missing))
    return fit_problem(problem, k, options, solver="als")[0]


def em_gls(
    Xs: Any,
    Y: Any,
    k: int,
    *,
    tol: float = _D.tol,
    max_iter: int | None = _D.max_iter,
    d_floor: float = _D.d_floor,
    accelerate: bool | str = _D.accelerate,
    blas_threads: int | None = _D.blas_threads,
) -> GLSFit:
    """Dense EM baseline for the SUR likelihood with ``Sigma = F F' + diag(D)``.

    Parameters
    ----------
    Xs : list of K array_like, each (N, p_j), or ndarray (K, N, p)
    Y : array_like, shape (N, K)
    k : int
        Number of latent factors, ``0 <= k < K``.
    tol : float, default 1e-10
        Converged when the Newton decrement of the NLL per row (exact Hessian,
        floor-held D excluded) is at most ``tol * K``: the gap to the local
        quadratic optimum, exact to third order near it (an estimate, not a
        bound, farther out); see :mod:`alsgls.core.em`.
    max_iter : int, optional
        Maximum number of (SQUAREM) cycles (default 5000); reaching it warns.
    d_floor : float, default 1e-6
        Relative floor ``D_j >= d_floor * s_j`` (as in :func:`als_gls`).
    accelerate : bool or {"squarem", "em"}, default True
        Use SQUAREM extrapolation (monotone safeguarded); False or "em": plain EM.
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
    options = solver_options(tol=tol, max_iter=max_iter, d_floor=d_floor,
                             accelerate=accelerate, blas_threads=blas_threads)
    problem = build_problem(Xs, Y, missing="raise", nan_hint=(    # the dense reference
        "em_gls needs complete data (no NaN in Y or Xs): use als_gls or fit_missing "
        "for missing responses"))
    return fit_problem(problem, k, options, solver="em", missing_fit=False)[0]


def fit_missing(
    Xs: Any,
    Y: Any,
    k: int,
    *,
    weights: Any = None,
    tol: float = _D.tol,
    max_iter: int | None = _D.max_iter,
    d_floor: float = _D.d_floor,
    accelerate: bool | str = _D.accelerate,
    random_state: int = _D.random_state,
    blas_threads: int | None = _D.blas_threads,
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
    max_iter : int, optional
        Maximum iterations (default 1000); reaching it emits a ``ConvergenceWarning``.
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
    blas_threads : int or None, default 1
        BLAS threads inside the fit, as in :func:`als_gls`.

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
    options = solver_options(tol=tol, max_iter=max_iter, d_floor=d_floor,
                             accelerate=accelerate, random_state=random_state,
                             blas_threads=blas_threads)
    problem = build_problem(Xs, Y, weights=weights, missing="ml")
    return fit_problem(problem, k, options, solver="missing", missing_fit=True)[0]


def als_gls_missing(
    Xs: Any, Y: Any, k: int, *, missing: str = "ml", weights: Any = None, **options: Any
) -> MissingGLSFit:
    """SUR maximum likelihood with a missing-data policy and observation weights;
    :func:`als_gls` that always returns a :class:`~alsgls.MissingGLSFit`.

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
    **options
        Solver options (:class:`~alsgls.core.options.SolverOptions`): ``tol,
        max_iter, cg_maxiter, eig_maxiter, d_floor, random_state,
        blas_threads, accelerate``; each applies to the path that uses it
        and every one is validated.  As in 0.1, ``max_sweeps`` (deprecated)
        and ``max_iter`` may both be given: then ``max_sweeps`` limits the
        balanced fit and ``max_iter`` the missing-data fit.

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
    problem = build_problem(Xs, Y, weights=weights, missing=missing)
    if "max_sweeps" in options and options.get("max_iter") is not None:
        # 0.1 routed max_sweeps to the balanced fit and max_iter to the EM
        sweeps, iters = options.pop("max_sweeps"), options.pop("max_iter")
        warn("max_sweeps= is deprecated; use max_iter= (the same meaning)",
             DeprecationWarning)
        options["max_iter"] = sweeps if problem.complete else iters
    opts = solver_options(None, "als_gls_missing", **options)
    return fit_problem(problem, k, opts, solver="als", missing_fit=True)[0]


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
        ``N(X_{i,O} beta, F_O F_O' + diag(D_O))`` (evaluated per row through
        the k x k cores, :meth:`alsgls.core.missing_em.EMProblem.estep`).  This
        is the quantity ``fit_missing`` minimises and reports in ``nll_trace``.

    Examples
    --------
    >>> import numpy as np
    >>> Y = np.array([[1.0, np.nan], [0.5, -1.0], [np.nan, 2.0]])
    >>> Xs = [np.ones((3, 1)), np.ones((3, 1))]
    >>> round(observed_nll_per_row(Xs, Y, [[0.0], [0.0]], np.zeros((2, 1)), np.ones(2)), 6)
    2.266918
    """
    problem = build_problem(Xs, Y, weights=weights, missing="ml", notes=False)
    cov = LowRankCovariance(F, D)                       # checks F and D
    if cov.K != problem.K:
        raise ValueError(f"F must be (K, k) and D (K,) with K={problem.K}, got "
                         f"{np.shape(F)} and {np.shape(D)}")
    prob = EMProblem(problem, cov.k, np.zeros(problem.K))
    return prob.estep(problem.layout.pad(B), cov.F, cov.D).nll


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
    if not isinstance(fit, GLSFit):
        raise TypeError(f"fit must be a GLSFit (from als_gls, fit_missing, ...), got "
                        f"{type(fit).__name__}")
    Ya = as_float_matrix(Y, "Y", 2, allow_nan=True)
    N, K = Ya.shape
    if K != fit.K:
        raise ValueError(f"Y has K={K} columns but the fit has {fit.K} equations")
    obs = ~np.isnan(Ya)
    mu = fitted_means(Xs, fit.B, rows=N, allow_nan=True)
    if np.isnan(mu[obs]).any():
        j = int(np.flatnonzero(np.isnan(np.where(obs, mu, 0.0)).any(axis=0))[0])
        raise ValueError(f"Xs[{j}] has NaN in a row where Y[:, {j}] is observed")
    F, D = fit.F, fit.D
    Rt = np.where(obs, Ya - mu, 0.0).T                          # (K, N)
    Linv = row_core_inverse(F, D, obs.T.astype(np.float64))
    M = row_core_solve(Linv, Rt.T @ (F / D[:, None]))           # (N, k) posterior means
    V = np.einsum("nji,njl->nil", Linv, Linv)
    mean = np.where(obs, Ya, mu + M @ F.T)
    var = D[None, :] + np.einsum("jk,nkl,jl->nj", F, V, F)
    return mean, np.where(obs, 0.0, var)
