"""The statistics file: the tensors of a state dict and a JSON metadata record, as
``.safetensors`` (portable, no pickle; the default) or ``.pt`` (``torch.save``, read back with
``weights_only=True``). Written atomically. Knows the layout, not ClassStats."""

from __future__ import annotations

import json
import os
import pickle
from typing import Dict, Tuple

import torch
from torch import Tensor

from . import safetensors
from .atomic import atomic_path

TENSORS = ("counts", "means", "scatter", "class_scatter", "class_diag", "class_gram", "moment_centre", "fourth_moment",
           "third_moment")


def write(path: str, tensors: Dict[str, Tensor], meta: dict) -> None:
    """Writes `tensors` and the JSON-serialisable `meta` to `path` atomically (.pt: torch.save,
    anything else: safetensors)."""
    path = os.fspath(path)
    if path.endswith(".pt"):
        with atomic_path(path) as tmp:
            torch.save({"tensors": tensors, "meta": meta}, tmp)
    else:
        safetensors.save(path, tensors, {"ncfast": json.dumps(meta)})


def read(path: str) -> Tuple[Dict[str, Tensor], dict]:
    """(tensors, meta) from a file written by :func:`write`; ValueError naming the file when it
    is not one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        if path.endswith(".pt"):
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return blob["tensors"], blob["meta"]
        entries, metadata = safetensors.read_header(path)
        if "ncfast" not in metadata:
            raise ValueError("no ncfast metadata")
        meta = json.loads(metadata["ncfast"])
        return {name: safetensors.read_tensor(e) for name, e in entries.items()}, meta
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise unreadable(path, err) from None


def unreadable(path: str, err: Exception) -> ValueError:
    """The error for a file that is not a statistics file, with the first line of the reason."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    reason = f"missing {text}" if isinstance(err, KeyError) else text[:200]
    return ValueError(f"{path}: not a readable ncfast statistics file ({reason})")
