"""CPU-side checks of the CUDA path that need no GPU.

1. An executable model of the CUDA chunk update of the kernel path (csrc/cuda/class_stats_cuda.cu),
   step for step in NumPy: slots in class order, rows sorted by slot, float64 moments about the
   provisional shift, the class update with the rounded shift, the two correction matrices, and
   the Gram of the rows centred in float32. It checks the maths the kernels implement against the
   independent float64 reference; the kernels themselves are tested in test_cuda.py.
2. The same for the slab path (NCFAST_CUDA_GRAM=cublas; model in slab_model.py): the exact shift,
   the slab entries and their column exponents, the split correction rows, the folds; on
   offset-1e3 data and on float32 magnitudes from 1e-40 to 3e38.
3. The launch-geometry helpers the kernels and their host code share (tiling.h).
4. The build: CUDA sources compiled whenever nvcc was there, and the package usable without a GPU.
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
from ncfast.backend import cuda as _cuda, cuda_slab, dispatch as _dispatch, gram_gemm, gram_plan, kernel_args
from ncfast._state import empty_state
from reference_stats import numpy_stats, offset_data, rel_err
from slab_model import CORR_SPLIT, WINDOWS, SlabModel, correction_rows, next_exponent, to_slab


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


# ------------------------------------------------------------------------------ the slab path

# (mode, input dtype, W tolerance): the CUDA tests allow 1e-6 for "exact", 1e-3 for float16 and
# TF32, 1e-2 for bfloat16; the model must sit well inside.
SLAB_CASES = [
    ("f64", torch.float32, 1e-12),  # precision="exact" on A100/H100/H200: float64 slab, DGEMM
    ("f32", torch.float32, 8e-7),  # precision="exact" elsewhere: float32 FMA, folded every 1024 rows
    ("tf32", torch.float32, 3e-4),
    ("bf16", torch.bfloat16, 2e-3),
    ("f16", torch.float16, 2e-4),
    ("f64", torch.float64, 1e-12),
]


def rounded(x: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The float64 values of x rounded to the input dtype: what the GPU sees."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype).double().numpy()


def slab_run(mode, x, y, k, chunk_rows, **kw):
    fold = 1 << 10 if mode == "f32" else 1 << 16
    return SlabModel(k, x.shape[1], mode, fold_rows=kw.pop("fold_rows", fold), **kw).update(x, y, chunk_rows)


@pytest.mark.parametrize("mode, dtype, tol", SLAB_CASES)
@pytest.mark.parametrize("chunk_rows", [97, 1000, 5000])
def test_slab_model_matches_float64_reference(mode, dtype, tol, chunk_rows):
    x, y = offset_data(5000, 48, 7, seed=110)
    xr = rounded(x, dtype)
    model = slab_run(mode, xr, y, 7, chunk_rows)
    ref = numpy_stats(xr, y, 7)
    assert np.array_equal(model.counts, ref.counts)
    assert rel_err(model.means, ref.means) < 1e-12
    assert rel_err(model.scatter, ref.scatter) < tol
    assert rel_err(model.class_scatter, ref.class_scatter) < 1e-9  # float64 moments, not the Gram
    assert rel_err(model.class_diag, ref.class_diag) < 1e-9


@pytest.mark.parametrize("mode, dtype, tol", SLAB_CASES[:5])
def test_slab_model_merges_new_and_seen_classes_in_one_chunk(mode, dtype, tol):
    x, y = offset_data(3000, 16, 5, seed=111)
    y[:1000] = np.where(y[:1000] == 4, 3, y[:1000])  # class 4 first appears in the second chunk
    xr = rounded(x, dtype)
    model = slab_run(mode, xr, y, 5, 1000)
    ref = numpy_stats(xr, y, 5)
    assert rel_err(model.scatter, ref.scatter) < tol
    assert rel_err(model.means, ref.means) < 1e-12


def test_slab_model_folds_when_a_slot_would_pass_its_limit():
    x, y = offset_data(6000, 24, 6, seed=112)
    xr = rounded(x, torch.bfloat16)
    often = slab_run("bf16", xr, y, 6, 250, fold_rows=1000)
    once = slab_run("bf16", xr, y, 6, 250)
    assert often.folds >= 6000 // 1000 - 1 and once.folds == 0
    ref = numpy_stats(xr, y, 6).scatter
    assert rel_err(often.scatter, ref) < 2e-3 and rel_err(once.scatter, ref) < 2e-3


def test_correction_rows_keep_twice_the_slab_precision():
    rng = np.random.default_rng(113)
    a = 1e3 * rng.standard_normal((6, 40))
    exact = a.T @ a
    for mode, bound in (("bf16", 2.0 ** -15), ("f16", 2.0 ** -21), ("tf32", 2.0 ** -21)):
        cx, cy = correction_rows(a, mode)
        assert cx.shape[0] == CORR_SPLIT[mode] * 6
        assert rel_err(cx.T @ cy, exact) < bound
        single = to_slab(a, mode)
        assert rel_err(single.T @ single, exact) > 8 * bound  # what one rounded row would cost
    cx, cy = correction_rows(a, "f64")
    assert cx is cy and np.array_equal(cx, a)


def extreme(kind: str, rng, rows: int = 3000, dim: int = 24) -> np.ndarray:
    """Finite, non-constant float32 rows of extreme magnitude."""
    noise = rng.standard_normal((rows, dim))
    return {
        "offset 1e18": 1e18 * (3.0 + noise),
        "spread 1e19": 1e19 * noise,
        "near float32 max": 3e38 * np.clip(noise / 4, -1, 1),
        "1e-22": 1e-22 * (5.0 + noise),
        "1e-30": 1e-30 * noise,
        "float32 subnormals": 1e-41 * (5.0 + noise),
    }[kind]


EXTREMES = ["offset 1e18", "spread 1e19", "near float32 max", "1e-22", "1e-30", "float32 subnormals"]


@pytest.mark.parametrize("kind", EXTREMES)
@pytest.mark.parametrize("mode, tol", [("tf32", 3e-4), ("f32", 8e-7), ("f64", 1e-12)])
def test_slab_model_keeps_extreme_float32_magnitudes(kind, mode, tol):
    """Finite rows of any float32 magnitude give a finite, non-zero, accurate W: the columns'
    power-of-two scale keeps the float32 GEMM inside its range (DESIGN.md section 3; docs/CUDA.md)."""
    rng = np.random.default_rng(114)
    xr = rounded(extreme(kind, rng), torch.float32)
    assert np.isfinite(xr).all()
    y = rng.integers(0, 5, len(xr))
    model = slab_run(mode, xr, y, 5, 1000)
    ref = numpy_stats(xr, y, 5)
    w = model.scatter
    assert np.isfinite(w).all() and (np.diag(w) > 0).all()
    assert rel_err(w, ref.scatter) < tol
    assert rel_err(model.class_scatter, ref.class_scatter) < 1e-9
    if mode != "f64":
        assert model.rescales >= 1  # the first chunk left the default window


@pytest.mark.parametrize("kind, dtype, mode, tol", [
    ("1e30", torch.bfloat16, "bf16", 2e-3),
    ("1e-30", torch.bfloat16, "bf16", 2e-3),
    ("full float16 range", torch.float16, "f16", 2e-4),  # |x - p| up to 131008 > 65504
    ("float16 subnormals", torch.float16, "f16", 2e-4),
])
def test_slab_model_keeps_extreme_16_bit_magnitudes(kind, dtype, mode, tol):
    rng = np.random.default_rng(115)
    noise = rng.standard_normal((3000, 16))
    x = {"1e30": 1e30 * (2.0 + noise), "1e-30": 1e-30 * noise,
         "full float16 range": 60000.0 * np.clip(noise / 3, -1, 1),
         "float16 subnormals": 1e-6 * (3.0 + noise)}[kind]
    xr = rounded(x, dtype)
    y = rng.integers(0, 4, 3000)
    model = slab_run(mode, xr, y, 4, 1000)
    w = model.scatter
    assert np.isfinite(w).all() and (np.diag(w) > 0).all()
    assert rel_err(w, numpy_stats(xr, y, 4).scatter) < tol


@pytest.mark.parametrize("kind", ["spread 1e19", "near float32 max", "1e-30", "float32 subnormals"])
def test_without_the_column_scale_the_float32_gram_overflows_or_underflows(kind):
    """The same data with the exponents frozen at 0: what the scale prevents."""
    rng = np.random.default_rng(114)
    xr = rounded(extreme(kind, rng), torch.float32)
    y = rng.integers(0, 5, len(xr))
    with np.errstate(all="ignore"):
        w = slab_run("tf32", xr, y, 5, 1000, rescale=False).scatter
    ref = numpy_stats(xr, y, 5).scatter
    assert not np.isfinite(w).all() or rel_err(w, ref) > 0.1


def test_slab_model_rescales_mid_stream_with_rows_in_the_partial():
    rng = np.random.default_rng(116)
    parts = [1.0 + rng.standard_normal((1500, 12)), 1e20 * (1.0 + rng.standard_normal((1500, 12))),
             1e-20 * rng.standard_normal((1500, 12))]
    xr = rounded(np.concatenate(parts), torch.float32)
    y = rng.integers(0, 3, len(xr))
    y[3000:] += 3  # the tiny rows are new classes, centred on their own rows
    model = slab_run("tf32", xr, y, 6, 1500)
    assert model.rescales == 2 and model.folds == 2  # each with rows of the earlier scale in the partial
    ref = numpy_stats(xr, y, 6)
    assert rel_err(model.scatter, ref.scatter) < 3e-4
    assert rel_err(model.means, ref.means) < 1e-12


def test_exponent_window():
    e = np.array([0, 0, 0, 5, -7])
    zmax = np.array([0.0, 2.0 ** 40, 2.0 ** 41, 2.0 ** 45, 3.0])
    assert next_exponent(zmax, e, (-40, 40)).tolist() == [0, 0, 41, 5, -7]
    assert next_exponent(np.array([2.0 ** -41]), np.array([0]), (-40, 40)).tolist() == [-41]


@pytest.mark.skipif(not hasattr(_C, "slab_exponent_window"), reason="built without nvcc")
def test_model_windows_are_the_kernels_windows():
    codes = {"bf16": 3, "f16": 2, "tf32": 0, "f32": 0, "f64": 1}
    for mode, code in codes.items():
        assert tuple(_C.slab_exponent_window(code)) == WINDOWS[mode], mode
    assert _C.slab_small_rows == 4096


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
@pytest.mark.parametrize("mode, dtype", [("bf16", torch.bfloat16), ("f16", torch.float16), ("tf32", torch.float32),
                                         ("f64", torch.float32), ("f32", torch.float32), ("f64", torch.float64)])
@pytest.mark.parametrize("rows, dim, k", [(256, 40, 1000), (1, 7, 3), (300, 130, 5)])
def test_driver_builds_slab_calls_the_kernels_accept(mode, dtype, rows, dim, k):
    """The SlabCall cuda_slab builds for a small step passes the C++ layout checks (which run
    before anything touches a device): without a GPU the call fails at the device, not there;
    corrupted, it fails there."""
    if torch.cuda.is_available() or _C.cuda_device_count() > 0:
        pytest.skip("a GPU is present: the kernels would run on host pointers")
    cpu = torch.device("cpu")
    state = empty_state(k, dim, cpu, per_class_diag=True)
    state.device_status = torch.zeros(16, dtype=torch.int64)
    x = torch.randn(rows, dim).to(dtype)
    y = torch.randint(0, k, (rows,))
    gram = cuda_slab._new_gram(gram_plan.make_layout(dim, mode), cpu)
    plan = gram_plan.plan_update(rows, k, gram.layout)
    if not plan.small:
        pytest.skip("a float32 'exact' step of this size takes the chunked layout (needs the device to size)")
    nbytes = _C.slab_scratch_bytes(rows, dim, k, 0, 0, plan.chunk_rows, True, gram.layout.padded_dim)
    base = torch.empty(nbytes + 256, dtype=torch.uint8)  # CUDA's allocator aligns to 512 bytes, the CPU's less
    scratch = base[(-base.data_ptr()) % 256 :][:nbytes]
    slab_dtype = gram_gemm.SLAB_DTYPES[mode]
    slab_x = cuda_slab._buffer(state, "slab_x", plan.slab_elems, slab_dtype, cpu)
    slab_y = cuda_slab._buffer(state, "slab_y", plan.slab_elems, slab_dtype, cpu)
    corr = cuda_slab._buffer(state, "slab_corr_x", plan.corr_elems, slab_dtype, cpu)
    call = cuda_slab._chunk_call(state, plan, gram, scratch, slab_x, slab_y, corr, corr)
    call.row0, call.rows, call.first_chunk = 0, rows, True
    call.split_rows, call.add_rows = plan.split_rows(rows), plan.add_rows(rows)
    args = kernel_args.state_and_batch(state, x, y)

    def enqueue():
        _C.update_slab_chunk_cuda(*args, 0, call, state.device_status.data_ptr(), 0)

    with pytest.raises(RuntimeError, match="ncfast CUDA"):  # the layout passed; no device to run on
        enqueue()
    for field, bad, message in [("max_slots", plan.max_slots + 1, "max_slots"),
                                ("ld", plan.ld + 8, "ld must be"),
                                ("slab_elems", plan.split_rows(rows) * plan.ld - 1, "slab smaller"),
                                ("corr_split", 2, "corr_split"),
                                ("split_rows", 0, "split_rows"),
                                ("scratch_size", 16, "scratch holds")]:
        good = getattr(call, field)
        setattr(call, field, bad)
        with pytest.raises(ValueError, match=message):
            enqueue()
        setattr(call, field, good)


@needs_cuda_build
def test_cuda_build_imports_and_fails_softly_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert _C.cuda_device_count() == 0
    assert _dispatch.native_available(torch.device("cuda")) is True
    stats = ncfast.ClassStats(3, 4).update(torch.randn(10, 4) + 5, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    assert stats.num_samples == 10 and stats.check() is stats
