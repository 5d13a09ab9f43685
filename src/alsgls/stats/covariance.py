"""Covariance estimators of the coefficients, chosen by ``cov_type``.

One mapping, :data:`COV_ESTIMATORS`, takes a ``cov_type`` (and its aliases,
:data:`COV_ALIASES`) to an estimator class; each estimator answers the two
questions the results ask -- the diagonal blocks ``Cov(beta_j)`` (K, pmax,
pmax) and the covariance of contrasts ``L' beta`` -- from the matrix-free
:class:`~alsgls.stats.inference.GLSCovariance`, which applies ``A^-1``
(``solve``, ``diagonal_blocks``), ``Sigma_{O_i}^-1`` row by row
(``row_solve``) and holds the designs ``X`` and residuals ``Rt`` as the
estimators use them.

A new estimator (kernel, clustered) is a class with ``name``, an
``__init__(gls)``, ``diagonal_blocks`` and ``contrast_cov(L)`` registered in
:data:`COV_ESTIMATORS` (and its spellings in :data:`COV_ALIASES`); the
results, prediction and ``GLSCovariance.estimator`` pick it up through
``cov_type``.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .._threads import single_blas_thread

if TYPE_CHECKING:
    from .inference import GLSCovariance

__all__ = ["CovarianceEstimator", "ModelBased", "Robust", "COV_ESTIMATORS", "COV_ALIASES",
           "normalise_cov_type"]


class CovarianceEstimator(Protocol):
    """What every estimator of :data:`COV_ESTIMATORS` provides.

    Attributes
    ----------
    name : str
        The canonical ``cov_type``.
    gls : GLSCovariance
        The covariance it is built on.
    diagonal_blocks : ndarray, shape (K, pmax, pmax)
        ``Cov(beta_j)`` for every equation, zero padding.
    """

    name: str
    gls: GLSCovariance
    diagonal_blocks: np.ndarray

    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """Covariance (m, m) of ``L' beta`` for ``L`` (K, pmax, m) in padded layout."""
        ...


class ModelBased:
    """``Cov(beta) = A^-1``, the inverse GLS information (``cov_type="unadjusted"``).

    Parameters
    ----------
    gls : GLSCovariance
        The matrix-free covariance of the coefficients.
    """

    name = "unadjusted"

    def __init__(self, gls: GLSCovariance) -> None:
        self.gls = gls

    @cached_property
    def diagonal_blocks(self) -> np.ndarray:
        """``(A^-1)_jj`` for every equation (K, pmax, pmax), zero padding."""
        return self.gls.diagonal_blocks

    @single_blas_thread
    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """``L' A^-1 L`` (m, m) for ``L`` (K, pmax, m) in padded layout (one solve
        with the GLS information per contrast)."""
        out = np.einsum("jam,jan->mn", L, self.gls.solve(L))
        return 0.5 * (out + out.T)


class Robust(ModelBased):
    """The heteroskedasticity-robust sandwich ``A^-1 (sum_i g_i g_i') A^-1``
    (``cov_type="robust"``).

    The scores are ``g_i = w_i X_{i,O}' Sigma_{O_i}^-1 r_{i,O}`` (the scores of
    the weighted observed-data log-likelihood; ``X_i' Sigma^-1 r_i`` for complete,
    unweighted data).  With ``H = A^-1 Gamma'`` (the solve of all ``N`` scores at
    once) the sandwich is ``H H'``: its diagonal blocks and contrasts never form
    the P x P matrix.

    Parameters
    ----------
    gls : GLSCovariance
        Built with the residuals ``Rt``.
    """

    name = "robust"

    @cached_property
    @single_blas_thread
    def scores(self) -> np.ndarray:
        """Per-row scores ``g_i`` as (K, pmax, N)."""
        gls = self.gls
        if gls.Rt is None:
            raise ValueError("residuals are required for the robust covariance")
        return np.einsum("knp,kn->kpn", gls.X, gls.row_solve(gls.Rt))

    @cached_property
    def factor(self) -> np.ndarray:
        """``H = A^-1 Gamma'`` (K, pmax, N): the sandwich is ``H H'``."""
        return self.gls.solve(self.scores)

    @cached_property
    @single_blas_thread
    def diagonal_blocks(self) -> np.ndarray:
        """Diagonal blocks of ``A^-1 B A^-1`` (K, pmax, pmax), zero padding."""
        H = self.factor
        return np.einsum("jan,jbn->jab", H, H)

    @single_blas_thread
    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """``(L' H)(L' H)'`` (m, m) for ``L`` (K, pmax, m) in padded layout."""
        Hl = np.einsum("jam,jan->mn", L, self.factor)
        return Hl @ Hl.T


#: cov_type -> estimator class
COV_ESTIMATORS: dict[str, type] = {"unadjusted": ModelBased, "robust": Robust}
#: accepted spellings -> cov_type
COV_ALIASES = {"unadjusted": "unadjusted", "nonrobust": "unadjusted", "classic": "unadjusted",
               "homoskedastic": "unadjusted", "robust": "robust",
               "heteroskedastic": "robust", "hc0": "robust"}


def normalise_cov_type(cov_type: str) -> str:
    """The canonical ``cov_type`` for any accepted spelling.

    Parameters
    ----------
    cov_type : str
        A key of :data:`COV_ESTIMATORS` or of :data:`COV_ALIASES` (any case).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For an unknown spelling.
    """
    key = str(cov_type).lower()
    if key in COV_ESTIMATORS:
        return key
    if key not in COV_ALIASES:
        raise ValueError(f"cov_type must be one of {sorted(set(COV_ESTIMATORS))} (or an "
                         f"alias: {sorted(COV_ALIASES)}), got {cov_type!r}")
    return COV_ALIASES[key]
