"""alsgls: exact maximum-likelihood SUR / feasible GLS for many equations.

The error covariance is modelled as ``Sigma = F F' + diag(D)`` (F is K x k,
k << K) and never formed densely on the main path.
"""

from __future__ import annotations

from . import _compat, datasets
from .core.api import als_gls, als_gls_missing, em_gls, fit_missing, impute, observed_nll_per_row
from .core.fit_result import GLSFit, MissingGLSFit
from .core.metrics import mse, nll_per_row
from .core.options import SolverOptions
from .core.ops import BlockDesignOperator, GLSNormalOperator, LowRankCovariance, pcg
from .core.sim import SimTruth, simulate_gls, simulate_sur
from .exceptions import (
    ConvergenceWarning,
    HeywoodWarning,
    IdentificationWarning,
    MissingDataWarning,
    RankSelectionWarning,
)
from .learn.rank import RankSelection, select_rank
from .learn.scoring import loglik_scorer
from .persistence import IncompatiblePickleError, load, save
from .stats.compare import compare
from .stats.hypothesis import TestResult
from .stats.inference import GLSCovariance
from .stats.results import PredictionResults, SURResults
from .stats.system import SUR

_compat.install()

__version__ = "0.1.0"

__all__ = [
    "SUR",
    "compare",
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
    "SolverOptions",
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
    "RankSelectionWarning",
    "MissingGLSFit",
    "als_gls_missing",
    "fit_missing",
    "impute",
    "observed_nll_per_row",
    "loglik_scorer",
    "save",
    "load",
    "IncompatiblePickleError",
]


def __getattr__(name: str):
    """Import the scikit-learn estimator lazily: ``import alsgls`` never imports
    scikit-learn; ``alsgls.ALSGLS`` does (and says how to install it if missing)."""
    if name == "ALSGLS":
        from .learn.estimator import ALSGLS

        return ALSGLS
    if name in _compat.MOVED:          # alsgls.system etc. of 0.1, deprecated
        return _compat.old_module(name)
    raise AttributeError(f"module 'alsgls' has no attribute {name!r}")
