"""Limits of ClassStats: how far K may grow, what does not fit in memory, and merges of
statistics that track different things."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from reference_stats import assert_unchanged, numpy_stats, offset_data, rel_err, snapshot

BACKENDS = ["native", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [2**20, 10**7, 10**9, 2**63 - 1])
def test_growth_past_max_classes_names_the_row_and_value(backend, value):
    x, y = offset_data(200, 4, 3, seed=70)
    stats = ncfast.ClassStats(None, 4, backend=backend).update(x, y)
    before = snapshot(stats)
    y = y.copy()
    y[57] = value
    with pytest.raises(ValueError, match=rf"labels: value {value} at row 57 is beyond max_classes=1,048,576"):
        stats.update(x, y)
    assert_unchanged(stats, before)
    assert stats.num_classes == 3


def test_max_classes_is_an_argument_kept_by_save_and_clone(tmp_path):
    x, y = offset_data(300, 4, 3, seed=71)
    stats = ncfast.ClassStats(None, 4, max_classes=10).update(x, y + 6)
    assert stats.num_classes == 9
    with pytest.raises(ValueError, match="value 10 at row 0 is beyond max_classes=10"):
        stats.update(x[:1], np.array([10]))
    stats.save(tmp_path / "s.safetensors")
    for copy in (ncfast.load_stats(tmp_path / "s.safetensors")[0], stats.clone()):
        with pytest.raises(ValueError, match="beyond max_classes=10"):
            copy.update(x[:1], np.array([10]))
    with pytest.raises(ValueError, match="max_classes: expected a positive int"):
        ncfast.ClassStats(None, 4, max_classes=0)


def test_a_fixed_num_classes_is_not_limited_by_max_classes():
    stats = ncfast.ClassStats(2**21, 2, max_classes=16)
    stats.update(np.ones((1, 2)), np.array([2**21 - 1]))
    assert stats.num_samples == 1


def test_merging_more_classes_than_max_classes_is_refused():
    small = ncfast.ClassStats(None, 3, max_classes=8)
    wide = ncfast.ClassStats(None, 3).update(np.ones((2, 3)), np.array([0, 20]))
    with pytest.raises(ValueError, match="other: has 21 classes, more than max_classes=8"):
        small.merge(wide)
    assert small.num_classes == 0


def test_a_million_dims_is_a_memory_error_naming_the_size():
    with pytest.raises(MemoryError, match=r"1,000,000 x 1,000,000 float64 scatter\) needs 8.0 TB, more than"):
        ncfast.ClassStats(None, 10**6)
    with pytest.raises(MemoryError, match="needs 8.0 TB"):
        ncfast.ClassStats(10, 10**6)


def test_growth_that_does_not_fit_is_a_memory_error(monkeypatch):
    from ncfast import _state

    monkeypatch.setattr(_state, "device_memory", lambda device: 1 << 20)  # a 1 MB machine
    stats = ncfast.ClassStats(None, 64, max_classes=10**6)
    stats.update(np.ones((1, 64)), np.array([3]))
    before = snapshot(stats)
    with pytest.raises(MemoryError, match=r"5,000 classes .* needs .* more than the 1.0 MB"):
        stats.update(np.ones((2, 64)), np.array([1, 4999]))
    assert_unchanged(stats, before)


def merge_parts(seed=72):
    x, y = offset_data(900, 5, 4, seed=seed)
    with_diag = ncfast.ClassStats(4, 5, per_class_diag=True).update(x[:500], y[:500])
    without = ncfast.ClassStats(4, 5).update(x[500:], y[500:])
    return x, y, with_diag, without


@pytest.mark.parametrize("order", ["diag += plain", "plain += diag"])
def test_merges_of_diag_and_no_diag_keep_what_both_track(order):
    x, y, with_diag, without = merge_parts()
    merged = with_diag.merge(without) if order == "diag += plain" else without.merge(with_diag)
    assert not merged.per_class_diag
    with pytest.raises(ValueError, match="class_diag: not tracked"):
        merged.class_diag
    exp = numpy_stats(x, y, 4)
    assert rel_err(merged.within_scatter, exp.scatter) < 1e-10
    assert rel_err(merged.class_scatter, exp.class_scatter) < 1e-10
    np.testing.assert_array_equal(merged.counts.numpy(), exp.counts)


def test_adding_diag_and_no_diag_leaves_both_operands_alone():
    _, _, with_diag, without = merge_parts()
    total = with_diag + without
    assert not total.per_class_diag and with_diag.per_class_diag
    assert total.num_samples == 900 and with_diag.num_samples == 500 and without.num_samples == 400


def test_merge_with_itself_doubles():
    x, y = offset_data(300, 4, 3, seed=73)
    stats = ncfast.ClassStats(3, 4, per_class_diag=True).update(x, y)
    stats.merge(stats)
    exp = numpy_stats(np.concatenate([x, x]), np.concatenate([y, y]), 3)
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-10
    np.testing.assert_array_equal(stats.counts.numpy(), exp.counts)
