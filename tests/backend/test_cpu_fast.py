"""precision="fast" on the CPU: 16-bit inputs get a bfloat16 Gram with float32 accumulation
(ncfast's AVX512-BF16 kernel, or a library GEMM on AMX machines) where the CPU has one, with the
error README's precision table states; "exact" and "auto" keep the float32 Gram."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.backend import dispatch
from ncfast.backend.core import _C
from reference_stats import numpy_stats, offset_data, rel_err

OWN, LIBRARY = 1, 2


def _available():
    choices = []
    if _C.has_bf16_gram():
        choices.append(OWN)
    _C.set_bf16_gram_override(LIBRARY)
    try:
        if _C.bf16_gram_choice() == LIBRARY:
            choices.append(LIBRARY)
    finally:
        _C.set_bf16_gram_override(-1)
    return choices


CHOICES = _available()


@pytest.fixture(params=CHOICES or [None], ids=lambda c: {OWN: "own-kernel", LIBRARY: "library", None: "none"}[c])
def bf16_gram(request):
    if request.param is None:
        pytest.skip("no bfloat16 Gram in this build or torch")
    _C.set_bf16_gram_override(request.param)
    yield request.param
    _C.set_bf16_gram_override(-1)


@pytest.mark.parametrize("dim", [24, 64, 300, 520])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fast_gram_error_against_float64(bf16_gram, dtype, dim):
    """Offset 0.5, spread 1 (README's 16-bit convention): against the 16-bit values the error is
    that of rounding the centred rows to bfloat16 (about 2^-9 per element, averaged by the sums);
    the means and per-class traces stay float64-exact."""
    x, y = offset_data(6000, dim, 7, seed=31, offset=0.5)
    xt = torch.from_numpy(x).to(dtype)
    yt = torch.from_numpy(y)
    exp = numpy_stats(xt.double().numpy(), y, 7)
    for path in (0, 1, 2):
        stats = ncfast.ClassStats(7, dim, per_class_diag=True, precision="fast")
        for xb, yb in zip(torch.tensor_split(xt, 3), torch.tensor_split(yt, 3)):
            dispatch.native_update_(stats._state, xb, yb, "raise", precision="fast", path=path)
        err = rel_err(stats.within_scatter, exp.scatter)
        assert 1e-6 < err < 3e-3, (path, err)  # bfloat16 rounding shows, but stays small
        assert rel_err(stats.means, exp.means) < 1e-12
        assert rel_err(stats.class_scatter, exp.class_scatter) < 1e-10
        assert rel_err(stats.class_diag, exp.class_diag) < 1e-10


def test_fast_is_bit_identical_for_any_thread_count(bf16_gram):
    x, y = offset_data(9000, 96, 5, seed=32, offset=0.5)
    xt = torch.from_numpy(x).to(torch.bfloat16)
    runs = []
    saved = ncfast.get_num_threads()
    try:
        for threads in (1, 2, 5):
            ncfast.set_num_threads(threads)
            runs.append(ncfast.ClassStats(5, 96, precision="fast").update(xt, y).within_scatter)
    finally:
        ncfast.set_num_threads(saved)
    assert all(torch.equal(runs[0], r) for r in runs[1:])


@pytest.mark.parametrize("precision", ["auto", "exact"])
def test_auto_and_exact_keep_the_float32_gram(precision):
    x, y = offset_data(5000, 48, 5, seed=33, offset=0.5)
    xt = torch.from_numpy(x).to(torch.float16)
    exp = numpy_stats(xt.double().numpy(), y, 5)
    stats = ncfast.ClassStats(5, 48, precision=precision).update(xt, y)
    assert rel_err(stats.within_scatter, exp.scatter) < 1e-6


def test_build_info_names_each_dtypes_gram():
    gram = ncfast.build_info()["cpu_gram"]
    assert set(gram) == {"float32", "float64", "float16", "bfloat16"}
    for dtype, modes in gram.items():
        assert set(modes) == {"exact", "fast"}
        assert modes["exact"].startswith("float64" if dtype == "float64" else "float32")
    expected = {0: "float32", OWN: "bfloat16 x bfloat16 -> float32, ncfast", LIBRARY: "bfloat16 x bfloat16 -> float32, library"}
    for dtype in ("float16", "bfloat16"):
        assert gram[dtype]["fast"].startswith(expected[_C.bf16_gram_choice()])
    assert gram["float32"]["fast"] == gram["float32"]["exact"]


def test_fast_on_float32_input_is_exact():
    x, y = offset_data(4000, 40, 4, seed=34)
    x32 = x.astype(np.float32)
    a = ncfast.ClassStats(4, 40, precision="fast").update(x32, y)
    b = ncfast.ClassStats(4, 40, precision="exact").update(x32, y)
    assert torch.equal(a.within_scatter, b.within_scatter)
