# Two commands on a fresh machine; each sets up what it needs first.
#
#   make main    the main job: ALS against the dense EM baseline on simulated
#                data, then a real-data SUR fit (Grunfeld) with its summary
#   make test    the test suite (what CI runs: .ci/run)
#   make docs    the documentation, built warning-free (docs/_build/html)
#
# The virtual environment ($(VENV), default .venv) is created and the package
# installed with its dev extras on first use, and again when pyproject.toml
# changes.  PYTHON picks the interpreter that creates it (Python >= 3.10).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alsgls-installed

.PHONY: main test docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

main: $(STAMP)
	$(BIN)/python examples/compare_als_vs_em.py
	$(BIN)/python examples/real_data_sur.py

test: $(STAMP)
	$(BIN)/python -m pytest tests/

docs: $(STAMP)
	$(BIN)/sphinx-build -W -E -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build
