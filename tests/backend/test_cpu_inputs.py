"""Inputs at the edges of what the CPU update reads: rows at any byte offset, and finite rows
whose magnitudes would overflow or underflow a float32 Gram."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.backend import dispatch
from reference_stats import numpy_stats, offset_data, rel_err


def _at_byte_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of `a` whose data starts `offset` bytes into a buffer (misaligned for offset 1)."""
    buf = np.zeros(a.nbytes + offset, dtype=np.uint8)
    view = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
    view[...] = a
    return view


@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_rows_and_labels_at_any_byte_offset(dtype, offset):
    """A NumPy view at a byte offset gives exactly the statistics of the same values aligned
    (no misaligned element loads: the rows are copied first)."""
    x, y = offset_data(3000, 37, 6, seed=21)
    x = x.astype(dtype)
    shifted_x = _at_byte_offset(x, offset)
    shifted_y = _at_byte_offset(y.astype(np.int64), offset + 2)
    assert shifted_x.ctypes.data % x.itemsize or dtype == np.float16 and offset % 2 == 0
    for block_rows in (0, 256):
        aligned = ncfast.ClassStats(6, 37, per_class_diag=True)
        dispatch.native_update_(aligned._state, torch.from_numpy(x), torch.from_numpy(y), "raise", block_rows)
        stats = ncfast.ClassStats(6, 37, per_class_diag=True)
        dispatch.native_update_(stats._state, torch.from_numpy(shifted_x), torch.from_numpy(shifted_y), "raise",
                                block_rows)
        for a, b in ((stats.means, aligned.means), (stats.within_scatter, aligned.within_scatter),
                     (stats.class_diag, aligned.class_diag), (stats.counts, aligned.counts)):
            assert torch.equal(a, b)
    exp = numpy_stats(x.astype(np.float64), y, 6)
    assert rel_err(stats.within_scatter, exp.scatter) < (1e-10 if dtype == np.float64 else 1e-6)


def _spread_rows(rows, dim, classes, magnitude, seed, centred=False):
    """Rows of the given magnitude: class centres and spread both of that size (centred=False),
    or a spread of that size around zero."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    centres = 0.0 if centred else rng.uniform(-1, 1, (classes, dim))[y]
    x = magnitude * (centres + 0.5 * rng.uniform(-1, 1, (rows, dim)))
    return x, y


@pytest.mark.parametrize("magnitude", [1e18, 1e30, 2e38, 1e-22, 1e-30, 1e-38])
@pytest.mark.parametrize("path", [0, 1, 2])
def test_float32_rows_of_extreme_magnitude(magnitude, path):
    """Finite float32 rows far from 1 (their squares overflow or underflow float32) give a
    finite W with the precision of ordinary data: Z is scaled by a power of two."""
    x, y = _spread_rows(20000, 16, 3, magnitude, seed=22)
    x32 = x.astype(np.float32)
    assert np.isfinite(x32).all() and (x32 != 0).any()
    stats = ncfast.ClassStats(3, 16, per_class_diag=True)
    for part in np.array_split(np.arange(20000), 2):
        dispatch.native_update_(stats._state, torch.from_numpy(x32[part]), torch.from_numpy(y[part]), "raise",
                                0, path=path)
    exp = numpy_stats(x32.astype(np.float64), y, 3)
    w = stats.within_scatter
    assert torch.isfinite(w).all() and w.abs().max() > 0
    assert rel_err(w, exp.scatter) < 1e-6
    assert rel_err(stats.class_scatter, exp.class_scatter) < 1e-10
    assert rel_err(stats.class_diag, exp.class_diag) < 1e-10
    assert rel_err(stats.means, exp.means) < 1e-12


@pytest.mark.parametrize("dtype, magnitude", [(torch.bfloat16, 1e30), (torch.bfloat16, 1e-30),
                                              (torch.float16, 6e4), (torch.float16, 1e-4)])
@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_16bit_rows_of_extreme_magnitude(dtype, magnitude, precision):
    x, y = _spread_rows(6000, 24, 4, magnitude, seed=23, centred=True)
    xt = torch.from_numpy(x).to(dtype)
    stats = ncfast.ClassStats(4, 24, precision=precision).update(xt, torch.from_numpy(y))
    exp = numpy_stats(xt.double().numpy(), y, 4)
    tol = 1e-6 if precision == "exact" or not ncfast.build_info()["cpu_gram"][str(dtype)[6:]]["fast"].startswith(
        "bfloat16") else 1e-2
    assert torch.isfinite(stats.within_scatter).all()
    assert rel_err(stats.within_scatter, exp.scatter) < tol


def test_blocks_of_different_magnitudes_in_one_call():
    """Blocks needing different scales (huge, ordinary, tiny) in one call: each block's Gram is
    folded with its own scale."""
    parts = [_spread_rows(3000, 12, 3, m, seed=24 + i) for i, m in enumerate((1e20, 1.0, 1e-25, 1e20))]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32)
    y = np.concatenate([p[1] for p in parts])
    stats = ncfast.ClassStats(3, 12)
    dispatch.native_update_(stats._state, torch.from_numpy(x), torch.from_numpy(y), "raise", block_rows=1000)
    exp = numpy_stats(x.astype(np.float64), y, 3)
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-6
    # the tiny block's share of W is exact too, not lost to the huge blocks' rounding
    tiny = ncfast.ClassStats(3, 12).update(x[6000:9000], y[6000:9000])
    exp_tiny = numpy_stats(x[6000:9000].astype(np.float64), y[6000:9000], 3)
    assert rel_err(tiny.within_scatter, exp_tiny.scatter) < 1e-6
