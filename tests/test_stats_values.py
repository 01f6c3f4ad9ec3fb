"""ClassStats values against the float64 NumPy reference in conftest.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from reference_stats import numpy_stats, offset_data, rel_err

BACKENDS = ["native", "reference"]


def feed(stats, x, y, batch):
    for start in range(0, len(y), batch):
        stats.update(x[start : start + batch], y[start : start + batch])
    return stats


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_input_matches_reference_to_1e10(backend):
    x, y = offset_data(5000, 33, 7)
    stats = feed(ncfast.ClassStats(7, 33, backend=backend, per_class_diag=True), x, y, 1234)
    exp = numpy_stats(x, y, 7)
    assert np.array_equal(stats.counts.numpy(), exp.counts)
    assert rel_err(stats.means, exp.means) < 1e-12
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-10
    assert rel_err(stats.class_scatter, exp.class_scatter) < 1e-10
    assert rel_err(stats.class_diag, exp.class_diag) < 1e-10


def test_float32_offset_data_within_1e6():
    """Mean 1e3, spread 1: the shifted update keeps W accurate despite the offset."""
    x, y = offset_data(20000, 64, 10, seed=1)
    x32 = x.astype(np.float32)
    exp = numpy_stats(x32, y, 10)
    stats = feed(ncfast.ClassStats(10, 64, per_class_diag=True), x32, y, 3000)
    assert rel_err(stats.means, exp.means) < 1e-12
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-6
    assert rel_err(stats.class_scatter, exp.class_scatter) < 1e-6
    assert rel_err(stats.class_diag, exp.class_diag) < 1e-6
    assert rel_err(stats.sigma_w(), exp.scatter / len(y)) < 1e-6


@pytest.mark.parametrize("offset", [5.0, 1e3])
def test_derived_matrices(offset):
    x, y = offset_data(3000, 20, 6, seed=2, offset=offset)
    exp = numpy_stats(x, y, 6)
    stats = ncfast.ClassStats(6, 20).update(x, y)
    n = len(y)
    assert stats.num_samples == n
    assert rel_err(stats.global_mean, exp.global_mean) < 1e-12
    assert rel_err(stats.sigma_b(), exp.sigma_b_balanced) < 1e-10
    assert rel_err(stats.between_scatter(), exp.between_scatter) < 1e-10
    assert rel_err(stats.sigma_b(weighted=True), exp.between_scatter / n) < 1e-10
    total = np.cov(x, rowvar=False, bias=True)
    assert rel_err(stats.sigma_t(), total) < 1e-10
    assert rel_err(stats.gram(), exp.gram) < 1e-10
    assert torch.allclose(stats.sigma_t(), stats.sigma_w() + stats.sigma_b(weighted=True), rtol=1e-12, atol=1e-12)


def test_sigma_b_uses_only_classes_with_rows():
    x, y = offset_data(500, 8, 3, seed=3)
    stats = ncfast.ClassStats(5, 8).update(x, y)  # classes 3 and 4 never appear
    exp = numpy_stats(x, y, 3)
    assert rel_err(stats.sigma_b(), exp.sigma_b_balanced) < 1e-10


def test_real_datasets(real_dataset):
    name, x, y = real_dataset
    k = int(y.max()) + 1
    exp = numpy_stats(x, y, k)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-6)):
        xd = x.astype(dtype)
        exp = numpy_stats(xd, y, k)
        stats = feed(ncfast.ClassStats(k, x.shape[1], per_class_diag=True), xd, y, 97)
        assert rel_err(stats.means, exp.means) < 1e-12, name
        assert rel_err(stats.within_scatter, exp.scatter) < tol, name
        assert rel_err(stats.class_diag, exp.class_diag) < tol, name
        assert rel_err(stats.sigma_t(), np.cov(xd.astype(np.float64), rowvar=False, bias=True)) < tol, name


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-6), (torch.bfloat16, 1e-6)])
def test_16bit_inputs_exact_on_their_values(dtype, tol):
    """16-bit rows are widened exactly, so the only error left is the float32 Gram's."""
    x, y = offset_data(8000, 48, 5, seed=4, offset=0.5)
    xt = torch.from_numpy(x).to(dtype)
    exp = numpy_stats(xt.double().numpy(), y, 5)
    stats = feed(ncfast.ClassStats(5, 48), xt, torch.from_numpy(y), 999)
    assert rel_err(stats.means, exp.means) < 1e-12
    assert rel_err(stats.within_scatter, exp.scatter) < tol


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_16bit_inputs_against_float64_data(dtype, tol):
    """Against the unrounded data the error is that of rounding the inputs (README table)."""
    x, y = offset_data(8000, 48, 5, seed=4, offset=0.5)
    exp = numpy_stats(x, y, 5)
    stats = ncfast.ClassStats(5, 48).update(torch.from_numpy(x).to(dtype), y)
    assert rel_err(stats.within_scatter, exp.scatter) < tol


def test_chunked_equals_one_shot_and_block_sizes_agree():
    from ncfast.backend import dispatch as _dispatch

    x, y = offset_data(6000, 40, 9, seed=5)
    x32 = torch.from_numpy(x.astype(np.float32))
    yt = torch.from_numpy(y)
    one = ncfast.ClassStats(9, 40).update(x32, yt)
    exp = numpy_stats(x32.double().numpy(), y, 9)
    for batch in (1, 7, 1000):
        many = feed(ncfast.ClassStats(9, 40), x32[:1500], yt[:1500], batch).update(x32[1500:], yt[1500:])
        assert rel_err(many.within_scatter, one.within_scatter) < 1e-6
    for block_rows in (1, 13, 256, 6000):
        stats = ncfast.ClassStats(9, 40)
        _dispatch.native_update_(stats._state, x32, yt, "raise", block_rows=block_rows)
        assert rel_err(stats.within_scatter, exp.scatter) < 1e-6, block_rows
        assert rel_err(stats.means, exp.means) < 1e-12


def test_native_and_reference_agree():
    x, y = offset_data(4000, 25, 4, seed=6, offset=0.0)
    a = ncfast.ClassStats(4, 25, backend="native").update(x, y)
    b = ncfast.ClassStats(4, 25, backend="reference").update(x, y)
    assert rel_err(a.within_scatter, b.within_scatter) < 1e-10
    assert rel_err(a.class_scatter, b.class_scatter) < 1e-10


def test_single_row_batches_and_single_row_classes():
    x, y = offset_data(50, 6, 50, seed=7)
    stats = feed(ncfast.ClassStats(50, 6), x, y, 1)
    exp = numpy_stats(x, y, 50)
    assert np.array_equal(stats.counts.numpy(), exp.counts)
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-10


def test_unknown_num_classes_grows():
    x, y = offset_data(3000, 12, 30, seed=8)
    order = np.argsort(y, kind="stable")  # labels arrive in increasing order
    x, y = x[order], y[order]
    stats = feed(ncfast.ClassStats(None, 12, per_class_diag=True), x, y, 200)
    exp = numpy_stats(x, y, 30)
    assert stats.num_classes == 30
    assert np.array_equal(stats.counts.numpy(), exp.counts)
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-10
    assert rel_err(stats.class_diag, exp.class_diag) < 1e-10


def test_many_classes():
    x, y = offset_data(20000, 16, 5000, seed=9)
    stats = feed(ncfast.ClassStats(5000, 16), x.astype(np.float32), y, 7000)
    exp = numpy_stats(x.astype(np.float32), y, 5000)
    assert np.array_equal(stats.counts.numpy(), exp.counts)
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-6
    assert rel_err(stats.class_scatter, exp.class_scatter) < 1e-6


def test_inputs_of_every_kind():
    x, y = offset_data(1000, 10, 3, seed=10)
    exp = numpy_stats(x, y, 3)
    kinds = [
        (x, y),
        (torch.from_numpy(x), torch.from_numpy(y).to(torch.int32)),
        (x.tolist(), y.tolist()),
        (np.asfortranarray(x), y),  # column-major
        (torch.from_numpy(x).T.contiguous().T, torch.from_numpy(y)),  # transposed view
    ]
    for features, labels in kinds:
        stats = ncfast.ClassStats(3, 10).update(features, labels)
        assert rel_err(stats.within_scatter, exp.scatter) < 1e-10


def test_strided_rows_read_in_place():
    x, y = offset_data(2000, 10, 3, seed=11)
    wide = np.zeros((2000, 25))
    wide[:, 5:15] = x
    view = torch.from_numpy(wide)[:, 5:15]
    assert view.stride() == (25, 1)
    stats = ncfast.ClassStats(3, 10).update(view, y)
    assert rel_err(stats.within_scatter, numpy_stats(x, y, 3).scatter) < 1e-10
    every_other = ncfast.ClassStats(3, 10).update(x[::2], y[::2])
    assert rel_err(every_other.within_scatter, numpy_stats(x[::2], y[::2], 3).scatter) < 1e-10


def test_memmap_input(tmp_path):
    x, y = offset_data(3000, 16, 4, seed=12)
    path = tmp_path / "feats.npy"
    np.save(path, x.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    stats = ncfast.ClassStats(4, 16).update(mm, y)
    assert rel_err(stats.within_scatter, numpy_stats(x.astype(np.float32), y, 4).scatter) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [8, 9, 21])
def test_every_finite_16bit_value_widens_exactly(dtype, dim):
    """All 2^16 bit patterns that are finite (subnormals and signed zeros included), through
    the vectorised and the scalar-tail widening: every class mean is bit-exact."""
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype)
    values = values[torch.isfinite(values)]
    rows = values.numel() // dim
    x = values[: rows * dim].reshape(rows, dim)
    y = torch.arange(rows)  # one row per class: each class mean is the widened row itself
    stats = ncfast.ClassStats(rows, dim).update(x, y)
    np.testing.assert_array_equal(stats.means.numpy(), x.double().numpy())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_blocks_of_seen_and_new_classes_with_skipped_rows(dtype, threads):
    """Blocks whose classes all have rows take the one-pass path (centre on the running mean,
    sum z; it needs a 1024-row slab per thread); blocks with a new class take the separate
    passes. Both, interleaved, with NaN/Inf rows dropped under nan_policy="skip", against
    float64 NumPy on the kept rows."""
    from ncfast.backend import dispatch as _dispatch

    rows = 12000
    x, y = offset_data(rows, 24, 7, seed=9)
    y = np.where(np.arange(rows) < 6000, y % 5, y)  # classes 5 and 6 first appear in row 6000+
    xt = torch.from_numpy(x).to(dtype)
    bad = [3, 700, 701, 2600, 6001, 9000, rows - 1]
    for r in bad:
        xt[r, r % 24] = float("nan") if r % 2 else float("inf")
    keep = np.ones(rows, dtype=bool)
    keep[bad] = False
    block = 97 if threads == 1 else 1024 * threads + 3
    saved = ncfast.get_num_threads()
    ncfast.set_num_threads(threads)
    try:
        stats = ncfast.ClassStats(7, 24, per_class_diag=True, nan_policy="skip")
        _dispatch.native_update_(stats._state, xt[:100], torch.from_numpy(y[:100]), "skip", block_rows=100)
        _dispatch.native_update_(stats._state, xt[100:], torch.from_numpy(y[100:]), "skip", block_rows=block)
    finally:
        ncfast.set_num_threads(saved)
    seen = xt.double().numpy()[keep]
    exp = numpy_stats(seen, y[keep], 7)
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    assert stats.skipped_rows == len(bad)
    assert np.array_equal(stats.counts.numpy(), exp.counts)
    assert rel_err(stats.means, exp.means) < 1e-12
    assert rel_err(stats.within_scatter, exp.scatter) < tol
    assert rel_err(stats.class_scatter, exp.class_scatter) < tol
    assert rel_err(stats.class_diag, exp.class_diag) < tol
