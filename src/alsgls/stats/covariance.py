"""Covariance estimators of the coefficients, chosen by ``cov_type``.

One mapping, :data:`COV_ESTIMATORS`, takes a ``cov_type`` (and its aliases,
:data:`COV_ALIASES`) to an estimator class; each estimator answers the two
questions the results ask -- the diagonal blocks ``Cov(beta_j)`` (K, pmax,
pmax) and the covariance of contrasts ``L' beta`` -- from the matrix-free
:class:`~alsgls.stats.inference.GLSCovariance`.  New estimators (kernel,
clustered) register here.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .inference import GLSCovariance

__all__ = ["ModelBased", "Robust", "COV_ESTIMATORS", "COV_ALIASES", "normalise_cov_type"]


class ModelBased:
    """``Cov(beta) = A^-1``, the inverse GLS information (``cov_type="unadjusted"``)."""

    name = "unadjusted"

    def __init__(self, gls: GLSCovariance) -> None:
        self.gls = gls

    @cached_property
    def diagonal_blocks(self) -> np.ndarray:
        """``Cov(beta_j)`` for every equation (K, pmax, pmax), zero padding."""
        return self.gls.diagonal_blocks

    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        """Covariance (m, m) of ``L' beta`` for ``L`` (K, pmax, m) in padded layout."""
        return self.gls.contrast_cov(L, robust=False)


class Robust(ModelBased):
    """The heteroskedasticity-robust sandwich ``A^-1 (sum_i g_i g_i') A^-1``
    (``cov_type="robust"``)."""

    name = "robust"

    @cached_property
    def diagonal_blocks(self) -> np.ndarray:
        return self.gls.robust_diagonal_blocks

    def contrast_cov(self, L: np.ndarray) -> np.ndarray:
        return self.gls.contrast_cov(L, robust=True)


#: cov_type -> estimator class
COV_ESTIMATORS = {"unadjusted": ModelBased, "robust": Robust}
#: accepted spellings -> cov_type
COV_ALIASES = {"unadjusted": "unadjusted", "nonrobust": "unadjusted", "classic": "unadjusted",
               "homoskedastic": "unadjusted", "robust": "robust",
               "heteroskedastic": "robust", "hc0": "robust"}


def normalise_cov_type(cov_type: str) -> str:
    """The canonical ``cov_type`` for any accepted spelling (``ValueError`` otherwise)."""
    key = str(cov_type).lower()
    if key not in COV_ALIASES:
        raise ValueError(f"cov_type must be one of {sorted(set(COV_ESTIMATORS))} (or an "
                         f"alias: {sorted(COV_ALIASES)}), got {cov_type!r}")
    return COV_ALIASES[key]
