"""The CPU update's block paths against the float64 NumPy reference, and results that do not
depend on the number of threads.

The one-pass path centres on the running means and corrects W with a rank-k update; the
class-grouped path sorts rows by class and centres each class on the shift that needs no
correction, per block or over windows of many blocks. Each is forced here on the same data
(``path``: 1 one-pass wherever every class of a block has rows, 2 grouped per block,
3 grouped over windows) and must give the reference's statistics.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import ncfast
from ncfast.backend import dispatch
from reference_stats import numpy_stats, offset_data, rel_err

PATHS = {"auto": 0, "one-pass": 1, "grouped-blocks": 2, "grouped-windows": 3}
TOL = {torch.float64: 1e-10, torch.float32: 1e-6, torch.float16: 1e-6, torch.bfloat16: 1e-6}


def _stream(x, y, k, *, path, block_rows, batches, nan_policy="raise", precision="auto"):
    stats = ncfast.ClassStats(k, x.shape[1], per_class_diag=True, nan_policy=nan_policy)
    for xb, yb in zip(torch.tensor_split(x, batches), torch.tensor_split(y, batches)):
        dispatch.native_update_(stats._state, xb, yb, nan_policy, block_rows=block_rows, path=path,
                                precision=precision)
    return stats


def _check(stats, x_kept, y_kept, k, tol):
    exp = numpy_stats(x_kept, y_kept, k)
    assert np.array_equal(stats.counts.numpy(), exp.counts)
    assert rel_err(stats.means, exp.means) < 1e-12
    assert rel_err(stats.within_scatter, exp.scatter) < tol
    assert rel_err(stats.class_scatter, exp.class_scatter) < max(tol, 1e-12)
    assert rel_err(stats.class_diag, exp.class_diag) < max(tol, 1e-12)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", list(TOL))
def test_every_path_matches_the_reference(dtype, path):
    """Offset 1e3, spread 1; classes 7 and 8 appear only after row 4000; three batches, so
    later blocks see classes with rows (one-pass) and new ones (grouped)."""
    x, y = offset_data(9000, 40, 9, seed=11)
    y = np.where(np.arange(9000) < 4000, y % 7, y)
    xt = torch.from_numpy(x).to(dtype)
    stats = _stream(xt, torch.from_numpy(y), 9, path=PATHS[path], block_rows=1500, batches=3)
    _check(stats, xt.double().numpy(), y, 9, TOL[dtype])


@pytest.mark.parametrize("path", list(PATHS))
def test_nonfinite_rows_skipped_on_every_path(path):
    x, y = offset_data(6000, 24, 5, seed=12)
    xt = torch.from_numpy(x).float()
    bad = [0, 17, 1499, 1500, 4000, 5999]
    for r in bad:
        xt[r, r % 24] = float("nan") if r % 2 else float("-inf")
    keep = np.ones(6000, dtype=bool)
    keep[bad] = False
    stats = _stream(xt, torch.from_numpy(y), 5, path=PATHS[path], block_rows=700, batches=2, nan_policy="skip")
    assert stats.skipped_rows == len(bad)
    _check(stats, xt.double().numpy()[keep], y[keep], 5, 1e-6)


@pytest.mark.parametrize("path", list(PATHS))
def test_rejected_call_changes_nothing_on_every_path(path):
    """A NaN row in the last block of a many-block call rolls every earlier block back, and the
    error names the first bad row of the call."""
    x, y = offset_data(5000, 16, 30, seed=13)
    xt = torch.from_numpy(x).float()
    stats = _stream(xt[:1000], torch.from_numpy(y[:1000]), 30, path=PATHS[path], block_rows=300, batches=1)
    before = {k: v.clone() for k, v in stats.state_dict().items() if isinstance(v, torch.Tensor)}
    poisoned = xt[1000:].clone()
    poisoned[3900, 2] = float("nan")
    poisoned[3000, 5] = float("inf")
    with pytest.raises(ValueError, match="row 3000 "):
        dispatch.native_update_(stats._state, poisoned, torch.from_numpy(y[1000:]), "raise", block_rows=300,
                                path=PATHS[path])
    for key, value in stats.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("block_rows", [1, 5, 64, 1000])
def test_many_classes_few_rows_each(block_rows):
    """K = 3000 classes over 12000 rows (about four rows per class, most blocks hold mostly
    distinct classes): the grouped path over windows, with classes that have one row only."""
    rng = np.random.default_rng(14)
    k, d = 3000, 20
    y = rng.integers(0, k, 12000)
    x = 50.0 + rng.standard_normal((k, d))[y] + 0.1 * rng.standard_normal((12000, d))
    xt = torch.from_numpy(x).float()
    stats = _stream(xt, torch.from_numpy(y), k, path=0, block_rows=block_rows, batches=2)
    _check(stats, xt.double().numpy(), y, k, 1e-6)


def test_one_class_larger_than_a_block():
    """A class with more rows than a block gets several units in successive blocks of the
    grouped path, each an exact chunk update."""
    rng = np.random.default_rng(15)
    y = np.concatenate([np.zeros(5000, dtype=np.int64), rng.integers(1, 4, 1000)])
    x = 1e3 + rng.standard_normal((6000, 33))
    xt = torch.from_numpy(x).float()
    for path in (2, 3):
        stats = _stream(xt, torch.from_numpy(y), 4, path=path, block_rows=1024, batches=1)
        _check(stats, xt.double().numpy(), y, 4, 1e-6)


def _run_with_threads(threads, fn):
    saved = ncfast.get_num_threads()
    ncfast.set_num_threads(threads)
    try:
        return fn()
    finally:
        ncfast.set_num_threads(saved)


def _state_tensors(stats):
    return [t.clone() for t in (stats.counts, stats.means, stats.within_scatter, stats.class_scatter, stats.class_diag)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("path", list(PATHS))
def test_results_are_bit_identical_for_any_thread_count(dtype, path):
    x, y = offset_data(7000, 72, 12, seed=16)
    y = np.where(np.arange(7000) < 3000, y % 9, y)
    xt = torch.from_numpy(x).to(dtype)
    yt = torch.from_numpy(y)
    runs = [
        _run_with_threads(t, lambda: _state_tensors(_stream(xt, yt, 12, path=PATHS[path], block_rows=0, batches=3)))
        for t in (1, 2, 3, 7)
    ]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_resume_with_another_thread_count_is_bit_identical(tmp_path):
    """Half the rows with one thread, saved, loaded, the rest with three threads: the same
    statistics to the bit as one pass with two threads."""
    x, y = offset_data(40000, 64, 10, seed=17)
    xt = torch.from_numpy(x).float()
    yt = torch.from_numpy(y)
    chunks = list(zip(torch.tensor_split(xt, 8), torch.tensor_split(yt, 8)))

    def feed(stats, part):
        for xb, yb in part:
            stats.update(xb, yb)
        return stats

    whole = _run_with_threads(2, lambda: feed(ncfast.ClassStats(10, 64, per_class_diag=True), chunks))
    first = _run_with_threads(1, lambda: feed(ncfast.ClassStats(10, 64, per_class_diag=True), chunks[:4]))
    first.save(tmp_path / "half.ncstats")
    resumed = ncfast.ClassStats.load(tmp_path / "half.ncstats")
    resumed = _run_with_threads(3, lambda: feed(resumed, chunks[4:]))
    for a, b in zip(_state_tensors(whole), _state_tensors(resumed)):
        assert torch.equal(a, b)


def test_set_num_threads_is_process_wide():
    """A count set on one thread is the count every thread sees (and uses)."""
    saved = ncfast.get_num_threads()
    seen = []
    try:
        ncfast.set_num_threads(3)
        worker = threading.Thread(target=lambda: seen.append(ncfast.get_num_threads()))
        worker.start()
        worker.join()

        def set_elsewhere():
            ncfast.set_num_threads(1)

        worker = threading.Thread(target=set_elsewhere)
        worker.start()
        worker.join()
        seen.append(ncfast.get_num_threads())
    finally:
        ncfast.set_num_threads(saved)
    assert seen == [3, 1]


def test_concurrent_updates_of_separate_statistics():
    """Updates of different ClassStats from several Python threads at once share the pool and
    each get the statistics of their own rows."""
    x, y = offset_data(20000, 48, 6, seed=18)
    xt = torch.from_numpy(x).float()
    yt = torch.from_numpy(y)
    parts = list(zip(torch.tensor_split(xt, 4), torch.tensor_split(yt, 4)))
    results = [None] * 4

    def work(i):
        stats = ncfast.ClassStats(6, 48)
        for _ in range(3):
            stats = ncfast.ClassStats(6, 48).update(*parts[i])
        results[i] = stats

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (xb, yb), stats in zip(parts, results):
        exp = numpy_stats(xb.double().numpy(), yb.numpy(), 6)
        assert rel_err(stats.within_scatter, exp.scatter) < 1e-6
