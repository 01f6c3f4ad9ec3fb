"""ClassStats.update on a CUDA GPU: both Gram paths of ncfast (the hand-written kernels, and the
slab path on cuBLAS, NCFAST_CUDA_GRAM=cublas) vs ncfast.reference in the same run.

    python -m pytest benchmarks/test_bench_cuda.py -s          # prints the table at the end
    NCFAST_BENCH_SCALE=0.1 python -m pytest benchmarks/test_bench_cuda.py -s   # a tenth of N

Skipped without a GPU or without the CUDA kernels. Timing: CUDA events around whole passes,
after a warm-up pass, median of NCFAST_BENCH_REPEATS (default 3) passes. A pass streams N rows
through update() in calls of at most 4M rows, taken in turn from a pool of distinct random
rows (at most about 4 GB), so cases larger than GPU memory still run and no call re-reads a
buffer that is still in L2. The floor (DESIGN.md section 8) uses the device's peaks from the
environment, as benchmarks/gpu_probe.py measures them (gpu_checks.sh passes them on):
NCFAST_PEAK_TBS (copy bandwidth, default 3.0), NCFAST_PEAK_TFLOPS (dense bf16, default 790),
NCFAST_PEAK_TF32_TFLOPS (default half the bf16 peak), NCFAST_PEAK_FP32_TFLOPS (float32 FMA, and
the float64 DGEMM of the slab path's "exact", default 67): DESIGN.md's H100 figures.
"""

from __future__ import annotations

import os

import statistics

import pytest
import torch

import ncfast
from ncfast.backend import cuda as _cuda, cuda_slab, reference
from conftest import CUDA_RESULTS, scale

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not _cuda.available(), reason="ncfast was built without the CUDA kernels"),
]

M = 1 << 20
CASES = {
    "N=64M D=128 K=1000 bf16": (64 * M, 128, 1000, torch.bfloat16),
    "N=16M D=1024 K=1000 bf16": (16 * M, 1024, 1000, torch.bfloat16),
    "N=4M D=4096 K=1000 bf16": (4 * M, 4096, 1000, torch.bfloat16),
    "N=16M D=1024 K=1000 fp32": (16 * M, 1024, 1000, torch.float32),
}
CALL_ROWS = 4 * M
POOL_BYTES = 4 << 30
REPEATS = int(os.environ.get("NCFAST_BENCH_REPEATS", "3"))
PEAK_BYTES = float(os.environ.get("NCFAST_PEAK_TBS", "3.0")) * 1e12
PEAK_BF16 = float(os.environ.get("NCFAST_PEAK_TFLOPS", "790")) * 1e12
PEAK_TF32 = float(os.environ.get("NCFAST_PEAK_TF32_TFLOPS", str(PEAK_BF16 / 2e12))) * 1e12
PEAK_FP32 = float(os.environ.get("NCFAST_PEAK_FP32_TFLOPS", "67")) * 1e12
PATHS = {"kernels": "ncfast", "cublas": "ncfast cublas"}


def peak_flops(dtype: torch.dtype, precision: str) -> float:
    if dtype in (torch.float16, torch.bfloat16) and precision == "fast":
        return PEAK_BF16
    if dtype == torch.float32 and precision == "fast":
        return PEAK_TF32
    return PEAK_FP32


@pytest.fixture(params=list(PATHS))
def gram_path(request, monkeypatch):
    """Runs the test with NCFAST_CUDA_GRAM set to each Gram path; yields the row label suffix."""
    monkeypatch.setenv(cuda_slab.ENV, request.param)
    return "" if request.param == "kernels" else " [cublas]"


def make_pool(rows: int, dim: int, k: int, dtype: torch.dtype):
    """Random rows around class centres with a common offset (never zeros), on the GPU."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    labels = torch.randint(0, k, (rows,), device="cuda", generator=gen)
    centres = torch.randn(k, dim, device="cuda", generator=gen) + 3.0
    pool = torch.empty(rows, dim, dtype=dtype, device="cuda")
    for start in range(0, rows, 1 << 20):
        stop = min(rows, start + (1 << 20))
        noise = torch.randn(stop - start, dim, device="cuda", generator=gen)
        pool[start:stop] = (centres[labels[start:stop]] + noise).to(dtype)
    return pool, labels


def stream_pass(update, pool, labels, rows: int) -> None:
    """update(x, y) over `rows` rows in calls of at most CALL_ROWS, cycling through the pool."""
    done, at = 0, 0
    while done < rows:
        take = min(CALL_ROWS, rows - done, pool.shape[0] - at)
        update(pool[at : at + take], labels[at : at + take])
        done += take
        at = (at + take) % pool.shape[0]


def time_passes(run) -> float:
    """Median seconds of `run()` over REPEATS passes, after one warm-up pass (CUDA events)."""
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPEATS):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    rows, dim, k, dtype = CASES[request.param]
    rows = max(CALL_ROWS // 64, int(rows * scale()))
    pool_rows = min(rows, max(1, POOL_BYTES // (dim * torch.finfo(dtype).bits // 8)))
    pool, labels = make_pool(pool_rows, dim, k, dtype)
    precision = _cuda.resolve_precision("auto", dtype)
    item = torch.finfo(dtype).bits // 8
    flops = rows * dim * dim
    nbytes = rows * (dim * item + 8)
    work = {"flops": flops, "bytes": nbytes, "floor_s": max(flops / peak_flops(dtype, precision), nbytes / PEAK_BYTES)}
    yield request.param, pool, labels, rows, dim, k, work
    del pool, labels
    torch.cuda.empty_cache()


def test_ncfast(case, gram_path):
    name, pool, labels, rows, dim, k, work = case
    stats = ncfast.ClassStats(k, dim, device="cuda")

    def run():
        stats.reset()
        stream_pass(stats.update, pool, labels, rows)

    seconds = time_passes(run)
    stats.check()
    assert stats.num_samples == rows
    CUDA_RESULTS[name + gram_path].update(ncfast=seconds, work=work, reference_of=name)


def test_reference(case):
    name, pool, labels, rows, dim, k, work = case
    stats = ncfast.ClassStats(k, dim, device="cuda", backend="reference")

    def run():
        stats.reset()
        stream_pass(lambda x, y: reference.update_(stats._raw_state, x, y), pool, labels, rows)

    CUDA_RESULTS[name].update(reference=time_passes(run), work=work)


# ------------------------------------------------------------------------------ training step

STEP_B, STEP_D, STEP_K, STEP_BATCHES = 256, 2048, 1000, 32


@pytest.fixture(scope="module")
def step_batches():
    pool, labels = make_pool(STEP_B * STEP_BATCHES, STEP_D, STEP_K, torch.bfloat16)
    xs = [pool[i * STEP_B : (i + 1) * STEP_B] for i in range(STEP_BATCHES)]
    ys = [labels[i * STEP_B : (i + 1) * STEP_B] for i in range(STEP_BATCHES)]
    return xs, ys


def step_work(steps: int) -> dict:
    flops = steps * STEP_B * STEP_D * STEP_D
    nbytes = steps * STEP_B * (STEP_D * 2 + 8)
    return {"flops": flops, "bytes": nbytes, "floor_s": max(flops / PEAK_BF16, nbytes / PEAK_BYTES)}


STEPS = 200


@pytest.mark.parametrize("impl", ["reference", "ncfast", "ncfast graph", "ncfast cublas", "ncfast cublas graph"])
def test_training_step(step_batches, impl, monkeypatch):
    xs, ys = step_batches
    name = f"{STEPS} steps B={STEP_B} D={STEP_D} K={STEP_K} bf16"
    backend = "reference" if impl == "reference" else "native"
    monkeypatch.setenv(cuda_slab.ENV, "cublas" if "cublas" in impl else "kernels")
    stats = ncfast.ClassStats(STEP_K, STEP_D, device="cuda", backend=backend)
    if impl.endswith("graph"):
        x_static, y_static = xs[0].clone(), ys[0].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            stats.update(x_static, y_static)
        torch.cuda.current_stream().wait_stream(side)
        stats.check()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            stats.update(x_static, y_static)

        def run():
            for i in range(STEPS):
                x_static.copy_(xs[i % STEP_BATCHES])
                y_static.copy_(ys[i % STEP_BATCHES])
                graph.replay()
    else:
        def run():
            for i in range(STEPS):
                stats.update(xs[i % STEP_BATCHES], ys[i % STEP_BATCHES])

    seconds = time_passes(run)
    stats.check()
    key = "reference" if impl == "reference" else "ncfast"
    case_name = name + (" (graph)" if impl.endswith("graph") else "") + (" [cublas]" if "cublas" in impl else "")
    CUDA_RESULTS[case_name].update({key: seconds, "work": step_work(STEPS), "reference_of": name})
