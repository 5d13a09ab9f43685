"""Progress feedback and logging for standard-error computations.

Every computation of the coefficient covariance logs to the ``"alsgls"``
logger: a ``DEBUG`` record per step (Krylov block, certificate step, chunk of
the exact core, batch of scores) and one record when it finishes (method,
seconds, bound) -- ``INFO`` when it took at least ``INFO_SECONDS``, else
``DEBUG``.  With ``verbose=True`` (``SUR.fit(se_verbose=True)``)
the steps are also shown: a ``tqdm`` bar when tqdm is installed, else one line
per step on stderr.  Nothing is printed otherwise.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

__all__ = ["Progress", "logger"]

#: The package's logger (``logging.getLogger("alsgls")``).
logger = logging.getLogger("alsgls")
#: Computations at least this long (seconds) log their end at INFO.
INFO_SECONDS = 1.0


class Progress:
    """Steps of one standard-error computation.

    Parameters
    ----------
    label : str
        What is computed (``"standard errors (lanczos)"``).
    verbose : bool, default False
        Show the steps (tqdm bar or stderr lines) as well as logging them.
    total : int, optional
        Number of steps when known (for the bar).
    """

    def __init__(self, label: str, verbose: bool = False, total: int | None = None) -> None:
        self.label, self.verbose = label, bool(verbose)
        self.start = time.perf_counter()
        self._bar: Any = None
        if self.verbose:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # optional: plain lines on stderr instead
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=label, leave=False)
        logger.debug("%s: started", label)

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        """One step: logged at DEBUG, shown when verbose."""
        logger.debug("%s: %s (%.1f s)", self.label, message, self.elapsed)
        if self._bar is not None:
            self._bar.set_postfix_str(message, refresh=False)
            self._bar.update(1)
        elif self.verbose:
            print(f"[alsgls] {self.label}: {message} ({self.elapsed:.1f} s)", file=sys.stderr,
                  flush=True)

    def done(self, summary: str) -> None:
        """The end: logged with the elapsed time (INFO when long), shown when verbose."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        level = logging.INFO if self.elapsed >= INFO_SECONDS else logging.DEBUG
        logger.log(level, "%s: %s in %.2f s", self.label, summary, self.elapsed)
        if self.verbose:
            print(f"[alsgls] {self.label}: {summary} in {self.elapsed:.2f} s", file=sys.stderr,
                  flush=True)
