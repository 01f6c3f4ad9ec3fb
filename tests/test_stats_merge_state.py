"""Merging (Chan's formula), persistence and pickling."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

import ncfast
from reference_stats import numpy_stats, offset_data, rel_err


def shard_stats(x, y, bounds, k, **kwargs):
    return [
        ncfast.ClassStats(k, x.shape[1], **kwargs).update(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])
    ]


def assert_same_stats(a, b, tol):
    assert torch.equal(a.counts, b.counts)
    assert rel_err(a.means, b.means) <= tol
    assert rel_err(a.within_scatter, b.within_scatter) <= tol
    assert rel_err(a.class_scatter, b.class_scatter) <= tol
    if a.per_class_diag:
        assert rel_err(a.class_diag, b.class_diag) <= tol


def test_merge_in_any_order_equals_one_stream():
    x, y = offset_data(4000, 18, 6, seed=20)
    # uneven shards; the second holds only classes 0-1, so the others are missing there
    y[700:1500] = y[700:1500] % 2
    exp = numpy_stats(x, y, 6)
    one = ncfast.ClassStats(6, 18, per_class_diag=True).update(x, y)
    bounds = [0, 700, 1500, 1510, 4000]
    for order in itertools.permutations(range(4)):
        shards = shard_stats(x, y, bounds, 6, per_class_diag=True)
        merged = shards[order[0]]
        for i in order[1:]:
            merged += shards[i]
        assert_same_stats(merged, one, 1e-10)
        assert rel_err(merged.within_scatter, exp.scatter) < 1e-10


def test_merge_is_associative():
    x, y = offset_data(3000, 10, 4, seed=21)
    a, b, c = shard_stats(x, y, [0, 1000, 2000, 3000], 4)
    left = (a + b) + c
    right = a + (b + c)
    assert_same_stats(left, right, 1e-12)
    assert a.num_samples == 1000  # `+` leaves its operands alone


def test_merge_with_empty_and_growing():
    x, y = offset_data(1000, 5, 8, seed=22)
    grown = ncfast.ClassStats(None, 5).update(x[y < 3], y[y < 3])
    other = ncfast.ClassStats(None, 5).update(x[y >= 3], y[y >= 3])
    grown += ncfast.ClassStats(None, 5)
    grown += other
    assert grown.num_classes == 8
    exp = numpy_stats(np.concatenate([x[y < 3], x[y >= 3]]), np.concatenate([y[y < 3], y[y >= 3]]), 8)
    assert rel_err(grown.within_scatter, exp.scatter) < 1e-10


def test_merge_rejects_mismatches():
    a = ncfast.ClassStats(3, 4)
    with pytest.raises(ValueError, match="other: dim"):
        a.merge(ncfast.ClassStats(3, 5))
    with pytest.raises(ValueError, match="other: has 4 classes"):
        a.merge(ncfast.ClassStats(4, 4))
    with pytest.raises(TypeError, match="other"):
        a.merge("stats")


def test_state_dict_round_trip_and_resume():
    x, y = offset_data(3000, 12, 5, seed=23)
    full = ncfast.ClassStats(5, 12, per_class_diag=True).update(x, y)
    first = ncfast.ClassStats(5, 12, per_class_diag=True).update(x[:1000], y[:1000])
    saved = first.state_dict()
    resumed = ncfast.ClassStats(5, 12, per_class_diag=True).load_state_dict(saved)
    resumed.update(x[1000:], y[1000:])
    assert_same_stats(resumed, full, 1e-12)


def test_state_dict_survives_torch_save(tmp_path):
    x, y = offset_data(500, 6, 3, seed=24)
    stats = ncfast.ClassStats(None, 6).update(x, y)
    torch.save(stats.state_dict(), tmp_path / "s.pt")
    loaded = ncfast.ClassStats(None, 6).load_state_dict(torch.load(tmp_path / "s.pt"))
    assert_same_stats(loaded, stats, 0.0)


def test_load_state_dict_rejects_bad_input():
    saved = ncfast.ClassStats(3, 4).state_dict()
    with pytest.raises(ValueError, match="dim 4"):
        ncfast.ClassStats(3, 5).load_state_dict(saved)
    broken = dict(saved, means=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="means has shape"):
        ncfast.ClassStats(3, 4).load_state_dict(broken)
    with pytest.raises(ValueError, match="version"):
        ncfast.ClassStats(3, 4).load_state_dict(dict(saved, version=99))
    incomplete = {key: value for key, value in saved.items() if key != "scatter"}
    with pytest.raises(ValueError, match="state_dict: missing scatter"):
        ncfast.ClassStats(3, 4).load_state_dict(incomplete)
    with pytest.raises(TypeError, match="state_dict: expected a dict"):
        ncfast.ClassStats(3, 4).load_state_dict([saved])


def test_failed_merge_leaves_growing_statistics_unchanged():
    x, y = offset_data(300, 4, 3, seed=26)
    growing = ncfast.ClassStats(None, 4, per_class_diag=True).update(x, y)
    before = {key: value.clone() if isinstance(value, torch.Tensor) else value
              for key, value in growing.state_dict().items()}
    y_wide = y + 5
    y_wide[:10] = 0
    wider = ncfast.ClassStats(None, 4, per_class_diag=True).update(x, y_wide)
    far = wider.state_dict()
    far["means"][0] = 1e300  # class 0's means 1e300 apart: the merged scatter overflows float64
    wider.load_state_dict(far)
    with pytest.raises(ValueError, match="overflows float64"):
        growing.merge(wider)
    assert growing.num_classes == 3
    for key, value in growing.state_dict().items():
        assert torch.equal(value, before[key]) if isinstance(value, torch.Tensor) else value == before[key], key


def test_pickle_round_trip():
    x, y = offset_data(800, 7, 4, seed=25)
    stats = ncfast.ClassStats(4, 7, per_class_diag=True, nan_policy="skip").update(x, y)
    copy = pickle.loads(pickle.dumps(stats))
    assert_same_stats(copy, stats, 0.0)
    assert copy.per_class_diag
    copy.update(x[:10], y[:10])  # still usable
    assert copy.num_samples == stats.num_samples + 10


def test_reset_and_clone():
    x, y = offset_data(300, 4, 2, seed=26)
    stats = ncfast.ClassStats(2, 4).update(x, y)
    twin = stats.clone()
    stats.reset()
    assert stats.num_samples == 0 and stats.num_classes == 2
    assert twin.num_samples == 300
