"""Warning classes raised by alsgls.

Each warning has its own class so that users can filter them precisely, e.g.
``warnings.simplefilter("error", alsgls.ConvergenceWarning)``.
"""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "IdentificationWarning", "HeywoodWarning", "MissingDataWarning",
           "RankSelectionWarning"]


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at its iteration limit before its tolerance."""


class IdentificationWarning(UserWarning):
    """F and D are not identified (Ledermann bound fails); beta and Sigma still are."""


class HeywoodWarning(UserWarning):
    """Some noise variances D_j sit at their floor (a Heywood case)."""


class MissingDataWarning(UserWarning):
    """Rows were dropped because they carry no information (all responses
    missing, or zero weight) or because listwise deletion was requested."""


class RankSelectionWarning(UserWarning):
    """``rank="auto"`` could not decide: its count did not settle, or more
    factors than ``max_rank`` lie above the noise edge."""
