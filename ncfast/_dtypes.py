"""Dtype codes shared with the C++ core (csrc/core/dtype.h: keep both in step)."""

from __future__ import annotations

import torch

FLOAT_CODES = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
}
LABEL_CODES = {
    torch.int32: 4,
    torch.int64: 5,
}
