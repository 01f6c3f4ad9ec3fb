"""ClassStats as bytes, for the transfer between workers (Dask, Ray, any queue).

The state is sent exactly (float64) but without redundancy: W is symmetric, so only its upper
triangle travels, D(D+1)/2 values instead of D^2. Layout: the magic ``NCFSTAT1``, a
little-endian uint32 length and that many bytes of JSON (shape and options), then the arrays
in order: counts (K int64), means (K x D float64), W's upper triangle row by row (float64),
tr_c (K float64) and, when tracked, q_cj (K x D float64), the per-class scatter (K x D x D
float64) and the fourth moments (centre D, fourth 1, third D float64). For D = 4096, K = 1000
that is 99.9 MB, against 168 MB for the pickled state_dict.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

from ..stats import ClassStats

MAGIC = b"NCFSTAT1"
# The optional statistics, in the order they travel after tr_c (each only when tracked).
_OPTIONAL = ("class_diag", "class_gram", "moment_centre", "fourth_moment", "third_moment")


def to_bytes(stats: ClassStats) -> bytes:
    """The statistics as bytes (see the module docstring); :func:`from_bytes` reads them back."""
    if not isinstance(stats, ClassStats):
        raise TypeError(f"stats: expected ClassStats, got {type(stats).__name__}")
    state = stats.state_dict()
    k, d = int(state["num_classes"]), int(state["dim"])
    options = {key: value for key, value in stats._options().items() if key != "device"}
    meta = {"num_classes": k, "dim": d, "fixed_classes": bool(state["fixed_classes"]),
            "skipped_rows": int(state["skipped_rows"]), "options": options}
    header = json.dumps(meta, sort_keys=True).encode()
    parts = [MAGIC, struct.pack("<I", len(header)), header,
             _le(state["counts"], "<i8"), _le(state["means"], "<f8"),
             _le(state["scatter"], "<f8")[_upper(d)], _le(state["class_scatter"], "<f8")]
    for name in _OPTIONAL:
        if name in state:
            parts.append(_le(state[name], "<f8"))
    return b"".join(p if isinstance(p, bytes) else p.tobytes() for p in parts)


def from_bytes(data: bytes, device=None) -> ClassStats:
    """ClassStats from :func:`to_bytes`' output, on `device` (default CPU); ValueError when
    `data` is not such bytes or is cut short."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ValueError(f"data: not ncfast statistics bytes (starts with {bytes(view[:8])!r})")
    try:
        (length,) = struct.unpack_from("<I", view, len(MAGIC))
        start = len(MAGIC) + 4
        meta = json.loads(bytes(view[start : start + length]))
        k, d = int(meta["num_classes"]), int(meta["dim"])
        options = dict(meta["options"])
    except (struct.error, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"data: unreadable header ({err})") from None
    tracked = {"class_diag": options.get("per_class_diag"), "class_gram": options.get("per_class_gram"),
               "moment_centre": options.get("fourth_moments"), "fourth_moment": options.get("fourth_moments"),
               "third_moment": options.get("fourth_moments")}
    shapes = {"class_diag": (k, d), "class_gram": (k, d, d), "moment_centre": (d,), "fourth_moment": (1,),
              "third_moment": (d,)}
    sizes = [("counts", "<i8", (k,)), ("means", "<f8", (k, d)), ("upper", "<f8", (d * (d + 1) // 2,)),
             ("class_scatter", "<f8", (k,))] + [(name, "<f8", shapes[name]) for name in _OPTIONAL if tracked[name]]
    at = start + length
    expected = at + 8 * sum(int(np.prod(shape)) for _, _, shape in sizes)
    if len(view) != expected:
        raise ValueError(f"data: {len(view)} bytes, expected {expected} for K={k}, D={d}")
    arrays = {}
    for name, dtype, shape in sizes:
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(view, dtype=dtype, count=count, offset=at).reshape(shape)
        at += 8 * count
    scatter = np.zeros((d, d))
    scatter[_upper(d)] = arrays.pop("upper")
    scatter += np.triu(scatter, 1).T
    state = {"version": 1, "num_classes": k, "dim": d, "fixed_classes": meta["fixed_classes"],
             "skipped_rows": meta["skipped_rows"], "scatter": torch.from_numpy(scatter)}
    state.update({name: torch.from_numpy(array.astype(array.dtype.newbyteorder("="))) for name, array in arrays.items()})
    stats = ClassStats(k if meta["fixed_classes"] else None, d, device=device, **options)
    return stats.load_state_dict(state)


def _upper(d: int) -> np.ndarray:
    """Mask of the upper triangle (diagonal included); indexing with it reads row by row."""
    return np.triu(np.ones((d, d), dtype=bool))


def _le(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)
