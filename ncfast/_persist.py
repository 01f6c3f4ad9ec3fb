"""Saving and loading ClassStats as .safetensors (portable, no pickle) or .pt files."""

from __future__ import annotations

import json
import os
import pickle

import torch

from . import _safetensors
from ._atomic import atomic_path

_TENSORS = ("counts", "means", "scatter", "class_scatter", "class_diag")


def save_stats(stats, path: str, extra: dict = None) -> None:
    """Writes atomically (temporary file, then rename); `extra` is kept as JSON metadata."""
    state = stats.state_dict()
    tensors = {k: state[k] for k in _TENSORS if k in state}
    meta = {k: v for k, v in state.items() if k not in tensors}
    meta["options"] = stats.__getstate__()["options"]
    if extra:
        meta["extra"] = extra
    path = os.fspath(path)
    if path.endswith(".pt"):
        with atomic_path(path) as tmp:
            torch.save({"tensors": tensors, "meta": meta}, tmp)
    else:
        _safetensors.save(path, tensors, {"ncfast": json.dumps(meta)})


def load_stats(path: str):
    """(ClassStats, extra metadata) from a file written by save_stats."""
    from .stats import ClassStats

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        tensors, meta = _read_stats_file(path)
        options = dict(meta.pop("options"))
        extra = meta.pop("extra", {})
        num_classes, dim = int(meta["num_classes"]), int(meta["dim"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"{path}: not a readable ncfast statistics file ({_reason(err)})") from None
    options["device"] = "cpu"
    stats = ClassStats(num_classes or None, dim, **options)
    try:
        stats.load_state_dict({**meta, **tensors})
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return stats, extra


def _read_stats_file(path: str):
    if path.endswith(".pt"):
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["tensors"], blob["meta"]
    entries, metadata = _safetensors.read_header(path)
    if "ncfast" not in metadata:
        raise ValueError("no ncfast metadata")
    meta = json.loads(metadata["ncfast"])
    return {name: _safetensors.read_tensor(e) for name, e in entries.items()}, meta


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"missing {text}" if isinstance(err, KeyError) else text[:200]
