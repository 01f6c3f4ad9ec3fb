"""One pass over a Ray Data dataset (pip install 'ncfast[ray]').

Ray's actors on one side, ClassStats' update and merge on the other: the dataset is split into
one stream per worker (``Dataset.streaming_split``), a stateful actor per worker folds its
stream's batches into its own ClassStats, and the driver merges the actors' states (sent as
:func:`~ncfast.integrations.to_bytes`) by Chan's exact merge (DESIGN.md section 3). Feature
extraction itself belongs in ``map_batches`` before this (a model actor per worker):

    ds = ray.data.read_parquet("images/").map_batches(Embed, concurrency=4, batch_size=256)
    stats = ncfast.integrations.ray.class_stats(ds, "embedding", "label", dim=768, num_classes=1000)
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import ray

from ..stats import ClassStats
from ._wire import from_bytes, to_bytes


class _Accumulator:
    """One worker's statistics: fed the batches of its share of the dataset."""

    def __init__(self, num_classes: Optional[int], dim: int, options: dict) -> None:
        self.stats = ClassStats(num_classes, dim, **options)

    def consume(self, shard: Any, features: str, labels: str, batch_size: int) -> bytes:
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
            x = np.asarray(batch[features])
            if x.dtype == object:  # a column of per-row arrays
                x = np.stack(list(x))
            self.stats.update(x, np.asarray(batch[labels]))
        return to_bytes(self.stats)


def class_stats(dataset: Any, features: str, labels: str, *, dim: int, num_classes: Optional[int] = None,
                workers: int = 2, batch_size: int = 4096, **options: Any) -> ClassStats:
    """ClassStats of a Ray Data dataset's `features` column ((D,) arrays per row, or a tensor
    column) and `labels` column (ints), in one pass by `workers` actors.

    Parameters
    ----------
    dataset : ray.data.Dataset
    features, labels : str
        Column names.
    dim : int
        D (checked against every batch).
    num_classes : int, optional
        K; default: grows with the labels.
    workers : int
        Actors, each reading one share of the dataset (``streaming_split(workers, equal=False)``:
        every row exactly once).
    batch_size : int
        Rows per update inside an actor.
    **options
        Passed to ClassStats (per_class_diag, precision, nan_policy, ...).
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive int, got {workers!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    missing = [c for c in (features, labels) if c not in dataset.columns()]
    if missing:
        raise ValueError(f"columns {missing} are not in the dataset (columns: {', '.join(dataset.columns())})")
    ClassStats(num_classes, dim, **options)  # checks the options before any actor starts
    actor = ray.remote(num_cpus=0)(_Accumulator)  # the streaming executor's tasks keep the CPUs
    shards = dataset.streaming_split(workers, equal=False)
    actors = [actor.remote(num_classes, dim, options) for _ in shards]
    states = ray.get([a.consume.remote(s, features, labels, batch_size) for a, s in zip(actors, shards)])
    total = from_bytes(states[0])
    for state in states[1:]:
        total.merge(from_bytes(state))
    return total
