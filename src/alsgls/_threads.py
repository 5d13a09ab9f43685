"""Keep BLAS single-threaded inside the solvers, when threadpoolctl is present.

The ALS path issues many mid-sized GEMMs (K x N by N x (k + 4)).  Under a
multi-threaded OpenBLAS on a loaded machine each call pays for thread
hand-offs; measured on 2 shared cores this made a fit 2-15x slower while
batched OLS (whose tiny GEMMs never thread) was unaffected.  One thread is
within a few percent of the best on an idle machine for these memory-bound
products, so the solvers limit BLAS to ``blas_threads`` (default 1) through
``threadpoolctl`` (the optional extra ``alsgls[fast]``; without it nothing
is changed).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_state = threading.local()      # the limit in force in this thread (nested blocks)
_controller: list = []          # one threadpoolctl controller: library discovery is slow


def _blas_controller() -> Any:
    """The process's ``ThreadpoolController`` (built once: finding the BLAS
    libraries costs milliseconds, as much as a small fit), or None without
    threadpoolctl."""
    if not _controller:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional: the fit is the same, only possibly slower
            _controller.append(None)
        else:
            _controller.append(ThreadpoolController())
    return _controller[0]


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit BLAS to ``n`` threads inside the block (no-op if ``n`` is None,
    if an enclosing block already set ``n``, or without threadpoolctl)."""
    controller = None if n is None else _blas_controller()
    if controller is None or getattr(_state, "limit", None) == n:
        yield
        return
    outer, _state.limit = getattr(_state, "limit", None), n
    try:
        with controller.limit(limits=int(n), user_api="blas"):
            yield
    finally:
        _state.limit = outer


def single_blas_thread(fn):
    """Decorator: run ``fn`` under ``blas_threads(1)`` (see the module notes)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads(1):
            return fn(*args, **kwargs)

    return wrapper
