"""Feature dumps in every format ncfast reads, written with each format's own tools (NumPy,
torch.save, h5py, pyarrow, datasets, raw struct packing), never with ncfast, so the readers
are tested against files the field's tools write. ``write_dump(kind, folder, x, y)`` returns
the (features spec, labels spec) that name them on the command line."""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import torch

# HF datasets is used offline only: files it writes and reads here, never the hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

Writer = Callable[[str, np.ndarray, np.ndarray], Tuple[str, str]]
WRITERS: Dict[str, Writer] = {}
NEEDS = {}  # kind -> the optional package it needs


def writer(kind: str, needs: str = ""):
    def register(fn: Writer) -> Writer:
        WRITERS[kind] = fn
        if needs:
            NEEDS[kind] = needs
        return fn

    return register


def write_dump(kind: str, folder, x: np.ndarray, y: np.ndarray) -> Tuple[str, str]:
    if kind in NEEDS:
        pytest.importorskip(NEEDS[kind])
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    return WRITERS[kind](folder, x, y)


def _p(folder: str, name: str) -> str:
    return os.path.join(folder, name)


@writer("npy")
def _npy(folder, x, y):
    np.save(_p(folder, "x.npy"), x)
    np.save(_p(folder, "y.npy"), y)
    return _p(folder, "x.npy"), _p(folder, "y.npy")


@writer("npz")
def _npz(folder, x, y):
    np.savez(_p(folder, "d.npz"), features=x, labels=y)
    return _p(folder, "d.npz:features"), _p(folder, "d.npz:labels")


@writer("npz-compressed")
def _npz_compressed(folder, x, y):
    np.savez_compressed(_p(folder, "d.npz"), features=x, labels=y)
    return _p(folder, "d.npz:features"), _p(folder, "d.npz:labels")


@writer("pt")
def _pt(folder, x, y):
    torch.save({"features": torch.from_numpy(x), "labels": torch.from_numpy(y)}, _p(folder, "d.pt"))
    return _p(folder, "d.pt:features"), _p(folder, "d.pt:labels")


@writer("pth-tuple")
def _pth_tuple(folder, x, y):
    torch.save((torch.from_numpy(x), torch.from_numpy(y)), _p(folder, "d.pth"))
    return _p(folder, "d.pth:0"), _p(folder, "d.pth:1")


@writer("pt-tensors")
def _pt_tensors(folder, x, y):
    torch.save(torch.from_numpy(x), _p(folder, "x.pt"))
    torch.save(torch.from_numpy(y), _p(folder, "y.pt"))
    return _p(folder, "x.pt"), _p(folder, "y.pt")


@writer("safetensors")
def _safetensors(folder, x, y):
    header, blobs, offset = {}, [], 0
    codes = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64",
             np.dtype(np.int32): "I32", np.dtype(np.float16): "F16"}
    for name, a in (("features", x), ("labels", y)):
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(_p(folder, "d.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return _p(folder, "d.safetensors:features"), _p(folder, "d.safetensors:labels")


@writer("hdf5", needs="h5py")
def _hdf5(folder, x, y):
    import h5py

    with h5py.File(_p(folder, "d.h5"), "w") as f:
        f["train/features"] = x
        f["train/labels"] = y
    return _p(folder, "d.h5:train/features"), _p(folder, "d.h5:train/labels")


@writer("hdf5-chunked", needs="h5py")
def _hdf5_chunked(folder, x, y):
    import h5py

    with h5py.File(_p(folder, "d.hdf5"), "w") as f:
        f.create_dataset("features", data=x, chunks=(97, max(1, x.shape[1] // 2)), compression="gzip")
        f.create_dataset("labels", data=y, chunks=(101,), compression="lzf")
    return _p(folder, "d.hdf5:features"), _p(folder, "d.hdf5:labels")


def _table(x, y, fixed: bool):
    import pyarrow as pa

    if fixed:
        features = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    else:
        offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
        features = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))
    return pa.table({"id": np.arange(len(y)), "embedding": features, "label": y})


@writer("parquet", needs="pyarrow")
def _parquet(folder, x, y):
    import pyarrow.parquet as pq

    pq.write_table(_table(x, y, fixed=False), _p(folder, "train.parquet"), row_group_size=211)
    return _p(folder, "train.parquet:embedding"), _p(folder, "train.parquet:label")


@writer("parquet-fixed", needs="pyarrow")
def _parquet_fixed(folder, x, y):
    import pyarrow.parquet as pq

    pq.write_table(_table(x, y, fixed=True), _p(folder, "train.parquet"), row_group_size=500, compression="zstd")
    return _p(folder, "train.parquet:embedding"), _p(folder, "train.parquet:label")


@writer("parquet-shards", needs="pyarrow")
def _parquet_shards(folder, x, y):
    import pyarrow.parquet as pq

    table = _table(x, y, fixed=False)
    os.makedirs(_p(folder, "parts"))
    bounds = [0, len(y) // 3, len(y) // 3 + 1, len(y)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        pq.write_table(table.slice(a, b - a), _p(folder, f"parts/part-{i:05d}.parquet"), row_group_size=150)
    open(_p(folder, "parts/_SUCCESS"), "w").close()
    return _p(folder, "parts:embedding"), _p(folder, "parts:label")


@writer("feather", needs="pyarrow")
def _feather(folder, x, y):
    import pyarrow as pa
    import pyarrow.feather as feather

    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(x))
    table = pa.table({"embedding": tensor, "label": y})
    feather.write_feather(table, _p(folder, "d.feather"), chunksize=333, compression="uncompressed")
    return _p(folder, "d.feather:embedding"), _p(folder, "d.feather:label")


@writer("arrow-stream", needs="pyarrow")
def _arrow_stream(folder, x, y):
    import pyarrow as pa

    table = _table(x, y, fixed=True)
    with pa.ipc.new_stream(_p(folder, "d.arrow"), table.schema) as w:
        w.write_table(table, max_chunksize=257)
    return _p(folder, "d.arrow:embedding"), _p(folder, "d.arrow:label")


@writer("hf-folder", needs="datasets")
def _hf_folder(folder, x, y):
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"embedding": list(x), "label": y})
    ds.save_to_disk(_p(folder, "hf"), num_shards=2)
    return _p(folder, "hf:embedding"), _p(folder, "hf:label")


def _bin(path: str, a: np.ndarray) -> None:
    a = a.reshape(len(a), -1)
    with open(path, "wb") as f:
        f.write(struct.pack("<II", *a.shape))
        f.write(np.ascontiguousarray(a).tobytes())


def _vecs(path: str, a: np.ndarray) -> None:
    a = a.reshape(len(a), -1)
    rows = np.empty(len(a), np.dtype([("d", "<i4"), ("v", a.dtype, (a.shape[1],))]))
    rows["d"], rows["v"] = a.shape[1], a
    rows.tofile(path)


@writer("fbin")
def _fbin(folder, x, y):
    _bin(_p(folder, "base.fbin"), x.astype(np.float32))
    _bin(_p(folder, "labels.ibin"), y.astype(np.int32))
    return _p(folder, "base.fbin"), _p(folder, "labels.ibin")


@writer("fvecs")
def _fvecs(folder, x, y):
    _vecs(_p(folder, "base.fvecs"), x.astype(np.float32))
    _vecs(_p(folder, "labels.ivecs"), y.astype(np.int32))
    return _p(folder, "base.fvecs"), _p(folder, "labels.ivecs")


@writer("txt-labels")
def _txt(folder, x, y):
    np.save(_p(folder, "x.npy"), x)
    with open(_p(folder, "labels.txt"), "w") as f:
        f.write("".join(f"{v}\n" for v in y))
    return _p(folder, "x.npy"), _p(folder, "labels.txt")


@writer("csv-labels")
def _csv(folder, x, y):
    np.save(_p(folder, "x.npy"), x)
    with open(_p(folder, "labels.csv"), "w") as f:
        f.write("label\r\n" + "".join(f"{v}\r\n" for v in y))
    return _p(folder, "x.npy"), _p(folder, "labels.csv")


BYTE_WRITERS = {"u8bin": (".u8bin", _bin), "bvecs": (".bvecs", _vecs)}


def write_bytes_dump(kind: str, folder, x: np.ndarray, y: np.ndarray) -> Tuple[str, str]:
    """uint8 vectors (BIGANN's .u8bin / .bvecs) with .ibin labels."""
    suffix, write = BYTE_WRITERS[kind]
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    write(_p(folder, "base" + suffix), x.astype(np.uint8))
    _bin(_p(folder, "labels.ibin"), y.astype(np.int32))
    return _p(folder, "base" + suffix), _p(folder, "labels.ibin")
