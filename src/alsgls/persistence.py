"""Saving and loading fitted objects: the pickle contract.

alsgls objects pickle with the standard library (``pickle``, ``joblib``).  A
pickled :class:`~alsgls.SURResults` holds its model's data once -- the
designs and responses as the model holds them, a design shared by every
equation stored once -- plus O(P + K k) state: coefficients, loadings, noise
variances, traces and the small records (layout, Gram matrices, rows,
weights).  Nothing derived is stored: the residuals are recomputed from the
data and the coefficients when the object is loaded, and the factored
coefficient covariance and every cached statistic on first use (standard
errors cost their computation again, not a refit).  Measured with the
standard errors computed (``tests/test_pickle_scoring.py`` checks the budget
``1.2 x data + 4 MB``): K = 500, N = 400, p = 3, k = 5 pickles to the data's
6.40 MB plus 0.18 MB (a shared design: 1.61 MB plus 0.12 MB); K = 2000,
N = 1000 to 64.0 MB plus 0.72 MB, 1.01 x the data (alsgls 0.1: 375 MB).

**Version contract.**  Every pickled state of :class:`~alsgls.SUR`,
:class:`~alsgls.SURResults` and :class:`~alsgls.core.problem.Problem` carries
``(PICKLE_FORMAT, alsgls version)``.  Loading a state whose format this alsgls
does not read (written by a newer alsgls, or older than
:data:`MIN_PICKLE_FORMAT`) raises :class:`IncompatiblePickleError` naming both
versions.  :func:`save` (``res.save(path)``) writes a small header first, so
:func:`load` refuses an incompatible file before unpickling any of it.  A
state without the tag (alsgls 0.1, which pickled every attribute, caches
included) is restored as it was stored.

Pickle runs code while loading: load only files you trust.

Examples
--------
>>> import os, tempfile
>>> import alsgls
>>> from alsgls import SUR, simulate_sur
>>> Xs, Y, _ = simulate_sur(N=60, K=3, p=2, k=1, seed=0)
>>> res = SUR.from_arrays(Xs, Y, rank=1).fit()
>>> path = os.path.join(tempfile.mkdtemp(), "fit.alsgls")
>>> res.save(path)
>>> again = alsgls.load(path)
>>> bool((again.params == res.params).all()), again.llf == res.llf
(True, True)
"""

from __future__ import annotations

import os
import pickle
from typing import IO, Any

__all__ = ["MIN_PICKLE_FORMAT", "PICKLE_FORMAT", "IncompatiblePickleError", "load", "save"]

#: The layout of the pickled states; raised whenever a state changes in a way an
#: older alsgls cannot read.
PICKLE_FORMAT = 1
#: The oldest format this alsgls reads.
MIN_PICKLE_FORMAT = 1
#: Key of the version tag inside a pickled state.
STATE_KEY = "_alsgls_pickle"
#: First field of the header :func:`save` writes.
MAGIC = "alsgls.save"


class IncompatiblePickleError(ValueError):
    """A pickled alsgls object, or a file written by :func:`save`, comes from an
    alsgls whose pickle format this version does not read."""


def _version() -> str:
    from . import __version__

    return __version__


def _refuse(what: str, fmt: Any, version: Any) -> None:
    raise IncompatiblePickleError(
        f"{what} was pickled by alsgls {version} (pickle format {fmt}); this alsgls "
        f"{_version()} reads formats {MIN_PICKLE_FORMAT} to {PICKLE_FORMAT}. Load it "
        f"with alsgls {version} (pip install 'alsgls=={version}') and refit or "
        "re-save, or refit from the data with this version")


def tag_state(state: dict) -> dict:
    """``state`` with the version tag ``(PICKLE_FORMAT, alsgls version)`` added."""
    state[STATE_KEY] = (PICKLE_FORMAT, _version())
    return state


def check_state(state: dict, what: str) -> bool:
    """Remove and check the version tag of a pickled state.

    Returns True for a tagged state this alsgls reads, False for an untagged
    (alsgls 0.1) one; raises :class:`IncompatiblePickleError` otherwise.
    """
    tag = state.pop(STATE_KEY, None)
    if tag is None:
        return False
    fmt, version = tag
    if not MIN_PICKLE_FORMAT <= fmt <= PICKLE_FORMAT:
        _refuse(what, fmt, version)
    return True


def save(obj: Any, path: str | os.PathLike | IO[bytes], *,
         protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    """Write ``obj`` (a fitted :class:`~alsgls.SURResults`, a :class:`~alsgls.SUR`
    model, ...) to ``path`` with a version header.

    Parameters
    ----------
    obj : object
        Anything picklable; alsgls objects store their data once and no caches.
    path : str, path-like or binary file
        Where to write (a file object is written from its current position).
    protocol : int, default ``pickle.HIGHEST_PROTOCOL``

    Notes
    -----
    The file is two pickles: a header ``{"magic": "alsgls.save",
    "pickle_format": PICKLE_FORMAT, "alsgls": version, "type": name}`` and the
    object.  :func:`load` checks the header before reading the object.
    """
    header = {"magic": MAGIC, "pickle_format": PICKLE_FORMAT, "alsgls": _version(),
              "type": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    if hasattr(path, "write"):
        pickle.dump(header, path, protocol=protocol)
        pickle.dump(obj, path, protocol=protocol)
        return
    with open(path, "wb") as f:
        save(obj, f, protocol=protocol)


def load(path: str | os.PathLike | IO[bytes]) -> Any:
    """Read an object written by :func:`save` (or ``SURResults.save``).

    Parameters
    ----------
    path : str, path-like or binary file

    Returns
    -------
    object
        The saved object; derived quantities (residuals; standard errors on
        first use) are recomputed from the stored data.

    Raises
    ------
    IncompatiblePickleError
        The file was written by an alsgls whose pickle format this version
        does not read (the message names both versions).
    ValueError
        The file was not written by :func:`save`.

    Notes
    -----
    Unpickling runs code: load only files you trust.
    """
    if not hasattr(path, "read"):
        with open(path, "rb") as f:
            return load(f)
    try:
        header = pickle.load(path)
    except Exception as exc:
        raise ValueError(f"{getattr(path, 'name', path)!s} is not a file written by "
                         "alsgls.save (its header does not unpickle)") from exc
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise ValueError(f"{getattr(path, 'name', path)!s} is not a file written by "
                         "alsgls.save (no alsgls header); for a plain pickle use "
                         "pickle.load")
    fmt = header.get("pickle_format")
    if not isinstance(fmt, int) or not MIN_PICKLE_FORMAT <= fmt <= PICKLE_FORMAT:
        _refuse(f"{getattr(path, 'name', 'the file')!s} (a {header.get('type')})", fmt,
                header.get("alsgls"))
    return pickle.load(path)
