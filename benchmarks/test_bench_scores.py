"""Scores from statistics vs the usual in-memory implementations (N=1e6, D=1024, K=100).

Two ncfast rows: the scores from statistics built beforehand (the statistics' whole point:
they are built once, in the pass over the data, and scored any number of times), and
end to end, the statistics pass over the (N, D) features plus the scores, against the same
in-memory run.

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
END_TO_END = "pass + scores N=1e6 D=1024 K=100"


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


def assert_agree(in_memory, from_stats):
    """float32 in-memory work vs float64 statistics; the in-memory LogME stops after You et
    al.'s 11 fixed-point steps, ncfast's at convergence, hence its looser tolerance."""
    assert set(in_memory) == set(from_stats)
    for key in ("nc1", "h_score", "gbc"):
        assert in_memory[key] == pytest.approx(from_stats[key], rel=1e-3), key
    assert in_memory["logme"] == pytest.approx(from_stats["logme"], rel=1e-2, abs=1e-3)


def test_scores_from_statistics(benchmark, data):
    f, y, stats = data
    benchmark.group = CASE
    with PeakMemory() as mem:
        benchmark.pedantic(stats_scores, args=(stats,), rounds=3, iterations=1)
    record(CASE, "ncfast", benchmark, {"flops": 0, "bytes": 0}, mem.peak_mib)
    head = ncfast.ClassStats(K, DIM, per_class_diag=True).update(f[:20000], y[:20000])
    assert_agree(inmemory_scores.all_scores(f[:20000], y[:20000], K), stats_scores(head))


def pass_and_scores(f, y):
    return stats_scores(ncfast.ClassStats(K, DIM, per_class_diag=True).update(f, y))


def test_pass_and_scores(benchmark, data):
    f, y, _ = data
    benchmark.group = END_TO_END
    with PeakMemory() as mem:
        benchmark.pedantic(pass_and_scores, args=(f, y), rounds=1, iterations=1)
    record(END_TO_END, "ncfast", benchmark, {"flops": f.shape[0] * DIM * DIM, "bytes": f.numel() * 4}, mem.peak_mib)


def test_scores_in_memory(benchmark, data):
    f, y, stats = data
    benchmark.group = CASE
    with PeakMemory() as mem:
        out = benchmark.pedantic(inmemory_scores.all_scores, args=(f, y, K), rounds=1, iterations=1)
    record(CASE, "reference", benchmark, {"flops": 0, "bytes": 0}, mem.peak_mib)
    record(END_TO_END, "reference", benchmark, {"flops": f.shape[0] * DIM * DIM, "bytes": f.numel() * 4}, mem.peak_mib)
    assert_agree(out, stats_scores(stats))
