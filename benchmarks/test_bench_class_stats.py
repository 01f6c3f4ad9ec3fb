"""ClassStats.update on the CPU, against what else could compute the same statistics.

    python -m pytest benchmarks/test_bench_class_stats.py --benchmark-only -s
    NCFAST_BENCH_SCALE=0.25 ...     # a quarter of the rows (the one-shot needs 2-3x the data's memory)
    NCFAST_BENCH_ROUNDS=5 ...       # rounds (default 3)

Per case, every round runs each implementation once on the same rows, in an order that rotates
from round to round; the table gives the best round of each:
- ncfast: ``ClassStats.update`` of all rows in one call (and ``precision="fast"`` for 16-bit);
- reference: ``ncfast.backend.reference`` (bincount + index_add_, ``X - S[y]``, one matmul per
  65536-row chunk, the float64 fold);
- torch one-shot: what a user would write with the rows in memory: class means by
  ``index_add_``, ``Xc = X - M[y]`` in float32, ``Xc.T @ Xc``;
- Gram: the update's own block Gram alone (``_C.time_block_gram``: the same kernels, slabs,
  sums and folds, on random rows of the same width), and OpenBLAS ssyrk on a block of the
  rows (``_C.sym_gram``); "of Gram" is ncfast's rate over the better of the two.
Rates count N D^2 flops (the symmetric Gram's).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

import ncfast
from ncfast._dtypes import FLOAT_CODES
from ncfast.backend import reference
from ncfast.backend.core import _C
from conftest import CPU_CASES, scale

CASES = {
    "N=2e6 D=512 K=100 fp32": (2_000_000, 512, 100, torch.float32),
    "N=2e7 D=64 K=10 fp32": (20_000_000, 64, 10, torch.float32),
    "N=1e6 D=1024 K=1000 fp16": (1_000_000, 1024, 1000, torch.float16),
    "N=4e6 D=256 K=1e5 fp32": (4_000_000, 256, 100_000, torch.float32),
}


def rounds() -> int:
    return int(os.environ.get("NCFAST_BENCH_ROUNDS", "3"))


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    rows, dim, k, dtype = CASES[request.param]
    rows = int(rows * scale())
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, k, (rows,), generator=gen)
    centres = torch.randn(k, dim, generator=gen)
    features = torch.empty(rows, dim, dtype=dtype)
    step = 1 << 18  # build in pieces so setup never holds two copies
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        features[start:stop] = centres[labels[start:stop]] + torch.randn(stop - start, dim, generator=gen) + 3.0
    yield request.param, features, labels, k


def _torch_one_shot(x, y, k):
    xf = x.float()
    counts = torch.bincount(y, minlength=k).clamp(min=1).float()
    means = torch.zeros(k, x.shape[1]).index_add_(0, y, xf) / counts[:, None]
    xc = xf - means[y]
    return xc.T @ xc


def _gram_rates(x, dim):
    """N D^2 / s of the update's block Gram (float32; bfloat16 too for 16-bit input) and of
    OpenBLAS ssyrk over a block of rows."""
    exact_rows = _C.default_block_rows(dim, FLOAT_CODES[torch.float32], 0)
    blocks = max(1, int(2e9 // (exact_rows * dim * dim)))
    rates = {"block": blocks * exact_rows * dim * dim / _C.time_block_gram(exact_rows, dim, 0, blocks)}
    if x.dtype in (torch.float16, torch.bfloat16) and _C.has_bf16_gram():
        fast_rows = _C.default_block_rows(dim, FLOAT_CODES[x.dtype], 1)
        blocks = max(1, int(4e9 // (fast_rows * dim * dim)))
        rates["bf16 block"] = blocks * fast_rows * dim * dim / _C.time_block_gram(fast_rows, dim, 2, blocks)
    z = x[: min(x.shape[0], 65536)].float().contiguous()
    c = torch.empty(dim, dim)
    repeats = max(1, int(2e9 // (z.shape[0] * dim * dim)))
    start = time.perf_counter()
    for _ in range(repeats):
        _C.sym_gram(z.data_ptr(), z.shape[0], dim, dim, FLOAT_CODES[torch.float32], 1.0, 0.0, c.data_ptr(), False)
    rates["syrk"] = repeats * z.shape[0] * dim * dim / (time.perf_counter() - start)
    return rates


def test_update_against_reference_torch_and_gram(benchmark, case):
    name, x, y, k = case
    dim = x.shape[1]
    # (setup, timed): statistics are made before the clock starts; their arrays' first touch
    # (K x D means, paged in as they are written) is timed, as a user would pay it
    impls = {
        "ncfast": (lambda: ncfast.ClassStats(k, dim), lambda st: st.update(x, y)),
        "reference": (lambda: ncfast.ClassStats(k, dim, backend="reference"),
                      lambda st: reference.update_(st._state, x, y)),
        "torch one-shot": (lambda: None, lambda st: _torch_one_shot(x, y, k)),
    }
    if x.dtype in (torch.float16, torch.bfloat16):
        impls["ncfast fast"] = (lambda: ncfast.ClassStats(k, dim, precision="fast"), lambda st: st.update(x, y))
    best = {impl: float("inf") for impl in impls}
    best_gram: dict = {}
    order = list(impls)

    def one_round():
        for impl in order:
            setup, timed = impls[impl]
            state = setup()
            start = time.perf_counter()
            timed(state)
            best[impl] = min(best[impl], time.perf_counter() - start)
            del state
        for key, rate in _gram_rates(x, dim).items():
            best_gram[key] = max(best_gram.get(key, 0.0), rate)
        order.append(order.pop(0))  # rotate: no implementation always runs first

    with open("/proc/loadavg") as f:
        load_before = f.read().split()[0]
    benchmark.group = name
    benchmark.pedantic(one_round, rounds=rounds(), iterations=1)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[0]
    CPU_CASES[name] = {"rows": x.shape[0], "dim": dim, "times": best, "gram": best_gram,
                       "load": f"{load_before}-{load_after}"}
    assert all(t < float("inf") for t in best.values())
