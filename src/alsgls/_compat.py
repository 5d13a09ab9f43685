"""Old module paths of alsgls 0.1, kept working with a ``DeprecationWarning``.

The package is split into layers (``alsgls.core``, ``alsgls.stats``,
``alsgls.learn``; see ``docs/architecture.md``).  Code written against the
flat layout of 0.1 keeps working, both as ``from alsgls.system import SUR``
and as ``alsgls.system.SUR``: a meta-path finder (and the package's
``__getattr__``) resolve each old name.  An old module that moved whole maps
onto the *same* module object under its new name (classes, ``isinstance``
checks, pickles and monkeypatching agree); one whose contents were split
(``als``, ``em``, ``missing``) maps onto a read-only view that finds each name
in the modules that now hold it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

from ._warnings import warn

#: old module (under ``alsgls.``) -> the new module(s) holding its names
MOVED = {
    "als": ("core.api", "core.als"), "em": ("core.api", "core.em"),
    "missing": ("core.api", "core.fit_result", "core.missing_em", "core.problem",
                "core.options"),
    "ops": ("core.ops",), "fit_result": ("core.fit_result",), "sim": ("core.sim",),
    "metrics": ("core.metrics",), "system": ("stats.system",), "results": ("stats.results",),
    "inference": ("stats.inference",), "hypothesis": ("stats.hypothesis",),
    "prediction": ("stats.prediction",), "summary": ("stats.summary",),
    "estimator": ("learn.estimator",), "rank": ("learn.rank",), "plots": ("learn.plots",),
}


#: the public names of each split module in 0.1 (``__all__`` first, then its
#: documented constants); nothing else is found through the old path
SPLIT_NAMES = {
    "als": (("als_gls",), ("OVERSAMPLE", "DENSE_EIG_LIMIT", "EIG_RTOL", "EIG_RTOL_MAX",
                           "CG_BUDGET", "POLISH", "ANDERSON_M", "ANDERSON_MAX_STEP",
                           "STALL_RATIO")),
    "em": (("em_gls",), ()),
    "missing": (("MissingGLSFit", "MissingDataWarning", "als_gls_missing", "fit_missing",
                 "observed_nll_per_row", "impute"), ("ACCELERATORS", "MISSING_POLICIES")),
}


class _SplitModule(types.ModuleType):
    """An old module whose names now live in several modules: it offers the
    0.1 public names (:data:`SPLIT_NAMES`), found where they live now."""

    def __init__(self, name: str, targets: tuple) -> None:
        super().__init__(name, f"Moved: see {', '.join(t.__name__ for t in targets)}.")
        exported, constants = SPLIT_NAMES[name.rpartition(".")[2]]
        self.__all__ = list(exported)
        self._names = set(exported) | set(constants)
        self._targets = targets

    def __getattr__(self, attr: str):
        if attr in self.__dict__.get("_names", ()):
            for mod in self._targets:
                if hasattr(mod, attr):
                    return getattr(mod, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")

    def __dir__(self) -> list:
        return sorted(self._names)


def old_module(name: str) -> types.ModuleType:
    """The module standing for ``alsgls.<name>`` of 0.1 (warns at the user's line)."""
    targets = tuple(importlib.import_module(f"alsgls.{t}") for t in MOVED[name])
    new = ", ".join(t.__name__ for t in targets)
    warn(f"the module alsgls.{name} moved to {new}; import from there (or the names "
         "from alsgls itself)", DeprecationWarning)
    return targets[0] if len(targets) == 1 else _SplitModule(f"alsgls.{name}", targets)


#: the own specs of the moved modules, kept when the import machinery
#: overwrites them with the alias's (``import alsgls.system``, reload)
_OWN_SPECS: dict = {}


class _Alias(importlib.abc.Loader):
    def __init__(self, name: str) -> None:
        self.name = name

    def create_module(self, spec):
        module = old_module(self.name)
        if not isinstance(module, _SplitModule):
            _OWN_SPECS.setdefault(module.__name__, module.__spec__)
        return module

    def exec_module(self, module) -> None:
        # a moved module was executed under its new name; the import machinery
        # (or importlib.reload) has just given it the alias's name and spec:
        # give it its own back.  A split module keeps the alias spec: it is its own.
        if not isinstance(module, _SplitModule):
            real = f"alsgls.{MOVED[self.name][0]}"
            module.__name__ = real
            module.__spec__ = _OWN_SPECS.get(real) or importlib.util.find_spec(real)


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Resolve ``import alsgls.<old>`` (see :data:`MOVED`)."""

    def find_spec(self, fullname, path=None, target=None):
        pkg, _, name = fullname.partition(".")
        if pkg != "alsgls" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(name))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
