"""ClassStatsMetric: a torchmetrics Metric whose states are the statistics, merged exactly
(Chan's formula) by merge_state, forward and the DDP sync; checked against one ClassStats seeing
every row and an independent float64 NumPy reference."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics", reason="torchmetrics is not installed (pip install 'ncfast[torchmetrics]')")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import ncfast  # noqa: E402
from ncfast.integrations import ClassStatsMetric  # noqa: E402
from ncfast.metrics.registry import score_stats  # noqa: E402
from reference_stats import numpy_stats, offset_data, rel_err  # noqa: E402

ROWS, DIM, K = 1200, 6, 5


def data():
    x, y = offset_data(ROWS, DIM, K, seed=3, offset=40.0)
    return torch.from_numpy(x), torch.from_numpy(y)  # float64 rows: the merge is then exact to ~1e-15


def batches(x, y, size=97):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def one_stream(x, y, **options):
    return ncfast.ClassStats(K, DIM, **options).update(x, y)


def assert_same_stats(metric_or_stats, expected, tol=1e-12):
    stats = metric_or_stats.class_stats() if isinstance(metric_or_stats, ClassStatsMetric) else metric_or_stats
    assert torch.equal(stats.counts, expected.counts)
    assert rel_err(stats.means, expected.means.numpy()) < tol
    assert rel_err(stats.within_scatter, expected.within_scatter.numpy()) < tol
    assert rel_err(stats.class_scatter, expected.class_scatter.numpy()) < tol
    if expected.per_class_diag:
        assert rel_err(stats.class_diag, expected.class_diag.numpy()) < tol


def test_update_equals_classstats_and_the_numpy_reference():
    x, y = data()
    metric = ClassStatsMetric(K, DIM, per_class_diag=True)
    for xb, yb in batches(x, y):
        metric.update(xb, yb)
    assert_same_stats(metric, one_stream(x, y, per_class_diag=True))
    ref = numpy_stats(x.numpy(), y.numpy(), K)
    assert rel_err(metric.scatter, ref.scatter) < 1e-10
    assert rel_err(metric.class_diag, ref.class_diag) < 1e-10


def test_compute_returns_the_registry_scores_of_the_statistics():
    x, y = data()
    metric = ClassStatsMetric(K, DIM, scores=("nc1", "cdnv", "logme", "gbc"), per_class_diag=True)
    metric.update(x, y)
    result = metric.compute()
    expected, _ = score_stats(one_stream(x, y, per_class_diag=True), ["nc1", "cdnv", "logme", "gbc"])
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name].dtype == torch.float64
        assert float(result[name]) == pytest.approx(value, rel=1e-10)


def test_undefined_scores_are_nan_with_the_reason():
    metric = ClassStatsMetric(K, DIM, scores=("nc1", "logme"))
    metric.update(torch.randn(4, DIM), torch.zeros(4, dtype=torch.int64))  # one class, N < D
    result = metric.compute()
    assert torch.isnan(result["nc1"]) and torch.isnan(result["logme"])
    assert "class" in metric.notes["nc1"] and metric.notes["logme"]


def test_merge_state_is_the_exact_merge_not_a_sum():
    x, y = data()
    a, b = ClassStatsMetric(K, DIM, per_class_diag=True), ClassStatsMetric(K, DIM, per_class_diag=True)
    a.update(x[:500], y[:500])
    b.update(x[500:], y[500:])
    summed_scatter = a.scatter + b.scatter
    a.merge_state(b)
    whole = one_stream(x, y, per_class_diag=True)
    assert_same_stats(a, whole)
    assert rel_err(summed_scatter, whole.within_scatter.numpy()) > 1e-3  # what a sum would have given
    c = ClassStatsMetric(K, DIM, per_class_diag=True)
    c.update(x[500:], y[500:])
    c.merge_state(_states_of(x[:500], y[:500]))  # a dict of states works too
    assert_same_stats(c, whole)


def _states_of(x, y):
    m = ClassStatsMetric(K, DIM, per_class_diag=True)
    m.update(x, y)
    return {name: getattr(m, name) for name in m._defaults}


def test_forward_accumulates_like_update():
    x, y = data()
    metric = ClassStatsMetric(K, DIM, scores=("nc1",))
    for xb, yb in batches(x, y):
        batch_value = metric(xb, yb)
        expected, _ = score_stats(one_stream(xb, yb), ["nc1"])
        assert float(batch_value["nc1"]) == pytest.approx(expected["nc1"], rel=1e-10)
    assert_same_stats(metric, one_stream(x, y))


def test_reset_state_dict_and_device_moves():
    x, y = data()
    metric = ClassStatsMetric(K, DIM)
    metric.update(x[:600], y[:600])
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    resumed = ClassStatsMetric(K, DIM)
    resumed.load_state_dict(torch.load(buffer))
    resumed.update(x[600:], y[600:])
    assert_same_stats(resumed, one_stream(x, y))
    assert set(metric.state_dict()) >= {"counts", "means", "scatter", "class_scatter", "skipped_rows"}
    metric.reset()
    assert int(metric.counts.sum()) == 0 and float(metric.scatter.abs().sum()) == 0.0
    moved = ClassStatsMetric(K, DIM).to("meta")
    assert moved.scatter.device.type == "meta" and moved.means.dtype == torch.float64


def test_bad_batch_raises_and_changes_nothing():
    x, y = data()
    metric = ClassStatsMetric(K, DIM)
    metric.update(x[:100], y[:100])
    before = {name: getattr(metric, name).clone() for name in metric._defaults}
    bad = y[100:200].clone()
    bad[7] = K
    with pytest.raises(ValueError, match="labels"):
        metric.update(x[100:200], bad)
    for name, value in before.items():
        assert torch.equal(getattr(metric, name), value), name
    with pytest.raises(ValueError, match="num_classes"):
        ClassStatsMetric(None, DIM)
    with pytest.raises(ValueError, match="scores: unknown"):
        ClassStatsMetric(K, DIM, scores=("accuracy",))


def test_skipped_rows_are_counted_and_merged():
    x, y = data()
    a, b = ClassStatsMetric(K, DIM, nan_policy="skip"), ClassStatsMetric(K, DIM, nan_policy="skip")
    xa = x[:100].clone()
    xa[3, 2] = float("nan")
    a.update(xa, y[:100])
    b.update(x[100:200], y[100:200])
    a.merge_state(b)
    assert int(a.skipped_rows) == 1 and a.class_stats().skipped_rows == 1
    assert int(a.counts.sum()) == 199


# ---------------------------------------------------------------------------------- 2-process DDP


def _ddp_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y = data()
        cut = 450  # uneven shards; rank 1 never sees class 0
        rows = np.arange(cut) if rank == 0 else np.arange(cut, ROWS)[y.numpy()[cut:] != 0]
        metric = ClassStatsMetric(K, DIM, per_class_diag=True, scores=("nc1", "cdnv", "logme"))
        for start in range(0, len(rows), 64):
            metric.update(x[rows[start : start + 64]], y[rows[start : start + 64]])
        local_counts = metric.counts.clone()
        scores = metric.compute()
        with metric.sync_context():
            synced = metric.class_stats().state_dict()
        torch.save({"scores": {k: float(v) for k, v in scores.items()}, "synced": synced, "rows": rows,
                    "local_unchanged": torch.equal(metric.counts, local_counts)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_sync_equals_one_process_seeing_all_rows(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    x, y = data()
    rows = np.concatenate([r["rows"] for r in results])
    whole = one_stream(x[rows], y[rows], per_class_diag=True)
    expected, _ = score_stats(whole, ["nc1", "cdnv", "logme"])
    ref = numpy_stats(x[rows].numpy(), y[rows].numpy(), K)
    for result in results:
        synced = ncfast.ClassStats(K, DIM, per_class_diag=True).load_state_dict(result["synced"])
        assert_same_stats(synced, whole)
        assert rel_err(synced.within_scatter, ref.scatter) < 1e-12
        assert rel_err(synced.means, ref.means) < 1e-12
        for name, value in expected.items():
            assert result["scores"][name] == pytest.approx(value, rel=1e-12)
        assert result["local_unchanged"]  # after compute the rank's own state is back
