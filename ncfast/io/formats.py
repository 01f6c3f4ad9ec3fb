"""Which format a file is, from its first bytes (not its name), and the Part that reads it.

Formats with a signature are recognised by it whatever the file is called: .npy, zip
archives (.npz or torch.save, told apart by their members), safetensors, HDF5, Parquet,
Arrow IPC file / stream, the legacy torch.save pickle. Only the formats that carry no
signature (the big-ann binaries and labels text) go by their extension, and are then
checked against their own structure.
"""

from __future__ import annotations

import os
import zipfile
from typing import Optional

from . import bigann, hdf5, npy, pt, text
from . import safetensors as st
from .arrow import FILE_MAGIC, PARQUET_MAGIC, STREAM_MAGIC
from .part import Part, check_regular, open_regular, reason

READS = (".npy, .npz, .pt/.pth (torch.save), .safetensors, HDF5 (.h5/.hdf5), Parquet, Arrow IPC/Feather, "
         "Hugging Face datasets folders (save_to_disk), .fbin/.u8bin/.i8bin/.ibin, .fvecs/.bvecs/.ivecs, "
         "and labels as .txt/.csv")
CONVERT = "convert it, e.g. np.save('x.npy', array)"
SPEC_HELP = ("a file in any format ncfast reads (.npy, .npz, .pt, .safetensors, HDF5, Parquet, Arrow, .fbin, .fvecs, "
             "...; recognised by its first bytes), FILE:KEY for one tensor / dataset / member / column of it, or a "
             "folder or glob of shards")
_NAMED = {".npy": ".npy", ".npz": ".npz", ".pt": "torch.save", ".pth": "torch.save", ".safetensors": "safetensors",
          ".h5": "HDF5", ".hdf5": "HDF5", ".parquet": "Parquet", ".arrow": "Arrow", ".feather": "Feather"}


def unrecognised(path: str, head: bytes) -> ValueError:
    suffix = os.path.splitext(path)[1].lower()
    named = f"not a readable {suffix} file (it does not start with the {_NAMED[suffix]} signature; its first " \
        f"bytes are {head[:12]!r})" if suffix in _NAMED else f"not a format ncfast recognises (its first bytes " \
        f"are {head[:12]!r})"
    return ValueError(f"{path}: {named}; ncfast reads {READS}; {CONVERT}")


def _zip_kind(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception as err:  # zipfile raises BadZipFile, NotImplementedError, struct.error, ...
        raise ValueError(f"{path}: a zip archive that cannot be read ({reason(err)})") from None
    if pt.is_torch_zip(names):
        return "pt"
    if all(n.endswith(".npy") for n in names):
        return "npz"
    raise ValueError(f"{path}: a zip archive that is neither .npz (np.savez) nor torch.save (it holds "
                     f"{names[:5]}); ncfast reads {READS}")


def sniff(path: str) -> str:
    """The format name of `path`: npy, npz, pt, safetensors, hdf5, parquet, arrow-file,
    arrow-stream, or (by extension) a big-ann binary or labels text. ValueError for a file
    that is none of them, naming what ncfast reads."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(64)

        def head_at(offset: int) -> bytes:
            if offset == 0:
                return head[:8]
            if offset + 8 > size:
                return b""
            f.seek(offset)
            return f.read(8)

        if head.startswith(npy.MAGIC):
            return "npy"
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _zip_kind(path)
        if head.startswith(pt.LEGACY_MAGIC):
            return "pt-legacy"
        if hdf5.has_magic(head_at):
            return "hdf5"
        if head.startswith(PARQUET_MAGIC):
            return "parquet"
        if head.startswith(FILE_MAGIC):
            return "arrow-file"
        if head.startswith(STREAM_MAGIC) and len(head) >= 8:
            return "arrow-stream"
        if head.startswith(b"FEA1"):
            raise ValueError(f"{path}: Feather version 1, which ncfast does not read; re-save it as version 2: "
                             "pyarrow.feather.write_feather(pyarrow.feather.read_table(path), 'new.feather')")
        if st.looks_like(head, size):
            return "safetensors"
    suffix = os.path.splitext(path)[1].lower()
    if suffix in bigann.BIN or suffix in bigann.VECS or suffix in text.SUFFIXES:
        return suffix
    raise unrecognised(path, head)


def open_part(path: str, key: Optional[str] = None, kind: Optional[str] = None) -> Part:
    """The Part for array `key` of the file `path` (the only array when `key` is None)."""
    kind = kind or sniff(path)
    check_regular(path)
    if kind == "npy":
        if key is not None:
            raise ValueError(f"{path}: a .npy file holds one array; there is nothing to select with :{key}")
        return npy.npy_segment(path)
    if kind == "npz":
        from .npz import npz_part

        return npz_part(path, key)
    if kind == "pt":
        return pt.pt_part(path, key)
    if kind == "pt-legacy":
        raise pt.legacy_error(path)
    if kind == "safetensors":
        return st.safetensors_part(path, key)
    if kind == "hdf5":
        return hdf5.hdf5_part(path, key)
    if kind == "parquet":
        from .arrow import parquet_part

        return parquet_part(path, key)
    if kind in ("arrow-file", "arrow-stream"):
        from .arrow import ipc_part

        return ipc_part(path, key, stream=kind == "arrow-stream")
    if kind in bigann.BIN:
        return bigann.bin_part(path, kind, key)
    if kind in bigann.VECS:
        return bigann.vecs_part(path, kind, key)
    return text.text_part(path, key)
