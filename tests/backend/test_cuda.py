"""ClassStats on a CUDA device with the native kernels, against float64 references.

Every test here needs a GPU and a build with the CUDA kernels; without them all are skipped.
Run on a GPU machine with:  python -m pytest -q -m cuda tests/backend/test_cuda.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.backend import cuda as _cuda, dispatch as _dispatch
from reference_stats import assert_unchanged, snapshot, numpy_stats, offset_data, rel_err

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not _cuda.available(), reason="ncfast was built without the CUDA kernels"),
]

DEVICE = "cuda"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Normwise relative error of W allowed per (input dtype, precision), measured against a float64
# reference computed on the values the GPU sees (the input already rounded to its dtype).
W_TOL = {
    ("float64", "exact"): 1e-10,
    ("float64", "fast"): 1e-10,
    ("float32", "exact"): 1e-6,
    ("float32", "fast"): 1e-3,
    ("float16", "exact"): 1e-6,
    ("float16", "fast"): 1e-3,
    ("bfloat16", "exact"): 1e-6,
    ("bfloat16", "fast"): 1e-2,
}


def batch(rows, dim, k, seed, dtype=torch.float32, label_dtype=torch.int64):
    """Random rows with a large common offset (1e3, spread 1), rounded to `dtype`, on the GPU;
    and the float64 values of the rounded rows for the reference."""
    x, y = offset_data(rows, dim, k, seed=seed)
    xt = torch.from_numpy(x).to(dtype)
    return xt.to(DEVICE), torch.from_numpy(y).to(label_dtype).to(DEVICE), xt.double().numpy(), y


def assert_matches(stats, x64, y, k, w_tol, diag=False):
    ref = numpy_stats(x64, y, k)
    torch.cuda.synchronize()
    assert np.array_equal(stats.counts.cpu().numpy(), ref.counts)
    assert rel_err(stats.means, ref.means) < 1e-12
    w = stats.within_scatter
    assert torch.isfinite(w).all()
    assert torch.equal(w, w.T)
    assert rel_err(w, ref.scatter) < w_tol
    assert rel_err(stats.class_scatter, ref.class_scatter) < 1e-9
    if diag:
        assert rel_err(stats.class_diag, ref.class_diag) < 1e-9


# ------------------------------------------------------------------------------ values


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("precision", ["exact", "fast"])
@pytest.mark.parametrize("label_dtype", [torch.int32, torch.int64])
def test_every_dtype_and_precision_matches_float64_reference(dtype, precision, label_dtype):
    x, y, x64, y_np = batch(3000, 48, 7, seed=1, dtype=DTYPES[dtype], label_dtype=label_dtype)
    stats = ncfast.ClassStats(7, 48, device=DEVICE, precision=precision, per_class_diag=True)
    stats.update(x[:1000], y[:1000]).update(x[1000:], y[1000:])
    assert_matches(stats, x64, y_np, 7, W_TOL[(dtype, precision)], diag=True)


@pytest.mark.parametrize(
    "rows, dim, k",
    [
        (3000, 37, 5),  # D not a multiple of any tile or vector width
        (2000, 128, 2),  # K = 2, one full tile
        (1, 16, 3),  # one row
        (700, 300, 11),  # several column tiles, a partial last one
        (2048, 8, 4),  # D smaller than a vector of 16-bit values
        (1500, 200, 50_000),  # K = 50k: most classes absent and untouched
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_odd_shapes(rows, dim, k, dtype):
    x, y, x64, y_np = batch(rows, dim, k, seed=2, dtype=DTYPES[dtype])
    precision = "fast" if dtype == "bfloat16" else "exact"
    stats = ncfast.ClassStats(k, dim, device=DEVICE, precision=precision, per_class_diag=True)
    stats.update(x, y)
    assert_matches(stats, x64, y_np, k, W_TOL[(dtype, precision)], diag=True)


def test_zero_rows_change_nothing():
    x, y, _, _ = batch(100, 8, 3, seed=3)
    stats = ncfast.ClassStats(3, 8, device=DEVICE).update(x, y)
    before = snapshot(stats)
    stats.update(torch.empty(0, 8, device=DEVICE), torch.empty(0, dtype=torch.int64, device=DEVICE))
    assert_unchanged(stats, before)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_strided_rows(dtype):
    x, y, x64, y_np = batch(900, 40, 6, seed=4, dtype=DTYPES[dtype])
    wide = torch.full((900, 43), float("nan"), dtype=x.dtype, device=DEVICE)
    wide[:, 1:41] = x
    stats = ncfast.ClassStats(6, 40, device=DEVICE, precision="exact").update(wide[:, 1:41], y)
    assert_matches(stats, x64, y_np, 6, W_TOL[(dtype, "exact")])


@pytest.mark.parametrize("chunk_rows", [1, 333, 1024])
def test_chunked_call_matches_one_stream(chunk_rows):
    x, y, x64, y_np = batch(2500, 24, 9, seed=5)
    stats = ncfast.ClassStats(9, 24, device=DEVICE, per_class_diag=True)
    _dispatch.native_update_(stats._raw_state, x, y, "raise", block_rows=chunk_rows, precision="exact")
    assert_matches(stats, x64, y_np, 9, 1e-6, diag=True)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_cuda_equals_cpu_path(dtype):
    x, y, _, _ = batch(4000, 64, 12, seed=6, dtype=DTYPES[dtype])
    gpu = ncfast.ClassStats(12, 64, device=DEVICE, precision="exact", per_class_diag=True)
    cpu = ncfast.ClassStats(12, 64, per_class_diag=True)
    for start in range(0, 4000, 1000):
        gpu.update(x[start : start + 1000], y[start : start + 1000])
        cpu.update(x[start : start + 1000].cpu(), y[start : start + 1000].cpu())
    assert torch.equal(gpu.counts.cpu(), cpu.counts)
    assert rel_err(gpu.means, cpu.means.numpy()) < 1e-12
    assert rel_err(gpu.within_scatter, cpu.within_scatter.numpy()) < 1e-6
    assert rel_err(gpu.class_scatter, cpu.class_scatter.numpy()) < 1e-6
    assert rel_err(gpu.class_diag, cpu.class_diag.numpy()) < 1e-6


def test_scores_on_cuda_statistics_equal_the_cpu_scores():
    """Every score computed from statistics held on the GPU (float64 linear algebra there)
    against the same statistics moved to the CPU; and the NC4 second pass on GPU batches."""
    from ncfast import metrics

    x, y, _, _ = batch(3000, 32, 5, seed=7, dtype=torch.float64)
    gpu = ncfast.ClassStats(5, 32, device=DEVICE, per_class_diag=True).update(x, y)
    cpu = gpu.to("cpu")
    assert cpu.device.type == "cpu"
    scalar_scores = {
        "nc1": metrics.nc1, "nc1_trace": metrics.nc1_trace, "cdnv": metrics.cdnv, "logme": metrics.logme,
        "h_score": metrics.h_score, "h_score_shrinkage": metrics.h_score_shrinkage, "gbc": metrics.gbc,
        "rankme": metrics.rankme, "alpha_req": metrics.alpha_req,
        "face": lambda s: metrics.face(s).score, "nc2": lambda s: metrics.nc2(s.centred_means()).etf_distance,
    }
    for name, score in scalar_scores.items():
        assert score(gpu) == pytest.approx(score(cpu), rel=1e-9), name
    assert metrics.eigenvalues(gpu).device.type == "cuda"
    w = torch.randn(5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    on_gpu = ncfast.NCCStats.from_stats(gpu, classifier=w.to(DEVICE)).update(x, y)
    on_cpu = ncfast.NCCStats.from_stats(cpu, classifier=w).update(x.cpu(), y.cpu())
    assert (on_gpu.nc4, on_gpu.ncc_accuracy) == (on_cpu.nc4, on_cpu.ncc_accuracy)
    assert metrics.nc3(gpu, w.to(DEVICE)) == pytest.approx(metrics.nc3(cpu, w), rel=1e-9)


# ------------------------------------------------------------------------------ every element written


def test_poisoned_scratch_does_not_leak_into_the_statistics():
    x, y, x64, y_np = batch(3000, 72, 8, seed=8, dtype=torch.bfloat16)
    stats = ncfast.ClassStats(8, 72, device=DEVICE, per_class_diag=True)
    stats.update(x[:1500], y[:1500])
    stats.check()
    stats._raw_state._device_cache["scratch"].fill_(0xFF)  # NaN in every float, -1 in every int
    stats.update(x[1500:], y[1500:])
    assert_matches(stats, x64, y_np, 8, W_TOL[("bfloat16", "fast")], diag=True)


def test_lower_triangle_is_rewritten_from_the_upper():
    x, y, x64, y_np = batch(2000, 150, 6, seed=9)
    stats = ncfast.ClassStats(6, 150, device=DEVICE).update(x[:1000], y[:1000])
    stats.check()
    lower = torch.tril_indices(150, 150, -1, device=DEVICE)
    stats._raw_state.scatter[lower[0], lower[1]] = float("nan")
    stats.update(x[1000:], y[1000:])
    assert_matches(stats, x64, y_np, 6, 1e-6)


# ------------------------------------------------------------------------------ bad input


def test_bad_label_is_raised_at_the_next_read_and_changes_nothing():
    x, y, _, _ = batch(500, 16, 4, seed=10)
    stats = ncfast.ClassStats(4, 16, device=DEVICE, per_class_diag=True).update(x, y)
    before = snapshot(stats)
    bad = y.clone()
    bad[37] = 9
    stats.update(x, bad)  # no host sync, no error yet
    with pytest.raises(ValueError, match=r"labels: value 9 at row 37 is outside \[0, 4\)"):
        _ = stats.counts
    assert_unchanged(stats, before)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("chunk_rows", [0, 100])
def test_nonfinite_row_rejects_the_whole_batch(dtype, chunk_rows):
    x, y, _, _ = batch(500, 16, 4, seed=11, dtype=DTYPES[dtype])
    stats = ncfast.ClassStats(4, 16, device=DEVICE).update(x, y)
    before = snapshot(stats)
    poisoned = x.clone()
    poisoned[433, 5] = float("nan")
    _dispatch.native_update_(stats._raw_state, poisoned, y, "raise", block_rows=chunk_rows)
    with pytest.raises(ValueError, match="features: row 433 holds NaN or Inf"):
        stats.check()
    assert_unchanged(stats, before)


def test_updates_after_a_rejected_batch_are_skipped_until_it_is_raised():
    x, y, x64, y_np = batch(900, 16, 4, seed=12)
    stats = ncfast.ClassStats(4, 16, device=DEVICE).update(x[:300], y[:300])
    before = snapshot(stats)
    bad = y[300:600].clone()
    bad[0] = -1
    stats.update(x[300:600], bad).update(x[600:], y[600:])
    with pytest.raises(ValueError, match="CUDA update call 1 since the last check was rejected"):
        stats.check()
    assert_unchanged(stats, before)
    stats.update(x[300:], y[300:])  # accepted again once the error was raised
    assert_matches(stats, x64, y_np, 4, 1e-6)


def test_validate_sync_raises_from_update():
    x, y, _, _ = batch(200, 8, 3, seed=13)
    stats = ncfast.ClassStats(3, 8, device=DEVICE, validate="sync")
    bad = y.clone()
    bad[5] = 3
    with pytest.raises(ValueError, match="labels: value 3 at row 5"):
        stats.update(x, bad)
    assert stats.num_samples == 0


@pytest.mark.parametrize("chunk_rows", [0, 128])
def test_nan_policy_skip_drops_and_counts_rows(chunk_rows):
    x, y, x64, y_np = batch(1000, 16, 5, seed=14)
    x[[3, 500, 999], 2] = float("inf")
    keep = np.ones(1000, dtype=bool)
    keep[[3, 500, 999]] = False
    stats = ncfast.ClassStats(5, 16, device=DEVICE, nan_policy="skip", per_class_diag=True)
    _dispatch.native_update_(stats._raw_state, x, y, "skip", block_rows=chunk_rows)
    assert stats.skipped_rows == 3
    assert_matches(stats, x64[keep], y_np[keep], 5, 1e-6, diag=True)


# ------------------------------------------------------------------------------ streams and graphs


def test_update_runs_on_the_current_stream():
    x, y, x64, y_np = batch(2000, 32, 6, seed=15)
    stats = ncfast.ClassStats(6, 32, device=DEVICE)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        stats.update(x, y)
    assert_matches(stats, x64, y_np, 6, 1e-6)  # the read waits for the side stream


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_update_can_be_captured_in_a_cuda_graph(dtype):
    x, y, x64, y_np = batch(4096, 64, 10, seed=16, dtype=DTYPES[dtype])
    stats = ncfast.ClassStats(10, 64, device=DEVICE, per_class_diag=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        stats.update(x, y)  # warm-up: scratch, status and plan are created here
    torch.cuda.current_stream().wait_stream(side)
    stats.check()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stats.update(x, y)  # captured, not run
    for _ in range(3):
        graph.replay()
    reps = 4
    precision = "fast" if dtype == "bfloat16" else "exact"
    assert_matches(stats, np.concatenate([x64] * reps), np.concatenate([y_np] * reps), 10,
                   W_TOL[(dtype, precision)], diag=True)


def test_captured_update_reports_a_bad_batch_after_replay():
    x, y, _, _ = batch(512, 16, 4, seed=17)
    stats = ncfast.ClassStats(4, 16, device=DEVICE)
    stats.update(x, y)
    stats.check()
    before = snapshot(stats)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stats.update(x, y)
    y[100] = 4  # the graph reads the labels' memory at replay
    graph.replay()
    with pytest.raises(ValueError, match="labels: value 4 at row 100"):
        stats.check()
    assert_unchanged(stats, before)
