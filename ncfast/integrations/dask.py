"""One pass over a Dask collection (pip install 'ncfast[dask]').

Dask's reductions on one side, ClassStats' update and merge on the other: each partition (a
row block of a ``dask.array``, or a partition of a ``dask.bag`` of (features, labels) batches)
becomes a ClassStats, sent between workers as :func:`~ncfast.integrations.to_bytes` (W's upper
triangle), and partial results are merged in a tree by Chan's exact merge (DESIGN.md section 3),
`split_every` at a time. Works on any scheduler (threads, processes, a distributed cluster).

    import dask.array as da
    x = da.from_zarr("features.zarr")                 # (N, D), chunked by rows
    y = da.from_zarr("labels.zarr")                   # (N,)
    stats = ncfast.integrations.dask.class_stats(x, y, num_classes=1000)
"""

from __future__ import annotations

from functools import reduce
from typing import Any, Iterable, Optional, Sequence, Tuple

import dask
import dask.array as da
import numpy as np

from ..stats import ClassStats
from ._wire import from_bytes, to_bytes


def class_stats(features: "da.Array", labels: "da.Array", num_classes: Optional[int] = None, *,
                split_every: int = 8, compute: bool = True, **options: Any):
    """ClassStats of a (N, D) dask array of features and a (N,) dask array of labels.

    Parameters
    ----------
    features, labels : dask.array.Array
        Chunked by rows (a features array chunked along columns is rechunked to whole rows);
        the labels are rechunked to the features' row chunks when they differ.
    num_classes : int, optional
        K; default: grows with the labels (partitions then merge to the largest K).
    split_every : int
        How many partial states one merge task combines (the reduction tree's fan-in).
    compute : bool
        Compute now (default) and return the ClassStats, or return a ``dask.delayed`` object
        whose ``.compute()`` gives it.
    **options
        Passed to ClassStats (per_class_diag, precision, nan_policy, ...).
    """
    if not isinstance(features, da.Array) or not isinstance(labels, da.Array):
        raise TypeError(f"features, labels: expected dask arrays, got {type(features).__name__}, {type(labels).__name__}")
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features, labels: expected (N, D) and (N,), got {features.shape} and {labels.shape}")
    _check_split_every(split_every)
    dim = int(features.shape[1])
    ClassStats(num_classes, dim, **options)  # checks the options before any task runs
    features = features.rechunk({1: -1}) if features.numblocks[1] > 1 else features
    if labels.chunks[0] != features.chunks[0]:
        labels = labels.rechunk({0: features.chunks[0]})
    parts = [dask.delayed(_block_state)(x, y, num_classes, dim, options)
             for x, y in zip(features.to_delayed()[:, 0], labels.to_delayed())]
    return _finish(_tree(parts, split_every), compute)


def class_stats_from_bag(bag: Any, dim: int, num_classes: Optional[int] = None, *, split_every: int = 8,
                         compute: bool = True, **options: Any):
    """ClassStats of a ``dask.bag`` whose items are (features (B, D), labels (B,)) batches (NumPy
    arrays or tensors): each partition folds its batches into one state
    (``Bag.reduction(perpartition, aggregate)``), the states are merged exactly."""
    _check_split_every(split_every)
    ClassStats(num_classes, dim, **options)
    total = bag.reduction(lambda batches: _partition_state(batches, num_classes, dim, options),
                          lambda states: to_bytes(_merge(states)), split_every=split_every)
    return _finish(total.to_delayed(), compute)


def _check_split_every(split_every: int) -> None:
    if not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every: expected an int >= 2, got {split_every!r}")


def _block_state(x: np.ndarray, y: np.ndarray, num_classes: Optional[int], dim: int, options: dict) -> bytes:
    return to_bytes(ClassStats(num_classes, dim, **options).update(np.asarray(x), np.asarray(y)))


def _partition_state(batches: Iterable[Tuple[Any, Any]], num_classes: Optional[int], dim: int, options: dict) -> bytes:
    stats = ClassStats(num_classes, dim, **options)
    for x, y in batches:
        stats.update(x, y)
    return to_bytes(stats)


def _merge(states: Sequence[bytes]) -> ClassStats:
    """Chan's merge of serialised states, left to right (any iterable: Dask may hand a chain)."""
    states = list(states)
    return reduce(lambda acc, part: acc.merge(from_bytes(part)), states[1:], from_bytes(states[0]))


def _tree(parts: list, split_every: int):
    """Merges delayed states `split_every` at a time until one is left."""
    merge = dask.delayed(lambda *states: to_bytes(_merge(states)))
    while len(parts) > 1:
        parts = [merge(*parts[i : i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0]


def _finish(state, compute: bool):
    total = dask.delayed(from_bytes)(state)
    return total.compute() if compute else total
