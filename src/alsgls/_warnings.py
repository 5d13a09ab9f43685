"""Warnings that point at the user's line, whatever path raised them.

A fixed ``stacklevel`` is right for one call path only: the same solver
warning reached through ``als_gls``, ``SUR.fit`` or ``ALSGLS.fit`` sits at a
different depth.  :func:`warn` walks the stack to the first frame outside the
alsgls package and attributes the warning to it.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` called from :func:`warn` that names the
    first frame whose file lies outside the package."""
    frame = sys._getframe(2)          # the caller of warn()
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning]) -> None:
    """Emit ``message`` as ``category`` attributed to the user's code."""
    warnings.warn(message, category, stacklevel=_caller_stacklevel())
