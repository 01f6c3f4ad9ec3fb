"""All-reduce of the optional statistics (fourth moments, per-class scatter) and of TargetStats
over gloo with uneven shards: every rank ends with what one process seeing all rows gives."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ncfast
from reference_stats import offset_data

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

ROWS, DIM, K, TARGETS = 2400, 6, 5, 3


def dataset():
    x, y = offset_data(ROWS, DIM, K, seed=21, offset=30.0)
    t = np.stack([x[:, 0] * 2 - x[:, 1], np.sin(x[:, 2]), (y == 1).astype(np.float64)], axis=1)
    return x, y, t


def rows_of(rank, world, y):
    """Rank r holds (r + 1) / sum parts of the rows; rank 0 sees no class 4."""
    weights = np.arange(1, world + 1)
    cuts = np.concatenate([[0], np.round(ROWS * np.cumsum(weights) / weights.sum())]).astype(int)
    rows = np.arange(cuts[rank], cuts[rank + 1])
    return rows[y[rows] != 4] if rank == 0 else rows


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y, t = dataset()
        rows = rows_of(rank, world, y)
        stats = ncfast.ClassStats(None, DIM, fourth_moments=True, per_class_gram=True).update(x[rows], y[rows])
        stats.all_reduce()
        targets = ncfast.TargetStats(DIM, TARGETS).update(x[rows], t[rows]).all_reduce()
        torch.save({"fourth": stats.fourth_moment(), "gram": stats.class_gram,
                    "targets": targets.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_all_reduce_of_the_extras_and_targets_equals_one_process(tmp_path, world):
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    x, y, t = dataset()
    kept = np.concatenate([rows_of(r, world, y) for r in range(world)])
    single = ncfast.ClassStats(K, DIM, fourth_moments=True, per_class_gram=True).update(x[kept], y[kept])
    one = ncfast.TargetStats(DIM, TARGETS).update(x[kept], t[kept])
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for result in results:
        assert result["fourth"] == pytest.approx(single.fourth_moment(), rel=1e-12)
        assert torch.allclose(result["gram"], single.class_gram, rtol=1e-10, atol=1e-9)
        merged = ncfast.TargetStats(DIM, TARGETS).load_state_dict(result["targets"])
        assert merged.num_samples == len(kept)
        assert torch.allclose(merged.feature_target_products(), one.feature_target_products(), rtol=1e-12)
        assert torch.allclose(merged.target_products(), one.target_products(), rtol=1e-12)
        assert torch.allclose(merged.gram(), one.gram(), rtol=1e-10)  # float64 rows: float64 Grams
        assert result["fourth"] == results[0]["fourth"]
