"""TargetStats: streamed feature/target moments against float64 NumPy from the rows."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import ncfast
from ncfast import metrics


def data(rows=2000, dim=6, targets=3, seed=0, offset=40.0):
    rng = np.random.default_rng(seed)
    x = offset + rng.standard_normal((rows, dim)) * rng.uniform(0.5, 2.0, dim)
    t = np.stack([x @ rng.standard_normal(dim) + rng.standard_normal(rows) for _ in range(targets)], axis=1)
    return x, t + 5.0


def check(ts, x, t, rtol=1e-12):
    np.testing.assert_allclose(ts.feature_target_products().numpy(), x.T @ t, rtol=rtol)
    np.testing.assert_allclose(ts.target_products().numpy(), t.T @ t, rtol=rtol)
    np.testing.assert_allclose(ts.gram().numpy(), x.T @ x, rtol=rtol)
    np.testing.assert_allclose(ts.feature_mean.numpy(), x.mean(axis=0), rtol=rtol)
    np.testing.assert_allclose(ts.target_mean.numpy(), t.mean(axis=0), rtol=rtol)
    assert ts.num_samples == len(x)


def test_streamed_equals_the_rows():
    x, t = data()
    ts = ncfast.TargetStats(6, 3)
    for start in range(0, 2000, 173):
        ts.update(x[start : start + 173], t[start : start + 173])
    check(ts, x, t)


def test_merge_in_any_order_and_persistence(tmp_path):
    x, t = data(seed=1)
    parts = [ncfast.TargetStats(6, 3).update(x[a:b], t[a:b]) for a, b in ((0, 300), (300, 1500), (1500, 2000))]
    for order in ([0, 1, 2], [2, 0, 1]):
        merged = ncfast.TargetStats(6, 3)
        for i in order:
            merged += parts[i]
        check(merged, x, t)
    whole = parts[0].merge(parts[1]).merge(parts[2])
    whole.save(tmp_path / "t.pt")
    for copy in (pickle.loads(pickle.dumps(whole)), ncfast.TargetStats.load(tmp_path / "t.pt"),
                 ncfast.TargetStats(6, 3).load_state_dict(whole.state_dict())):
        check(copy, x, t)
        assert metrics.logme(copy) == metrics.logme(whole)


def test_one_target_may_be_a_vector():
    x, t = data(targets=1, seed=2)
    a = ncfast.TargetStats(6, 1).update(x, t[:, 0])
    check(a, x, t)


def test_bad_rows_and_arguments():
    x, t = data(rows=100, seed=3)
    ts = ncfast.TargetStats(6, 3).update(x[:50], t[:50])
    before = ts.state_dict()
    bad = t[50:].copy()
    bad[9, 1] = np.nan
    with pytest.raises(ValueError, match="features/targets: row 9 holds NaN or Inf"):
        ts.update(x[50:], bad)
    with pytest.raises(ValueError, match=r"targets: expected shape \(50, 3\), got \(50, 2\)"):
        ts.update(x[50:], t[50:, :2])
    with pytest.raises(ValueError, match="features: expected 6 columns, got 5"):
        ts.update(x[50:, :5], t[50:])
    after = ts.state_dict()
    for name in ("target_mean", "cross", "target_scatter"):
        assert torch.equal(before[name], after[name])
    assert ts.num_samples == 50
    skipping = ncfast.TargetStats(6, 3, nan_policy="skip").update(x[50:], bad)
    keep = np.arange(50) != 9
    check(skipping, x[50:][keep], t[50:][keep])
    assert skipping.skipped_rows == 1
    with pytest.raises(ValueError, match="num_targets: expected a positive int, got 0"):
        ncfast.TargetStats(6, 0)
    with pytest.raises(ValueError, match="undefined before any row was seen"):
        metrics.logme(ncfast.TargetStats(6, 3))
    with pytest.raises(ValueError, match=r"state_dict: \(dim, num_targets\) \(6, 3\) does not match \(6, 2\)"):
        ncfast.TargetStats(6, 2).load_state_dict(ts.state_dict())
