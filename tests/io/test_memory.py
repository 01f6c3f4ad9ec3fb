"""Resident memory of a pass stays bounded by the chunk, not the file, for every format: a
96 MiB dump (4 MiB chunks) in each format grows the reading process's peak RSS by less than
a few chunks plus a constant. The dumps are written in this process; only the reading
process, started fresh, is measured: its peak RSS from opening the files to the end of the
pass, after the format's library is imported and a warm-up pass over other rows has loaded
kernels, BLAS and thread pools."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

ROWS, DIM = 196_608, 128  # 96 MiB of float32
CHUNK_ROWS = 8192  # 4 MiB
STEP = 65536


def _blocks(rng):
    """The dump's rows, block by block (one block of quarter-step values repeated: memory,
    not statistics, is measured, and such rows compress quickly where a format compresses)."""
    block = np.round(rng.standard_normal((STEP, DIM), dtype=np.float32) * 4) / 4 + 5
    for a in range(0, ROWS, STEP):
        yield a, block[: min(STEP, ROWS - a)]


def _write(kind: str, folder: str) -> str:
    rng = np.random.default_rng(6)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    if kind in ("npz", "npz-compressed", "pt"):
        x = np.empty((ROWS, DIM), np.float32)
        for a, block in _blocks(rng):
            x[a: a + len(block)] = block
        if kind == "pt":
            import torch

            torch.save({"features": torch.from_numpy(x)}, p("d.pt"))
            return p("d.pt:features")
        if kind == "npz":
            np.savez(p("d.npz"), features=x)
        else:  # np.savez_compressed's layout at zlib level 1 (its default level 6 takes far longer)
            with zipfile.ZipFile(p("d.npz"), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                with archive.open("features.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, x)
        return p("d.npz:features")
    if kind.startswith("hdf5"):
        h5py = pytest.importorskip("h5py")
        with h5py.File(p("d.h5"), "w") as f:
            opts = {"chunks": (4096, 64), "compression": "lzf"} if kind == "hdf5-chunked" else {}
            ds = f.create_dataset("features", (ROWS, DIM), np.float32, **opts)
            for a, block in _blocks(rng):
                ds[a: a + len(block)] = block
        return p("d.h5:features")
    if kind in ("parquet", "arrow-stream"):
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        def batch(block):
            offsets = pa.array(np.arange(0, block.size + 1, DIM, dtype=np.int32))
            return pa.record_batch({"embedding": pa.ListArray.from_arrays(offsets, pa.array(block.reshape(-1)))})

        schema = batch(np.zeros((1, DIM), np.float32)).schema
        if kind == "parquet":  # one plain, uncompressed row group of the whole file: pages must stream
            with pq.ParquetWriter(p("d.parquet"), schema, compression="none", use_dictionary=False) as w:
                w.write_table(pa.Table.from_batches([batch(b) for _, b in _blocks(rng)]), row_group_size=ROWS)
            return p("d.parquet:embedding")
        with pa.ipc.new_stream(p("d.arrow"), schema) as w:
            for _, block in _blocks(rng):
                for a in range(0, len(block), 1000):  # HF datasets' writer batch size
                    w.write_batch(batch(block[a: a + 1000]))
        return p("d.arrow:embedding")
    if kind == "fbin":
        with open(p("base.fbin"), "wb") as f:
            f.write(struct.pack("<II", ROWS, DIM))
            for _, block in _blocks(rng):
                f.write(block.tobytes())
        return p("base.fbin")
    if kind == "bvecs":  # 4 x the rows as uint8: the same file size, handed out as float32
        row = np.dtype([("d", "<i4"), ("v", "u1", (DIM,))])
        with open(p("base.bvecs"), "wb") as f:
            for _ in range(4):
                for _, block in _blocks(rng):
                    rows = np.empty(len(block), row)
                    rows["d"], rows["v"] = DIM, np.clip(block * 20, 0, 255).astype(np.uint8)
                    f.write(rows.tobytes())
        return p("base.bvecs")
    raise AssertionError(kind)


SCRIPT = """
import ncfast, torch
from ncfast.io import open_array
from ncfast.pipeline import accumulate
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
try:  # the format libraries' imports, not their reads
    import h5py
except ImportError:
    pass
try:
    import pyarrow, pyarrow.parquet, pyarrow.ipc
    pyarrow.array([1.0]).to_numpy()  # its NumPy bridge loads more modules on first use
except ImportError:
    pass
warm = accumulate(open_array(torch.randn(8192, {dim}) + 5), open_array(torch.arange(8192) % 10, "labels"),
                  chunk_rows=8192, progress=False)  # loads kernels, BLAS and thread pools
before = hwm()
feats, labels = open_array({features!r}), open_array({labels!r}, "labels")  # opening is measured too
stats = accumulate(feats, labels, chunk_rows={chunk}, progress=False)
print(stats.num_samples, hwm() - before)
"""


def _growth(features: str, labels: str, chunk: int = CHUNK_ROWS, dim: int = DIM) -> tuple:
    script = textwrap.dedent(SCRIPT.format(features=features, labels=labels, chunk=chunk, dim=dim))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    n, growth = map(int, out.stdout.split())
    return n, growth


@pytest.mark.parametrize("kind", ["npz", "npz-compressed", "pt", "hdf5", "hdf5-chunked", "parquet", "arrow-stream",
                                  "fbin", "bvecs"])
def test_pass_memory_is_bounded_by_the_chunk_for_every_format(tmp_path, kind):
    features = _write(kind, str(tmp_path))
    rows = ROWS * (4 if kind == "bvecs" else 1)
    np.save(tmp_path / "y.npy", np.random.default_rng(7).integers(0, 10, rows))
    n, growth = _growth(features, str(tmp_path / "y.npy"))
    assert n == rows
    chunk = CHUNK_ROWS * DIM * 4  # 4 MiB
    # pyarrow's decoders and allocator hold about 40 MiB of their own, however large the file
    constant = (48 if kind in ("parquet", "arrow-stream") else 32) << 20
    assert growth < 4 * chunk + constant, f"{kind}: peak RSS grew by {growth / 2**20:.1f} MiB for a 96 MiB file"


def test_text_labels_memory_is_bounded_by_the_block_not_the_file(tmp_path):
    """8M labels as text (16 MiB; 64 MiB as int64): neither parsed whole nor held."""
    rows = 8 << 20
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(rows, 2))
    x[:] = 1.0
    x[::3] = 2.0
    x.flush()
    del x
    digits = (np.arange(rows) % 10).astype(np.uint8) + ord("0")
    text = np.empty(2 * rows, np.uint8)
    text[0::2], text[1::2] = digits, ord("\n")
    (tmp_path / "labels.txt").write_bytes(text.tobytes())
    n, growth = _growth(str(tmp_path / "x.npy"), str(tmp_path / "labels.txt"), chunk=65536, dim=2)
    assert n == rows
    assert growth < 28 << 20, f"peak RSS grew by {growth / 2**20:.1f} MiB for 8M labels (64 MiB as int64)"
