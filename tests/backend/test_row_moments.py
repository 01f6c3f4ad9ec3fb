"""The C++ pass behind fourth_moments=True on the CPU: (sum ||x - c||^4, sum ||x - c||^2 (x - c))
against float64 NumPy for every input dtype, strided and misaligned rows, and the same result,
to the bit, for any thread count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast import _moments
from ncfast.backend import dispatch


def expected(x: np.ndarray, c: np.ndarray):
    z = x.astype(np.float64) - c
    q = (z * z).sum(axis=1)
    return (q * q).sum(), q @ z


def rows(n=5000, d=37, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * 2 + 5).astype(np.float32), rng.standard_normal(d) + 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_matches_float64_numpy(dtype):
    x, c = rows(seed=1)
    xt = torch.from_numpy(x).to(dtype)
    fourth, third = dispatch.row_moments(xt, torch.from_numpy(c))
    want_fourth, want_third = expected(xt.double().numpy(), c)  # of the values as stored
    assert float(fourth) == pytest.approx(want_fourth, rel=1e-12)
    np.testing.assert_allclose(third.numpy(), want_third, rtol=1e-11, atol=1e-9 * np.abs(want_third).max())
    torch_fourth, torch_third = _moments._chunk_moments(xt, torch.from_numpy(c))
    assert float(fourth) == pytest.approx(float(torch_fourth), rel=1e-13)


def test_strided_and_misaligned_rows():
    x, c = rows(n=3001, d=20, seed=2)
    wide = torch.from_numpy(np.concatenate([x, x[:, :7]], axis=1))[:, :20]  # rows 27 floats apart
    raw = np.zeros(x.size * 8 + 1, dtype=np.uint8)
    shifted = np.frombuffer(raw[1:].data, dtype=np.float64, count=x.size).reshape(x.shape)  # at a 1-byte offset
    shifted[:] = x
    for view in (wide, torch.from_numpy(shifted)):
        fourth, third = dispatch.row_moments(view, torch.from_numpy(c))
        want_fourth, want_third = expected(view.double().numpy(), c)
        assert float(fourth) == pytest.approx(want_fourth, rel=1e-12)
        np.testing.assert_allclose(third.numpy(), want_third, rtol=1e-11, atol=1e-9 * np.abs(want_third).max())


def test_the_same_bits_for_any_thread_count():
    x, c = rows(n=70_000, d=16, seed=3)
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    saved = ncfast.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            ncfast.set_num_threads(threads)
            results.append(dispatch.row_moments(xt, ct))
    finally:
        ncfast.set_num_threads(saved)
    for fourth, third in results[1:]:
        assert torch.equal(fourth, results[0][0]) and torch.equal(third, results[0][1])


def test_streamed_statistics_give_the_fourth_moment_about_the_mean():
    x, _ = rows(n=20_000, d=24, seed=4)
    y = np.random.default_rng(5).integers(0, 6, len(x))
    native = ncfast.ClassStats(6, 24, fourth_moments=True)
    for start in range(0, len(x), 4096):  # the centre moves with every batch
        native.update(x[start:start + 4096], y[start:start + 4096])
    z = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    assert native.fourth_moment() == pytest.approx(float((((z * z).sum(axis=1)) ** 2).sum()), rel=1e-10)
