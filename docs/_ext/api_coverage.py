"""Fail the docs build when a public name has no entry in the API reference.

Every name in ``alsgls.__all__`` (and the extra names in
``api_coverage_extra``) must be documented by an autodoc directive somewhere in
the docs as ``alsgls.<name>`` (or, for a module, ``.. automodule::``).  A name
added to the package without a reference entry is reported as a Sphinx
warning, which ``sphinx-build -W`` turns into an error.
"""

from __future__ import annotations

import importlib
from typing import Any

from sphinx.util import logging

logger = logging.getLogger(__name__)


def check(app: Any, env: Any) -> None:
    mod = importlib.import_module(app.config.api_coverage_module)
    wanted = [f"{mod.__name__}.{n}" for n in mod.__all__] + list(app.config.api_coverage_extra)
    objects = env.domains["py"].objects
    modules = env.domains["py"].modules
    for name in wanted:
        if name not in objects and name not in modules:
            logger.warning("%s is public but has no entry in the API reference "
                           "(add it to a page under docs/api/)", name,
                           type="api_coverage", subtype="missing")


def setup(app: Any) -> dict:
    app.add_config_value("api_coverage_module", "alsgls", "env")
    app.add_config_value("api_coverage_extra", [], "env")
    app.connect("env-check-consistency", check)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
