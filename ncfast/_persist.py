"""Saving and loading ClassStats as .safetensors (portable, no pickle) or .pt files."""

from __future__ import annotations

import json
import os

import torch

from . import _safetensors

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
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save({"tensors": tensors, "meta": meta}, tmp)
        os.replace(tmp, path)
    else:
        _safetensors.save(path, tensors, {"ncfast": json.dumps(meta)})


def load_stats(path: str):
    """(ClassStats, extra metadata) from a file written by save_stats."""
    from .stats import ClassStats

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if path.endswith(".pt"):
        blob = torch.load(path, map_location="cpu", weights_only=True)
        tensors, meta = blob["tensors"], blob["meta"]
    else:
        entries, metadata = _safetensors.read_header(path)
        if "ncfast" not in metadata:
            raise ValueError(f"{path}: not an ncfast statistics file")
        meta = json.loads(metadata["ncfast"])
        tensors = {name: _safetensors.read_tensor(e) for name, e in entries.items()}
    options = dict(meta.pop("options"))
    extra = meta.pop("extra", {})
    options["device"] = "cpu"
    stats = ClassStats(int(meta["num_classes"]) or None, int(meta["dim"]), **options)
    stats.load_state_dict({**meta, **tensors})
    return stats, extra
