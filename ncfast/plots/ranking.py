"""Several models scored on one target task (``ncfast rank --plot``, ``ModelRanking.plot``): one
models x scores grid of ranks, and with measured accuracies one score-vs-accuracy panel per
score with its rank correlations."""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional

import numpy as np

from .._format import format_column
from ..metrics.registry import HIGHER_IS_BETTER
from ._figure import pyplot, save

Table = Mapping[str, Mapping[str, Optional[float]]]


def _defined(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def ranks_and_goodness(table: Table, higher_is_better: Mapping[str, bool]):
    """Per score: {model: rank} (1 = best; models where it is undefined left out) and {model:
    position from the last rank (0) to the first (1)}. Colours follow ranks, not values: the
    values of one score can span hundreds of decades (GBC) or differ in the fourth digit."""
    ranks: Dict[str, Dict[str, int]] = {}
    goodness: Dict[str, Dict[str, float]] = {}
    for score, higher in higher_is_better.items():
        valid = {m: row[score] for m, row in table.items() if _defined(row.get(score))}
        order = sorted(valid, key=lambda m: valid[m], reverse=higher)
        ranks[score] = {m: i + 1 for i, m in enumerate(order)}
        last = max(len(order) - 1, 1)
        goodness[score] = {m: 1.0 - i / last for i, m in enumerate(order)}
    return ranks, goodness


def plot_ranking(table: Table, path: str, *, higher_is_better: Optional[Mapping[str, bool]] = None,
                 truth: Optional[Mapping[str, float]] = None,
                 correlation: Optional[Mapping[str, Mapping[str, Optional[float]]]] = None,
                 title: str = "") -> None:
    """Writes a PNG: a grid with one row per model (best mean rank on top) and one column per
    score; each cell shows the model's rank by that score (1 = best) and its value, coloured
    by the rank (light: last, dark: first), the best framed. With
    `truth`, one panel per score below it: the score (x, reversed where lower is better, so
    better is always to the right) against the measured accuracy (y), with the rank
    correlations of `correlation` in the title.

    Parameters
    ----------
    table : {model: {score: value or None}}
    path : str
        The PNG to write (atomically).
    higher_is_better : {score: bool}, optional
        The direction of each score (default: the registry's; unknown scores count as higher).
    truth : {model: float}, optional
        Measured transfer accuracy (or any quality where higher is better) of every model.
    correlation : {"kendall": {score: tau}, "weighted": {score: tau}}, optional
        As returned by :meth:`ncfast.ModelRanking.correlation` for each method.
    title : str
        Drawn above the grid.
    """
    plt = pyplot()
    models = list(table)
    if not models:
        raise ValueError("table: no models to plot")
    scores = list(next(iter(table.values())))
    if higher_is_better is None:
        higher_is_better = {s: HIGHER_IS_BETTER.get(s, True) for s in scores}
    higher_is_better = {s: bool(higher_is_better[s]) for s in scores}
    if truth is not None:
        missing = [m for m in models if m not in truth]
        if missing:
            raise ValueError(f"truth: no value for models {missing}")
    ranks, goodness = ranks_and_goodness(table, higher_is_better)
    mean_rank = {m: np.mean([ranks[s][m] for s in scores if m in ranks[s]] or [np.inf]) for m in models}
    models.sort(key=lambda m: mean_rank[m])

    cols = min(5, len(scores))
    scatter_rows = math.ceil(len(scores) / cols) if truth is not None else 0
    grid_h = 0.55 * len(models) + 1.2
    width = max(8.0, 1.25 * len(scores) + 3.0)
    fig = plt.figure(figsize=(width, grid_h + 3.3 * scatter_rows))
    outer = fig.add_gridspec(1 + scatter_rows, 1, height_ratios=[grid_h] + [3.3] * scatter_rows, hspace=0.35)
    _grid(fig, fig.add_subplot(outer[0]), table, models, scores, higher_is_better, ranks, goodness, mean_rank,
          title, truth)
    if truth is not None:
        inner = outer[1:].subgridspec(scatter_rows, cols, hspace=0.75, wspace=0.35)
        for i, score in enumerate(scores):
            ax = fig.add_subplot(inner[i // cols, i % cols])
            _scatter(ax, table, models, score, higher_is_better[score], truth, correlation, first=i % cols == 0)
    save(fig, path)
    plt.close(fig)


def _grid(fig, ax, table, models: List[str], scores: List[str], higher_is_better, ranks, goodness, mean_rank,
          title: str, truth=None) -> None:
    cmap = pyplot().get_cmap("YlGn").with_extremes(bad="#dddddd")
    values = np.full((len(models), len(scores)), np.nan)
    for j, s in enumerate(scores):
        for i, m in enumerate(models):
            if m in goodness[s]:
                values[i, j] = goodness[s][m]
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap=cmap, vmin=-0.15, vmax=1.0, aspect="auto")
    for j, s in enumerate(scores):
        shown = dict(zip(models, format_column([table[m].get(s) for m in models], decimals=3)))
        for i, m in enumerate(models):
            if m not in ranks[s]:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=9, color="0.4")
                continue
            best = ranks[s][m] == 1
            dark = values[i, j] > 0.6
            ax.text(j, i, f"{ranks[s][m]}\n{shown[m]}", ha="center", va="center", fontsize=8.5,
                    fontweight="bold" if best else "normal", color="white" if dark else "black", linespacing=1.1)
            if best:
                ax.add_patch(pyplot().Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, lw=2.2, ec="black"))
    labels = [f"{s}\n{'higher' if higher_is_better[s] else 'lower'} is better" for s in scores]
    if truth is not None:  # the measured accuracy as a last column, in another colour, ranked the same way
        j = len(scores)
        t_ranks, t_good = ranks_and_goodness({m: {"truth": truth[m]} for m in models}, {"truth": True})
        column = np.array([[t_good["truth"][m]] for m in models])
        ax.imshow(column, cmap="Blues", vmin=-0.15, vmax=1.0, aspect="auto",
                  extent=(j - 0.5, j + 0.5, len(models) - 0.5, -0.5))
        shown = dict(zip(models, format_column([truth[m] for m in models], decimals=3)))
        for i, m in enumerate(models):
            ax.text(j, i, f"{t_ranks['truth'][m]}\n{shown[m]}", ha="center", va="center", fontsize=8.5,
                    color="white" if column[i, 0] > 0.6 else "black", linespacing=1.1)
        ax.axvline(j - 0.5, color="white", linewidth=4)
        ax.set_xlim(-0.5, j + 0.5)
        ax.set_ylim(len(models) - 0.5, -0.5)
        labels.append("measured\naccuracy (truth)")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8.5)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(models)))
    ax.set_yticklabels([f"{m}\nmean rank {mean_rank[m]:.1f}" for m in models], fontsize=9)
    ax.tick_params(length=0)
    for edge in ax.spines.values():
        edge.set_visible(False)
    cbar = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.015, ticks=[0, 1])
    cbar.ax.set_yticklabels(["last", "first"], fontsize=8)
    heading = title or f"{len(models)} models ranked by {len(scores)} scores"
    ax.set_title(f"{heading}\ncell: the model's rank by that score (1 = best, framed; colour follows the rank) "
                 f"and its value", fontsize=10, pad=34)


def _scatter(ax, table, models, score: str, higher: bool, truth, correlation, first: bool) -> None:
    points = [(table[m][score], truth[m], m) for m in models if _defined(table[m].get(score))]
    label = score
    if points:
        x = np.array([p[0] for p in points], dtype=np.float64)
        y = np.array([p[1] for p in points])
        size = np.abs(x)
        if (np.all(x < 0) or np.all(x > 0)) and size.max() / size.min() > 1e3:
            # values over many decades (GBC's -1e-163 .. -1e-7): their exponents, in the same order
            negative = bool(x[0] < 0)
            x = np.log10(size)
            label = f"log10(-{score})" if negative else f"log10 {score}"
            higher = higher != negative  # for negative values, higher means smaller in size
        ax.scatter(x, y, s=36, color="#4c72b0", zorder=3)
        ax.margins(x=0.18, y=0.12)
        if not higher:
            ax.invert_xaxis()
        _label_points(ax, x, y, [p[2] for p in points])  # after the axis is final: it places in pixels
    else:
        ax.text(0.5, 0.5, "undefined for every model", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{label}  (better \u2192)", fontsize=9)
    if first:
        ax.set_ylabel("measured accuracy", fontsize=9)
    head = score
    if correlation is not None:
        k = correlation.get("kendall", {}).get(score)
        w = correlation.get("weighted", {}).get(score)
        cell = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v:+.2f}"  # noqa: E731
        head = f"{score}\nKendall \u03c4 {cell(k)}, weighted \u03c4 {cell(w)}"
    ax.set_title(head, fontsize=9)
    ax.tick_params(labelsize=7.5)
    ax.grid(True, alpha=0.3)


def _label_points(ax, x: np.ndarray, y: np.ndarray, names: List[str], size: float = 7.5) -> None:
    """Names beside the points, each at the first of four places (right above, right below,
    left above, left below) where it covers neither a name already placed nor another point
    (a name beside the wrong point would mislead more than one that overlaps)."""
    ax.autoscale_view()
    to_pixels = ax.transData.transform
    scale = ax.figure.dpi / 72.0
    height = 1.3 * size * scale
    dots = [to_pixels((xi, yi)) for xi, yi in zip(x, y)]
    r = 4 * scale
    placed: List[tuple] = [(dx - r, dy - r, dx + r, dy + r) for dx, dy in dots]
    frame = ax.get_window_extent()  # prefer places inside the panel
    for i in np.argsort(-y):
        px, py = to_pixels((x[i], y[i]))
        width = 0.62 * size * scale * len(names[i])
        free, inside = [], []
        for dx, dy, ha, va in ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
                               (-4, -3, "right", "top")):
            left = px + dx * scale - (width if ha == "right" else 0)
            bottom = py + dy * scale - (height if va == "top" else 0)
            box = (left, bottom, left + width, bottom + height)
            others = [b for j, b in enumerate(placed) if j != i]  # its own dot does not count
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in others):
                free.append((dx, dy, ha, va, box))
                if frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1:
                    inside.append(free[-1])
        dx, dy, ha, va, box = (inside or free or [(4, 3, "left", "bottom", None)])[0]
        ax.annotate(names[i], (x[i], y[i]), xytext=(dx, dy), textcoords="offset points", fontsize=size,
                    ha=ha, va=va)
        if box is not None:
            placed.append(box)
