"""Several models scored on one target task."""

from __future__ import annotations

from ._figure import pyplot, save


def plot_ranking(table: dict, path: str) -> None:
    """One panel per score, models as bars."""
    plt = pyplot()
    scores = list(next(iter(table.values())))
    fig, axes = plt.subplots(1, len(scores), figsize=(3 * len(scores), 3.5), squeeze=False)
    for ax, score in zip(axes[0], scores):
        names = [m for m in table if table[m][score] is not None]
        ax.bar(names, [table[m][score] for m in names])
        ax.set_title(score)
        ax.tick_params(axis="x", rotation=45)
    save(fig, path)
    plt.close(fig)
