"""Warnings that point at the user's line, whatever path raised them.

A fixed ``stacklevel`` is right for one call path only: the same solver
warning reached through ``als_gls``, ``SUR.fit`` or ``ALSGLS.fit`` sits at a
different depth.  :func:`warn` walks the stack to the first frame outside the
alsgls package and attributes the warning to it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import warnings

__all__ = ["warn"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Standard-library plumbing between the package's frames (``cached_property``,
#: context managers, decorators): never the user's line.
_PLUMBING = {os.path.abspath(m.__file__) for m in (functools, contextlib, importlib)}


def _internal(filename: str) -> bool:
    if filename.startswith("<frozen importlib"):   # an import statement's machinery
        return True
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR) or path in _PLUMBING


def _caller_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` called from :func:`warn` that names the
    first frame outside the package (and the stdlib plumbing it goes through)."""
    frame = sys._getframe(2)          # the caller of warn()
    level = 2
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        # warnings.warn does not count the import machinery's frames
        if frame is not None and not frame.f_code.co_filename.startswith("<frozen importlib"):
            level += 1
    return level


def warn(message: str, category: type[Warning]) -> None:
    """Emit ``message`` as ``category`` attributed to the user's code."""
    warnings.warn(message, category, stacklevel=_caller_stacklevel())
