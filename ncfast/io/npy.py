"""``.npy`` files: the header gives shape, dtype and the data's offset (NumPy format 1.0 / 2.0)."""

from __future__ import annotations

import os

import numpy as np
import torch

from .segment import Segment


def npy_segment(path: str) -> Segment:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in reader:
                raise ValueError(f"{path}: unsupported .npy version {version}")
            shape, fortran, dtype = reader[version](f)
            offset = f.tell()
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from err
    if fortran and len(shape) > 1:
        raise ValueError(f"{path}: column-major (Fortran-order) .npy is not supported; save it in C order")
    if dtype.byteorder == ">":
        raise ValueError(f"{path}: big-endian data is not supported; save it little-endian, "
                         "e.g. np.save(path, x.astype(x.dtype.newbyteorder('<')))")
    try:
        torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError as err:
        raise ValueError(f"{path}: dtype {dtype} cannot be read") from err
    segment = Segment(path, offset, tuple(shape), torch_dtype)
    expected = offset + segment.rows * segment.row_bytes
    if os.path.getsize(path) < expected:
        raise ValueError(f"{path}: truncated ({os.path.getsize(path)} bytes, the header promises {expected})")
    return segment
