"""Keep BLAS single-threaded inside the solvers, when threadpoolctl is present.

The ALS path issues many mid-sized GEMMs (K x N by N x (k + 8)).  Under a
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
from typing import Iterator


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit BLAS to ``n`` threads inside the block (no-op if ``n`` is None
    or threadpoolctl is not installed)."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: the fit is the same, only possibly slower
        yield
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def single_blas_thread(fn):
    """Decorator: run ``fn`` under ``blas_threads(1)`` (see the module notes)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads(1):
            return fn(*args, **kwargs)

    return wrapper
