"""ClassStats.update on the CPU: ncfast kernels vs ncfast.reference on the same data.

    pytest benchmarks/test_bench_class_stats.py --benchmark-only
    NCFAST_BENCH_SCALE=0.1 pytest benchmarks/ ...   # a tenth of the rows
"""

from __future__ import annotations

import pytest
import torch

import ncfast
from ncfast.backend import reference
from conftest import PeakMemory, record, scale

CASES = {
    "N=2e6 D=512 K=100 fp32": (2_000_000, 512, 100, torch.float32),
    "N=2e7 D=64 K=10 fp32": (20_000_000, 64, 10, torch.float32),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    rows, dim, k, dtype = CASES[request.param]
    rows = int(rows * scale())
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, k, (rows,), generator=gen)
    centres = torch.randn(k, dim, generator=gen)
    features = torch.empty(rows, dim, dtype=dtype)
    step = 1 << 20  # build in pieces so setup never holds two copies
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        features[start:stop] = centres[labels[start:stop]] + torch.randn(stop - start, dim, generator=gen) + 3.0
    work = {"flops": rows * dim * dim, "bytes": rows * (dim * features.element_size() + 8)}
    yield request.param, features, labels, k, dim, work


def _run(benchmark, case, impl):
    name, features, labels, k, dim, work = case
    state = {}

    def setup():
        state["stats"] = ncfast.ClassStats(k, dim, backend="native" if impl == "ncfast" else "reference")

    def run_ncfast():
        state["stats"].update(features, labels)

    def run_reference():
        reference.update_(state["stats"]._state, features, labels)

    benchmark.group = name
    benchmark.extra_info.update(work)
    with PeakMemory() as mem:
        benchmark.pedantic(run_ncfast if impl == "ncfast" else run_reference, setup=setup, rounds=3, iterations=1)
    record(name, impl, benchmark, work, mem.peak_mib)
    assert state["stats"].num_samples == features.shape[0]


def test_ncfast(benchmark, case):
    _run(benchmark, case, "ncfast")


def test_reference(benchmark, case):
    _run(benchmark, case, "reference")
