"""ClassStats.all_reduce over gloo with 2 and 3 processes, and `ncfast score --distributed`
under torchrun: the merged statistics equal one process seeing all the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ncfast
from reference_stats import numpy_stats, offset_data, rel_err

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

ROWS, DIM, K = 3000, 9, 6


def dataset():
    x, y = offset_data(ROWS, DIM, K, seed=11, offset=50.0)
    return x.astype(np.float32), y


def shard(rank, world, x, y, case):
    """Uneven shards; in the 'missing' case rank 0 sees no class 5 and the last rank no
    classes 0-2 at all (and with num_classes=None, a smaller largest label)."""
    weights = np.arange(1, world + 1)  # rank r holds (r + 1) / sum parts of the rows
    cuts = np.concatenate([[0], np.round(ROWS * np.cumsum(weights) / weights.sum())]).astype(int)
    rows = np.arange(cuts[rank], cuts[rank + 1])
    if case == "missing":
        if rank == 0:
            rows = rows[y[rows] != 5]
        if rank == world - 1:
            rows = rows[y[rows] >= 3]
    return rows


def _worker(rank, world, init_file, out_dir, case):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y = dataset()
        rows = shard(rank, world, x, y, case)
        num_classes = None if case == "missing" else K
        backend = "reference" if case == "huge" else "auto"  # the merge's range, not a kernel's, is tested
        stats = ncfast.ClassStats(num_classes, DIM, per_class_diag=True, nan_policy="skip", backend=backend)
        xs = torch.from_numpy(x[rows])
        if case == "missing" and rank == 1:
            xs[0, 0] = float("nan")  # one skipped row, counted globally
        if case == "huge":
            xs = xs * 1e36  # float32 rows near 5e37: their squares need float64
        stats.update(xs, torch.from_numpy(y[rows]))
        if case == "overflow":
            far = stats.state_dict()
            far["means"][0] = 1e300 if rank == 0 else -1e300  # class 0's means 2e300 apart across ranks
            stats.load_state_dict(far)
            before = stats.state_dict()
        if case == "bad-dim" and rank == 1:
            stats = ncfast.ClassStats(K, DIM + 1)
        try:
            stats.all_reduce()
        except ValueError as err:
            unchanged = case != "overflow" or all(torch.equal(v, stats.state_dict()[key]) for key, v in before.items()
                                                  if isinstance(v, torch.Tensor))
            torch.save({"error": str(err), "unchanged": unchanged}, os.path.join(out_dir, f"rank{rank}.pt"))
            return
        torch.save({"state": stats.state_dict(), "skipped": stats.skipped_rows}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_world(tmp_path, world, case):
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path), case), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("case", ["uneven", "missing"])
def test_all_reduce_equals_one_process(tmp_path, world, case):
    results = run_world(tmp_path, world, case)
    x, y = dataset()
    kept = np.concatenate([shard(r, world, x, y, case) for r in range(world)])
    if case == "missing":
        first_of_rank1 = shard(1, world, x, y, case)[0]
        kept = kept[kept != first_of_rank1]
    expected = numpy_stats(x[kept], y[kept], K)
    for r, result in enumerate(results):
        state = result["state"]
        assert state["num_classes"] == K
        np.testing.assert_array_equal(state["counts"].numpy(), expected.counts)
        assert rel_err(state["means"], expected.means) < 1e-12
        assert rel_err(state["scatter"], expected.scatter) < 1e-6
        assert rel_err(state["class_scatter"], expected.class_scatter) < 1e-6
        assert rel_err(state["class_diag"], expected.class_diag) < 1e-6
        assert result["skipped"] == (1 if case == "missing" else 0)
        for name in ("counts", "means", "scatter", "class_scatter", "class_diag"):
            assert torch.equal(state[name], results[0]["state"][name]), f"rank {r} differs in {name}"


def test_all_reduce_refuses_mismatched_dims(tmp_path):
    results = run_world(tmp_path, 2, "bad-dim")
    for result in results:
        assert "ranks disagree on dim" in result["error"]


def test_all_reduce_of_huge_float32_rows_stays_finite_and_exact(tmp_path):
    results = run_world(tmp_path, 2, "huge")
    x, y = dataset()
    scaled = (torch.from_numpy(x) * 1e36).numpy().astype(np.float64)
    expected = numpy_stats(scaled, y, K)
    for result in results:
        state = result["state"]
        assert torch.isfinite(state["scatter"]).all()
        assert rel_err(state["means"], expected.means) < 1e-12
        assert rel_err(state["scatter"], expected.scatter) < 1e-6
        assert rel_err(state["class_diag"], expected.class_diag) < 1e-6


def test_all_reduce_that_would_overflow_raises_on_every_rank_and_changes_nothing(tmp_path):
    results = run_world(tmp_path, 2, "overflow")
    for result in results:
        assert "overflow float64" in result["error"]
        assert result["unchanged"]


def test_all_reduce_needs_an_initialised_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        ncfast.ClassStats(2, 3).all_reduce()


def torchrun(*args, ranks=3):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                           "-m", "ncfast.cli", *map(str, args), "--distributed", "--quiet"],
                          capture_output=True, text=True, timeout=300)


def test_score_distributed_under_torchrun(tmp_path):
    """Statistics all-reduced, and the NC4 / nearest-centre second pass with a classifier."""
    x, y = dataset()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    w = np.random.default_rng(5).standard_normal((int(y.max()) + 1, x.shape[1]))
    np.save(tmp_path / "w.npy", w)
    single = tmp_path / "single.json"
    common = [tmp_path / "x.npy", tmp_path / "y.npy", "--metrics", "nc1,cdnv,logme,gbc", "--classifier", tmp_path / "w.npy"]
    done = subprocess.run([sys.executable, "-m", "ncfast.cli", "score", *map(str, common), "--json", str(single),
                           "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    multi = tmp_path / "multi.json"
    done = torchrun("score", *common, "--json", multi)
    assert done.returncode == 0, done.stderr + done.stdout
    a, b = json.loads(single.read_text()), json.loads(multi.read_text())
    assert b["rows"] == a["rows"] == ROWS and b["ranks"] == 3
    assert {"nc4", "ncc_accuracy", "nc3"} <= set(a["scores"])
    for name, value in a["scores"].items():
        assert b["scores"][name] == pytest.approx(value, rel=1e-6), name  # float32 block Grams differ
    assert done.stdout.count("nc1") == 1  # only rank 0 prints


def test_stats_distributed_under_torchrun_equals_one_process(tmp_path):
    x, y = dataset()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    done = torchrun("stats", tmp_path / "x.npy", tmp_path / "y.npy", "-o", tmp_path / "all.safetensors", ranks=2)
    assert done.returncode == 0, done.stderr + done.stdout
    merged, _ = ncfast.load_stats(tmp_path / "all.safetensors")
    single = ncfast.ClassStats(None, x.shape[1]).update(x, y)
    assert torch.equal(merged.counts, single.counts)
    assert torch.allclose(merged.means, single.means, rtol=1e-12, atol=1e-12)
    assert rel_err(merged.within_scatter, single.within_scatter.numpy()) < 1e-6  # float32 block Grams
