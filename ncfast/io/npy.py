"""``.npy`` files: the header gives shape, dtype and the data's offset (NumPy format 1.0 /
2.0 / 3.0). The same header parser serves the members of ``.npz`` archives."""

from __future__ import annotations

import os
from typing import BinaryIO, Tuple

import numpy as np
import torch

from .part import element_size, open_regular, row_elements
from .segment import Segment

MAGIC = b"\x93NUMPY"
_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
            (3, 0): np.lib.format.read_array_header_2_0}  # 3.0 only allows utf-8 field names


def read_header(f: BinaryIO, where: str) -> Tuple[Tuple[int, ...], torch.dtype]:
    """(shape, dtype) of the .npy array that starts at `f`'s position; afterwards `f` is at
    its first data byte. ValueError naming `where` for anything ncfast cannot read."""
    try:
        version = np.lib.format.read_magic(f)
        if version not in _READERS:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = _READERS[version](f)
    except Exception as err:  # NumPy's header parser raises ValueError, SyntaxError, TokenError, ...
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ValueError(f"{where}: not a readable .npy file ({reason})") from None
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"{where}: not a readable .npy file (shape {shape!r})")
    if fortran and len(shape) > 1:
        raise ValueError(f"{where}: column-major (Fortran-order) .npy is not supported; save it in C order, "
                         "e.g. np.save(path, np.ascontiguousarray(x))")
    if dtype.byteorder == ">":
        raise ValueError(f"{where}: big-endian data is not supported; save it little-endian, "
                         "e.g. np.save(path, x.astype(x.dtype.newbyteorder('<')))")
    try:
        torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: dtype {dtype} cannot be read; convert it first, e.g. "
                         "np.save(path, x.astype(np.float32))") from err
    if len(shape) == 0:
        raise ValueError(f"{where}: holds a scalar, not rows")
    return tuple(shape), torch_dtype


def nbytes(shape: Tuple[int, ...], dtype: torch.dtype) -> int:
    return shape[0] * row_elements(shape) * element_size(dtype)


def npy_segment(path: str) -> Segment:
    """The array of a .npy file as a Segment (nothing but the header is read)."""
    with open_regular(path) as f:
        shape, dtype = read_header(f, path)
        offset = f.tell()
    expected = offset + nbytes(shape, dtype)
    size = os.path.getsize(path)
    if size < expected:
        raise ValueError(f"{path}: truncated ({size} bytes, the header promises {expected})")
    return Segment(path, offset, shape, dtype)
