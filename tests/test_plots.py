"""Plots render with the Agg backend and carry the expected artists."""

import numpy as np
import pytest

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from alsgls import SUR, als_gls, datasets, simulate_sur  # noqa: E402
from alsgls.learn.plots import (  # noqa: E402
    NOISE_EDGE_LABEL,
    cluster_order,
    loadings_heatmap,
    nll_trace_plot,
    scree_plot,
)
from alsgls.learn.rank import select_rank  # noqa: E402


@pytest.fixture(scope="module")
def system():
    return simulate_sur(N=300, K=40, p=2, k=3, seed=3, factor_strength=0.6)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_scree_plot(system):
    Xs, Y, _ = system
    sel = select_rank(Xs, Y, max_rank=6)
    ax = scree_plot(sel)
    lines = ax.get_lines()
    # eigenvalue curve, selected markers, noise-edge hline, rank vline
    assert len(lines) == 4
    np.testing.assert_allclose(lines[0].get_ydata(), sel.eigenvalues)
    np.testing.assert_allclose(lines[1].get_xdata(), [1, 2, 3])
    assert lines[2].get_ydata()[0] == pytest.approx(sel.noise_edge)
    assert lines[3].get_xdata()[0] == pytest.approx(3.5)
    assert ax.get_legend() is not None


def test_scree_plot_from_estimator_and_given_axes(system):
    pytest.importorskip("sklearn")
    from alsgls.learn.estimator import ALSGLS

    Xs, Y, _ = system
    fig, ax = plt.subplots()
    assert scree_plot(ALSGLS().fit(Xs, Y), ax=ax, log=True) is ax
    assert ax.get_yscale() == "log"
    with pytest.raises(TypeError, match="fitted with an integer rank"):
        scree_plot(ALSGLS(rank=1).fit(Xs, Y))


def test_nll_trace_plot(system):
    Xs, Y, _ = system
    fit = als_gls(Xs, Y, 3)
    ax = nll_trace_plot(fit)
    (line,) = ax.get_lines()
    d = fit.nll_trace[:-1] - fit.nll_trace[-1]
    np.testing.assert_allclose(line.get_ydata(), d[d > 0])
    assert ax.get_yscale() == "log"
    ax2 = nll_trace_plot(fit.nll_trace, gap=False)
    np.testing.assert_allclose(ax2.get_lines()[0].get_ydata(), fit.nll_trace)
    with pytest.raises(TypeError, match="nll_trace_plot needs"):
        nll_trace_plot("nope")


def test_loadings_heatmap_clusters_blocks():
    """Two blocks of outputs loading on different factors end up contiguous."""
    rng = np.random.default_rng(0)
    F = np.zeros((20, 2))
    F[::2, 0] = 1 + 0.1 * rng.random(10)
    F[1::2, 1] = -(1 + 0.1 * rng.random(10))
    D = np.ones(20)
    order = cluster_order(F)
    groups = order % 2
    assert np.count_nonzero(np.diff(groups)) == 1  # one switch between blocks
    ax = loadings_heatmap((F, D), labels=[f"y{j}" for j in range(20)])
    (im,) = ax.get_images()
    assert isinstance(im, AxesImage)
    assert im.get_array().shape == (20, 2)
    L = F / np.sqrt(D + (F**2).sum(1))[:, None]  # correlation of output and factor
    np.testing.assert_allclose(im.get_array(), L[order], rtol=1e-12)
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"y{j}" for j in order]
    assert len(ax.figure.axes) == 2  # the heat map and its colour bar


def test_loadings_heatmap_bad_input(system):
    Xs, Y, _ = system
    fit = als_gls(Xs, Y, 0)
    with pytest.raises(ValueError, match="rank 0"):
        loadings_heatmap(fit)
    with pytest.raises(ValueError, match="max_outputs"):
        loadings_heatmap((np.ones((30, 1)), np.ones(30)), max_outputs=10)
    with pytest.raises(ValueError, match="order must be"):
        loadings_heatmap((np.ones((3, 1)), np.ones(3)), order="random")


def test_labels_name_iterations_and_the_noise_edge(system):
    """The trace may come from ALS sweeps or EM iterations: the axis says
    'iteration'; the noise edge is (1 + sqrt(K/(N-p)))^2, as its label says."""
    Xs, Y, _ = system
    ax = nll_trace_plot(als_gls(Xs, Y, 3))
    assert ax.get_xlabel() == "iteration" and "iterations" in ax.get_title()
    ax2 = scree_plot(select_rank(Xs, Y, max_rank=6))
    assert NOISE_EDGE_LABEL in [t.get_text() for t in ax2.get_legend().get_texts()]
    assert "sqrt{K/(N-p)}" in NOISE_EDGE_LABEL


# -- SUR results, equation labels, layout ------------------------------------

@pytest.fixture(scope="module")
def sur_results(system):
    Xs, Y, _ = system
    return SUR.from_arrays(Xs, Y, rank=3).fit()


@pytest.fixture(scope="module")
def grunfeld():
    pytest.importorskip("pandas")
    return SUR(datasets.grunfeld_equations(), rank=2).fit()


def test_every_plot_takes_sur_results(sur_results):
    res = sur_results
    ax = nll_trace_plot(res)
    d = res.nll_trace[:-1] - res.nll_trace[-1]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), d[d > 0])

    ax = loadings_heatmap(res, order="original")
    F, D = res.fit_result.F, res.fit_result.D
    L = F / np.sqrt(D + (F**2).sum(1))[:, None]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), L, rtol=1e-12)

    ax = scree_plot(res)
    eig, fitted, edge, rank = ax.get_lines()
    # oracle: the eigenvalues of the dense K x K correlation matrix of the OLS
    # residuals (about zero: the errors have mean zero, as in rank selection)
    Rt = res.problem.ols()[1]
    Z = Rt / np.linalg.norm(Rt, axis=1, keepdims=True)
    dense = np.linalg.eigvalsh(Z @ Z.T)[::-1]
    np.testing.assert_allclose(eig.get_ydata(), dense[:eig.get_ydata().size], rtol=1e-8)
    np.testing.assert_allclose(fitted.get_xdata(), [1, 2, 3])       # the fitted rank, 3
    assert rank.get_label() == "rank 3 (fitted)"
    K, N, p = 40, 300, 2
    assert edge.get_ydata()[0] == pytest.approx((1 + np.sqrt(K / (N - p))) ** 2)


def test_loadings_heatmap_labels_rows_with_equation_names(grunfeld):
    ax = loadings_heatmap(grunfeld)
    perm = cluster_order(grunfeld.fit_result.F / np.sqrt(
        grunfeld.fit_result.D + (grunfeld.fit_result.F ** 2).sum(1))[:, None])
    labels = list(grunfeld.model.labels)
    assert [t.get_text() for t in ax.get_yticklabels()] == [labels[i] for i in perm]
    assert ax.get_ylabel().startswith("equation")
    # explicit labels win; a wrong count is refused
    ax = loadings_heatmap(grunfeld, labels=list("abcde"), order="original")
    assert [t.get_text() for t in ax.get_yticklabels()] == list("abcde")
    with pytest.raises(ValueError, match="labels has 2 names"):
        loadings_heatmap(grunfeld, labels=["a", "b"])


def _inside(fig, artist):
    fig.canvas.draw()
    box = artist.get_window_extent(fig.canvas.get_renderer())
    W, H = fig.bbox.width, fig.bbox.height
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= W and box.y1 <= H


@pytest.mark.parametrize("size", [(4.0, 3.0), (6.4, 4.8)])
def test_new_figures_do_not_clip_their_labels(system, sur_results, size):
    """A new figure is laid out (constrained layout): the y label of the NLL
    trace, whose log-axis tick labels are wide, stays inside the figure."""
    with plt.rc_context({"figure.figsize": size}):
        for ax in (nll_trace_plot(sur_results), scree_plot(sur_results),
                   loadings_heatmap(sur_results)):
            for label in (ax.yaxis.label, ax.xaxis.label, ax.title):
                assert _inside(ax.figure, label), (ax.get_title(), label.get_text())


def test_scree_plot_refuses_results_with_missing_responses(system):
    Xs, Y, _ = system
    Y = Y.copy()
    Y[:20, 0] = np.nan
    res = SUR.from_arrays(Xs, Y, rank=1).fit()
    with pytest.raises(ValueError, match="complete responses"):
        scree_plot(res)
    assert nll_trace_plot(res) is not None and loadings_heatmap(res) is not None


def test_scree_plot_of_results_with_a_selected_rank(system):
    """SUR(rank="auto") keeps its RankSelection: the plot shows that record."""
    Xs, Y, _ = system
    res = SUR.from_arrays(Xs, Y, rank="auto").fit()
    sel = res.rank_selection
    ax = scree_plot(res)
    eig, selected, edge, rank = ax.get_lines()
    np.testing.assert_allclose(eig.get_ydata(), sel.eigenvalues)
    assert selected.get_label() == f"selected (k = {sel.rank})"
    assert rank.get_label() == f"rank {sel.rank} ({sel.method})"
