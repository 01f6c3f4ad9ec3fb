"""Scoring a feature dump on disk vs merely reading it.

    pytest benchmarks/test_bench_pipeline.py --benchmark-only

A 4 GB float16 dump (D=256, 8.4M rows, 100 classes; NCFAST_BENCH_SCALE shrinks it) in the
warm page cache. "reference" here is the floor of any streaming tool: np.load(mmap_mode="r")
and a float32 sum of each chunk, so every byte is read once and touched once. "ncfast" is the
full pass that statistics need (ncfast.accumulate: background reads into recycled buffers,
the C++ update on the previous chunk). ratio = read time / ncfast time (target >= 0.7).
"""

from __future__ import annotations

import numpy as np
import pytest

import ncfast
from conftest import PeakMemory, record, scale

DIM, K = 256, 100
CASE = "pipeline 4GB fp16 D=256 K=100"


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    rows = int((4 << 30) // (DIM * 2) * scale())
    folder = tmp_path_factory.mktemp("dump")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((K, DIM)).astype(np.float32)
    labels = rng.integers(0, K, rows).astype(np.int32)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float16, shape=(rows, DIM))
    for a in range(0, rows, 1 << 18):
        b = min(rows, a + (1 << 18))
        x[a:b] = centres[labels[a:b]] + rng.standard_normal((b - a, DIM), dtype=np.float32)
    x.flush()
    del x
    np.save(folder / "y.npy", labels)
    paths = str(folder / "x.npy"), str(folder / "y.npy")
    _read_all(*paths)  # warm the page cache
    return paths, rows


def _read_all(x_path, y_path, chunk_rows=131072):
    x, y = np.load(x_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")
    total = np.zeros(DIM, np.float32)
    for a in range(0, x.shape[0], chunk_rows):
        total += x[a : a + chunk_rows].sum(axis=0, dtype=np.float32)
        y[a : a + chunk_rows].max()
    return total


def _run(benchmark, dump, impl):
    (x_path, y_path), rows = dump
    work = {"flops": rows * DIM * DIM, "bytes": rows * (DIM * 2 + 4)}
    benchmark.group = CASE
    benchmark.extra_info.update(work)

    def scored():
        return ncfast.accumulate(x_path, y_path, num_classes=K, progress=False)

    def read():
        return _read_all(x_path, y_path)

    with PeakMemory() as mem:
        result = benchmark.pedantic(scored if impl == "ncfast" else read, rounds=3, iterations=1)
    record(CASE, impl, benchmark, work, mem.peak_mib)
    if impl == "ncfast":
        assert result.num_samples == rows


def test_ncfast(benchmark, dump):
    _run(benchmark, dump, "ncfast")


def test_reference(benchmark, dump):
    _run(benchmark, dump, "reference")
