"""Labelled outputs: pandas objects when pandas is installed, plain ndarrays otherwise."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def require_pandas(feature: str = "this feature"):
    """Import pandas or raise an ImportError that says how to install it."""
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(f"{feature} needs pandas: pip install 'alsgls[pandas]'") from exc
    return pandas


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - environment dependent
        return None
    return pandas


def _series(values: np.ndarray, index: Sequence, name: str | None = None) -> Any:
    pd = _pandas()
    return values if pd is None else pd.Series(values, index=list(index), name=name)


def _frame(values: np.ndarray, index: Any, columns: Sequence) -> Any:
    pd = _pandas()
    if pd is None:
        return values
    return pd.DataFrame(values, index=index, columns=list(columns))
