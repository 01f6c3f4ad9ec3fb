"""The cost of fourth_moments=True next to the default CPU update, interleaved, best of 3.

    python benchmarks/fourth_moments_cost.py

float32 rows, K=100, ClassStats.update in 65536-row calls (as a streaming pass makes them).
"""

from __future__ import annotations

import time

import torch

import ncfast

CASES = ((2_000_000, 64), (500_000, 256), (125_000, 1024))  # (rows, D)


def one_pass(x, y, k, fourth_moments):
    stats = ncfast.ClassStats(k, x.shape[1], fourth_moments=fourth_moments)
    start = time.perf_counter()
    for i in range(0, x.shape[0], 65536):
        stats.update(x[i:i + 65536], y[i:i + 65536])
    return time.perf_counter() - start


def main(rounds: int = 3, k: int = 100) -> None:
    gen = torch.Generator().manual_seed(0)
    for rows, dim in CASES:
        x = torch.randn(rows, dim, generator=gen) + 3.0
        y = torch.randint(0, k, (rows,), generator=gen)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(rounds):
            for option in (False, True):
                best[option] = min(best[option], one_pass(x, y, k, option))
        print(f"N={rows:,} D={dim}: default {best[False]:.3f} s, fourth_moments {best[True]:.3f} s "
              f"({best[True] / best[False]:.2f}x)")


if __name__ == "__main__":
    main()
