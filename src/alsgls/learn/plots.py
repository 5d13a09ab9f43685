"""Diagnostic plots: scree plot, NLL trace, loadings heat map.

matplotlib is an optional dependency, imported only when a plot is drawn.
Every plotting function takes a fitted model -- a :class:`~alsgls.SURResults`,
a fitted :class:`~alsgls.ALSGLS` or a :class:`~alsgls.GLSFit` (the scree plot
needs the data, so a rank-selection record rather than a bare fit) -- draws on
``ax`` (a new figure's axes, laid out so that no label is clipped, when
omitted) and returns the ``Axes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core.fit_result import GLSFit
from .rank import RankSelection, _residual_spectrum

__all__ = ["scree_plot", "nll_trace_plot", "loadings_heatmap"]

#: Above this many outputs the heat map refuses (unreadable; pass ``max_outputs``).
MAX_HEATMAP_OUTPUTS = 500
#: Legend of the Marchenko-Pastur edge of the noise eigenvalues (mathtext).
NOISE_EDGE_LABEL = r"noise edge $(1 + \sqrt{K/(N-p)})^2$"
#: Eigenvalues shown for results fitted at a fixed rank (at least 2 k + 5).
SCREE_EIGENVALUES = 15
#: Row labels of the heat map are drawn up to this many outputs.
MAX_LABELLED_OUTPUTS = 60


def _axes(ax: Any, figsize: tuple[float, float] | None = None) -> Any:
    """``ax``, or the axes of a new constrained-layout figure (labels are never
    clipped); ImportError without matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "alsgls.learn.plots needs matplotlib: pip install 'alsgls[plot]'"
        ) from exc
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _is_sur_results(obj: Any) -> bool:
    """A :class:`~alsgls.SURResults` (duck-typed: the statistics layer is not
    imported here)."""
    return isinstance(getattr(obj, "fit_result", None), GLSFit) and hasattr(obj, "model")


def _fit_record(obj: Any) -> GLSFit | None:
    """The GLSFit behind ``obj`` (a GLSFit or a SURResults), else None."""
    if isinstance(obj, GLSFit):
        return obj
    if _is_sur_results(obj):
        return obj.fit_result
    return None


def _equation_labels(obj: Any) -> list[str] | None:
    """Equation names of a SURResults (None for other objects)."""
    if _is_sur_results(obj):
        return [str(lab) for lab in obj.model.labels]
    return None


@dataclass(frozen=True)
class _Scree:
    """What the scree plot draws: eigenvalues, the noise edge and a rank."""

    eigenvalues: np.ndarray
    noise_edge: float
    rank: int
    kind: str          # "selected" (a rank-selection record) or "fitted"
    method: str
    N: int
    K: int


def _stored_selection(obj: Any) -> RankSelection | None:
    """The rank-selection record ``obj`` carries (``rank_selection_`` of an
    ALSGLS, ``rank_selection`` of results fitted with a rank method)."""
    for name in ("rank_selection_", "rank_selection"):
        sel = getattr(obj, name, None)
        if isinstance(sel, RankSelection):
            return sel
    return None


def _scree(obj: Any) -> _Scree:
    """The scree data of ``obj`` (a RankSelection, a fitted ALSGLS or SURResults)."""
    sel = obj if isinstance(obj, RankSelection) else _stored_selection(obj)
    if sel is not None:
        return _Scree(np.asarray(sel.eigenvalues), sel.noise_edge, sel.rank,
                      "selected", sel.method, sel.N, sel.K)
    if _is_sur_results(obj):
        return _fitted_scree(obj)
    raise TypeError(
        "scree_plot needs a RankSelection (from alsgls.select_rank), SURResults, or an "
        f"ALSGLS fitted with a rank-selection method; got {type(obj).__name__}"
        + (" fitted with an integer rank" if hasattr(obj, "rank_") else "")
    )


def _fitted_scree(res: Any) -> _Scree:
    """Scree data of results fitted at a fixed rank: the top eigenvalues of the
    OLS-residual correlation of their data (no fit), the rank fitted."""
    data = res.problem
    if not data.complete:
        raise ValueError("scree_plot needs complete responses: the residual correlation "
                         "of a system with missing responses is not defined; pass a "
                         "RankSelection of the complete rows instead")
    N, K, pmax = data.N, data.K, int(data.p.max())
    m = min(max(2 * res.rank + 5, SCREE_EIGENVALUES), K, N - pmax)
    lam = _residual_spectrum(data.ols()[1], m, 0)
    edge = (1.0 + np.sqrt(K / max(N - pmax, 1))) ** 2
    return _Scree(lam, edge, res.rank, "fitted", "fitted", N, K)


def scree_plot(selection: Any, *, ax: Any = None, log: bool = False) -> Any:
    """Residual-correlation eigenvalues with the selected rank and the noise edge.

    Parameters
    ----------
    selection : RankSelection, SURResults or fitted ALSGLS
        The record of :func:`alsgls.select_rank` (or an estimator fitted with
        ``rank`` set to a method).  For a :class:`~alsgls.SURResults` the
        eigenvalues are those of the OLS-residual correlation of its data
        (its rank-selection record when it was fitted with one) and the line
        marks the rank it was fitted with.
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
    sc = _scree(selection)
    ax = _axes(ax)
    lam = sc.eigenvalues
    idx = np.arange(1, lam.size + 1)
    r = sc.rank
    ax.plot(idx, lam, "o-", color="C0", mfc="white", label="eigenvalues", zorder=2)
    if r > 0:
        ax.plot(idx[:r], lam[:r], "o", color="C0", label=f"{sc.kind} (k = {r})", zorder=3)
    ax.axhline(sc.noise_edge, color="C3", ls="--", label=NOISE_EDGE_LABEL)
    ax.axvline(r + 0.5, color="k", ls=":", label=f"rank {r} ({sc.method})")
    if log:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue of residual correlation")
    ax.set_title(f"Scree plot (N = {sc.N}, K = {sc.K})")
    ax.legend(loc="best")
    return ax


def _trace(obj: Any) -> np.ndarray:
    """The NLL trace of ``obj`` (a GLSFit, SURResults, fitted ALSGLS or 1-D array)."""
    fit = _fit_record(obj)
    if fit is not None:
        return np.asarray(fit.nll_trace)
    if hasattr(obj, "nll_history_"):
        return np.asarray(obj.nll_history_)
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.ndim != 1 or arr.size == 0:
        raise TypeError(
            "nll_trace_plot needs a GLSFit, SURResults, a fitted ALSGLS or a 1-D array "
            f"of NLL values; got {type(obj).__name__}"
        )
    return arr


def nll_trace_plot(fit: Any, *, ax: Any = None, gap: bool = True) -> Any:
    """NLL per row against iteration (ALS sweeps, EM cycles or iterations of
    the missing-data solver, whichever made the trace).

    Parameters
    ----------
    fit : GLSFit, SURResults, fitted ALSGLS, or 1-D array
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
    """``(F, D)`` of ``obj`` (a GLSFit, SURResults, fitted ALSGLS or a tuple)."""
    fit = _fit_record(obj)
    if fit is not None:
        return fit.F, fit.D
    if hasattr(obj, "loadings_"):
        return obj.loadings_, obj.noise_variance_
    if isinstance(obj, tuple) and len(obj) == 2:
        return np.asarray(obj[0], float), np.asarray(obj[1], float)
    raise TypeError(
        "loadings_heatmap needs a GLSFit, SURResults, a fitted ALSGLS or a tuple (F, D); "
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
    fit : GLSFit, SURResults, fitted ALSGLS, or tuple (F, D)
    ax : matplotlib Axes, optional
    order : {"cluster", "original"}, default "cluster"
        ``"cluster"``: hierarchical (average-linkage) clustering of the rows by
        ``1 - |correlation|`` so outputs that load alike sit together.
    standardize : bool, default True
        Show ``F_jl / sqrt(Sigma_jj)`` (the correlation of output ``j`` with
        factor ``l``, in [-1, 1]) instead of raw loadings.
    labels : sequence of str, optional
        Output names, one per row of ``F`` (default: the equation labels of
        a SURResults).  Drawn when ``K <= MAX_LABELLED_OUTPUTS`` (60).
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
    names = _equation_labels(fit)
    row_name = "equation" if names is not None and labels is None else "output"
    labels = names if labels is None else [str(lab) for lab in labels]
    if labels is not None and len(labels) != K:
        raise ValueError(f"labels has {len(labels)} names but the loadings have K={K} rows")
    L = F / np.sqrt(D + np.einsum("ij,ij->i", F, F))[:, None] if standardize else F
    perm = cluster_order(L) if order == "cluster" else np.arange(K)
    shown = labels is not None and K <= MAX_LABELLED_OUTPUTS
    # a new figure grows with K so that one label per row stays legible
    ax = _axes(ax, figsize=(6.4, float(np.clip(1.2 + 0.16 * K, 3.0, 11.0))) if shown else None)
    vmax = 1.0 if standardize else float(np.max(np.abs(L)))
    im = ax.imshow(L[perm], aspect="auto", cmap=cmap, vmin=-vmax, vmax=vmax,
                   interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, label="loading / sd" if standardize else "loading")
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels([f"F{i + 1}" for i in range(k)])
    if shown:
        ax.set_yticks(np.arange(K))
        ax.set_yticklabels([labels[i] for i in perm], fontsize=8 if K > 25 else None)
    ax.set_xlabel("factor")
    ax.set_ylabel(row_name + (" (clustered order)" if order == "cluster" else ""))
    ax.set_title(f"Loadings (K = {K}, k = {k})")
    return ax
