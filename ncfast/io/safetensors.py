"""Minimal .safetensors reader/writer: the format is an 8-byte little-endian header length, a
JSON header {name: {dtype, shape, data_offsets}}, then raw little-endian data. Reading by
byte range lets huge files stream row slices with plain reads (no memory map, no full load)."""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Optional

import torch

from .atomic import atomic_path
from .segment import Segment

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


class TensorEntry:
    def __init__(self, path: str, name: str, dtype: torch.dtype, shape, offset: int, nbytes: int) -> None:
        self.path, self.name, self.dtype, self.shape = path, name, dtype, tuple(shape)
        self.offset, self.nbytes = offset, nbytes


def read_header(path: str) -> tuple[Dict[str, TensorEntry], dict]:
    """Entries by tensor name, and the file's __metadata__ (strings)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size - 8, 100 << 20):
            raise ValueError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a safetensors file (header is not JSON)") from err
    metadata = header.pop("__metadata__", {}) or {}
    entries = {}
    for name, info in header.items():
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        if 8 + length + end > size:
            raise ValueError(f"{path}: truncated (tensor {name!r} runs past the end of the file)")
        entries[name] = TensorEntry(path, name, DTYPES[info["dtype"]], info["shape"], 8 + length + begin, end - begin)
    return entries, metadata


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    out = torch.empty(entry.shape, dtype=entry.dtype)
    with open(entry.path, "rb") as f:
        f.seek(entry.offset)
        view = memoryview(out.view(torch.uint8).reshape(-1).numpy())
        if f.readinto(view) != entry.nbytes:
            raise ValueError(f"{entry.path}: truncated tensor {entry.name!r}")
    return out


def save(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[dict] = None) -> None:
    """Writes atomically: to a temporary file beside `path`, then renamed over it."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        data = t.view(torch.uint8).reshape(-1).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


def safetensors_segment(spec: str) -> Segment:
    if os.path.exists(spec):
        path, name = spec, ""
    else:  # file.safetensors:NAME
        path, _, name = spec.rpartition(":")
    entries, _ = read_header(path)
    if not name:
        if len(entries) != 1:
            raise ValueError(f"{path}: holds {sorted(entries)}; name one as {path}:NAME")
        name = next(iter(entries))
    if name not in entries:
        raise ValueError(f"{path}: has no tensor {name!r} (it holds {sorted(entries)})")
    e = entries[name]
    return Segment(path, e.offset, e.shape, e.dtype)
