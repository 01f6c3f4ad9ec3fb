"""A pass over a 2+ GB Parquet file and a 2+ GB .fbin file vs merely reading the same file.

    pytest benchmarks/test_bench_readers.py --benchmark-only -s

"read" is the floor of any tool that streams these files: pyarrow record batches of the
feature and label columns (``ParquetFile.iter_batches``, pyarrow's defaults, its own threads)
and ``np.fromfile`` of the .fbin rows and the .ibin labels in 131072-row pieces (every byte
read once into memory). "ncfast" is the whole pass that statistics need:
``ncfast.accumulate`` on the same files (the reader thread decodes or reads into recycled
buffers while the C++ update works on the previous chunk). The files are written to a
temporary folder (about 4.5 GB; checked against the free space first), read once to warm the
page cache, and deleted at the end; the rounds interleave read and pass, best of each.
ratio = read time / ncfast time (target >= 0.7). A second line per file compares the pass
over the file with the same pass over the same rows already in memory (a NumPy array, same
chunks): its ratio is the share of the compute-only speed that the pass over the file keeps,
i.e. how much of the work the reader hides. NCFAST_BENCH_SCALE shrinks the files.

Shapes: Parquet D=384 (the width of the most common sentence-embedding dumps on the HF hub),
a fixed-size-list<float32> column and an int64 label column, pyarrow's default writer
(snappy, 1M-row row groups); .fbin D=96 (Deep1B's base set) with .ibin labels.
"""

from __future__ import annotations

import os
import shutil
import struct
import time

import numpy as np
import pytest
import torch

import ncfast
from conftest import PeakMemory, RESULTS, scale

K = 100
ROUNDS = 3
TARGET_BYTES = int((2 << 30) * 1.05)  # a little over 2 GiB of features per file


def _rows(dim: int) -> int:
    return int(TARGET_BYTES // (dim * 4) * scale())


def _blocks(rows: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((K, dim)).astype(np.float32)
    for a in range(0, rows, 1 << 17):
        n = min(rows, a + (1 << 17)) - a
        y = rng.integers(0, K, n)
        yield y, centres[y] + rng.standard_normal((n, dim), dtype=np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("readers")
    free = shutil.disk_usage(path).free
    need = 2.3 * TARGET_BYTES * scale()
    if free < need + (2 << 30):
        pytest.skip(f"needs {need / 2**30:.1f} GiB free in {path}, has {free / 2**30:.1f}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _write_parquet(path: str, rows: int, dim: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("embedding", pa.list_(pa.float32(), dim)), ("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for y, x in _blocks(rows, dim, seed=1):
            column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)
            writer.write_table(pa.table({"embedding": column, "label": y}, schema=schema), row_group_size=1 << 20)


def _write_fbin(x_path: str, y_path: str, rows: int, dim: int) -> None:
    with open(x_path, "wb") as fx, open(y_path, "wb") as fy:
        fx.write(struct.pack("<II", rows, dim))
        fy.write(struct.pack("<II", rows, 1))
        for y, x in _blocks(rows, dim, seed=2):
            fx.write(x.tobytes())
            fy.write(y.astype(np.int32).tobytes())


def _read_parquet(path: str) -> int:
    import pyarrow.parquet as pq

    rows = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["embedding", "label"]):
        rows += batch.num_rows
    return rows


def _parquet_in_memory(path: str, dim: int):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    x = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    return x, table.column("label").to_numpy()


def _read_fbin(x_path: str, y_path: str, dim: int, piece: int = 131072) -> int:
    rows = 0
    with open(x_path, "rb") as fx, open(y_path, "rb") as fy:
        n = struct.unpack("<II", fx.read(8))[0]
        fy.seek(8)
        while rows < n:
            take = min(piece, n - rows)
            np.fromfile(fx, dtype=np.float32, count=take * dim)
            np.fromfile(fy, dtype=np.int32, count=take)
            rows += take
    return rows


def _interleaved(case: str, dim: int, rows: int, nbytes: int, read, score, in_memory, benchmark) -> None:
    """Rounds of (read, pass over the file, pass over the rows in memory), best of each;
    recorded for the summary's ratio column."""
    read(), score()  # warm the page cache, load kernels and libraries
    x, y = in_memory()
    passes = {"reference": read, "ncfast": score,
              "memory": lambda: ncfast.accumulate(x, y, num_classes=K, progress=False, chunk_rows=_chunk(dim))}
    times = {impl: [] for impl in passes}
    peaks = {impl: 0.0 for impl in passes}

    def rounds():
        for _ in range(ROUNDS):
            for impl, fn in passes.items():
                with PeakMemory() as mem:
                    start = time.perf_counter()
                    result = fn()
                    times[impl].append(time.perf_counter() - start)
                peaks[impl] = max(peaks[impl], mem.peak_mib)
                n = result if isinstance(result, int) else result.num_samples
                assert n == rows

    benchmark.group = case
    benchmark.pedantic(rounds, rounds=1, iterations=1)
    best = {impl: {"mean": float(np.mean(t)), "min": min(t), "peak_mib": peaks[impl]} for impl, t in times.items()}
    work = {"flops": rows * dim * dim, "bytes": nbytes}
    RESULTS[case].update(work=work, reference=best["reference"], ncfast=best["ncfast"])
    RESULTS[f"{case}, vs in memory"].update(work=work, reference=best["memory"], ncfast=best["ncfast"])
    benchmark.extra_info.update({impl: t for impl, t in times.items()})


def _chunk(dim: int) -> int:
    return ncfast.io.default_chunk_rows(dim, torch.float32)


def test_parquet_pass_vs_read(benchmark, folder):
    pytest.importorskip("pyarrow")
    dim = 384
    rows = _rows(dim)
    path = str(folder / "train.parquet")
    _write_parquet(path, rows, dim)
    case = f"parquet {os.path.getsize(path) / 2**30:.1f}GiB fp32 D={dim} K={K}"
    _interleaved(case, dim, rows, os.path.getsize(path), lambda: _read_parquet(path),
                 lambda: ncfast.accumulate(f"{path}:embedding", f"{path}:label", num_classes=K, progress=False),
                 lambda: _parquet_in_memory(path, dim), benchmark)
    os.remove(path)


def test_fbin_pass_vs_read(benchmark, folder):
    dim = 96
    rows = _rows(dim)
    x_path, y_path = str(folder / "base.fbin"), str(folder / "labels.ibin")
    _write_fbin(x_path, y_path, rows, dim)
    size = os.path.getsize(x_path) + os.path.getsize(y_path)
    case = f"fbin {os.path.getsize(x_path) / 2**30:.1f}GiB fp32 D={dim} K={K}"
    _interleaved(case, dim, rows, size, lambda: _read_fbin(x_path, y_path, dim),
                 lambda: ncfast.accumulate(x_path, y_path, num_classes=K, progress=False),
                 lambda: (np.fromfile(x_path, np.float32, offset=8).reshape(rows, dim),
                          np.fromfile(y_path, np.int32, offset=8)), benchmark)
    os.remove(x_path)
    os.remove(y_path)
