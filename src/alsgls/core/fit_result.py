"""The records the solvers return: :class:`SolverRun` (a core's raw outcome,
internal) and :class:`GLSFit` (the public, typed fit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._warnings import warn
from ._backend import is_lazy
from .ops import CoefficientLayout, LowRankCovariance
from .problem import as_float_matrix

__all__ = ["GLSFit", "MissingGLSFit", "SolverRun", "IterationRecord"]


@dataclass(frozen=True)
class IterationRecord:
    """Diagnostics of one iteration of a core (an ALS sweep, a dense-EM cycle or
    a missing-data iteration); the fields of :class:`GLSFit` of the same names
    are these records side by side."""

    cg_iterations: int = 0          # CG steps of the ALS beta-step
    eig_iterations: int = 0         # subspace iterations of the ALS factor step
    backtracks: int = 0             # step proposals rejected before the accepted one
    profile_evaluations: int = 0    # L-BFGS-B evaluations of the ALS profile likelihood
    quasi_newton: int = 0           # 1: an L-BFGS-B iteration of the missing-data core


@dataclass
class SolverRun:
    """What a solver core hands the dispatcher (:mod:`alsgls.core.dispatch`),
    which turns it into a :class:`GLSFit` and emits the warnings.

    Attributes
    ----------
    theta : ndarray, shape (K, pmax)
        Coefficients, zero-padded.
    F, D : ndarray
        Loadings (K, k) in any rotation and noise variances (K,).
    Rt : ndarray, shape (K, N)
        Residuals at the returned point (of the problem the core saw).
    trace : list of float
        NLL per row, entry 0 at the start, one per iteration; non-increasing.
    converged : bool
    floor : ndarray, shape (K,)
        The floor on D (Heywood cases sit on it).
    method : str
        ``"als"``, ``"em"`` or ``"em-missing"``.
    unit : str
        What one iteration is, for messages (``"sweep"``, ``"iteration"``).
    note : str
        The last progress measure, for the convergence warning.
    nll_at : callable, optional
        ``F' -> NLL per row at (theta, F', D)``: checks that rotating the
        loadings to canonical form leaves the likelihood unchanged.
    iterations : list of IterationRecord
        One record per iteration (``len(trace) - 1`` of them).
    beta_gap : list of float
        ALS: the beta gap at the start of each beta-step and at exit.
    gap : float
        Missing-data core: the certified gap at the returned point.
    """

    theta: np.ndarray
    F: np.ndarray
    D: np.ndarray
    Rt: np.ndarray
    trace: list
    converged: bool
    floor: np.ndarray
    method: str
    unit: str = "iteration"
    note: str = ""
    nll_at: Any = None
    iterations: list = field(default_factory=list)
    beta_gap: list = field(default_factory=list)
    gap: float = float("nan")


@dataclass(frozen=True)
class GLSFit:
    """Result of a maximum-likelihood fit of a SUR system with
    ``Sigma = F F' + diag(D)``.

    Attributes
    ----------
    B : list of K ndarray, each (p_j, 1)
        Coefficients of each equation.
    F : ndarray, shape (K, k)
        Loadings in the canonical rotation: ``F' diag(D)^-1 F`` diagonal and
        decreasing, largest-magnitude entry of each column positive.  Only
        ``F F'`` is identified; compare that, never ``F`` itself.
    D : ndarray, shape (K,)
        Idiosyncratic (noise) variances.
    nll_trace : ndarray, shape (n_iter + 1,)
        Negative log-likelihood per row of the training data: entry 0 at the
        initial point, then one entry per sweep (ALS) or iteration (EM).
        Never increases.
    n_iter : int
        Number of sweeps (ALS) or EM iterations performed.
    converged : bool
        Whether the stopping rule was met (otherwise a ``ConvergenceWarning``
        was emitted).
    heywood : ndarray of bool, shape (K,)
        Equations whose ``D_j`` sits at the floor ``d_floor * s_j`` (Heywood
        cases); their loadings absorb all of the residual variance.
    method : str
        The core that ran: ``"als"``, ``"em"`` (dense EM) or ``"em-missing"``
        (the missing-data EM / quasi-Newton).
    cg_iterations : ndarray of int, shape (n_iter,)
        Conjugate-gradient iterations in each sweep's beta-step (ALS; zeros for
        the direct EM solve).
    beta_gap : ndarray, shape (n_iter + 1,)
        ``1/2 g' M^-1 g / N`` at the start of each beta-step: the NLL-per-row
        decrease still available from beta (preconditioned estimate).  The
        last entry is the gap at exit, given the returned Sigma: after the
        final polish of beta when that polish measured it, else (ALS with
        more than 32 equations, where a sample of 32 of them judged one
        exact line-search step enough) the exact gap at the final stopping
        test, which the polish step only lowers.
    eig_iterations : ndarray of int, shape (n_iter,)
        Subspace iterations in each sweep's factor step (ALS only).
    backtracks : ndarray of int, shape (n_iter,)
        Step proposals rejected in each iteration before the accepted one,
        on every path: an Anderson-extrapolated D that raised the NLL and each
        halving of the D update (ALS); an accelerated (SQUAREM or Anderson)
        point rejected for the plain EM step (EM, missing-data EM).
    profile_evaluations : ndarray of int, shape (n_iter,)
        ALS: evaluations of the profile likelihood by L-BFGS-B in sweeps
        where the D map stalled (0 in ordinary sweeps); zeros for EM.
    tol : float
        The relative tolerance the fit was run with.
    """

    B: list
    F: np.ndarray
    D: np.ndarray
    nll_trace: np.ndarray
    n_iter: int
    converged: bool
    heywood: np.ndarray
    method: str
    cg_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    beta_gap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eig_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    backtracks: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    tol: float = float("nan")
    profile_evaluations: np.ndarray = field(default_factory=lambda: np.zeros(0, int),
                                            kw_only=True)

    def __setstate__(self, state: dict) -> None:
        """Unpickle, also a fit pickled by alsgls 0.1 (before ``profile_evaluations``)."""
        state.setdefault("profile_evaluations", np.zeros(0, int))
        self.__dict__.update(state)

    @property
    def nll(self) -> float:
        """Final negative log-likelihood per row."""
        return float(self.nll_trace[-1])

    @property
    def k(self) -> int:
        """Number of factors."""
        return self.F.shape[1]

    @property
    def K(self) -> int:
        """Number of equations."""
        return self.F.shape[0]

    @property
    def cov(self) -> LowRankCovariance:
        """``Sigma = F F' + diag(D)`` as a low-rank object (never dense)."""
        return LowRankCovariance(self.F, self.D)

    def predict(self, Xs: Any) -> np.ndarray:
        """Fitted means ``X_j B_j`` for new designs.

        Parameters
        ----------
        Xs : list of K array_like (N_new, p_j), ndarray (K, N_new, p), or
            ndarray (N_new, p) shared by every equation
            Finite regressors with the columns the fit was made with.

        Returns
        -------
        ndarray, shape (N_new, K)
        """
        return fitted_means(Xs, self.B)

    def __repr__(self) -> str:
        return (
            f"GLSFit(method={self.method!r}, K={self.K}, k={self.k}, "
            f"nll={self.nll:.10g}, n_iter={self.n_iter}, converged={self.converged})"
        )


@dataclass(frozen=True)
class MissingGLSFit(GLSFit):
    """:class:`~alsgls.GLSFit` of an unbalanced or weighted system.

    It has every attribute of :class:`~alsgls.GLSFit`, and these.

    Attributes
    ----------
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
        an EM step (``method="em-missing"``; empty for the balanced cores).
    gap : float
        ``method="em-missing"``: estimated NLL-per-row decrease still
        available at the returned point (the quantity the stopping rule
        certifies); NaN for the balanced cores.

    ``nll_trace`` is the (weighted) observed-data NLL per retained row,
    ``sum_i w_i l_i / n``.
    """

    n_observed: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    weights: np.ndarray | None = None
    missing: str = "ml"
    quasi_newton: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    gap: float = float("nan")


def fitted_means(Xs: Any, B: list, *, name: str = "Xs", rows: int | None = None,
                 allow_nan: bool = False) -> np.ndarray:
    """``X_j b_j`` for every equation: (N, K), checking the designs once.

    Parameters
    ----------
    Xs : list of K array_like (N, p_j), ndarray (K, N, p), or ndarray (N, p)
        New designs; a 2-D array is one design shared by every equation (one
        GEMM).
    B : list of K arrays (p_j,) or (p_j, 1)
        Coefficients.
    name : str
        How messages name the designs (``Xs``; ``X`` for the estimator).
    rows : int, optional
        The number of rows the designs must have.
    allow_nan : bool
        Let NaN through (the mean is NaN there); inf is refused either way.

    Raises
    ------
    TypeError, ValueError
        Naming the design: wrong count, columns or rows, non-finite values.
    """
    if is_lazy(Xs):         # Dask designs: lazy (N, K) means, nothing gathered
        from .lazy_problem import lazy_fitted_means

        return lazy_fitted_means(Xs, B, name=name, rows=rows)
    K = len(B)
    b = [np.asarray(c, dtype=np.float64).reshape(-1) for c in B]
    if (isinstance(Xs, np.ndarray) or hasattr(Xs, "to_numpy")) and np.ndim(Xs) == 2:
        Xs = [Xs] * K
    if isinstance(Xs, (str, bytes)) or not hasattr(Xs, "__len__"):
        raise TypeError(f"{name} must be a list of K={K} designs, got {type(Xs).__name__}")
    if len(Xs) != K:
        raise ValueError(f"{name} has {len(Xs)} designs but the fit has K={K} equations")
    one = K > 1 and all(x is Xs[0] for x in Xs)       # one design: one GEMM
    mats = ([as_float_matrix(Xs[0], name, 2, allow_nan=allow_nan)] if one else
            [as_float_matrix(x, f"{name}[{j}]", 2, allow_nan=allow_nan)
             for j, x in enumerate(Xs)])
    where = (lambda j: name) if one else (lambda j: f"{name}[{j}]")
    n = rows if rows is not None else (mats[0].shape[0] if K else 0)
    for j, x in enumerate(mats):
        if x.shape[0] != n:
            raise ValueError(f"{where(j)} has {x.shape[0]} rows but {n} are expected")
    for j in range(K):
        p = mats[0 if one else j].shape[1]
        if p != b[j].size:
            raise ValueError(f"{where(j)} has {p} columns but equation {j} was fitted "
                             f"with {b[j].size}")
    if one:
        return mats[0] @ np.column_stack(b)
    return np.column_stack([x @ c for x, c in zip(mats, b)]) if K else np.zeros((n, 0))


def unpad_coefficients(theta: np.ndarray, p: np.ndarray) -> list:
    """Deprecated (0.1): ``CoefficientLayout(p).unpad(theta)``."""
    warn("unpad_coefficients is deprecated; use alsgls.core.ops.CoefficientLayout(p).unpad",
         DeprecationWarning)
    return CoefficientLayout(p).unpad(theta)


def pad_coefficients(B: list, pmax: int) -> np.ndarray:
    """Deprecated (0.1): ``CoefficientLayout(p).pad(B)`` (zero-padded to ``pmax``)."""
    warn("pad_coefficients is deprecated; use alsgls.core.ops.CoefficientLayout(p).pad",
         DeprecationWarning)
    theta = CoefficientLayout([np.size(b) for b in B]).pad(B)
    return np.pad(theta, ((0, 0), (0, pmax - theta.shape[1])))


def canonical_loadings(F: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Rotate ``F`` so that ``F' D^-1 F`` is diagonal and decreasing (Lawley form)
    with the largest-magnitude entry of each column positive.  ``F F'`` is unchanged."""
    if F.shape[1] == 0:
        return F.copy()
    Fs = F / np.sqrt(D)[:, None]
    w, V = np.linalg.eigh(Fs.T @ Fs)
    Fr = F @ V[:, ::-1]
    idx = np.argmax(np.abs(Fr), axis=0)
    signs = np.sign(Fr[idx, np.arange(Fr.shape[1])])
    signs[signs == 0] = 1.0
    return Fr * signs
