"""``.pt`` / ``.pth`` files written by ``torch.save``: a tensor, or a dict / list / tuple of
tensors selected with ``file.pt:key`` (``:0`` for a position, ``:a/b`` to go deeper).

The zip format (every torch.save since PyTorch 1.6) is opened with ``weights_only=True``
(only tensors and plain containers are unpickled) on the meta device: nothing but the small
pickle is read, and each tensor's storage offset in the file makes it a Segment, read by
byte range like a .npy file. Where that offset is not available (a tensor that is a
non-contiguous view), rows are copied from a ``mmap=True`` load that is dropped after each
read. The legacy format (before 1.6) has no index of its storages: it is refused with the
one line that re-saves it.
"""

from __future__ import annotations

import os
import pickle
import struct
import warnings
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .part import Part, element_size, open_regular, reason, row_elements, unreadable
from .segment import Segment

# pickle protocol 2, then torch's legacy magic number 0x1950a86a20f9469cfc6c as a LONG1
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def is_torch_zip(names: List[str]) -> bool:
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def legacy_error(path: str) -> ValueError:
    return ValueError(f"{path}: written by torch.save in the legacy format (before PyTorch 1.6), which cannot be "
                      "read without loading it whole; re-save it once: "
                      f"torch.save(torch.load({path!r}, weights_only=True), 'new.pt')")


def _load(path: str, **kwargs) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged pickle gets our one-line error, not torch's warnings too
            return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: holds objects other than tensors, lists, tuples and dicts, which ncfast does not "
                         f"unpickle ({reason(err)[:160]}); save plain tensors, e.g. torch.save({{'features': x, "
                         "'labels': y}, path)") from None
    except Exception as err:  # torch raises RuntimeError, AssertionError, EOFError, ... on a damaged archive
        raise unreadable(path, "torch.save file", err) from None


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:20]}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def _child(obj: Any, step: str) -> Any:
    if isinstance(obj, dict):
        if step in obj:
            return obj[step]
        if step.lstrip("-").isdigit() and int(step) in obj:
            return obj[int(step)]
        raise LookupError(step)
    if isinstance(obj, (list, tuple)) and step.isdigit() and int(step) < len(obj):
        return obj[int(step)]
    raise LookupError(step)


def select(path: str, obj: Any, key: Optional[str]) -> Tensor:
    """The tensor at `key` in a loaded object; the only tensor at the top when `key` is None."""
    if key is None:
        if isinstance(obj, Tensor):
            return obj
        values = list(obj.values()) if isinstance(obj, dict) else list(obj) if isinstance(obj, (list, tuple)) else []
        tensors = [v for v in values if isinstance(v, Tensor)]
        if len(values) == 1 and len(tensors) == 1:
            return tensors[0]
        raise ValueError(f"{path}: holds {_describe(obj)}; name the tensor as {path}:KEY (:0 for a position)")
    try:
        found = _child(obj, key)
    except LookupError:
        found = obj
        try:
            for step in key.split("/"):
                found = _child(found, step)
        except LookupError:
            raise ValueError(f"{path}: has no {key!r} (it holds {_describe(obj)})") from None
    if not isinstance(found, Tensor):
        raise ValueError(f"{path}:{key} is {_describe(found)}, not a tensor")
    return found


def _layout(path: str) -> Tuple[str, Dict[int, int]]:
    """The archive's byte order, and {file offset: size} of every stored storage record, read
    from the zip's own headers (so an offset torch computed is checked, not trusted)."""
    spans: Dict[int, int] = {}
    with open_regular(path) as f, zipfile.ZipFile(f) as archive:
        names = [n for n in archive.namelist() if n == "byteorder" or n.endswith("/byteorder")]
        order = archive.read(names[0]).decode("ascii", "replace") if names else "little"
        for info in archive.infolist():
            if "/data/" in info.filename and info.compress_type == zipfile.ZIP_STORED:
                spans[data_offset(path, f, info)] = info.file_size
    return order, spans


def data_offset(path: str, f, info: zipfile.ZipInfo) -> int:
    """Where a zip record's bytes begin, from its local header, which must name the same
    record as the central directory (else two entries could claim the same bytes)."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"{path}: damaged zip archive (no local header for {info.filename!r})")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    if f.read(name_len) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
        raise ValueError(f"{path}: damaged zip archive (the local header of {info.filename!r} names another record)")
    return info.header_offset + 30 + name_len + extra_len


def pt_part(path: str, key: Optional[str]) -> Part:
    try:
        order, spans = _layout(path)
    except Exception as err:  # zipfile raises BadZipFile, NotImplementedError, struct.error, ...
        raise unreadable(path, "torch.save file", err) from None
    if order != "little":
        raise ValueError(f"{path}: saved on a {order}-endian machine; load it there and save the tensor with "
                         "np.save(path, x.numpy()) (little-endian)")
    t = select(path, _load(path, map_location="meta"), key)
    if t.layout != torch.strided:
        raise ValueError(f"{path}: {key or 'the tensor'} is a {t.layout} tensor; save it dense (x.to_dense())")
    if t.ndim == 0:
        raise ValueError(f"{path}: {key or 'the tensor'} is a scalar, not rows")
    shape = tuple(t.shape)
    storage = t.untyped_storage()
    base = getattr(storage, "_checkpoint_offset", None)
    if isinstance(base, int) and spans.get(base) == storage.nbytes() and t.is_contiguous():
        offset = base + t.storage_offset() * element_size(t.dtype)
        end = offset + shape[0] * row_elements(shape) * element_size(t.dtype)
        if end > os.path.getsize(path):
            raise ValueError(f"{path}: truncated (tensor {key or ''!r} ends at byte {end})")
        return Segment(path, offset, shape, t.dtype)
    return MappedTensor(path, key, shape, t.dtype)


class MappedTensor(Part):
    """Rows copied from a memory-mapped load, which is dropped after each read so resident
    memory stays bounded by the chunk."""

    def __init__(self, path: str, key: Optional[str], shape, dtype: torch.dtype) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        t = select(self.path, _load(self.path, mmap=True, map_location="cpu"), self.key)
        if tuple(t.shape) != self.shape or t.dtype != self.dtype:
            raise ValueError(f"{self.path}: changed while it was read")
        out.view(-1)[: (stop - start) * row_elements(self.shape)].view((stop - start,) + self.shape[1:]).copy_(
            t[start:stop])
