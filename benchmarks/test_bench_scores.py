"""Scores from statistics vs the usual in-memory implementations (N=1e6, D=1024, K=100).

    pytest benchmarks/test_bench_scores.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

import ncfast
from ncfast import metrics
from conftest import PeakMemory, record, scale
import inmemory_scores

ROWS, DIM, K = 1_000_000, 1024, 100
CASE = "scores N=1e6 D=1024 K=100"


@pytest.fixture(scope="module")
def data():
    rows = int(ROWS * scale())
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, K, (rows,), generator=gen)
    centres = torch.randn(K, DIM, generator=gen)
    f = torch.empty(rows, DIM)
    for start in range(0, rows, 1 << 18):
        stop = min(rows, start + (1 << 18))
        f[start:stop] = centres[y[start:stop]] + torch.randn(stop - start, DIM, generator=gen)
    stats = ncfast.ClassStats(K, DIM, per_class_diag=True).update(f, y)
    return f, y, stats


def stats_scores(stats):
    return {"nc1": metrics.nc1(stats), "logme": metrics.logme(stats), "h_score": metrics.h_score(stats), "gbc": metrics.gbc(stats)}


def test_scores_from_statistics(benchmark, data):
    f, y, stats = data
    benchmark.group = CASE
    with PeakMemory() as mem:
        out = benchmark.pedantic(stats_scores, args=(stats,), rounds=3, iterations=1)
    record(CASE, "ncfast", benchmark, {"flops": 0, "bytes": 0}, mem.peak_mib)
    expected = inmemory_scores.all_scores(f[:20000], y[:20000], K)  # sanity: same kind of values
    assert set(out) == set(expected)


def test_scores_in_memory(benchmark, data):
    f, y, stats = data
    benchmark.group = CASE
    with PeakMemory() as mem:
        out = benchmark.pedantic(inmemory_scores.all_scores, args=(f, y, K), rounds=1, iterations=1)
    record(CASE, "reference", benchmark, {"flops": 0, "bytes": 0}, mem.peak_mib)
    mine = stats_scores(stats)
    for key in ("nc1", "h_score", "gbc"):  # float32 in-memory vs float64 statistics
        assert out[key] == pytest.approx(mine[key], rel=1e-3)
