"""CPU-side checks of the CUDA path that need no GPU.

1. An executable model of the CUDA chunk update (csrc/cuda/class_stats_cuda.cu), step for step
   in NumPy: slots in class order, rows sorted by slot, float64 moments about the provisional
   shift, the class update with the rounded shift, the two correction matrices, and the Gram of
   the rows centred in float32. It checks the maths the kernels implement against the
   independent float64 reference; the kernels themselves are tested in test_cuda.py.
2. The launch-geometry helpers the kernels and their host code share (tiling.h).
3. The build: CUDA sources compiled whenever nvcc was there, and the package usable without a GPU.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import ncfast
from ncfast import _C
from ncfast.backend import cuda as _cuda, dispatch as _dispatch
from reference_stats import numpy_stats, offset_data, rel_err


def _round(values: np.ndarray, operand: str) -> np.ndarray:
    """float32 values rounded as the tensor cores' operands are (round to nearest)."""
    if operand == "f32":
        return values.astype(np.float32)
    if operand == "tf32":
        bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~np.uint64(0x1FFF)
        return bits.astype(np.uint32).view(np.float32)
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[operand]
    return torch.from_numpy(values.astype(np.float32)).to(dtype).to(torch.float32).numpy()


class GpuModel:
    """The statistics and the chunk update exactly as the CUDA kernels compute them."""

    def __init__(self, num_classes: int, dim: int, acc=np.float32, operand: str = "f32", corr_operand: str = "f32"):
        self.k, self.d, self.acc = num_classes, dim, acc
        self.operand, self.corr_operand = operand, corr_operand
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.means = np.zeros((num_classes, dim))
        self.scatter = np.zeros((dim, dim))
        self.class_scatter = np.zeros(num_classes)
        self.class_diag = np.zeros((num_classes, dim))

    def _gram(self, rows: np.ndarray, operand: str) -> np.ndarray:
        if self.acc is np.float64:
            return rows.T @ rows
        r = _round(rows, operand).astype(np.float32)
        return (r.T @ r).astype(np.float64)  # float32 partial, folded into float64

    def update(self, x: np.ndarray, y: np.ndarray, chunk_rows: int) -> None:
        for start in range(0, len(y), chunk_rows):
            self._chunk(x[start : start + chunk_rows], y[start : start + chunk_rows])

    def _chunk(self, x: np.ndarray, y: np.ndarray) -> None:
        acc = self.acc
        classes = np.flatnonzero(np.bincount(y, minlength=self.k))  # slots in class order
        slot_of_class = np.full(self.k, -1)
        slot_of_class[classes] = np.arange(len(classes))
        keys = slot_of_class[y]
        perm = np.argsort(keys, kind="stable")
        xa = x.astype(acc)  # exact for float16/bfloat16/float32 input
        shift = np.zeros((len(classes), self.d), dtype=acc)
        corr_a = np.zeros_like(shift)
        corr_b = np.zeros_like(shift)
        for slot, c in enumerate(classes):
            rows = perm[keys[perm] == slot]
            m, n = float(len(rows)), self.counts[c]
            seen = n > 0
            p = self.means[c].astype(acc) if seen else xa[rows[0]]
            dev = xa[rows].astype(np.float64) - p.astype(np.float64)
            s1, s2 = dev.sum(axis=0), (dev * dev).sum(axis=0)
            xbar = p.astype(np.float64) + s1 / m
            s = p if seen else xbar.astype(acc)
            ds = s.astype(np.float64) - p.astype(np.float64)
            z2 = s2 - 2.0 * ds * s1 + m * ds * ds
            d = xbar - s.astype(np.float64)
            e = xbar - self.means[c] if seen else np.zeros(self.d)
            w_between = n * m / (n + m)
            dq = z2 - m * d * d + w_between * e * e
            self.class_diag[c] += dq
            self.class_scatter[c] += dq.sum()
            self.means[c] = self.means[c] + (m / (n + m)) * e if seen else xbar
            self.counts[c] = n + int(m)
            shift[slot] = s
            corr_a[slot] = (np.sqrt(m) * d).astype(acc)
            corr_b[slot] = (np.sqrt(w_between) * e).astype(acc)
        z = (xa - shift[keys]).astype(acc)  # one rounding, as the tile loads do
        self.scatter += self._gram(z, self.operand)
        self.scatter -= self._gram(corr_a, self.corr_operand)
        self.scatter += self._gram(corr_b, self.corr_operand)


@pytest.mark.parametrize("chunk_rows", [97, 1000, 5000])
def test_model_exact_float32_matches_float64_reference(chunk_rows):
    x, y = offset_data(5000, 24, 7, seed=100)
    x32 = x.astype(np.float32)
    model = GpuModel(7, 24)
    model.update(x32, y, chunk_rows)
    ref = numpy_stats(x32, y, 7)
    assert np.array_equal(model.counts, ref.counts)
    assert rel_err(model.means, ref.means) < 1e-12
    assert rel_err(model.scatter, ref.scatter) < 1e-6
    assert rel_err(model.class_scatter, ref.class_scatter) < 1e-6
    assert rel_err(model.class_diag, ref.class_diag) < 1e-6


def test_model_float64_matches_float64_reference():
    x, y = offset_data(3000, 16, 5, seed=101)
    model = GpuModel(5, 16, acc=np.float64)
    model.update(x, y, 700)
    ref = numpy_stats(x, y, 5)
    assert rel_err(model.means, ref.means) < 1e-13
    assert rel_err(model.scatter, ref.scatter) < 1e-10
    assert rel_err(model.class_scatter, ref.class_scatter) < 1e-10


@pytest.mark.parametrize("operand, dtype, tol", [("bf16", torch.bfloat16, 2e-2), ("f16", torch.float16, 5e-3),
                                                 ("tf32", torch.float32, 5e-3)])
def test_model_fast_paths_within_documented_error(operand, dtype, tol):
    x, y = offset_data(4000, 32, 6, seed=102)
    xr = torch.from_numpy(x).to(dtype).to(torch.float32).numpy()  # the values the GPU sees
    model = GpuModel(6, 32, operand=operand, corr_operand="tf32")
    model.update(xr, y, 1500)
    ref = numpy_stats(xr, y, 6)
    assert rel_err(model.means, ref.means) < 1e-12
    assert rel_err(model.scatter, ref.scatter) < tol
    assert rel_err(model.class_scatter, ref.class_scatter) < 1e-6  # float64 moments, not the Gram


def test_model_merges_new_and_seen_classes_in_one_chunk():
    x, y = offset_data(2000, 8, 5, seed=103)
    x32 = x.astype(np.float32)
    y[:1000] = np.where(y[:1000] == 4, 3, y[:1000])  # class 4 first appears in the second chunk
    model = GpuModel(5, 8)
    model.update(x32, y, 1000)
    ref = numpy_stats(x32, y, 5)
    assert rel_err(model.scatter, ref.scatter) < 1e-6
    assert rel_err(model.means, ref.means) < 1e-12


# ------------------------------------------------------------------------------ launch geometry

needs_cuda_build = pytest.mark.skipif(not _cuda.available(), reason="built without nvcc")


@needs_cuda_build
@pytest.mark.parametrize("nb", [1, 2, 5, 64, 256])
def test_tile_pairs_cover_the_upper_triangle_once(nb):
    pairs = [_C._cuda_tile_pair(t, nb) for t in range(nb * (nb + 1) // 2)]
    assert pairs == [(i, j) for i in range(nb) for j in range(i, nb)]


@needs_cuda_build
@pytest.mark.parametrize("rows", [1, 31, 512, 10_000, 1 << 22, 1 << 30])
@pytest.mark.parametrize("tile_pairs", [1, 136, 8256])
@pytest.mark.parametrize("step", [8, 16, 32])
def test_row_splits_cover_the_rows_within_limits(rows, tile_pairs, step):
    per_split, splits = _C._cuda_row_split(rows, tile_pairs, 132, step)
    assert per_split % step == 0 and per_split <= 65536
    assert (splits - 1) * per_split < rows <= splits * per_split
    assert splits <= 65535  # gridDim.y


# ------------------------------------------------------------------------------ the build


def _nvcc_present() -> bool:
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    return bool(shutil.which("nvcc")) or any(h and (Path(h) / "bin" / "nvcc").is_file() for h in homes)


@pytest.mark.skipif(os.environ.get("NCFAST_CUDA") == "0", reason="CUDA build disabled by NCFAST_CUDA=0")
def test_cuda_sources_are_compiled_when_nvcc_exists():
    info = ncfast.build_info()
    if not _nvcc_present():
        pytest.skip("no nvcc on this machine")
    assert info["cuda"] is True
    assert info["cuda_archs"]
    assert info["cuda_runtime_version"] >= 12000
    for name in ("update_class_stats_cuda", "cuda_scratch_bytes", "cuda_device_count"):
        assert hasattr(_C, name), name


@needs_cuda_build
def test_cuda_build_imports_and_fails_softly_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert _C.cuda_device_count() == 0
    assert _dispatch.native_available(torch.device("cuda")) is True
    stats = ncfast.ClassStats(3, 4).update(torch.randn(10, 4) + 5, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    assert stats.num_samples == 10 and stats.check() is stats
