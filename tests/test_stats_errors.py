"""Bad input: a clear error naming the argument, and the statistics left untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.backend import dispatch as _dispatch
from reference_stats import assert_unchanged, snapshot, offset_data

BACKENDS = ["native", "reference"]


@pytest.fixture(params=BACKENDS)
def warm_stats(request):
    """Statistics that already hold rows, so 'unchanged' is a real check."""
    x, y = offset_data(400, 8, 4, seed=30)
    return ncfast.ClassStats(4, 8, per_class_diag=True, backend=request.param).update(x, y)


def good_batch(rows=50, dim=8, k=4, seed=31):
    x, y = offset_data(rows, dim, k, seed=seed)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize(
    "features, labels, error, match",
    [
        (torch.zeros(8), torch.zeros(8, dtype=torch.int64), ValueError, r"features: expected \(rows, dim\)"),
        (torch.ones(5, 9), torch.zeros(5, dtype=torch.int64), ValueError, "features: expected 8 columns"),
        (torch.ones(5, 8, dtype=torch.int32), torch.zeros(5, dtype=torch.int64), TypeError, "features: dtype"),
        (torch.ones(5, 8), torch.zeros(5), TypeError, "labels: dtype"),
        (torch.ones(5, 8), torch.zeros(4, dtype=torch.int64), ValueError, "labels: expected 5 labels"),
        (torch.ones(5, 8), torch.zeros(5, 1, dtype=torch.int64), ValueError, "labels: expected a 1-D"),
        (torch.ones(5, 8), torch.tensor([0, 1, 4, 2, 3]), ValueError, r"labels: value 4 at row 2 is outside \[0, 4\)"),
        (torch.ones(5, 8), torch.tensor([0, 1, 2, -1, 3]), ValueError, "labels: value -1 at row 3"),
        ("not an array", torch.zeros(5, dtype=torch.int64), TypeError, "features"),
    ],
)
def test_bad_batches_raise_and_change_nothing(warm_stats, features, labels, error, match):
    before = snapshot(warm_stats)
    with pytest.raises(error, match=match):
        warm_stats.update(features, labels)
    assert_unchanged(warm_stats, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_nonfinite_rows_raise(warm_stats, bad, dtype):
    x, y = good_batch()
    x = x.to(dtype)
    x[17, 3] = bad
    before = snapshot(warm_stats)
    with pytest.raises(ValueError, match="features: row 17 holds NaN or Inf"):
        warm_stats.update(x, y)
    assert_unchanged(warm_stats, before)


def test_error_in_a_late_block_rolls_back_earlier_blocks():
    x, y = offset_data(400, 8, 4, seed=32)
    stats = ncfast.ClassStats(4, 8, per_class_diag=True).update(x, y)
    bx, by = good_batch(rows=1000, seed=33)
    bx[901, 0] = float("nan")
    before = snapshot(stats)
    with pytest.raises(ValueError, match="row 901"):
        _dispatch.native_update_(stats._state, bx, by, "raise", block_rows=64)
    assert_unchanged(stats, before)
    by[950] = 7
    bx[901, 0] = 1.0
    with pytest.raises(ValueError, match="value 7 at row 950"):
        _dispatch.native_update_(stats._state, bx, by, "raise", block_rows=64)
    assert_unchanged(stats, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_policy_drops_and_counts_rows(backend):
    x, y = good_batch(rows=300)
    dirty = x.clone()
    bad_rows = [0, 5, 6, 299]
    for r in bad_rows:
        dirty[r, r % 8] = float("nan") if r % 2 else float("inf")
    keep = torch.ones(300, dtype=torch.bool)
    keep[bad_rows] = False
    stats = ncfast.ClassStats(4, 8, nan_policy="skip", backend=backend).update(dirty, y)
    clean = ncfast.ClassStats(4, 8, backend=backend).update(x[keep], y[keep])
    assert stats.skipped_rows == 4
    assert stats.num_samples == 296
    assert torch.equal(stats.counts, clean.counts)
    assert torch.allclose(stats.within_scatter, clean.within_scatter, rtol=1e-12, atol=0)


def test_empty_batch_is_a_no_op(warm_stats):
    before = snapshot(warm_stats)
    warm_stats.update(torch.zeros(0, 8), torch.zeros(0, dtype=torch.int64))
    warm_stats.update(np.zeros((0, 8), dtype=np.float32), np.zeros(0, dtype=np.int32))
    assert_unchanged(warm_stats, before)


def test_mixed_devices_are_rejected(warm_stats):
    x, y = good_batch()
    before = snapshot(warm_stats)
    with pytest.raises(ValueError, match="features: on meta"):
        warm_stats.update(x.to("meta"), y)
    with pytest.raises(ValueError, match="labels: on meta"):
        warm_stats.update(x, y.to("meta"))
    assert_unchanged(warm_stats, before)


def test_negative_label_with_unknown_num_classes():
    stats = ncfast.ClassStats(None, 3)
    with pytest.raises(ValueError, match="labels: value -2 at row 1 is negative"):
        stats.update(torch.ones(3, 3), torch.tensor([0, -2, 1]))
    assert stats.num_classes == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_rejected_batch_adds_no_classes_when_num_classes_grows(backend):
    x, y = offset_data(200, 5, 2, seed=34)
    stats = ncfast.ClassStats(None, 5, backend=backend).update(x, y)
    before = snapshot(stats)
    bad_x, bad_y = good_batch(rows=40, dim=5, k=6, seed=35)
    bad_y[0] = 5
    bad_x[7, 2] = float("nan")
    with pytest.raises(ValueError, match="row 7"):
        stats.update(bad_x, bad_y)
    assert stats.num_classes == 2
    assert_unchanged(stats, before)
    stats.update(bad_x[8:], bad_y[8:])  # and the statistics still grow afterwards
    assert stats.num_classes == int(bad_y[8:].max()) + 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0, "dim": 3}, "num_classes"),
        ({"num_classes": True, "dim": 3}, "num_classes: expected a positive int or None, got True"),
        ({"num_classes": 3, "dim": 2.0}, "dim: expected a positive int, got 2.0"),
        ({"num_classes": 2, "dim": 0}, "dim"),
        ({"num_classes": 2, "dim": 3, "precision": "bogus"}, "precision"),
        ({"num_classes": 2, "dim": 3, "nan_policy": "ignore"}, "nan_policy"),
        ({"num_classes": 2, "dim": 3, "backend": "gpu"}, "backend"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ncfast.ClassStats(**kwargs)


def test_derived_matrices_need_rows():
    stats = ncfast.ClassStats(3, 4)
    with pytest.raises(ValueError, match="sigma_w: undefined before any row"):
        stats.sigma_w()
    with pytest.raises(ValueError, match="class_diag: not tracked"):
        stats.class_diag
