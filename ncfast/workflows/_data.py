"""Labelled data handed to the model-level helpers (ranking, NC profiles): a pair of
tensors/arrays batched here, or an iterable of (inputs, labels) batches."""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._inputs import to_tensor
from ..io import open_array


def read_labels(labels: Any, name: str = "target_labels") -> Optional[Tensor]:
    """(N,) int tensor from a tensor, array or path (None passes through)."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        source = open_array(labels, name)
        return source.read(0, source.rows)
    y = to_tensor(labels, name)
    if y.dtype not in (torch.int32, torch.int64) or y.ndim != 1:
        raise TypeError(f"{name}: expected a 1-D int32/int64 array, got {y.dtype} of shape {tuple(y.shape)}")
    return y


def count_rows(inputs: Any) -> Optional[int]:
    """Rows a pass over `inputs` will see, for progress: a tensor/array's length, a loader's
    dataset length; None when it cannot be known up front (a generator)."""
    if isinstance(inputs, (Tensor, np.ndarray)):
        return int(inputs.shape[0])
    dataset = getattr(inputs, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def labelled_batches(inputs: Any, labels: Optional[Tensor], batch_size: int,
                     names: Tuple[str, str] = ("target_inputs", "target_labels")) -> Iterable[Tuple[Any, Tensor]]:
    """Yields (inputs, labels) batches: slices of a tensor/array with `labels`, or the items of
    an iterable of (inputs, labels) pairs or of dicts holding "labels" (Hugging Face style;
    the other keys are the inputs); then `labels` must be None."""
    xname, yname = names
    if isinstance(inputs, (Tensor, np.ndarray)):
        x = to_tensor(inputs, xname)
        if labels is None:
            raise ValueError(f"{yname}: needed with a tensor/array of inputs")
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"{yname}: {labels.shape[0]} labels for {x.shape[0]} inputs")
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], labels[start : start + batch_size]
        return
    if labels is not None:
        raise ValueError(f"{yname}: give labels inside the batches when {xname} is a loader of (inputs, labels)")
    for i, batch in enumerate(inputs):
        if isinstance(batch, Mapping) and "labels" in batch:  # a Hugging Face style batch
            yield {k: v for k, v in batch.items() if k != "labels"}, to_tensor(batch["labels"], yname)
            continue
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"{xname}: batch {i} is neither an (inputs, labels) pair nor a dict with 'labels'")
        yield batch[0], to_tensor(batch[1], yname)
