"""alsgls: exact maximum-likelihood SUR / feasible GLS for many equations.

The error covariance is modelled as ``Sigma = F F' + diag(D)`` (F is K x k,
k << K) and never formed densely on the main path.
"""

from __future__ import annotations

from . import datasets
from .als import als_gls
from .em import em_gls
from .exceptions import (
    ConvergenceWarning,
    HeywoodWarning,
    IdentificationWarning,
    MissingDataWarning,
)
from .fit_result import GLSFit
from .metrics import mse, nll_per_row
from .missing import (
    MissingGLSFit,
    als_gls_missing,
    fit_missing,
    impute,
    observed_nll_per_row,
)
from .ops import BlockDesignOperator, GLSNormalOperator, LowRankCovariance, pcg
from .hypothesis import TestResult
from .inference import GLSCovariance
from .rank import RankSelection, select_rank
from .results import PredictionResults, SURResults
from .sim import SimTruth, simulate_gls, simulate_sur
from .system import SUR

__version__ = "0.1.0"

__all__ = [
    "SUR",
    "datasets",
    "SURResults",
    "PredictionResults",
    "TestResult",
    "GLSCovariance",
    "als_gls",
    "em_gls",
    "select_rank",
    "RankSelection",
    "GLSFit",
    "LowRankCovariance",
    "BlockDesignOperator",
    "GLSNormalOperator",
    "pcg",
    "simulate_sur",
    "simulate_gls",
    "SimTruth",
    "mse",
    "nll_per_row",
    "ConvergenceWarning",
    "HeywoodWarning",
    "IdentificationWarning",
    "MissingDataWarning",
    "MissingGLSFit",
    "als_gls_missing",
    "fit_missing",
    "impute",
    "observed_nll_per_row",
]


def __getattr__(name: str):
    """Import the scikit-learn estimator lazily: ``import alsgls`` never imports
    scikit-learn; ``alsgls.ALSGLS`` does (and says how to install it if missing)."""
    if name == "ALSGLS":
        from .estimator import ALSGLS

        return ALSGLS
    raise AttributeError(f"module 'alsgls' has no attribute {name!r}")
