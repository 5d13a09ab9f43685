"""The README's Python blocks and every public docstring example run as written."""

import doctest
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE_MODULES = ["core.ops", "core.api", "core.sim", "core.metrics", "core.problem", "core.options",
                "core.restriction", "core.gls",
                "datasets", "stats.system", "learn.rank", "learn.estimator"]


def python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("i,block", list(enumerate(python_blocks(ROOT / "README.md"))))
def test_readme_block_runs(i, block):
    exec(compile(block, f"README.md[block {i}]", "exec"), {})


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(f"alsgls.{name}")
    import numpy as np

    res = doctest.testmod(mod, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
