"""Minimal .safetensors reader/writer: the format is an 8-byte little-endian header length, a
JSON header {name: {dtype, shape, data_offsets}}, then raw little-endian data. Reading by
byte range lets huge files stream row slices with plain reads (no memory map, no full load).

The header is checked whole before anything is read or allocated: every entry is an object
with a known dtype, a shape of non-negative integers and two data offsets inside the data
section, whose span is exactly shape x itemsize, and no two tensors overlap.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict, Optional

import torch

from .atomic import atomic_file
from .part import open_regular, pick_entry, read_exactly
from .segment import Segment

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 << 20  # the reference implementation's limit


class TensorEntry:
    def __init__(self, path: str, name: str, dtype: torch.dtype, shape, offset: int, nbytes: int) -> None:
        self.path, self.name, self.dtype, self.shape = path, name, dtype, tuple(shape)
        self.offset, self.nbytes = offset, nbytes


def looks_like(head: bytes, size: int) -> bool:
    """Whether a file of `size` bytes starting with `head` (16+ bytes) has a safetensors header."""
    if len(head) < 9 or size < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= min(size - 8, MAX_HEADER) and head[8:9] in (b"{", b"[", b" ", b"\n")


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse(path: str, raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError(f"{path}: not a safetensors file (the JSON header is nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a safetensors file (the header is not valid JSON: {reason})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (the header is a JSON {type(header).__name__}, "
                         "not an object of tensors)")
    return header


def _entry(path: str, name: str, info: Any, data_start: int, data_bytes: int) -> TensorEntry:
    what = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise ValueError(f"{what}: its entry is a {type(info).__name__}, not an object with dtype, shape "
                         "and data_offsets")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise ValueError(f"{what}: its entry has no {field}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"{what} has unsupported dtype {dtype!r} (ncfast reads {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise ValueError(f"{what}: shape must be a list of non-negative integers, got {shape!r:.80}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise ValueError(f"{what}: data_offsets must be two non-negative integers [begin, end], got {offsets!r:.80}")
    begin, end = offsets
    if begin > end:
        raise ValueError(f"{what}: data_offsets [{begin}, {end}] end before they begin")
    if end > data_bytes:
        raise ValueError(f"{path}: truncated or corrupt (tensor {name!r} ends at byte {end} of a "
                         f"{data_bytes}-byte data section)")
    need = torch.empty((), dtype=DTYPES[dtype]).element_size()
    for s in shape:
        need *= s
    if need != end - begin:
        raise ValueError(f"{what} has shape {shape} of {dtype} ({need} bytes) but its data_offsets "
                         f"span {end - begin} bytes")
    return TensorEntry(path, name, DTYPES[dtype], shape, data_start + begin, end - begin)


def read_header(path: str) -> tuple[Dict[str, TensorEntry], dict]:
    """Entries by tensor name, and the file's __metadata__ (strings). ValueError naming the
    file and what is wrong for anything that is not a well-formed safetensors file."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        raw = bytearray(8)
        if size < 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        read_exactly(f, memoryview(raw), path, "header")
        (length,) = struct.unpack("<Q", raw)
        if length > size - 8:
            raise ValueError(f"{path}: not a safetensors file (header length {length} runs past the end "
                             f"of the {size}-byte file)")
        if length > MAX_HEADER:
            raise ValueError(f"{path}: not a safetensors file (header length {length} is over {MAX_HEADER})")
        text = bytearray(length)
        read_exactly(f, memoryview(text), path, "header")
    header = _parse(path, bytes(text))
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ must be an object of strings")
    data_start = 8 + length
    entries = {name: _entry(path, name, info, data_start, size - data_start) for name, info in header.items()}
    spans = sorted((e.offset, e.offset + e.nbytes, e.name) for e in entries.values() if e.nbytes)
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise ValueError(f"{path}: tensors {a!r} and {b!r} overlap in the data section")
    return entries, metadata


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    out = torch.empty(entry.shape, dtype=entry.dtype)
    if entry.nbytes:
        with open_regular(entry.path) as f:
            f.seek(entry.offset)
            view = memoryview(out.view(torch.uint8).reshape(-1).numpy())
            read_exactly(f, view, entry.path, f"tensor {entry.name!r}")
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
    with atomic_file(path) as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


def safetensors_part(path: str, key: Optional[str]) -> Segment:
    """The tensor `key` of a safetensors file (the only one when `key` is None) as a Segment."""
    entries, _ = read_header(path)
    key = pick_entry(path, entries, key, "tensor")
    e = entries[key]
    if not e.shape:
        raise ValueError(f"{path}: tensor {key!r} is a scalar, not rows")
    return Segment(path, e.offset, e.shape, e.dtype)
