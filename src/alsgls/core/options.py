"""The one record of solver options, validated once, passed down every layer.

Every public entry point (``als_gls``, ``em_gls``, ``fit_missing``,
``SUR.fit``, ``ALSGLS``, ``select_rank``) turns its keywords into a
:class:`SolverOptions` with :func:`solver_options`; the solvers read the
record and never see loose keywords.  An invalid value raises ``TypeError``
(wrong kind) or ``ValueError`` (out of range) naming the option.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._warnings import warn

__all__ = ["SolverOptions", "solver_options", "check_integer", "check_real", "ACCELERATORS",
           "DEFAULT_MAX_ITER"]

#: Accepted values of ``accelerate`` besides True/False.
ACCELERATORS = ("anderson", "squarem", "em")
#: Iteration limit of each core when ``max_iter`` is None: ALS sweeps, dense
#: EM cycles, missing-data EM / quasi-Newton iterations.
DEFAULT_MAX_ITER = {"als": 200, "em": 5000, "missing": 1000}
#: Old spellings still accepted, with a DeprecationWarning.
RENAMED = {"max_sweeps": "max_iter"}


def check_real(name: str, value: Any, *, upper: float = math.inf) -> float:
    """``value`` as a float in ``(0, upper)``; ``TypeError``/``ValueError``
    naming ``name`` otherwise (NaN included).  The one real-number check of
    every public option and argument (tolerances, floors, significance levels)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} "
                        f"({type(value).__name__})")
    v = float(value)
    if not (0.0 < v < upper):
        bound = "a positive finite number" if upper == math.inf else f"in (0, {upper:g})"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return v


def check_integer(name: str, value: Any, *, minimum: int = 0,
                  allow_none: bool = False) -> int | None:
    """``value`` as an int of at least ``minimum`` (or None when allowed);
    ``TypeError``/``ValueError`` naming ``name`` otherwise.  The one integer check
    of every public option and argument."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        what = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def _seed(value: Any) -> Any:
    """``random_state``: what ``numpy.random.default_rng`` takes, checked."""
    if value is None or isinstance(value, (np.random.Generator, np.random.SeedSequence,
                                           np.random.BitGenerator)):
        return value
    if isinstance(value, np.random.RandomState):
        raise TypeError("random_state must be a non-negative integer, None or a "
                        "numpy.random.Generator; a legacy RandomState is not supported "
                        "(pass an integer drawn from it)")
    return check_integer("random_state", value)


def _count(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    return check_integer(name, value, minimum=1, allow_none=allow_none)


@dataclass(frozen=True)
class SolverOptions:
    """Options of the maximum-likelihood solvers.

    Attributes
    ----------
    tol : float, default 1e-10
        Tolerance on the NLL gap per row and equation (see :func:`alsgls.als_gls`).
    max_iter : int or None, default None
        Iteration limit: ALS sweeps, EM cycles or missing-data iterations;
        None means the core's default (:data:`DEFAULT_MAX_ITER`).
    cg_maxiter : int, default 500
        Conjugate-gradient iterations per ALS beta-step.
    eig_maxiter : int, default 100
        Subspace iterations per ALS factor step.
    d_floor : float, default 1e-6
        Relative floor ``D_j >= d_floor * s_j``, in (0, 1).
    random_state : int, None or numpy.random.Generator, default 0
        Seed of the random starts of the eigensolvers: a non-negative integer
        (reproducible), a ``Generator`` / ``SeedSequence`` / ``BitGenerator``,
        or None (fresh entropy, as in scikit-learn).
    blas_threads : int or None, default 1
        BLAS threads inside the fit (threadpoolctl); None leaves them alone.
    accelerate : bool or {"anderson", "squarem", "em"}, default True
        EM acceleration: True is the core's default (SQUAREM for the dense
        EM, Anderson for the missing-data EM); False or "em" is plain EM.

    Examples
    --------
    >>> from alsgls import SolverOptions
    >>> SolverOptions(tol=1e-8).iterations("als")
    200
    >>> SolverOptions(tol=0)
    Traceback (most recent call last):
    ...
    ValueError: tol must be a positive finite number, got 0
    """

    tol: float = 1e-10
    max_iter: int | None = None
    cg_maxiter: int = 500
    eig_maxiter: int = 100
    d_floor: float = 1e-6
    random_state: Any = 0
    blas_threads: int | None = 1
    accelerate: bool | str = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "tol", check_real("tol", self.tol))
        set_(self, "max_iter", _count("max_iter", self.max_iter, allow_none=True))
        set_(self, "cg_maxiter", _count("cg_maxiter", self.cg_maxiter))
        set_(self, "eig_maxiter", _count("eig_maxiter", self.eig_maxiter))
        set_(self, "d_floor", check_real("d_floor", self.d_floor, upper=1.0))
        set_(self, "random_state", _seed(self.random_state))
        set_(self, "blas_threads", _count("blas_threads", self.blas_threads, allow_none=True))
        acc = bool(self.accelerate) if isinstance(self.accelerate, np.bool_) else self.accelerate
        set_(self, "accelerate", acc)
        if not (isinstance(acc, bool) or (isinstance(acc, str) and acc in ACCELERATORS)):
            raise ValueError(f"accelerate must be True, False or one of {ACCELERATORS}, "
                             f"got {acc!r}")

    def iterations(self, core: str) -> int:
        """The iteration limit for ``core`` ("als", "em" or "missing")."""
        return DEFAULT_MAX_ITER[core] if self.max_iter is None else self.max_iter

    def replace(self, **changes: Any) -> "SolverOptions":
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)


_FIELDS = frozenset(f.name for f in dataclasses.fields(SolverOptions))


def solver_options(options: SolverOptions | None = None, where: str = "the solver", /,
                   **kwargs: Any) -> SolverOptions:
    """Build the options record from keywords, at a public boundary.

    Parameters
    ----------
    options : SolverOptions, optional
        A record to start from (keywords override it).
    where : str
        The caller's name, for the error on an unknown keyword.
    **kwargs
        Option values (the fields of :class:`SolverOptions`).

    Raises
    ------
    TypeError
        For an unknown keyword or a value of the wrong kind, naming it.
    ValueError
        For a value out of range, naming it.
    """
    for old, new in RENAMED.items():
        if old in kwargs:
            value = kwargs.pop(old)
            if new in kwargs and kwargs[new] is not None:
                raise TypeError(f"{where} got both {old}= and {new}=; pass {new}= only")
            warn(f"{old}= is deprecated; use {new}= (the same meaning)", DeprecationWarning)
            kwargs[new] = value
    unknown = sorted(set(kwargs) - _FIELDS)
    if unknown:
        raise TypeError(f"{where} got unexpected keyword argument(s) {unknown}; "
                        f"solver options are {sorted(_FIELDS)}")
    base = options if options is not None else SolverOptions()
    return dataclasses.replace(base, **kwargs)
