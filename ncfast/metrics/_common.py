"""Checks and small linear-algebra helpers shared by the score modules."""

from __future__ import annotations

import torch
from torch import Tensor

from .._memory import free_memory

# Pairwise (K x K) work is done in row blocks of at most this many entries, so that K = 100k
# classes never allocates a K^2 matrix.
PAIR_BLOCK_ENTRIES = 1 << 22


def present_classes(stats, what: str, *, min_classes: int = 2) -> Tensor:
    """Boolean mask of the classes with rows; raises if fewer than `min_classes` have any."""
    present = stats._state.counts > 0
    k = int(present.sum())
    if k < min_classes:
        raise ValueError(
            f"{what}: needs at least {min_classes} classes with rows, got {k} (update with more labelled data)"
        )
    return present


def mean_resolution(stats, present: Tensor) -> float:
    """The smallest spread of class means the statistics can tell from rounding:
    64 max(K, D) float64 eps times the RMS norm of the (uncentred) class means. Features with
    a large common offset carry their means' differences in the low digits, so two classes
    with the same rows end with centred means of about eps * |mu|, not exactly 0."""
    means = stats._state.means[present]
    k = max(1, means.shape[0])
    rel = 64 * max(k, stats.dim) * torch.finfo(torch.float64).eps
    return rel * float(means.norm()) / k**0.5


GLOBAL_MEANS = ("weighted", "unweighted")


def centre_of(stats, present: Tensor, global_mean: str = "weighted") -> Tensor:
    """(D,) the point the NC scores centre on: the count-weighted global mean sum_c n_c mu_c / N
    (``"weighted"``, Papyan et al.) or the plain mean of the class means of the classes with
    rows (``"unweighted"``, rhubarbwu/neural-collapse's default)."""
    if global_mean == "weighted":
        return stats.global_mean
    if global_mean == "unweighted":
        return stats._state.means[present].mean(dim=0)
    raise ValueError(f"global_mean: expected one of {GLOBAL_MEANS}, got {global_mean!r}")


def centred_means(stats, present: Tensor, global_mean: str = "weighted") -> Tensor:
    """(K', D) mu_c - centre over the classes with rows (see :func:`centre_of`)."""
    return stats._state.means[present] - centre_of(stats, present, global_mean)


def require_all_classes(stats, what: str) -> None:
    empty = (stats._state.counts == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"{what}: class {int(empty[0])} has no rows ({empty.numel()} empty classes); "
            "it needs every class of the classifier to be present"
        )


def as_classifier(classifier, stats, what: str) -> Tensor:
    w = torch.as_tensor(classifier, device=stats.device).to(torch.float64)
    if w.ndim != 2 or w.shape != (stats.num_classes, stats.dim):
        raise ValueError(
            f"classifier: expected shape ({stats.num_classes}, {stats.dim}) for {what}, got {tuple(w.shape)}"
        )
    return w


def row_blocks(rows: int, cols: int):
    """Yields (start, stop) over `rows` so that each block times `cols` stays bounded."""
    step = max(1, PAIR_BLOCK_ENTRIES // max(cols, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def check_dense_decomposition(dim: int, what: str, device: torch.device) -> None:
    """A D x D float64 eigendecomposition needs a few D^2 buffers; refuse clearly if they
    cannot fit rather than failing deep inside LAPACK."""
    needed = 6 * dim * dim * 8
    free = free_memory(device)
    if free is not None and needed > free:
        raise MemoryError(
            f"{what}: a {dim} x {dim} float64 eigendecomposition needs about {needed / 2**30:.1f} GiB, "
            f"only {free / 2**30:.1f} GiB free; reduce D (e.g. PCA) or move the statistics to a bigger device"
        )
