"""Dask and Ray helpers on local clusters (dask.distributed LocalCluster with 2 worker
processes; ray.init(num_cpus=2)): the merged statistics equal one ClassStats over every row and
an independent float64 NumPy reference, to 1e-12; and the wire format between workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.integrations import from_bytes, to_bytes
from reference_stats import numpy_stats, offset_data, rel_err

ROWS, DIM, K = 1500, 7, 5


def data():
    return offset_data(ROWS, DIM, K, seed=5, offset=30.0)  # float64 rows


def assert_equal_to_one_pass(stats, x, y, per_class_diag=False):
    whole = ncfast.ClassStats(K, DIM, per_class_diag=per_class_diag).update(x, y)
    ref = numpy_stats(x, y, K)
    assert torch.equal(stats.counts, whole.counts)
    for name in ("means", "within_scatter", "class_scatter") + (("class_diag",) if per_class_diag else ()):
        assert rel_err(getattr(stats, name), getattr(whole, name).numpy()) < 1e-12, name
    assert rel_err(stats.within_scatter, ref.scatter) < 1e-12
    assert rel_err(stats.means, ref.means) < 1e-12


# ---------------------------------------------------------------------------------- wire format


@pytest.mark.parametrize("per_class_diag", [False, True])
def test_bytes_round_trip_exactly(per_class_diag):
    x, y = data()
    stats = ncfast.ClassStats(None, DIM, per_class_diag=per_class_diag, nan_policy="skip").update(x, y)
    back = from_bytes(to_bytes(stats))
    for name in ("counts", "means", "within_scatter", "class_scatter") + (("class_diag",) if per_class_diag else ()):
        assert torch.equal(getattr(back, name), getattr(stats, name)), name
    assert back.nan_policy == "skip" and back.per_class_diag == per_class_diag
    back.update(x[:10], y[:10] + K)  # num_classes=None survives: K still grows
    assert back.num_classes == 2 * K


def test_bytes_hold_the_upper_triangle_only():
    stats = ncfast.ClassStats(10, 64).update(torch.randn(100, 64, dtype=torch.float64), torch.arange(100) % 10)
    payload = len(to_bytes(stats))
    arrays = 8 * (10 + 10 * 64 + 64 * 65 // 2 + 10)
    assert arrays < payload < arrays + 400  # plus a short JSON header


def test_bad_bytes_are_refused():
    good = to_bytes(ncfast.ClassStats(3, 4).update(torch.randn(9, 4), torch.arange(9) % 3))
    with pytest.raises(ValueError, match="not ncfast statistics"):
        from_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="bytes, expected"):
        from_bytes(good[:-8])
    with pytest.raises(TypeError, match="stats"):
        to_bytes({"counts": 1})


# ---------------------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("dask.array", reason="dask is not installed (pip install 'ncfast[dask]')")
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'ncfast[dask]')")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_array_on_a_two_worker_cluster(dask_client):
    import dask.array as da

    from ncfast.integrations import dask as ncdask

    x, y = data()
    fx = da.from_array(x, chunks=(137, 4))  # uneven row chunks, split columns (rechunked to rows)
    fy = da.from_array(y, chunks=200)  # label chunks differ from the features' (realigned)
    stats = ncdask.class_stats(fx, fy, num_classes=K, per_class_diag=True, split_every=3)
    assert_equal_to_one_pass(stats, x, y, per_class_diag=True)
    lazy = ncdask.class_stats(fx, fy, compute=False)
    grown = lazy.compute()  # num_classes=None: partitions merged to the largest K
    assert grown.num_classes == K
    assert_equal_to_one_pass(grown, x, y)


def test_dask_bag_of_batches(dask_client):
    import dask.bag as db

    from ncfast.integrations import dask as ncdask

    x, y = data()
    items = [(x[i : i + 100], y[i : i + 100]) for i in range(0, ROWS, 100)]
    stats = ncdask.class_stats_from_bag(db.from_sequence(items, npartitions=4), DIM, num_classes=K)
    assert_equal_to_one_pass(stats, x, y)


def test_dask_bad_input():
    da = pytest.importorskip("dask.array")
    from ncfast.integrations import dask as ncdask

    with pytest.raises(TypeError, match="dask arrays"):
        ncdask.class_stats(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, D\) and \(N,\)"):
        ncdask.class_stats(da.zeros((3, 2)), da.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="split_every"):
        ncdask.class_stats(da.zeros((3, 2)), da.zeros(3, dtype=np.int64), split_every=1)


# ---------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ncfast[ray]')")
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'ncfast[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_dataset_with_an_actor_per_worker(ray_session):
    from ncfast.integrations import ray as ncray

    x, y = data()
    ds = ray_session.data.from_items([{"x": x[i], "y": int(y[i])} for i in range(ROWS)], override_num_blocks=6)
    stats = ncray.class_stats(ds, "x", "y", dim=DIM, num_classes=K, workers=2, batch_size=128, per_class_diag=True)
    assert_equal_to_one_pass(stats, x, y, per_class_diag=True)
    with pytest.raises(ValueError, match="columns"):
        ncray.class_stats(ds, "features", "y", dim=DIM)
