"""Diagnostic plots: scree plot, NLL trace, loadings heat map.

matplotlib is an optional dependency, imported only when a plot is drawn.
Every plotting function draws on ``ax`` (a new figure's axes when omitted) and
returns the ``Axes``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..core.fit_result import GLSFit
from .rank import RankSelection

__all__ = ["scree_plot", "nll_trace_plot", "loadings_heatmap"]

#: Above this many outputs the heat map refuses (unreadable; pass ``max_outputs``).
MAX_HEATMAP_OUTPUTS = 500


def _axes(ax: Any) -> Any:
    """``ax``, or the axes of a new figure; ImportError without matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "alsgls.learn.plots needs matplotlib: pip install 'alsgls[plot]'"
        ) from exc
    if ax is None:
        _, ax = plt.subplots()
    return ax


def _selection(obj: Any) -> RankSelection:
    """The selection record of ``obj`` (a RankSelection or a fitted ALSGLS)."""
    if isinstance(obj, RankSelection):
        return obj
    sel = getattr(obj, "rank_selection_", None)
    if isinstance(sel, RankSelection):
        return sel
    raise TypeError(
        "scree_plot needs a RankSelection (from alsgls.select_rank) or an ALSGLS "
        f"fitted with a rank-selection method; got {type(obj).__name__}"
        + (" fitted with an integer rank" if hasattr(obj, "rank_") else "")
    )


def scree_plot(selection: Any, *, ax: Any = None, log: bool = False) -> Any:
    """Residual-correlation eigenvalues with the selected rank and the noise edge.

    Parameters
    ----------
    selection : RankSelection or fitted ALSGLS
        The record of :func:`alsgls.select_rank` (or an estimator fitted with
        ``rank`` set to a method).
    ax : matplotlib Axes, optional
    log : bool, default False
        Logarithmic eigenvalue axis.

    Returns
    -------
    matplotlib Axes
        With the eigenvalues (markers, selected ones filled), a dashed
        horizontal line at the Marchenko-Pastur noise edge
        ``(1 + sqrt(K/(N-p)))^2`` and a dotted vertical line after the
        selected rank.
    """
    sel = _selection(selection)
    ax = _axes(ax)
    lam = np.asarray(sel.eigenvalues)
    idx = np.arange(1, lam.size + 1)
    r = sel.rank
    ax.plot(idx, lam, "o-", color="C0", mfc="white", label="eigenvalues", zorder=2)
    if r > 0:
        ax.plot(idx[:r], lam[:r], "o", color="C0", label=f"selected (k = {r})", zorder=3)
    ax.axhline(sel.noise_edge, color="C3", ls="--", label="noise edge (1+sqrt(K/(N-p)))^2")
    ax.axvline(r + 0.5, color="k", ls=":", label=f"rank {r} ({sel.method})")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue of residual correlation")
    ax.set_title(f"Scree plot (N = {sel.N}, K = {sel.K})")
    ax.legend(loc="upper right")
    return ax


def _trace(obj: Any) -> np.ndarray:
    """The NLL trace of ``obj`` (a GLSFit, a fitted ALSGLS or a 1-D array)."""
    if isinstance(obj, GLSFit):
        return np.asarray(obj.nll_trace)
    if hasattr(obj, "nll_history_"):
        return np.asarray(obj.nll_history_)
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.ndim != 1 or arr.size == 0:
        raise TypeError(
            "nll_trace_plot needs a GLSFit, a fitted ALSGLS or a 1-D array of NLL "
            f"values; got {type(obj).__name__}"
        )
    return arr


def nll_trace_plot(fit: Any, *, ax: Any = None, gap: bool = True) -> Any:
    """NLL per row against iteration (ALS sweeps, EM cycles or iterations of
    the missing-data solver, whichever made the trace).

    Parameters
    ----------
    fit : GLSFit, fitted ALSGLS, or 1-D array
        Source of the trace (``nll_trace`` / ``nll_history_``): the NLL at
        the start and after each iteration.
    ax : matplotlib Axes, optional
    gap : bool, default True
        Plot ``NLL_t - NLL_final`` on a log axis (shows the convergence rate;
        the final point, zero, is omitted).  ``False`` plots the NLL itself.

    Returns
    -------
    matplotlib Axes
    """
    tr = _trace(fit)
    ax = _axes(ax)
    it = np.arange(tr.size)
    if gap and tr.size > 1:
        d = tr[:-1] - tr[-1]
        keep = d > 0
        ax.semilogy(it[:-1][keep], d[keep], "o-", label="NLL - final")
        ax.set_ylabel("NLL per row - final value")
    else:
        ax.plot(it, tr, "o-", label="NLL")
        ax.set_ylabel("NLL per row")
    ax.set_xlabel("iteration")
    ax.set_title(f"NLL trace ({tr.size - 1} iterations)")
    return ax


def _loadings(obj: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(F, D)`` of ``obj`` (a GLSFit, a fitted ALSGLS or a tuple)."""
    if isinstance(obj, GLSFit):
        return obj.F, obj.D
    if hasattr(obj, "loadings_"):
        return obj.loadings_, obj.noise_variance_
    if isinstance(obj, tuple) and len(obj) == 2:
        return np.asarray(obj[0], float), np.asarray(obj[1], float)
    raise TypeError(
        "loadings_heatmap needs a GLSFit, a fitted ALSGLS or a tuple (F, D); "
        f"got {type(obj).__name__}"
    )


def cluster_order(L: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering of the rows of ``L`` by
    correlation distance, with signs ignored (|correlation|)."""
    K = L.shape[0]
    if K < 3 or L.shape[1] == 0:
        return np.arange(K)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    Z = L / np.maximum(np.linalg.norm(L, axis=1, keepdims=True), 1e-300)
    dist = 1.0 - np.abs(Z @ Z.T)          # K x K: only for K <= MAX_HEATMAP_OUTPUTS
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, None)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def loadings_heatmap(
    fit: Any,
    *,
    ax: Any = None,
    order: str = "cluster",
    standardize: bool = True,
    labels: Sequence[str] | None = None,
    max_outputs: int = MAX_HEATMAP_OUTPUTS,
    cmap: str = "RdBu_r",
) -> Any:
    """Heat map of the loadings, outputs (rows) in clustered order by default.

    Parameters
    ----------
    fit : GLSFit, fitted ALSGLS, or tuple (F, D)
    ax : matplotlib Axes, optional
    order : {"cluster", "original"}, default "cluster"
        ``"cluster"``: hierarchical (average-linkage) clustering of the rows by
        ``1 - |correlation|`` so outputs that load alike sit together.
    standardize : bool, default True
        Show ``F_jl / sqrt(Sigma_jj)`` (the correlation of output ``j`` with
        factor ``l``, in [-1, 1]) instead of raw loadings.
    labels : sequence of str, optional
        Output names (shown when K <= 60).
    max_outputs : int, default 500
        Refuse larger K (the picture would be unreadable and the clustering
        is O(K^2)).
    cmap : str, default "RdBu_r"

    Returns
    -------
    matplotlib Axes
        Holding one ``AxesImage`` (K rows x k columns) and a colour bar.
    """
    F, D = _loadings(fit)
    K, k = F.shape
    if order not in ("cluster", "original"):
        raise ValueError(f"order must be 'cluster' or 'original', got {order!r}")
    if K > max_outputs:
        raise ValueError(f"K={K} outputs exceeds max_outputs={max_outputs}; raise it or subset")
    if k == 0:
        raise ValueError("the model has rank 0: there are no loadings to plot")
    L = F / np.sqrt(D + np.einsum("ij,ij->i", F, F))[:, None] if standardize else F
    perm = cluster_order(L) if order == "cluster" else np.arange(K)
    ax = _axes(ax)
    vmax = 1.0 if standardize else float(np.max(np.abs(L)))
    im = ax.imshow(L[perm], aspect="auto", cmap=cmap, vmin=-vmax, vmax=vmax,
                   interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label="loading / sd" if standardize else "loading")
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels([f"F{i + 1}" for i in range(k)])
    if labels is not None and K <= 60:
        ax.set_yticks(np.arange(K))
        ax.set_yticklabels([str(labels[i]) for i in perm])
    ax.set_xlabel("factor")
    ax.set_ylabel("output" + (" (clustered order)" if order == "cluster" else ""))
    ax.set_title(f"Loadings (K = {K}, k = {k})")
    return ax
