"""Old module paths of alsgls 0.1, kept importable with a ``DeprecationWarning``.

The package is split into layers (``alsgls.core``, ``alsgls.stats``,
``alsgls.learn``; see ``docs/architecture.md``).  Code written against the
flat layout of 0.1 (``from alsgls.system import SUR``) keeps working: a
meta-path finder maps each old name onto the *same* module object under its
new name, so classes, ``isinstance`` checks and pickles agree.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

#: old module (under ``alsgls.``) -> new module (under ``alsgls.``)
MOVED = {
    "als": "core.api", "em": "core.api", "ops": "core.ops", "fit_result": "core.fit_result",
    "missing": "core.api", "sim": "core.sim", "metrics": "core.metrics",
    "system": "stats.system", "results": "stats.results", "inference": "stats.inference",
    "hypothesis": "stats.hypothesis", "prediction": "stats.prediction",
    "summary": "stats.summary", "estimator": "learn.estimator", "rank": "learn.rank",
    "plots": "learn.plots",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # already executed under its new name; the import machinery has just
        # overwritten __spec__ with the alias's: give the module its own back
        module.__spec__ = self.spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Resolve ``alsgls.<old>`` to ``alsgls.<new>`` (see :data:`MOVED`)."""

    def find_spec(self, fullname, path=None, target=None):
        pkg, _, name = fullname.partition(".")
        if pkg != "alsgls" or name not in MOVED:
            return None
        new = f"alsgls.{MOVED[name]}"
        warnings.warn(f"the module {fullname} moved to {new}; import it from there "
                      "(or the names from alsgls itself)", DeprecationWarning, stacklevel=2)
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
