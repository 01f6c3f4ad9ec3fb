"""Optional figures (pip install 'ncfast[plot]')."""

from __future__ import annotations

from ..io.atomic import atomic_path


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("--plot needs matplotlib: pip install 'ncfast[plot]'") from err
    return plt


def _save(fig, path: str) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def plot_geometry(stats, path: str) -> None:
    """Cosine heatmap of the centred class means, and the spectrum of Sigma_T."""
    from .. import metrics

    plt = pyplot()
    m = stats.centred_means()
    unit = m / m.norm(dim=1, keepdim=True).clamp(min=1e-300)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    im = a.imshow((unit @ unit.T).numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    a.set_title("cosine of centred class means")
    fig.colorbar(im, ax=a)
    eig = metrics.eigenvalues(stats).numpy()
    b.loglog(range(1, len(eig) + 1), eig.clip(min=1e-300))
    b.set_title("eigenvalues of Sigma_T")
    b.set_xlabel("rank")
    _save(fig, path)
    plt.close(fig)


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
    _save(fig, path)
    plt.close(fig)
