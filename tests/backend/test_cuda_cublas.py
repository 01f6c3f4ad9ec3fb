"""The CUDA slab path (NCFAST_CUDA_GRAM=cublas: the Gram on cuBLAS through torch) against float64
references. Every test needs a GPU and a build with the CUDA kernels; without them all are
skipped. test_cuda.py runs against this path too: NCFAST_CUDA_GRAM=cublas python -m pytest -q -m
cuda tests/backend/test_cuda.py (benchmarks/gpu_checks.sh does both).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.backend import cuda as _cuda, cuda_slab, dispatch as _dispatch, gram_plan
from reference_stats import assert_unchanged, numpy_stats, offset_data, rel_err, snapshot

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not cuda_slab.available(), reason="ncfast was built without the CUDA kernels"),
]

DEVICE = "cuda"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The kernel path's tolerances (test_cuda.py): the slab path must meet them to replace it.
W_TOL = {
    ("float64", "exact"): 1e-10, ("float64", "fast"): 1e-10,
    ("float32", "exact"): 1e-6, ("float32", "fast"): 1e-3,
    ("float16", "exact"): 1e-6, ("float16", "fast"): 1e-3,
    ("bfloat16", "exact"): 1e-6, ("bfloat16", "fast"): 1e-2,
}
# How an update call is laid out: one fused small step, one long chunk, several chunks (checked
# up front), and nan_policy="skip" (checked up front, one chunk).
SHAPES = {"small": (3000, 0), "one chunk": (6000, 0), "chunks": (6000, 1000)}


@pytest.fixture(autouse=True)
def slab_path(monkeypatch):
    monkeypatch.setenv(cuda_slab.ENV, "cublas")


def batch(rows, dim, k, seed, dtype=torch.float32, label_dtype=torch.int64, offset=1e3):
    """Rows with a common offset (1e3, spread 1) rounded to `dtype`, on the GPU; and the float64
    values the GPU sees, for the reference."""
    x, y = offset_data(rows, dim, k, seed=seed, offset=offset)
    xt = torch.from_numpy(x).to(dtype)
    return xt.to(DEVICE), torch.from_numpy(y).to(label_dtype).to(DEVICE), xt.double().numpy(), y


def assert_matches(stats, x64, y, k, w_tol, diag=False):
    ref = numpy_stats(x64, y, k)
    assert np.array_equal(stats.counts.cpu().numpy(), ref.counts)
    assert rel_err(stats.means, ref.means) < 1e-12
    w = stats.within_scatter
    assert torch.isfinite(w).all()
    assert torch.equal(w, w.T)
    assert rel_err(w, ref.scatter) < w_tol
    assert rel_err(stats.class_scatter, ref.class_scatter) < 1e-9
    if diag:
        assert rel_err(stats.class_diag, ref.class_diag) < 1e-9


def update(stats, x, y, chunk_rows=0, nan_policy=None, precision=None):
    """One update call, with the chunk size of the kernels' block_rows."""
    _dispatch.native_update_(stats._raw_state, x, y, nan_policy or stats.nan_policy, block_rows=chunk_rows,
                             precision=precision or stats.precision)


# ------------------------------------------------------------------------------ values


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("precision", ["exact", "fast"])
@pytest.mark.parametrize("label_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_dtype_precision_and_layout_matches_float64_reference(dtype, precision, label_dtype, shape):
    rows, chunk = SHAPES[shape]
    x, y, x64, y_np = batch(rows, 48, 7, seed=1, dtype=DTYPES[dtype], label_dtype=label_dtype)
    stats = ncfast.ClassStats(7, 48, device=DEVICE, precision=precision, per_class_diag=True)
    third = rows // 3
    update(stats, x[:third], y[:third], chunk)  # every class new
    update(stats, x[third:], y[third:], chunk)  # every class seen
    assert_matches(stats, x64, y_np, 7, W_TOL[(dtype, precision)], diag=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_exact_on_gpus_with_slow_float64_uses_float32_folded_every_1024_rows(dtype, monkeypatch):
    monkeypatch.setattr(cuda_slab, "fast_float64", lambda device: False)
    x, y, x64, y_np = batch(7000, 40, 6, seed=2, dtype=DTYPES[dtype])
    stats = ncfast.ClassStats(6, 40, device=DEVICE, precision="exact", per_class_diag=True)
    assert cuda_slab.plan_of(stats._raw_state, x, "raise", "exact").mode == "f32"
    for start, stop in ((0, 300), (300, 1000), (1000, 5000), (5000, 7000)):  # small steps, then longer calls
        stats.update(x[start:stop], y[start:stop])
    assert_matches(stats, x64, y_np, 6, 1e-6, diag=True)


@pytest.mark.parametrize(
    "rows, dim, k",
    [
        (3000, 37, 5),  # D not a multiple of 8
        (2000, 128, 2),  # K = 2
        (6000, 37, 2),  # K = 2, one long chunk
        (1, 16, 3),  # one row
        (1, 16, 1),  # one row, one class
        (700, 300, 11),  # several levels of blocks, a padded width
        (2048, 8, 4),  # D smaller than a vector of 16-bit values
        (1500, 200, 50_000),  # K = 50k: most classes absent and untouched
        (20_000, 72, 50_000),  # K = 50k, long chunk
        (4096, 1000, 1000),  # the largest small step
        (4097, 1000, 1000),  # the smallest call past it
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_odd_shapes(rows, dim, k, dtype):
    x, y, x64, y_np = batch(rows, dim, k, seed=3, dtype=DTYPES[dtype])
    precision = "exact" if dtype == "float32" else "fast"
    stats = ncfast.ClassStats(k, dim, device=DEVICE, precision=precision, per_class_diag=True)
    stats.update(x, y)
    assert_matches(stats, x64, y_np, k, W_TOL[(dtype, precision)], diag=True)


def test_zero_rows_change_nothing():
    x, y, _, _ = batch(100, 8, 3, seed=4)
    stats = ncfast.ClassStats(3, 8, device=DEVICE).update(x, y)
    before = snapshot(stats)
    stats.update(torch.empty(0, 8, device=DEVICE), torch.empty(0, dtype=torch.int64, device=DEVICE))
    cuda_slab.update_(stats._raw_state, torch.empty(0, 8, device=DEVICE), torch.empty(0, dtype=torch.int64,
                      device=DEVICE), "raise", "exact")
    assert_unchanged(stats, before)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_strided_and_misaligned_rows(dtype, shape):
    rows, chunk = SHAPES[shape]
    x, y, x64, y_np = batch(rows, 40, 6, seed=5, dtype=DTYPES[dtype])
    wide = torch.full((rows, 43), float("nan"), dtype=x.dtype, device=DEVICE)
    wide[:, 1:41] = x  # an odd start: no vector loads
    stats = ncfast.ClassStats(6, 40, device=DEVICE, precision="exact")
    update(stats, wide[:, 1:41], y, chunk)
    assert_matches(stats, x64, y_np, 6, W_TOL[(dtype, "exact")])


@pytest.mark.parametrize("chunk_rows", [1, 333, 1024])
def test_chunked_call_matches_one_stream(chunk_rows):
    x, y, x64, y_np = batch(2500, 24, 9, seed=6)
    stats = ncfast.ClassStats(9, 24, device=DEVICE, per_class_diag=True)
    update(stats, x, y, chunk_rows, precision="exact")
    assert_matches(stats, x64, y_np, 9, 1e-6, diag=True)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_slab_path_equals_the_kernel_path_and_the_cpu(dtype, monkeypatch):
    x, y, _, _ = batch(9000, 64, 12, seed=7, dtype=DTYPES[dtype])
    slab = ncfast.ClassStats(12, 64, device=DEVICE, precision="exact", per_class_diag=True)
    kernels = ncfast.ClassStats(12, 64, device=DEVICE, precision="exact", per_class_diag=True)
    cpu = ncfast.ClassStats(12, 64, per_class_diag=True)
    for start, stop in ((0, 1000), (1000, 3000), (3000, 9000)):
        monkeypatch.setenv(cuda_slab.ENV, "cublas")
        slab.update(x[start:stop], y[start:stop])
        monkeypatch.setenv(cuda_slab.ENV, "kernels")
        kernels.update(x[start:stop], y[start:stop])
        cpu.update(x[start:stop].cpu(), y[start:stop].cpu())
    for other in (kernels, cpu):
        assert torch.equal(slab.counts.cpu(), other.counts.cpu())
        assert rel_err(slab.means, other.means.cpu().numpy()) < 1e-12
        assert rel_err(slab.within_scatter, other.within_scatter.cpu().numpy()) < 1e-6
        assert rel_err(slab.class_diag, other.class_diag.cpu().numpy()) < 1e-6


def test_paths_can_alternate_on_one_statistics_object(monkeypatch):
    x, y, x64, y_np = batch(6000, 50, 5, seed=8, dtype=torch.bfloat16)
    stats = ncfast.ClassStats(5, 50, device=DEVICE)
    for i, start in enumerate(range(0, 6000, 1000)):
        monkeypatch.setenv(cuda_slab.ENV, "cublas" if i % 2 == 0 else "kernels")
        stats.update(x[start : start + 1000], y[start : start + 1000])
    assert_matches(stats, x64, y_np, 5, W_TOL[("bfloat16", "fast")])


def test_dtype_and_precision_may_change_between_updates():
    """Each change of slab mode folds the partial of the previous one first."""
    x, y, x64, y_np = batch(4000, 33, 4, seed=9)
    stats = ncfast.ClassStats(4, 33, device=DEVICE, per_class_diag=True)
    stats.update(x[:1000].bfloat16(), y[:1000])
    update(stats, x[1000:2000], y[1000:2000], precision="fast")
    update(stats, x[2000:3000], y[2000:3000], precision="exact")
    stats.update(x[3000:].double(), y[3000:])
    x_seen = np.concatenate([torch.from_numpy(x64[:1000]).bfloat16().double().numpy(), x64[1000:]])
    assert_matches(stats, x_seen, y_np, 4, 1e-3, diag=True)


# ------------------------------------------------------------------------------ float32 range


def extreme(kind, rows=3000, dim=24, seed=10):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((rows, dim))
    return {
        "offset 1e18": 1e18 * (3.0 + noise),
        "spread 1e19": 1e19 * noise,
        "near float32 max": 3e38 * np.clip(noise / 4, -1, 1),
        "1e-22": 1e-22 * (5.0 + noise),
        "1e-30": 1e-30 * noise,
        "float32 subnormals": 1e-41 * (5.0 + noise),
    }[kind], rng.integers(0, 5, rows)


@pytest.mark.parametrize("kind", ["offset 1e18", "spread 1e19", "near float32 max", "1e-22", "1e-30",
                                  "float32 subnormals"])
@pytest.mark.parametrize("precision", ["exact", "fast"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_finite_rows_of_any_float32_magnitude_give_a_finite_nonzero_w(kind, precision, shape):
    rows, chunk = SHAPES[shape]
    x, y = extreme(kind, rows=rows)
    xt = torch.from_numpy(x).float()
    assert torch.isfinite(xt).all()
    stats = ncfast.ClassStats(5, 24, device=DEVICE, precision=precision)
    update(stats, xt.to(DEVICE), torch.from_numpy(y).to(DEVICE), chunk)
    w = stats.within_scatter
    assert torch.isfinite(w).all() and (torch.diagonal(w) > 0).all()
    ref = numpy_stats(xt.double().numpy(), y, 5)
    assert rel_err(w, ref.scatter) < W_TOL[("float32", precision)]
    assert rel_err(stats.class_scatter, ref.class_scatter) < 1e-9


@pytest.mark.parametrize("dtype, kind", [("bfloat16", "1e30"), ("bfloat16", "1e-30"), ("float16", "full range"),
                                         ("float16", "subnormals")])
def test_16_bit_extremes(dtype, kind):
    rng = np.random.default_rng(11)
    noise = np.clip(rng.standard_normal((3000, 16)) / 3, -1, 1)
    x = {"1e30": 1e30 * (2.0 + noise), "1e-30": 1e-30 * noise,
         "full range": 60000.0 * noise,  # |x - p| up to 120000, past float16's 65504
         "subnormals": 1e-6 * (3.0 + noise)}[kind]
    xt = torch.from_numpy(x).to(DTYPES[dtype])
    y = rng.integers(0, 4, 3000)
    assert torch.isfinite(xt).all()
    stats = ncfast.ClassStats(4, 16, device=DEVICE).update(xt.to(DEVICE), torch.from_numpy(y).to(DEVICE))
    w = stats.within_scatter
    assert torch.isfinite(w).all() and (torch.diagonal(w) > 0).all()
    assert rel_err(w, numpy_stats(xt.double().numpy(), y, 4).scatter) < W_TOL[(dtype, "fast")]


def test_a_rescale_with_rows_in_the_partial_keeps_them():
    rng = np.random.default_rng(12)
    parts = [1.0 + rng.standard_normal((1500, 12)), 1e20 * (1.0 + rng.standard_normal((1500, 12)))]
    x = torch.from_numpy(np.concatenate(parts)).float()
    y = torch.from_numpy(rng.integers(0, 3, 3000))
    stats = ncfast.ClassStats(3, 12, device=DEVICE, precision="fast")
    stats.update(x[:1500].to(DEVICE), y[:1500].to(DEVICE)).update(x[1500:].to(DEVICE), y[1500:].to(DEVICE))
    assert rel_err(stats.within_scatter, numpy_stats(x.double().numpy(), y.numpy(), 3).scatter) < 1e-3


# ------------------------------------------------------------------------------ every element written


def poison(stats):
    """NaN in every float, -1 in every int of the scratch and the slabs (never of the partial,
    which holds rows of the statistics)."""
    for key in ("scratch", "slab_x", "slab_y", "slab_corr_x", "slab_corr_y"):
        buf = stats._raw_state._device_cache.get(key)
        if buf is not None:
            buf.view(torch.uint8).fill_(0xFF)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float16"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_poisoned_scratch_and_slabs_do_not_leak_into_the_statistics(dtype, shape):
    rows, chunk = SHAPES[shape]
    x, y, x64, y_np = batch(rows, 72, 8, seed=13, dtype=DTYPES[dtype])
    stats = ncfast.ClassStats(8, 72, device=DEVICE, per_class_diag=True)
    half = rows // 2
    update(stats, x[:half], y[:half], chunk)
    stats.check()
    poison(stats)
    update(stats, x[half:], y[half:], chunk)
    precision = "fast" if dtype != "float32" else "exact"
    assert_matches(stats, x64, y_np, 8, W_TOL[(dtype, precision)], diag=True)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_lower_triangle_is_rewritten_from_the_upper(shape):
    rows, chunk = SHAPES[shape]
    x, y, x64, y_np = batch(rows, 150, 6, seed=14)
    stats = ncfast.ClassStats(6, 150, device=DEVICE)
    update(stats, x[: rows // 2], y[: rows // 2], chunk)
    stats.check()
    lower = torch.tril_indices(150, 150, -1, device=DEVICE)
    stats._raw_state.scatter[lower[0], lower[1]] = float("nan")
    update(stats, x[rows // 2 :], y[rows // 2 :], chunk)
    assert_matches(stats, x64, y_np, 6, 1e-6)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("shape", list(SHAPES))
def test_bad_label_is_raised_at_the_next_read_and_changes_nothing(shape):
    rows, chunk = SHAPES[shape]
    x, y, x64, y_np = batch(rows, 16, 4, seed=15)
    stats = ncfast.ClassStats(4, 16, device=DEVICE, per_class_diag=True)
    update(stats, x, y, chunk)
    before = snapshot(stats)
    bad = y.clone()
    bad[37] = 9
    update(stats, x, bad, chunk)
    with pytest.raises(ValueError, match=r"labels: value 9 at row 37 is outside \[0, 4\)"):
        _ = stats.counts
    assert_unchanged(stats, before)
    update(stats, x, y, chunk)  # the rejected call's GEMMs added nothing to the partial
    assert_matches(stats, np.concatenate([x64, x64]), np.concatenate([y_np, y_np]), 4, 1e-6)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_nonfinite_row_rejects_the_whole_batch(dtype, shape):
    rows, chunk = SHAPES[shape]
    x, y, x64, y_np = batch(rows, 16, 4, seed=16, dtype=DTYPES[dtype])
    stats = ncfast.ClassStats(4, 16, device=DEVICE)
    update(stats, x, y, chunk)
    before = snapshot(stats)
    poisoned = x.clone()
    poisoned[433, 5] = float("nan")
    update(stats, poisoned, y, chunk, nan_policy="raise")
    with pytest.raises(ValueError, match="features: row 433 holds NaN or Inf"):
        stats.check()
    assert_unchanged(stats, before)
    update(stats, x, y, chunk)
    tol = W_TOL[(dtype, _cuda.resolve_precision("auto", DTYPES[dtype]))]
    assert_matches(stats, np.concatenate([x64, x64]), np.concatenate([y_np, y_np]), 4, tol)


def test_updates_after_a_rejected_batch_are_skipped_until_it_is_raised():
    x, y, x64, y_np = batch(900, 16, 4, seed=17)
    stats = ncfast.ClassStats(4, 16, device=DEVICE).update(x[:300], y[:300])
    before = snapshot(stats)
    bad = y[300:600].clone()
    bad[0] = -1
    stats.update(x[300:600], bad).update(x[600:], y[600:])
    with pytest.raises(ValueError, match="CUDA update call 1 since the last check was rejected"):
        stats.check()
    assert_unchanged(stats, before)
    stats.update(x[300:], y[300:])
    assert_matches(stats, x64, y_np, 4, 1e-6)


@pytest.mark.parametrize("chunk_rows", [0, 128])
def test_nan_policy_skip_drops_and_counts_rows(chunk_rows):
    x, y, x64, y_np = batch(1000, 16, 5, seed=18)
    x[[3, 500, 999], 2] = float("inf")
    keep = np.ones(1000, dtype=bool)
    keep[[3, 500, 999]] = False
    stats = ncfast.ClassStats(5, 16, device=DEVICE, nan_policy="skip", per_class_diag=True)
    update(stats, x, y, chunk_rows, nan_policy="skip")
    assert stats.skipped_rows == 3
    assert_matches(stats, x64[keep], y_np[keep], 5, 1e-6, diag=True)


# ------------------------------------------------------------------------------ streams, graphs, compile


def test_update_runs_on_the_current_stream():
    x, y, x64, y_np = batch(6000, 32, 6, seed=19)
    stats = ncfast.ClassStats(6, 32, device=DEVICE)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        stats.update(x[:2000], y[:2000]).update(x[2000:], y[2000:])
    assert_matches(stats, x64, y_np, 6, 1e-6)  # the read waits for the side stream


def capture(stats, x, y):
    """Warm-up on a side stream (creates every buffer), then the captured graph of one update."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        stats.update(x, y)
    torch.cuda.current_stream().wait_stream(side)
    stats.check()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stats.update(x, y)
    return graph


@pytest.mark.parametrize("dtype, precision, rows, replays", [
    ("bfloat16", "fast", 4096, 20),  # a small step; due folds every ~15 replays (65536 rows)
    ("float32", "exact", 4096, 5),
    ("float16", "fast", 300, 8),
    ("float32", "fast", 6000, 12),  # one long chunk per replay; due folds every ~10 replays
    ("bfloat16", "fast", 6000, 3),
])
def test_update_can_be_captured_in_a_cuda_graph(dtype, precision, rows, replays):
    x, y, x64, y_np = batch(rows, 64, 10, seed=20, dtype=DTYPES[dtype])
    stats = ncfast.ClassStats(10, 64, device=DEVICE, per_class_diag=True, precision=precision)
    graph = capture(stats, x, y)
    for _ in range(replays):
        graph.replay()
    reps = replays + 1
    assert_matches(stats, np.concatenate([x64] * reps), np.concatenate([y_np] * reps), 10,
                   W_TOL[(dtype, precision)], diag=True)


def test_captured_float32_exact_on_slow_float64_gpus_folds_every_replay(monkeypatch):
    monkeypatch.setattr(cuda_slab, "fast_float64", lambda device: False)
    x, y, x64, y_np = batch(500, 40, 8, seed=21)
    stats = ncfast.ClassStats(8, 40, device=DEVICE, precision="exact")
    graph = capture(stats, x, y)
    for _ in range(6):
        graph.replay()
    assert_matches(stats, np.concatenate([x64] * 7), np.concatenate([y_np] * 7), 8, 1e-6)


def test_captured_update_rescales_when_the_data_changes_magnitude():
    x, y, x64, y_np = batch(2048, 32, 6, seed=22)
    stats = ncfast.ClassStats(6, 32, device=DEVICE, precision="fast")
    x_static = x.clone()
    graph = capture(stats, x_static, y)
    seen = [x64]  # the warm-up; the capture itself runs nothing
    for scale in (1.0, 1e20, 1e20):
        x_static.copy_(x * scale)
        graph.replay()
        seen.append(x_static.double().cpu().numpy())
    assert_matches(stats, np.concatenate(seen), np.concatenate([y_np] * 4), 6, 1e-3)


def test_captured_update_reports_a_bad_batch_after_replay():
    x, y, _, _ = batch(512, 16, 4, seed=23)
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


@pytest.mark.parametrize("rows", [256, 6000])
def test_update_inside_a_fullgraph_compiled_step(rows):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).to(DEVICE)
    stats = ncfast.ClassStats(3, 64, device=DEVICE, precision="exact")

    def step(x, y):
        h = model[:2](x)
        stats.update(h.detach(), y)
        return model[2](h).square().mean()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    batches = [(torch.randn(rows, 10, device=DEVICE) + 1, torch.randint(0, 3, (rows,), device=DEVICE))
               for _ in range(3)]
    for xb, yb in batches:
        compiled(xb, yb).backward()
    with torch.no_grad():
        h = torch.cat([model[:2](xb) for xb, _ in batches]).double().cpu().numpy()
    ref = numpy_stats(h, torch.cat([yb for _, yb in batches]).cpu().numpy(), 3)
    assert np.array_equal(stats.counts.cpu().numpy(), ref.counts)
    assert rel_err(stats.within_scatter, ref.scatter) < 1e-5


def test_small_step_plan_is_one_gemm():
    """The B=256, D=2048, K=1000 training step: prep, moments, classes, and one GEMM."""
    x = torch.zeros(256, 2048, dtype=torch.bfloat16, device=DEVICE)
    stats = ncfast.ClassStats(1000, 2048, device=DEVICE)
    plan = cuda_slab.plan_of(stats._raw_state, x, "raise", "fast")
    assert plan.small and plan.splits == 1 and len(plan.gemms) == 1
    assert plan.gemm_rows(256) == 256 + gram_plan.CORR_SPLIT["bf16"] * 256


def test_bad_switch_value_is_refused(monkeypatch):
    monkeypatch.setenv(cuda_slab.ENV, "fast")
    x, y, _, _ = batch(10, 4, 2, seed=24)
    stats = ncfast.ClassStats(2, 4, device=DEVICE)
    with pytest.raises(ValueError, match="NCFAST_CUDA_GRAM"):
        stats.update(x, y)
