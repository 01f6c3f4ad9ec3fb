"""The arguments every update kernel of ncfast._C takes first: pointers to the state's tensors,
its shape, and the batch (pointer, dtype code, rows, row stride; labels and their dtype code).
Keep in step with csrc/bindings.cpp and csrc/cuda/bindings_cuda.cpp."""

from __future__ import annotations

from torch import Tensor

from .._dtypes import FLOAT_CODES, LABEL_CODES
from .._state import StatsState


def state_and_batch(state: StatsState, features: Tensor, labels: Tensor) -> tuple:
    diag = state.class_diag
    return (
        state.counts.data_ptr(),
        state.means.data_ptr(),
        state.scatter.data_ptr(),
        state.class_scatter.data_ptr(),
        diag.data_ptr() if diag is not None else 0,
        state.num_classes,
        state.dim,
        features.data_ptr(),
        FLOAT_CODES[features.dtype],
        features.shape[0],
        features.stride(0),
        labels.data_ptr(),
        LABEL_CODES[labels.dtype],
    )
