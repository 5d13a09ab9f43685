"""Loaders of the stored linearmodels reference data sets (tests/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"


def load(name: str):
    """Return ``(reference dict, equations mapping for SUR)`` for a shipped data set."""
    pd = __import__("pandas")
    ref = json.loads((DATA / f"{name}_reference.json").read_text())
    df = pd.read_csv(DATA / f"{name}_data.csv")
    eqs = {}
    for e in ref["equations"]:
        X = pd.DataFrame({n: (np.ones(len(df)) if c is None else df[c])
                          for n, c in zip(e["regressor_names"], e["regressor_columns"])})
        eqs[e["label"]] = (df[e["dependent"]], X)
    return ref, eqs


def reference_series(ref: dict, fit_key: str, field: str):
    pd = __import__("pandas")
    f = ref["fits"][fit_key]
    return pd.Series({f"{e['label']}_{n}": f[field][e["label"]][n]
                      for e in ref["equations"] for n in e["regressor_names"]})
