"""The NC4 / nearest-centre pass multiplies in the input's precision: its decisions, and so its
exact integer counts, equal those of a float64 reference on the same (rounded) rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
import reference_scores as ref
from reference_stats import clustered, stats_of


def expected_counts(x64, y, mu, w, b):
    nearest = ref.nearest_centre(x64, mu)
    predicted = (x64 @ w.T + b).argmax(axis=1)
    return int((nearest != predicted).sum()), int((nearest == y).sum()), int((predicted == y).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_decisions_equal_float64_on_the_same_rows(dtype, offset):
    x, y = clustered(rows=6000, dim=24, classes=8, seed=1, spread=0.6, offset=0.0)
    x = x + offset
    first = stats_of(x, y)
    rng = np.random.default_rng(2)
    w = first.means.numpy() - first.means.numpy().mean(axis=0) + 0.5 * rng.standard_normal((8, 24))
    b = rng.standard_normal(8)
    rows = torch.from_numpy(x).to(dtype)
    if dtype in (torch.float16, torch.bfloat16) and offset:
        rows = torch.from_numpy(x - offset).to(dtype)  # a 16-bit number near 1e3 cannot hold the spread
        x = x - offset
        first = stats_of(x, y)
        w = first.means.numpy() - first.means.numpy().mean(axis=0) + 0.5 * rng.standard_normal((8, 24))
    second = ncfast.NCCStats.from_stats(first, classifier=w, bias=b)
    for start in range(0, 6000, 1000):
        second.update(rows[start : start + 1000], y[start : start + 1000])
    mismatches, ncc_correct, clf_correct = expected_counts(rows.double().numpy(), y, first.means.numpy(), w, b)
    assert second.mismatches == mismatches
    assert second.ncc_correct == ncc_correct
    assert second.classifier_correct == clf_correct
    assert second.num_samples == second.num_labelled == 6000


def test_rows_are_centred_only_under_a_large_offset():
    x, y = clustered(rows=500, dim=6, classes=4, seed=3)
    assert not ncfast.NCCStats.from_stats(stats_of(x, y))._centre_rows
    assert ncfast.NCCStats.from_stats(stats_of(x + 1e4, y))._centre_rows


def test_nan_rows_are_found_in_the_low_precision_pass():
    x, y = clustered(rows=3000, dim=10, classes=5, seed=4)
    x32 = x.astype(np.float32)
    x32[2500, 7] = np.nan
    second = ncfast.NCCStats.from_stats(stats_of(x, y))
    with pytest.raises(ValueError, match="features: row 2500 holds NaN or Inf"):
        second.update(x32, y)
    assert second.num_samples == 0 and second.ncc_correct == 0 and int(second.class_rows.sum()) == 0
    skipping = ncfast.NCCStats.from_stats(ncfast.ClassStats(5, 10, nan_policy="skip").update(x, y))
    skipping.update(x32, y)
    keep = np.arange(3000) != 2500
    assert skipping.skipped_rows == 1 and skipping.num_samples == 2999
    nearest = ref.nearest_centre(x32[keep].astype(np.float64), skipping._mu.numpy() + skipping._origin.numpy())
    assert skipping.ncc_correct == int((nearest == y[keep]).sum())


def test_a_float32_overflow_is_decided_in_float64():
    x, y = clustered(rows=200, dim=4, classes=3, seed=5)
    first = stats_of(x, y)
    rows = x.astype(np.float32)
    rows[17] = [3e38, -3e38, 3e38, 1.0]  # finite, but its product with the centres overflows float32
    second = ncfast.NCCStats.from_stats(first).update(rows, y)
    mu = first.means.numpy()
    # argmin ||x - mu_c||^2 = argmax 2 x.mu_c - ||mu_c||^2: the form float64 can still resolve at 1e38
    nearest = (2.0 * rows.astype(np.float64) @ mu.T - (mu * mu).sum(axis=1)).argmax(axis=1)
    assert second.num_samples == 200 and second.skipped_rows == 0
    assert second.ncc_correct == int((nearest == y).sum())


def test_per_class_agreement_and_its_errors():
    x, y = clustered(rows=2000, dim=8, classes=4, seed=6)
    first = stats_of(x, y)
    w = np.random.default_rng(7).standard_normal((4, 8))
    second = ncfast.NCCStats.from_stats(first, classifier=w).update(x, y)
    agree = ref.nearest_centre(x, first.means.numpy()) == (x @ w.T).argmax(axis=1)
    np.testing.assert_allclose(second.class_agreement.numpy(), [agree[y == c].mean() for c in range(4)], rtol=1e-15)
    assert 1.0 - second.nc4 == pytest.approx(float(agree.mean()))
    with pytest.raises(ValueError, match="class_agreement: needs a classifier"):
        ncfast.NCCStats.from_stats(first).class_agreement
