"""Plots render with the Agg backend and carry the expected artists."""

import numpy as np
import pytest

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from alsgls import als_gls, simulate_sur  # noqa: E402
from alsgls.learn.plots import cluster_order, loadings_heatmap, nll_trace_plot, scree_plot  # noqa: E402
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
    assert "noise edge (1+sqrt(K/(N-p)))^2" in [t.get_text() for t in ax2.get_legend().get_texts()]
