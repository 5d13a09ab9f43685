"""Linear restrictions ``R beta = q`` on the stacked coefficients.

A :class:`LinearRestriction` is the validated record every layer uses: the
solvers (restricted GLS inside ALS, the dense EM and :func:`alsgls.core.gls.solve_gls`)
and the covariance (the restricted bread ``A^-1 - A^-1 R'(R A^-1 R')^-1 R A^-1``).
:func:`build_restriction` checks a restriction once: the shape ``(m, P)``,
finiteness, ``m < P``, and the rank of ``R`` -- dependent rows are named and
told apart as *redundant* (implied by the others, drop them) or *inconsistent*
(no ``beta`` satisfies them all).

Notation: ``beta`` is the flat coefficient vector (length ``P``, equation by
equation); the solvers hold it padded as ``theta`` (K, pmax) and ``R'`` as
``Rt`` (K, pmax, m) in the same layout (:class:`~alsgls.core.ops.CoefficientLayout`).

The solvers keep ``beta`` feasible with the oblique projections of a
block-diagonal metric ``M`` (the block-Jacobi preconditioner ``M_j``, or the
Gram blocks ``X_j'X_j``): with ``W = M^-1 R'`` and ``S = R W`` (m x m),

* ``theta - W S^-1 (R theta - q)`` is the ``M``-nearest feasible point
  (with ``M = blockdiag(X_j'X_j)`` and ``theta`` the OLS estimate: restricted
  OLS, exactly);
* ``r -> r - R' S^-1 W' r`` maps a gradient to one whose preconditioned
  direction ``M^-1 r`` satisfies ``R M^-1 r = 0`` (Gould, Hribar & Nocedal,
  2001): CG with it stays on the restricted set, and ``r' M^-1 r`` is the
  projected gap ``r' P_M r``, ``P_M = M^-1 - W S^-1 W'``.

Everything costs ``O(P m + m^3)`` given ``W``; nothing is ``P x P``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.linalg import cho_factor, cho_solve, qr

from .ops import CoefficientLayout
from .problem import as_float_matrix

__all__ = ["LinearRestriction", "RestrictionMetric", "build_restriction", "check_rows",
           "RANK_RTOL"]

#: A row of ``R`` (scaled to unit norm) whose distance from the span of the
#: others is below this is linearly dependent on them (pivoted QR).
RANK_RTOL = 1e-10


@dataclass(frozen=True, eq=False)
class LinearRestriction:
    """Validated linear restrictions ``R beta = q`` (see :func:`build_restriction`).

    Attributes
    ----------
    R : ndarray, shape (m, P)
        Full row rank, ``m < P``; read-only.
    q : ndarray, shape (m,)
        Read-only.
    Rt : ndarray, shape (K, pmax, m)
        ``R'`` in the padded coefficient layout (zero on padding); read-only.
    layout : CoefficientLayout
    names : tuple of str or None
        Parameter names (length P), for messages.
    """

    R: np.ndarray
    q: np.ndarray
    Rt: np.ndarray
    layout: CoefficientLayout
    names: tuple | None = None

    @property
    def m(self) -> int:
        """Number of restrictions."""
        return int(self.R.shape[0])

    @property
    def P(self) -> int:
        """Number of coefficients."""
        return int(self.R.shape[1])

    @property
    def padded(self) -> np.ndarray:
        """``R'`` as (K, pmax, m) (the same array as :attr:`Rt`)."""
        return self.Rt

    def apply(self, theta: np.ndarray) -> np.ndarray:
        """``R beta`` for ``theta`` (K, pmax) -> (m,), or (K, pmax, n) -> (m, n)."""
        if theta.ndim == 2:
            return np.einsum("kpm,kp->m", self.Rt, theta)
        return np.einsum("kpm,kpn->mn", self.Rt, theta)

    def adjoint(self, lam: np.ndarray) -> np.ndarray:
        """``R' lam`` for ``lam`` (m,) -> (K, pmax) padded."""
        return self.Rt @ lam

    def violation(self, theta: np.ndarray) -> np.ndarray:
        """``R beta - q`` (m,) for ``theta`` (K, pmax)."""
        return self.apply(theta) - self.q

    def metric(self, W: np.ndarray) -> "RestrictionMetric":
        """The projections in the metric whose inverse gives ``W = M^-1 R'``
        (K, pmax, m); see :class:`RestrictionMetric`."""
        return RestrictionMetric(self, W)

    def block_metric(self, Minv: np.ndarray, scale: np.ndarray | None = None
                     ) -> "RestrictionMetric":
        """The projections in a block-diagonal metric with ``M_j^-1 = Minv_j / scale_j``.

        Parameters
        ----------
        Minv : ndarray, shape (K, pmax, pmax)
            Inverse blocks, e.g. ``(X_j'X_j)^-1`` (``ops.block_jacobi_inverse``).
        scale : ndarray, shape (K,), optional
            Per-equation divisors (the block-Jacobi preconditioner of the GLS
            normal matrix uses ``(Sigma^-1)_jj``); default ones.
        """
        W = np.einsum("kpq,kqm->kpm", Minv, self.Rt)
        if scale is not None:
            W /= scale[:, None, None]
        return RestrictionMetric(self, W)


class RestrictionMetric:
    """The oblique projections of a restriction in a metric ``M``.

    Parameters
    ----------
    restriction : LinearRestriction
    W : ndarray, shape (K, pmax, m)
        ``M^-1 R'`` in the padded layout (``M`` symmetric positive definite).

    Notes
    -----
    ``S = R W = R M^-1 R'`` (m x m) is factored once (Cholesky).  Then
    :meth:`feasible` is ``theta - W S^-1 (R theta - q)`` and :meth:`project`
    is ``r - R' S^-1 W' r``; see the module docstring.
    """

    def __init__(self, restriction: LinearRestriction, W: np.ndarray) -> None:
        self.restriction = restriction
        self.W = W
        S = restriction.apply(W)
        self.cho = cho_factor(0.5 * (S + S.T))

    def feasible(self, theta: np.ndarray) -> np.ndarray:
        """The ``M``-nearest point of ``theta`` (K, pmax) on ``R beta = q``."""
        lam = cho_solve(self.cho, self.restriction.violation(theta))
        return theta - self.W @ lam

    def project(self, r: np.ndarray) -> np.ndarray:
        """``r - R' S^-1 W' r`` for a gradient residual ``r`` (K, pmax)."""
        lam = cho_solve(self.cho, np.einsum("kpm,kp->m", self.W, r))
        return r - self.restriction.adjoint(lam)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.flags.writeable = False
    return a


def _row_name(i: int, R: np.ndarray, names: Sequence[str] | None) -> str:
    """``row i (2*a - b)`` for messages."""
    if names is None:
        return f"row {i}"
    nz = np.flatnonzero(R[i])[:4]
    coef = {1.0: "", -1.0: "-"}
    terms = " + ".join(f"{coef.get(float(R[i, c]), f'{R[i, c]:g}*')}{names[c]}"
                       for c in nz).replace("+ -", "- ")
    more = " + ..." if np.count_nonzero(R[i]) > 4 else ""
    return f"row {i} ({terms}{more})"


def _dependent_rows(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent and dependent rows of ``R`` by a pivoted QR of ``R'`` (rows
    scaled to unit norm): ``(basis rows, dependent rows)``, both sorted."""
    norms = np.linalg.norm(R, axis=1)
    scaled = R / np.where(norms > 0, norms, 1.0)[:, None]
    _, T, piv = qr(scaled.T, mode="economic", pivoting=True)
    d = np.abs(np.diag(T))
    rank = int(np.sum(d > RANK_RTOL * max(d[0] if d.size else 0.0, np.finfo(float).tiny)))
    return np.sort(piv[:rank]), np.sort(piv[rank:])


def check_rows(R: np.ndarray, q: np.ndarray, names: Sequence[str] | None = None) -> None:
    """Refuse restriction rows that are zero, redundant or inconsistent.

    Parameters
    ----------
    R : ndarray, shape (m, P)
        Finite.
    q : ndarray, shape (m,)
    names : list of str, optional
        Parameter names, to show the rows in messages.

    Raises
    ------
    ValueError
        A row without a coefficient; linearly dependent rows (pivoted QR of
        ``R'``, rows scaled to unit norm, relative threshold
        :data:`RANK_RTOL`): *redundant* when ``q`` obeys the same dependence
        (the message names the rows and the combination of the others they
        equal), *inconsistent* when it does not (no ``beta`` satisfies them).
    """
    zero = np.flatnonzero(~np.any(R != 0, axis=1))
    if zero.size:
        i = int(zero[0])
        what = f"inconsistent (0 = {q[i]:g})" if q[i] != 0 else "empty (0 = 0)"
        raise ValueError(f"restriction row {i} involves no coefficient: it is {what}; "
                         "remove it")
    basis, dep = _dependent_rows(R)
    if not dep.size:
        return
    # express each dependent row through the basis rows: R_i = c' R_basis
    C, *_ = np.linalg.lstsq(R[basis].T, R[dep].T, rcond=None)          # (b, d)
    implied = C.T @ q[basis]
    scale = np.abs(C.T) @ np.abs(q[basis]) + np.abs(q[dep])
    bad = np.abs(implied - q[dep]) > 1e-9 * np.maximum(scale, 1.0)
    t = int(np.argmax(bad)) if bad.any() else 0
    i, c = int(dep[t]), C[:, t]
    combo = " + ".join(f"{c[s]:.6g}*(row {int(basis[s])})"
                       for s in np.flatnonzero(np.abs(c) > 1e-12)).replace("+ -", "- ")
    rows = ", ".join(str(int(r)) for r in dep[:10]) + (", ..." if dep.size > 10 else "")
    singular = f"R is singular: its {R.shape[0]} rows have rank {basis.size}"
    if bad.any():
        raise ValueError(
            f"the restrictions are inconsistent ({singular}, and no coefficients satisfy "
            f"them all): {_row_name(i, R, names)} = {combo} on the left, but its value "
            f"{q[i]:g} differs from the implied {float(implied[t]):g}; correct or remove it")
    raise ValueError(
        f"the restrictions are redundant ({singular}): rows [{rows}] follow from the "
        f"others, e.g. {_row_name(i, R, names)} = {combo}; remove them")


def build_restriction(R: Any, q: Any, layout: CoefficientLayout,
                      names: Sequence[str] | None = None) -> LinearRestriction:
    """Validate ``R beta = q`` for coefficients laid out as ``layout``.

    Parameters
    ----------
    R : array_like, shape (m, P) or (P,)
        Restriction matrix over the flat coefficients (equation by
        equation); a 1-D array is one restriction.
    q : array_like, shape (m,), or None
        Values; None means zeros.
    layout : CoefficientLayout
        The coefficient layout (``Problem.layout``).
    names : list of str, optional
        Parameter names (length P), used in messages.

    Returns
    -------
    LinearRestriction

    Raises
    ------
    ValueError
        Wrong shape, non-finite entries, ``m >= P``, a row without a
        coefficient, redundant rows (named, with the combination of the other
        rows they equal) or inconsistent rows (no ``beta`` satisfies them).
    TypeError
        Non-numeric input.

    Examples
    --------
    >>> import numpy as np
    >>> from alsgls.core.ops import CoefficientLayout
    >>> lay = CoefficientLayout(np.array([2, 2]))
    >>> r = build_restriction([[0, 1, 0, -1]], [0.0], lay)      # equal slopes
    >>> r.m, r.Rt.shape
    (1, (2, 2, 1))
    >>> build_restriction([[0, 1, 0, -1], [0, 2, 0, -2]], [0, 1], lay)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the restrictions are inconsistent (R is singular: its 2 rows have rank 1, ...
    """
    P = layout.P
    Ra = as_float_matrix(R, "R", np.ndim(R))
    if Ra.ndim == 1:
        Ra = Ra[None, :]
    if Ra.ndim != 2 or Ra.shape[1] != P or Ra.shape[0] == 0:
        raise ValueError(f"R must have shape (m, P={P}) with m >= 1, got {np.shape(R)}")
    m = Ra.shape[0]
    qa = np.zeros(m) if q is None else np.atleast_1d(as_float_matrix(q, "q", np.ndim(q)))
    if qa.shape != (m,):
        raise ValueError(f"q must have shape (m,) = ({m},) to match R, got {np.shape(q)}")
    if names is not None and len(names) != P:
        raise ValueError(f"names has {len(names)} entries but there are P={P} coefficients")
    if m >= P:
        raise ValueError(f"{m} restrictions on P={P} coefficients leave nothing to estimate; "
                         "need fewer restrictions than coefficients")
    check_rows(Ra, qa, names)
    Rt = np.zeros((layout.K, layout.pmax, m))
    Rt[layout.eq, layout.col] = Ra.T
    return LinearRestriction(R=_readonly(Ra), q=_readonly(qa), Rt=_readonly(Rt), layout=layout,
                             names=None if names is None else tuple(str(n) for n in names))
