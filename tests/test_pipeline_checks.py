"""accumulate(): what is refused before the pass (stray labels, empty widths, bad row ranges),
and which checkpoints are used (only whole, unedited ones of the same input)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ncfast
from ncfast import pipeline
from ncfast.io import statsfile
from reference_stats import numpy_stats, rel_err


@pytest.fixture
def dump(tmp_path):
    rng = np.random.default_rng(50)
    y = rng.integers(0, 5, 2000)
    x = (rng.standard_normal((2000, 6)) + y[:, None]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


def no_pass(monkeypatch):
    """Makes any update fail the test: the error must come before the pass."""
    monkeypatch.setattr(ncfast.ClassStats, "update", lambda *a, **k: pytest.fail("the pass started"))


@pytest.mark.parametrize("value", [10**7, 10**9, 2**63 - 1])
def test_a_stray_huge_label_is_refused_before_the_pass(dump, monkeypatch, value):
    path, x, y = dump
    y = y.copy()
    y[1234] = value
    np.save(path / "stray.npy", y)
    no_pass(monkeypatch)
    with pytest.raises(ValueError, match=rf"labels: value {value} at row 1,234 of .*stray.npy is beyond "
                                         r"max_classes=1,048,576"):
        ncfast.accumulate(path / "x.npy", path / "stray.npy", progress=False)


def test_max_classes_can_be_raised(dump):
    path, x, y = dump
    y = y.copy()
    y[7] = 3000
    stats = ncfast.accumulate(x, y, max_classes=4096, progress=False)
    assert stats.num_classes == 3001
    with pytest.raises(ValueError, match="value 3000 at row 7 is beyond max_classes=2,000"):
        ncfast.accumulate(x, y, max_classes=2000, progress=False)


@pytest.mark.parametrize("num_classes, value, match", [
    (None, -3, "value -3 at row 99 of .*bad.npy is negative"),
    (5, 5, r"value 5 at row 99 of .*bad.npy is outside \[0, 5\)"),
])
def test_labels_out_of_range_are_found_before_the_pass(dump, monkeypatch, num_classes, value, match):
    path, x, y = dump
    y = y.copy()
    y[99] = value
    np.save(path / "bad.npy", y)
    no_pass(monkeypatch)
    with pytest.raises(ValueError, match=match):
        ncfast.accumulate(path / "x.npy", path / "bad.npy", num_classes=num_classes, progress=False)


def test_zero_column_features_are_named(tmp_path):
    np.save(tmp_path / "x0.npy", np.zeros((5, 0), np.float32))
    with pytest.raises(ValueError, match=r"features: .*x0.npy has 0 columns"):
        ncfast.accumulate(tmp_path / "x0.npy", np.zeros(5, np.int64), progress=False)


@pytest.mark.parametrize("row_range, match", [
    ((0, -5), "row_range: stop row -5 is negative"),
    ((-1, 10), "row_range: first row -1 is negative"),
    ((30, 10), "row_range: first row 30 is after stop 10"),
    ((0, 3000), r"row_range: stop 3,000 is past the end of the features .*\(2,000 rows\)"),
    ((0, 1.5), "row_range: stop: expected a whole number, got 1.5"),
    (5, r"row_range: expected \(first, stop\), got 5"),
])
def test_bad_row_ranges_are_named(dump, row_range, match):
    path, _, _ = dump
    with pytest.raises(ValueError, match=match):
        ncfast.accumulate(path / "x.npy", path / "y.npy", row_range=row_range, progress=False)


def run(path, checkpoint, **kwargs):
    return ncfast.accumulate(path / "x.npy", path / "y.npy", chunk_rows=250, checkpoint=str(checkpoint),
                             checkpoint_every=500, progress=False, **kwargs)


def rewrite_checkpoint(checkpoint, **extra_changes):
    """The checkpoint with its `extra` edited and its digest recomputed, as someone who knows
    the format could do."""
    tensors, meta = statsfile.read(str(checkpoint))
    meta["extra"].update(extra_changes)
    statsfile.write(str(checkpoint), tensors, meta)


def partial_checkpoint(path, checkpoint, monkeypatch, stop_after=1000):
    """A checkpoint taken at row `stop_after`, as left by a run killed there."""
    real = pipeline.save_stats
    calls = []

    def save_then_die(stats, where, extra):
        real(stats, where, extra)
        calls.append(extra["rows_done"])
        if extra["rows_done"] >= stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_stats", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(path, checkpoint)
    monkeypatch.setattr(pipeline, "save_stats", real)
    assert calls[-1] == stop_after


def test_an_edited_rows_done_is_refused(dump, tmp_path, monkeypatch):
    path, x, y = dump
    ckpt = tmp_path / "run.ckpt.safetensors"
    partial_checkpoint(path, ckpt, monkeypatch)
    rewrite_checkpoint(ckpt, rows_done=500)  # claims fewer rows than it holds: 500 rows counted twice
    with pytest.raises(ValueError, match=r"run.ckpt.safetensors is inconsistent \(it says 500 rows are done but "
                                         r"its statistics hold 1,000\)"):
        run(path, ckpt)


def test_an_edited_checkpoint_without_a_new_digest_is_refused(dump, tmp_path, monkeypatch):
    path, _, _ = dump
    ckpt = tmp_path / "run.ckpt.safetensors"
    partial_checkpoint(path, ckpt, monkeypatch)
    raw = ckpt.read_bytes()
    edited = raw.replace(b'\\"rows_done\\": 1000', b'\\"rows_done\\": 2000')
    assert edited != raw
    ckpt.write_bytes(edited)
    with pytest.raises(ValueError, match="cannot be read .*integrity check failed"):
        run(path, ckpt)


def test_a_checkpoint_resumes_to_the_uninterrupted_result(dump, tmp_path, monkeypatch):
    path, x, y = dump
    ckpt = tmp_path / "run.ckpt.safetensors"
    partial_checkpoint(path, ckpt, monkeypatch)
    starts = []
    real_stream = pipeline.stream
    monkeypatch.setattr(pipeline, "stream", lambda *a, **k: starts.append(k["start_row"]) or real_stream(*a, **k))
    resumed = run(path, ckpt)
    assert starts == [1000]
    whole = run(path, tmp_path / "other.ckpt.safetensors")
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]) if isinstance(value, torch.Tensor) else \
            value == resumed.state_dict()[key], key
    assert rel_err(resumed.within_scatter, numpy_stats(x, y, 5).scatter) < 1e-6


def test_a_checkpoint_of_rewritten_data_with_the_same_size_and_time_is_not_used(dump, tmp_path, monkeypatch):
    path, x, y = dump
    ckpt = tmp_path / "run.ckpt.safetensors"
    partial_checkpoint(path, ckpt, monkeypatch)
    st = os.stat(path / "x.npy")
    changed = x.copy()
    changed[0] += 1.0  # same size; modification time restored as cp -p / rsync -t would
    np.save(path / "x.npy", changed)
    os.utime(path / "x.npy", ns=(st.st_atime_ns, st.st_mtime_ns))
    stats = run(path, ckpt)
    assert rel_err(stats.within_scatter, numpy_stats(changed, y, 5).scatter) < 1e-6
    assert stats.num_samples == 2000
