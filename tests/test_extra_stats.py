"""The optional statistics of ClassStats: fourth moments (``fourth_moments=True``) and per-class
scatter matrices (``per_class_gram=True``), against float64 NumPy computed from the rows."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import ncfast
from reference_stats import clustered, offset_data

K, D = 5, 7


def fourth_moment(x):
    z = x - x.mean(axis=0)
    q = (z * z).sum(axis=1)
    return float(q @ q)


def class_grams(x, y, k):
    out = np.zeros((k, x.shape[1], x.shape[1]))
    for c in range(k):
        rows = x[y == c]
        if len(rows):
            z = rows - rows.mean(axis=0)
            out[c] = z.T @ z
    return out


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def extras(k=K, **kw):
    return ncfast.ClassStats(k, D, fourth_moments=True, per_class_gram=True, **kw)


def data(seed=0, rows=3000, offset=0.0):
    x, y = clustered(rows=rows, dim=D, classes=K, seed=seed, offset=offset)
    return x, y


@pytest.mark.parametrize("order", ["shuffled", "sorted by class"])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_streamed_extras_equal_the_rows(order, offset):
    x, y = data(offset=offset)
    if order == "sorted by class":  # the hard case: the running mean moves far between chunks
        keep = np.argsort(y, kind="stable")
        x, y = x[keep], y[keep]
    s = extras()
    for start in range(0, len(y), 137):
        s.update(x[start : start + 137], y[start : start + 137])
    assert s.fourth_moment() == pytest.approx(fourth_moment(x), rel=1e-12)
    assert rel(s.class_gram, class_grams(x, y, K)) < 1e-12
    assert rel(s.class_gram.sum(dim=0), s.within_scatter) < 1e-12  # sum_c W_c = W


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_float32_rows(offset):
    """Fourth moments in float64 (the shifts of their centre use W, whose float32 rounding they
    inherit in part: about 1e-11 here); per-class scatter as the pooled W: float32 products of
    rows centred on their class, under README's 1e-6 bound."""
    x, y = data(seed=1, offset=offset)
    x32 = x.astype(np.float32)
    s = extras()
    for start in range(0, len(y), 500):
        s.update(x32[start : start + 500], y[start : start + 500])
    x64 = x32.astype(np.float64)
    assert s.fourth_moment() == pytest.approx(fourth_moment(x64), rel=1e-9)
    assert rel(s.class_gram, class_grams(x64, y, K)) < 1e-6
    assert rel(s.class_gram.sum(dim=0), s.within_scatter) < 1e-6


def test_merge_in_any_order_equals_one_stream():
    x, y = data(seed=2, offset=50.0)
    cuts = [0, 400, 1100, 1900, 3000]
    parts = [extras().update(x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        merged = extras()
        for i in order:
            merged.merge(parts[i])
        assert merged.fourth_moment() == pytest.approx(fourth_moment(x), rel=1e-12)
        assert rel(merged.class_gram, class_grams(x, y, K)) < 1e-12
    tree = (parts[0] + parts[1]) + (parts[2] + parts[3])
    assert tree.fourth_moment() == pytest.approx(fourth_moment(x), rel=1e-12)


def test_growing_classes_keep_the_extras():
    x, y = data(seed=3)
    keep = np.argsort(y, kind="stable")
    s = ncfast.ClassStats(None, D, fourth_moments=True, per_class_gram=True)
    for start in range(0, len(y), 250):
        s.update(x[keep][start : start + 250], y[keep][start : start + 250])
    assert s.num_classes == K
    assert rel(s.class_gram, class_grams(x, y, K)) < 1e-12
    assert s.fourth_moment() == pytest.approx(fourth_moment(x), rel=1e-12)


def test_state_dict_pickle_save_load_and_to(tmp_path):
    x, y = data(seed=4)
    s = extras().update(x, y)
    copies = [pickle.loads(pickle.dumps(s)), extras().load_state_dict(s.state_dict()), s.clone(), s.to("cpu")]
    for suffix in (".safetensors", ".pt"):
        s.save(tmp_path / f"s{suffix}")
        copies.append(ncfast.load_stats(tmp_path / f"s{suffix}")[0])
    for copy in copies:
        assert copy.fourth_moments and copy.per_class_gram
        assert torch.equal(copy.class_gram, s.class_gram)
        assert copy.fourth_moment() == s.fourth_moment()
    with pytest.raises(ValueError, match="has no class_gram, moment_centre, fourth_moment, third_moment"):
        extras().load_state_dict(ncfast.ClassStats(K, D).update(x, y).state_dict())
    reset = s.clone().reset()
    assert reset.fourth_moments and float(reset.class_gram.abs().sum()) == 0.0


def test_rejected_batches_change_nothing():
    x, y = data(seed=5)
    s = extras().update(x[:1000], y[:1000])
    before = {k: v.clone() for k, v in s.state_dict().items() if isinstance(v, torch.Tensor)}
    bad = x[1000:1100].copy()
    bad[42, 3] = np.inf
    with pytest.raises(ValueError, match="features: row 42 holds NaN or Inf"):
        s.update(bad, y[1000:1100])
    labels = y[1000:1100].copy()
    labels[7] = K
    with pytest.raises(ValueError, match=rf"labels: value {K} at row 7 is outside \[0, {K}\)"):
        s.update(x[1000:1100], labels)
    after = s.state_dict()
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def test_skipped_rows_are_left_out_of_the_extras():
    x, y = data(seed=6)
    dirty = x.copy()
    dirty[[3, 400, 2999]] = np.nan
    keep = np.setdiff1d(np.arange(len(y)), [3, 400, 2999])
    s = extras(nan_policy="skip").update(dirty, y)
    assert s.skipped_rows == 3
    assert s.fourth_moment() == pytest.approx(fourth_moment(x[keep]), rel=1e-12)
    assert rel(s.class_gram, class_grams(x[keep], y[keep], K)) < 1e-12


def test_merge_keeps_the_extras_both_sides_track():
    x, y = data(seed=7)
    half = len(y) // 2
    with_extras = extras().update(x[:half], y[:half])
    with_extras.merge(ncfast.ClassStats(K, D).update(x[half:], y[half:]))
    assert not with_extras.fourth_moments and not with_extras.per_class_gram
    exact = ncfast.ClassStats(K, D).update(x, y)
    assert rel(with_extras.within_scatter, exact.within_scatter) < 1e-12
    with pytest.raises(ValueError, match="fourth_moment: not tracked"):
        with_extras.fourth_moment()
    plain = ncfast.ClassStats(K, D).merge(extras().update(x, y))  # extras there but not here: ignored
    assert plain.num_samples == len(y) and not plain.fourth_moments
    both = extras().update(x[:half], y[:half]).merge(extras().update(x[half:], y[half:]))
    assert both.fourth_moment() == pytest.approx(fourth_moment(x), rel=1e-12)


def test_options_are_checked_and_reported():
    with pytest.raises(TypeError, match="fourth_moments: expected True or False, got 1"):
        ncfast.ClassStats(K, D, fourth_moments=1)
    s = ncfast.ClassStats(K, D)
    assert not s.fourth_moments and not s.per_class_gram
    with pytest.raises(ValueError, match="fourth_moments=True"):
        s.fourth_moment()
    with pytest.raises(ValueError, match="per_class_gram=True"):
        s.class_gram


def test_per_class_gram_too_big_is_refused_with_its_size(monkeypatch):
    import os

    monkeypatch.setattr(os, "sysconf", lambda name: 1024)  # pretend 1 MiB is free
    with pytest.raises(MemoryError, match=r"per_class_gram: 1000 classes x 512 x 512 float64 need 2.0 GiB"):
        ncfast.ClassStats(1000, 512, per_class_gram=True)


def test_default_statistics_hold_no_extras():
    s = ncfast.ClassStats(K, D).update(*data(seed=8))
    state = s._state
    assert state.fourth_moment is None and state.class_gram is None
    assert not {"class_gram", "fourth_moment"} & set(s.state_dict())


def test_accumulate_passes_the_options(tmp_path):
    x, y = offset_data(2000, D, K, seed=9, offset=10.0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    s = ncfast.accumulate(tmp_path / "x.npy", tmp_path / "y.npy", fourth_moments=True, per_class_gram=True,
                          chunk_rows=300, progress=False, checkpoint=str(tmp_path / "c.ckpt"))
    assert s.fourth_moment() == pytest.approx(fourth_moment(x), rel=1e-12)
    resumed = ncfast.accumulate(tmp_path / "x.npy", tmp_path / "y.npy", fourth_moments=True, per_class_gram=True,
                                chunk_rows=300, progress=False, checkpoint=str(tmp_path / "c.ckpt"))
    assert resumed.fourth_moment() == s.fourth_moment() and torch.equal(resumed.class_gram, s.class_gram)


def test_compiled_update_refuses_the_extras():
    x, y = data(seed=10)
    with pytest.raises(ValueError, match="not supported by a compiled update"):
        extras()._update_compiled(torch.from_numpy(x), torch.from_numpy(y))


def test_class_groups_of_any_size_give_the_same_scatter(monkeypatch):
    from ncfast import _moments

    x, y = clustered(rows=4000, dim=D, classes=40, seed=11, offset=5.0)
    whole = ncfast.ClassStats(40, D, per_class_gram=True).update(x, y)
    monkeypatch.setattr(_moments, "_GROUP_ENTRIES", 120)  # groups of one to a few classes
    grouped = ncfast.ClassStats(40, D, per_class_gram=True).update(x, y)
    assert rel(grouped.class_gram, whole.class_gram) < 1e-13
    assert rel(grouped.class_gram, class_grams(x, y, 40)) < 1e-12


def test_bytes_for_workers_carry_the_extras():
    from ncfast.integrations import from_bytes, to_bytes

    x, y = data(seed=12)
    s = extras(per_class_diag=True).update(x, y)
    back = from_bytes(to_bytes(s))
    assert back.fourth_moments and back.per_class_gram and back.per_class_diag
    assert torch.equal(back.class_gram, s.class_gram) and back.fourth_moment() == s.fourth_moment()
    plain = ncfast.ClassStats(K, D).update(x, y)
    assert not from_bytes(to_bytes(plain)).fourth_moments
