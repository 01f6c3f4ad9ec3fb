"""What the optional statistics cost: ``ClassStats.update`` with ``fourth_moments=True`` or
``per_class_gram=True`` against the default update, on the same float32 rows (K=100), in
65536-row calls. The three variants run interleaved in a rotating order; each keeps its best
round (the machine is shared and noisy).

    pytest benchmarks/test_bench_extras.py --benchmark-only -s
"""

from __future__ import annotations

import time

import pytest
import torch

import ncfast
from conftest import scale

K, CHUNK, ROUNDS = 100, 65536, 3
CASES = {256: 1_000_000, 1024: 250_000}  # D: rows
VARIANTS = {"default": {}, "fourth_moments": {"fourth_moments": True}, "per_class_gram": {"per_class_gram": True}}


def one_pass(x, y, options):
    stats = ncfast.ClassStats(K, x.shape[1], **options)
    start = time.perf_counter()
    for first in range(0, x.shape[0], CHUNK):
        stats.update(x[first : first + CHUNK], y[first : first + CHUNK])
    return time.perf_counter() - start


def interleaved(x, y):
    best = {name: float("inf") for name in VARIANTS}
    names = list(VARIANTS)
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[: r % len(names)]:
            best[name] = min(best[name], one_pass(x, y, VARIANTS[name]))
    return best


@pytest.mark.parametrize("dim", sorted(CASES))
def test_cost_of_the_optional_statistics(benchmark, dim):
    rows = int(CASES[dim] * scale())
    gen = torch.Generator().manual_seed(dim)
    y = torch.randint(0, K, (rows,), generator=gen)
    x = torch.randn(K, dim, generator=gen)[y] + torch.randn(rows, dim, generator=gen)
    benchmark.group = f"optional statistics D={dim}"
    best = benchmark.pedantic(interleaved, args=(x, y), rounds=1, iterations=1)
    print(f"\nN={rows} D={dim} K={K} float32, best of {ROUNDS} interleaved rounds, {torch.get_num_threads()} threads")
    for name, seconds in best.items():
        print(f"  {name:<15} {seconds:8.3f} s   / default = {seconds / best['default']:5.2f}")
