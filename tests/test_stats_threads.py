"""One ClassStats shared between threads: updates and merges serialise, reads see a whole state.

Every test records the order in which the batches reached the statistics (the calls into the
backend happen inside the object's lock, so that order is the order of application), replays
the batches in that order on a fresh object in one thread, and asks for the same bits."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

import ncfast
from ncfast import stats as stats_module
from ncfast.backend import dispatch
from reference_stats import numpy_stats, rel_err

THREADS, BATCHES, ROWS, DIM = 4, 30, 96, 24


def thread_batches(seed: int, growing: bool):
    """Per thread, its batches; with `growing`, thread i's labels are randint(0, 10) + 40 i, so
    every thread keeps making the class dimension grow while the others update."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(THREADS):
        mine = []
        for b in range(BATCHES):
            y = rng.integers(0, 10, ROWS) + (40 * t if growing else 0)
            if growing:
                y[0] = 40 * t + b  # K grows a little on every batch
            x = 5.0 + rng.standard_normal((ROWS, DIM)) + 0.1 * y[:, None]
            mine.append((torch.from_numpy(x), torch.from_numpy(y)))
        out.append(mine)
    return out


class ApplicationLog:
    """Records, from inside the statistics' lock, which batch each backend call applied."""

    def __init__(self, monkeypatch, batches) -> None:
        self.order = []
        self._ids = {x.data_ptr(): (t, b) for t, mine in enumerate(batches) for b, (x, _) in enumerate(mine)}
        native, merge = dispatch.native_update_, stats_module.merge_into

        self.recording = True

        def logged_update(state, features, *args, **kwargs):
            native(state, features, *args, **kwargs)
            if self.recording:
                self.order.append(("update", self._ids[features.data_ptr()]))

        def logged_merge(dst, src):
            merge(dst, src)
            if self.recording:
                self.order.append(("merge", self.parts[src.means.numpy().tobytes()]))

        self.parts = {}  # a merged part, known by its means' bytes -> its batch
        monkeypatch.setattr(dispatch, "native_update_", logged_update)
        monkeypatch.setattr(stats_module, "merge_into", logged_merge)

    def stop(self) -> list:
        """The order so far; the replay that follows is not recorded."""
        self.recording = False
        return list(self.order)


def run_threads(work, count=THREADS):
    errors = []

    def guarded(i):
        try:
            work(i)
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def assert_bits_equal(a: ncfast.ClassStats, b: ncfast.ClassStats) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            assert torch.equal(sa[key], sb[key]), key
        else:
            assert sa[key] == sb[key], key


@pytest.mark.parametrize("num_classes", [None, 160])
def test_concurrent_updates_equal_the_batches_in_some_order(monkeypatch, num_classes):
    batches = thread_batches(seed=1, growing=num_classes is None)
    log = ApplicationLog(monkeypatch, batches)
    shared = ncfast.ClassStats(num_classes, DIM, per_class_diag=True)

    run_threads(lambda t: [shared.update(x, y) for x, y in batches[t]])

    order = log.stop()
    assert len(order) == THREADS * BATCHES
    replay = ncfast.ClassStats(num_classes, DIM, per_class_diag=True)
    for _, (t, b) in order:
        replay.update(*batches[t][b])
    assert_bits_equal(shared, replay)
    xs = torch.cat([x for mine in batches for x, _ in mine]).numpy()
    ys = torch.cat([y for mine in batches for _, y in mine]).numpy()
    exp = numpy_stats(xs, ys, shared.num_classes)
    np.testing.assert_array_equal(shared.counts.numpy(), exp.counts)
    assert rel_err(shared.means, exp.means) < 1e-12
    assert rel_err(shared.within_scatter, exp.scatter) < 1e-10
    assert rel_err(shared.class_diag, exp.class_diag) < 1e-10


def test_concurrent_merges_and_updates_serialise(monkeypatch):
    batches = thread_batches(seed=2, growing=True)
    log = ApplicationLog(monkeypatch, batches)
    shared = ncfast.ClassStats(None, DIM, per_class_diag=True)

    def work(t):
        for b, (x, y) in enumerate(batches[t]):
            if (t + b) % 2:
                shared.update(x, y)
            else:
                part = ncfast.ClassStats(None, DIM, per_class_diag=True).update(x, y)
                log.parts[part.means.numpy().tobytes()] = (t, b)
                shared.merge(part)

    run_threads(work)

    # half the batches updated `shared`, the other half built a part (one update) merged into it
    order = log.stop()
    assert len(order) == THREADS * BATCHES * 3 // 2
    replay = ncfast.ClassStats(None, DIM, per_class_diag=True)
    for kind, (t, b) in order:
        if kind == "merge":
            replay.merge(ncfast.ClassStats(None, DIM, per_class_diag=True).update(*batches[t][b]))
        elif (t + b) % 2:
            replay.update(*batches[t][b])
    assert_bits_equal(shared, replay)


def test_reads_during_updates_see_a_whole_state(monkeypatch):
    """Each snapshot a reader takes while the writers run is exactly the state after the first
    j batches of the application order, for some j."""
    batches = thread_batches(seed=3, growing=True)
    log = ApplicationLog(monkeypatch, batches)
    shared = ncfast.ClassStats(None, DIM, per_class_diag=True)
    snapshots, derived = [], []
    done = threading.Event()

    def reader():
        while not done.is_set() and len(snapshots) < 400:
            snapshots.append(shared.state_dict())
            if shared.num_samples:
                derived.append(shared.sigma_w())  # W / N: both must come from one state

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        run_threads(lambda t: [shared.update(x, y) for x, y in batches[t]])
    finally:
        done.set()
        watcher.join()
    snapshots.append(shared.state_dict())
    order = log.stop()

    by_rows = {}
    for snap in snapshots:
        by_rows.setdefault(int(snap["counts"].sum()), snap)
    assert all(n % ROWS == 0 for n in by_rows)
    replay = ncfast.ClassStats(None, DIM, per_class_diag=True)
    states = {0: replay.state_dict()}
    for _, (t, b) in order:
        replay.update(*batches[t][b])
        states[replay.num_samples] = replay.state_dict()
    for n, snap in by_rows.items():
        for key, value in snap.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, states[n][key]), (n, key)
    whole = {(s["scatter"] / n).numpy().tobytes() for n, s in states.items() if n}
    assert all(sigma.numpy().tobytes() in whole for sigma in derived)


def test_native_update_runs_without_the_gil(monkeypatch):
    """With involuntary thread switches made (practically) impossible, the main thread can run
    while another thread is inside the native call only if that call released the GIL."""
    from ncfast.backend import core

    inside, seen_inside = threading.Event(), []
    left = threading.Event()
    real = core._C

    class Probe:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def update_class_stats_cpu(*args):
            inside.set()
            try:
                return real.update_class_stats_cpu(*args)
            finally:
                seen_inside.append("returned")
                left.set()

    monkeypatch.setattr(dispatch, "_C", Probe())
    x = torch.randn(200_000, 32)
    y = torch.randint(0, 10, (200_000,))
    stats = ncfast.ClassStats(10, 32)
    worker = threading.Thread(target=stats.update, args=(x, y))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        worker.start()
        inside.wait()
        # Reaching this line needs the GIL: the worker gave it up inside the native call.
        observed = list(seen_inside)
        left.wait()
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert observed == []
    assert stats.num_samples == 200_000
