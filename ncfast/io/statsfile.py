"""The statistics file: the tensors of a state dict and a JSON metadata record, as
``.safetensors`` (portable, no pickle; the default) or ``.pt`` (``torch.save``, read back with
``weights_only=True``). Written atomically. Knows the layout, not ClassStats.

Every file carries a SHA-256 digest of its metadata (canonical JSON) and tensors (name, dtype,
shape, bytes), checked on reading: a file edited or damaged after it was written is refused. A
file's tensors are checked against its size before any is read, so a few bytes can never
claim gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, Tuple

import torch
from torch import Tensor

from . import safetensors
from .atomic import atomic_file

TENSORS = ("counts", "means", "scatter", "class_scatter", "class_diag", "class_gram", "moment_centre", "fourth_moment",
           "third_moment")
_DIGEST_KEY = "ncfast_sha256"  # safetensors metadata key, and the .pt blob's key
_TAG = b"ncfast statistics v1\0"


def canonical_json(meta: Any) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(tensors: Dict[str, Tensor], meta: dict) -> str:
    """SHA-256 over the canonical JSON of `meta` and each tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(_TAG)
    h.update(canonical_json(meta))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(canonical_json([name, str(t.dtype), list(t.shape)]))
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


class _RecordingWriter:
    """A file wrapper that keeps the OSError of a failed write: torch.save reports any write error
    as an unrelated RuntimeError, this lets the real one (e.g. ENOSPC) reach the caller."""

    def __init__(self, f) -> None:
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._f.flush()


def write(path: str, tensors: Dict[str, Tensor], meta: dict) -> None:
    """Writes `tensors` and the JSON-serialisable `meta` to `path` atomically (.pt: torch.save,
    anything else: safetensors), with their digest."""
    path = os.fspath(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    json.dumps(meta)  # TypeError now for metadata that cannot be written, before any file exists
    checksum = digest(tensors, meta)
    if path.endswith(".pt"):
        with atomic_file(path) as f:
            writer = _RecordingWriter(f)
            try:
                torch.save({"tensors": tensors, "meta": meta, _DIGEST_KEY: checksum}, writer)
            except RuntimeError as err:
                if writer.error is not None:
                    raise writer.error from None
                raise OSError(f"{path}: torch.save failed ({str(err).strip().splitlines()[0]})") from None
    else:
        safetensors.save(path, tensors, {"ncfast": json.dumps(meta), _DIGEST_KEY: checksum})


def read(path: str, *, allow_unverified: bool = False) -> Tuple[Dict[str, Tensor], dict]:
    """(tensors, meta) from a file written by :func:`write`; ValueError naming the file when it
    is not one, or when its digest does not match (or it has none, unless `allow_unverified`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a readable ncfast statistics file (not a regular file)")
    try:
        tensors, meta, stored = _read_pt(path) if path.endswith(".pt") else _read_safetensors(path)
    except ValueError as err:
        raise unreadable(path, err) from None
    if stored is None:
        if not allow_unverified:
            raise ValueError(f"{path}: has no integrity digest (written by an older ncfast, or not by ncfast); "
                             "re-create it, or load it once with load_stats(path, allow_unverified=True) and save "
                             "it again")
    elif stored != digest(tensors, meta):
        raise ValueError(f"{path}: integrity check failed: its tensors or metadata were changed after ncfast "
                         "wrote it (digest mismatch); re-create it")
    return tensors, meta


def _read_pt(path: str):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged zip or pickle fails in many ways inside torch.load
        raise ValueError(_torch_load_reason(err)) from None
    if not isinstance(blob, dict) or not isinstance(blob.get("tensors"), dict) or not isinstance(blob.get("meta"), dict):
        raise ValueError("not a dict of 'tensors' and 'meta'")
    tensors = blob["tensors"]
    _check_names(tensors)
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"tensor {name!r} is a {type(t).__name__}")
    stored = blob.get(_DIGEST_KEY)
    if stored is not None and not isinstance(stored, str):
        raise ValueError("digest is not a string")
    return tensors, blob["meta"], stored


def _torch_load_reason(err: Exception) -> str:
    """torch.load's reason, without its advice about trusting the file (it is never loaded
    with weights_only=False here) or its internal details."""
    text = _first_line(err)
    if "Weights only load failed" in text:
        return "its pickle holds objects other than tensors and plain values (not loaded)"
    return text.split(". ")[0]


def _read_safetensors(path: str):
    try:
        entries, metadata = safetensors.read_header(path)
    except (KeyError, TypeError, AttributeError, IndexError, RecursionError, OverflowError) as err:
        raise ValueError(f"malformed safetensors header ({type(err).__name__}: {_first_line(err)})") from None
    except OSError as err:
        raise ValueError(_first_line(err)) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("ncfast"), str):
        raise ValueError("no ncfast metadata")
    try:
        meta = json.loads(metadata["ncfast"])
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"metadata is not JSON ({_first_line(err)})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"metadata is a JSON {type(meta).__name__}, expected an object")
    _check_names(entries)
    size = os.path.getsize(path)
    for name, e in entries.items():
        shape = e.shape
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"tensor {name!r} has shape {list(shape)!r}")
        itemsize = torch.empty((), dtype=e.dtype).element_size()
        nbytes = math.prod(shape) * itemsize
        if nbytes != e.nbytes or e.offset < 0 or e.offset + nbytes > size:
            raise ValueError(f"tensor {name!r}: shape {list(shape)} needs {nbytes:,} bytes, but its byte range "
                             f"holds {e.nbytes:,} (file of {size:,} bytes)")
    try:
        tensors = {name: safetensors.read_tensor(e) for name, e in entries.items()}
    except OSError as err:
        raise ValueError(_first_line(err)) from None
    stored = metadata.get(_DIGEST_KEY)
    return tensors, meta, stored if isinstance(stored, str) else None


def _check_names(tensors: dict) -> None:
    unknown = sorted(set(map(str, tensors)) - set(TENSORS))
    if unknown:
        raise ValueError(f"unexpected tensor {unknown[0]!r} (a statistics file holds {', '.join(TENSORS)})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def unreadable(path: str, err: Exception) -> ValueError:
    """The error for a file that is not a statistics file, with the first line of the reason."""
    text = _first_line(err)
    reason = f"missing {text}" if isinstance(err, KeyError) else text
    if reason.startswith(f"{path}: "):
        reason = reason[len(path) + 2:]
    return ValueError(f"{path}: not a readable ncfast statistics file ({reason})")
