"""The class-mean geometry of one set of statistics (``ncfast score --plot``): cosines of the
centred class means ordered by hierarchical clustering, their distribution against the simplex
ETF's, and the spectra of Sigma_W and Sigma_B with their numerical ranks."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import metrics
from ._figure import pyplot, save

MAX_HEATMAP_CLASSES = 2000  # beyond this a random subset is drawn (K x K cells would not be visible)
MAX_TICK_LABELS = 60


def cluster_order(cosine: np.ndarray) -> Tuple[np.ndarray, str]:
    """Row order that puts similar class means side by side: the leaves of an average-linkage
    tree on the cosine distance 1 - cos, optimally ordered (scipy); label order without scipy.
    Returns (order, how it was made)."""
    k = cosine.shape[0]
    if k < 3:
        return np.arange(k), "label order"
    try:
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform
    except ImportError:
        return np.arange(k), "label order (install scipy to cluster)"
    distance = np.clip(1.0 - cosine, 0.0, 2.0)
    distance = 0.5 * (distance + distance.T)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average", optimal_ordering=k <= 500)
    return leaves_list(tree), "ordered by hierarchical clustering"


def spectrum_floor(eig: np.ndarray, dim: int) -> float:
    """The relative floor below which eigenvalues are rounding noise: D * float64 eps * lambda_max
    (the cut of ``metrics.alpha_req``)."""
    top = float(eig.max()) if eig.size else 0.0
    return dim * np.finfo(np.float64).eps * top


def numerical_rank(eig: np.ndarray, dim: int) -> int:
    """Eigenvalues above :func:`spectrum_floor`."""
    return int((eig > spectrum_floor(eig, dim)).sum())


def plot_geometry(stats, path: str, *, names: Optional[Sequence[str]] = None, seed: int = 0) -> None:
    """Writes a PNG of three panels: (1) cosine heatmap of the centred class means, ordered by
    hierarchical clustering so that groups of similar classes show as blocks; (2) histogram
    of the off-diagonal cosines with the simplex ETF's value -1/(K-1) marked (NC2: all pairs
    at that value); (3) eigenvalues of Sigma_W and Sigma_B on a log axis, clipped at the
    relative floor D * eps * lambda_max (smaller ones are rounding noise and are not drawn), with
    each numerical rank marked.

    Parameters
    ----------
    stats : ClassStats
        With at least 2 classes that have rows.
    path : str
        The PNG to write (atomically).
    names : sequence of str, optional
        Class names in label order (``names[c]`` for label c), used as tick labels.
    seed : int
        Picks the random subset of classes drawn when more than 2000 have rows.
    """
    plt = pyplot()
    present = torch.nonzero(stats.counts > 0).flatten().numpy()
    if present.size < 2:
        raise ValueError(f"plot: needs at least 2 classes with rows, got {present.size}")
    means = stats.centred_means().cpu()
    unit = means / means.norm(dim=1, keepdim=True).clamp(min=1e-300)
    cosine = (unit @ unit.T).numpy()
    k = present.size

    fig = plt.figure(figsize=(16, 5.6))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.25, 0.8, 1.0], wspace=0.38)
    _heatmap(fig, fig.add_subplot(grid[0]), cosine, present, names, seed)
    _cosine_histogram(fig.add_subplot(grid[1]), cosine)
    _spectra(fig.add_subplot(grid[2]), stats, k)
    fig.suptitle(f"Class-mean geometry: {stats.num_samples:,} rows, {stats.dim} dims, {k} classes with rows",
                 fontsize=13, y=1.0)
    save(fig, path)
    plt.close(fig)


def _heatmap(fig, ax, cosine: np.ndarray, present: np.ndarray, names, seed: int) -> None:
    k = cosine.shape[0]
    subset = np.arange(k)
    note = ""
    if k > MAX_HEATMAP_CLASSES:
        subset = np.sort(np.random.default_rng(seed).choice(k, MAX_HEATMAP_CLASSES, replace=False))
        note = f", {MAX_HEATMAP_CLASSES:,} random classes of {k:,}"
    sub = cosine[np.ix_(subset, subset)]
    order, how = cluster_order(sub)
    sub = sub[np.ix_(order, order)]
    labels = present[subset][order]
    im = ax.imshow(sub, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(f"cosine of centred class means\n({how}{note})", fontsize=11)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    shown = len(labels)
    step = max(1, int(np.ceil(shown / MAX_TICK_LABELS)))
    ticks = np.arange(0, shown, step)
    text = [_class_name(int(labels[t]), names) for t in ticks]
    size = 8 if shown <= 30 else 6
    ax.set_xticks(ticks)
    ax.set_xticklabels(text, rotation=90, fontsize=size)
    ax.set_yticks(ticks)
    ax.set_yticklabels(text, fontsize=size)
    if names is None:
        ax.set_xlabel("class label" + (f" (one in {step} shown)" if step > 1 else ""))


def _class_name(label: int, names) -> str:
    if names is None:
        return str(label)
    name = str(names[label])
    return name if len(name) <= 18 else name[:17] + "…"


def _cosine_histogram(ax, cosine: np.ndarray) -> None:
    k = cosine.shape[0]
    off = cosine[np.triu_indices(k, 1)]
    ax.hist(off, bins=80, range=(-1, 1), color="#4c72b0", alpha=0.85)
    etf = -1.0 / (k - 1)
    ax.axvline(etf, color="#c44e52", linestyle="--", linewidth=1.5, label=f"simplex ETF: -1/(K-1) = {etf:.3f}")
    ax.plot([], [], " ", label=f"spread: std = {off.std():.3f} (0 at the ETF)")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("cosine of a pair of class means")
    ax.set_ylabel("class pairs")
    ax.set_title("pairwise cosines (neural collapse NC2:\nall at the ETF value)", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")


def _spectra(ax, stats, k: int) -> None:
    d = stats.dim
    curves: List[Tuple[str, np.ndarray, str]] = [
        ("Sigma_W (within-class)", metrics.eigenvalues(stats, "within").cpu().numpy(), "#4c72b0"),
        ("Sigma_B (between-class)", metrics.eigenvalues(stats, "between").cpu().numpy(), "#dd8452"),
    ]
    lowest, highest = np.inf, 0.0
    index = np.arange(1, d + 1)
    for label, eig, colour in curves:
        kept = eig > spectrum_floor(eig, d)
        rank = numerical_rank(eig, d)
        if rank == 0:
            continue
        lowest, highest = min(lowest, float(eig[kept].min())), max(highest, float(eig[kept].max()))
        ax.loglog(index[kept], eig[kept], color=colour, linewidth=1.8, marker="." if rank <= 60 else None,
                    label=f"{label}: rank {rank}")
        if rank < d:
            ax.axvline(rank + 0.5, color=colour, linestyle=":", linewidth=1.3)
    if highest == 0.0:
        ax.text(0.5, 0.5, "all eigenvalues are 0", ha="center", transform=ax.transAxes)
        return
    ax.set_ylim(lowest / 2, highest * 8)
    ax.text(0.98, 0.02, f"eigenvalues below {d} x eps x the largest\n(rounding noise) are not drawn",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.35")
    ax.set_xlim(0.8, d * 1.25)
    ax.set_xlabel("eigenvalue index (largest first); dotted: numerical rank")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"spectra of the covariances\n(Sigma_B has rank at most K - 1 = {k - 1})", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
