"""The figures: clustering puts similar classes side by side, class names label the heatmap,
ranks below the rounding floor are counted right, the ranking grid ranks like an independent
sort, and every figure is written as a PNG of a readable size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

import ncfast
import ncfast.plots.geometry as geometry
import ncfast.plots.ranking as ranking
from ncfast.plots import plot_geometry, plot_ranking


def blocks(groups, per_group, dim, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    group_centres = rng.standard_normal((groups, dim))
    return np.repeat(group_centres, per_group, axis=0) + spread * rng.standard_normal((groups * per_group, dim))


def cosines(m):
    m = m - m.mean(axis=0)
    u = m / np.linalg.norm(m, axis=1, keepdims=True)
    return u @ u.T


def test_cluster_order_puts_each_group_together():
    pytest.importorskip("scipy")
    means = blocks(4, 6, 32, seed=0)
    shuffle = np.random.default_rng(1).permutation(24)
    group = (np.arange(24) // 6)[shuffle]
    order, how = geometry.cluster_order(cosines(means[shuffle]))
    assert sorted(order) == list(range(24)) and how == "ordered by hierarchical clustering"
    runs = np.flatnonzero(np.diff(group[order])) + 1
    assert len(runs) == 3  # four contiguous runs, one per group


def test_numerical_rank_ignores_rounding_noise():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4000, 24))
    x[:, :3] = 0.0
    x += 1e6  # a large common offset: rounding noise in the null directions
    y = rng.integers(0, 8, 4000)
    stats = ncfast.ClassStats(8, 24).update(x, y)
    w = ncfast.metrics.eigenvalues(stats, "within").numpy()
    b = ncfast.metrics.eigenvalues(stats, "between").numpy()
    assert geometry.numerical_rank(w, 24) == 21
    assert geometry.numerical_rank(b, 24) == 7  # K - 1


def _captured(monkeypatch, module):
    figures = []
    real = module.save

    def keep(fig, path):
        figures.append(fig)
        real(fig, path)

    monkeypatch.setattr(module, "save", keep)
    return figures


def test_heatmap_is_labelled_with_class_names_in_cluster_order(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(3)
    means = blocks(3, 4, 16, seed=3) * 4
    y = rng.integers(0, 12, 6000)
    x = means[y] + rng.standard_normal((6000, 16))
    stats = ncfast.ClassStats(12, 16).update(x, y)
    names = [f"species {c}" for c in range(12)]
    figures = _captured(monkeypatch, geometry)
    plot_geometry(stats, str(tmp_path / "g.png"), names=names)
    heat = figures[0].axes[0]
    shown = [t.get_text() for t in heat.get_yticklabels()]
    order, _ = geometry.cluster_order(cosines(np.stack([x[y == c].mean(0) for c in range(12)])))
    assert shown == [names[i] for i in order]
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranks_follow_an_independent_sort_and_skip_undefined():
    table = {"a": {"nc1": 0.3, "logme": 0.569}, "b": {"nc1": 0.1, "logme": None}, "c": {"nc1": 0.2, "logme": 0.614}}
    ranks, goodness = ranking.ranks_and_goodness(table, {"nc1": False, "logme": True})
    assert ranks["nc1"] == {"b": 1, "c": 2, "a": 3}
    assert ranks["logme"] == {"c": 1, "a": 2}
    assert goodness["nc1"] == {"b": 1.0, "c": 0.5, "a": 0.0} and goodness["logme"] == {"c": 1.0, "a": 0.0}


def test_ranking_figure_with_truth(tmp_path, monkeypatch):
    table = {f"model{i}": {"nc1": 0.1 * (i + 1), "gbc": -10.0 ** (-80 + 10 * i), "rankme": 5.0 + i}
             for i in range(5)}
    truth = {f"model{i}": 0.9 - 0.1 * i for i in range(5)}
    figures = _captured(monkeypatch, ranking)
    plot_ranking(table, str(tmp_path / "r.png"), truth=truth,
                 correlation={"kendall": {"nc1": 1.0, "gbc": 1.0, "rankme": -1.0},
                              "weighted": {"nc1": 1.0, "gbc": 1.0, "rankme": -1.0}})
    fig = figures[0]
    grid, *panels = fig.axes[:1] + [a for a in fig.axes[1:] if a.get_xlabel()]
    assert [t.get_text() for t in grid.get_xticklabels()] == ["nc1\nlower is better", "gbc\nhigher is better",
                                                             "rankme\nhigher is better", "measured\naccuracy (truth)"]
    titles = [p.get_title() for p in panels]
    assert titles == ["nc1\nKendall \u03c4 +1.00, weighted \u03c4 +1.00", "gbc\nKendall \u03c4 +1.00, weighted \u03c4 +1.00",
                      "rankme\nKendall \u03c4 -1.00, weighted \u03c4 -1.00"]
    assert panels[0].xaxis_inverted() and not panels[2].xaxis_inverted()
    assert panels[1].get_xlabel().startswith("log10(-gbc)") and panels[1].xaxis_inverted()
    width, height = fig.get_size_inches() * 120
    assert width < 2400 and height < 2400
    with pytest.raises(ValueError, match="truth: no value for models"):
        plot_ranking(table, str(tmp_path / "r2.png"), truth={"model0": 1.0})


def test_model_ranking_plot(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 600)
    feats = {f"m{i}": torch.from_numpy(rng.standard_normal((3, 6))[y] * 3 + s * rng.standard_normal((600, 6)))
             for i, s in enumerate((0.5, 1.0, 2.0))}
    result = ncfast.rank_models(feats, target_labels=torch.from_numpy(y), scores=["nc1", "logme"])
    result.plot(str(tmp_path / "r.png"), truth={"m0": 0.9, "m1": 0.8, "m2": 0.5})
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_point_names_cover_no_other_point(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    models = [f"model_{i}" for i in range(8)]
    truth = {m: 0.9 - 0.02 * i + 0.005 * rng.standard_normal() for i, m in enumerate(models)}  # close together
    table = {m: {"nc1": 0.5 + 0.05 * i + 0.01 * rng.standard_normal(), "logme": 1.0 - 0.03 * i} for i, m in
             enumerate(models)}
    figures = _captured(monkeypatch, ranking)
    plot_ranking(table, str(tmp_path / "r.png"), truth=truth)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures[0]
    canvas = FigureCanvasAgg(fig)  # the figure was closed after saving: give it a canvas again
    canvas.draw()
    renderer = canvas.get_renderer()
    panels = [a for a in fig.axes[1:] if a.texts]
    assert len(panels) == 2
    for ax in panels:
        dots = {t.get_text(): ax.transData.transform(t.xy) for t in ax.texts}
        for text in ax.texts:
            box = text.get_window_extent(renderer)
            for name, (x, y) in dots.items():
                if name != text.get_text():
                    assert not (box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1), (text.get_text(), name)
