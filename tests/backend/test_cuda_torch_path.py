"""The torch side of the CUDA slab path on CPU tensors: slab -> block GEMMs -> fold.

The slabs come from the NumPy model of the kernels (slab_model.py); they are laid out as the
driver lays them out (ncfast/backend/cuda_slab.py: splits side by side, correction blocks, the dual
slab of a small step) and multiplied with the planner's block GEMMs by ncfast.backend.gram_gemm on
the CPU, then folded; W must match the float64 reference. On a GPU the same code runs cuBLAS.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncfast.backend import gram_gemm, gram_plan
from reference_stats import numpy_stats, offset_data, rel_err
from slab_model import SlabModel, to_slab


class TorchGram:
    """The GEMMs and the fold of one chunk exactly as cuda_slab.update_ runs them, on CPU tensors."""

    def __init__(self, dim: int, mode: str, num_classes: int, small: bool, sm_count: int = 132):
        self.dim, self.mode, self.k, self.small, self.sm_count = dim, mode, num_classes, small, sm_count
        self.layout = gram_plan.make_layout(dim, mode)
        self.partial = torch.zeros(self.layout.partial_elems, dtype=gram_gemm.PARTIAL_DTYPES[mode])
        self.plans = []

    def accumulate(self, slab: np.ndarray, corr_x: np.ndarray, corr_y: np.ndarray) -> None:
        rows, d = slab.shape
        # nan_policy="skip" never makes a small step: the other layout
        plan = gram_plan.plan_update(rows, self.k, self.layout, nan_policy="raise" if self.small else "skip",
                                     sm_count=self.sm_count)
        assert plan.num_chunks == 1 and plan.small == self.small
        self.plans.append(plan)
        dp, ld, dtype = self.layout.padded_dim, plan.ld, gram_gemm.SLAB_DTYPES[self.mode]
        split_rows = plan.split_rows(rows)
        z = torch.zeros(plan.splits * split_rows, dp, dtype=torch.float64)
        z[:rows, :d] = torch.from_numpy(slab)
        x = torch.full((plan.slab_elems,), float("nan"), dtype=dtype)  # every used entry is written below
        body = x[: split_rows * ld].view(split_rows, ld)
        for s in range(plan.splits):
            body[:, s * dp : (s + 1) * dp] = z[s * split_rows : (s + 1) * split_rows].to(dtype)

        def blocks(c: np.ndarray, sign: float) -> torch.Tensor:
            out = torch.zeros(plan.corr_rows, dp, dtype=torch.float64)
            used = c.shape[0] // plan.corr_split
            for b in range(plan.corr_split):
                out[b * plan.max_slots : b * plan.max_slots + used, :d] = sign * torch.from_numpy(
                    c[b * used : (b + 1) * used])
            return out.to(dtype)

        if plan.small:
            y = x.clone()
            start, stop = split_rows * ld, (split_rows + plan.corr_rows) * ld
            x[start:stop] = blocks(corr_x, 1.0).flatten()
            y[start:stop] = blocks(corr_y, -1.0).flatten()
            gram_gemm.accumulate_(self.partial, x, y, plan.gemms, plan.gemm_rows(rows), ld, dp)
        else:
            cx, cy = blocks(corr_x, 1.0).flatten(), blocks(corr_y, 1.0).flatten()
            gram_gemm.accumulate_(self.partial, x, x, plan.gemms, split_rows, ld, dp)
            gram_gemm.accumulate_(self.partial, cx, cy, plan.corr_gemms, plan.corr_rows, dp, dp, alpha=-1.0)

    def fold(self, upper: np.ndarray, exponents: np.ndarray) -> None:
        w = torch.from_numpy(upper + np.triu(upper, 1).T)
        e = torch.zeros(self.layout.padded_dim, dtype=torch.int32)
        e[: self.dim] = torch.from_numpy(exponents.astype(np.int32))
        gram_gemm.fold_(w, self.partial, self.layout.slots, self.layout.padded_dim, e)
        assert torch.equal(w, w.T)
        upper[:] = np.triu(w.numpy())


CASES = [("f64", torch.float32, 1e-12), ("f32", torch.float32, 8e-7), ("tf32", torch.float32, 3e-4),
         ("bf16", torch.bfloat16, 2e-3), ("f16", torch.float16, 2e-4), ("f64", torch.float64, 1e-12)]


def rounded(x, dtype):
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype).double().numpy()


@pytest.fixture
def many_splits_and_levels(monkeypatch):
    """Plans with every level the width allows and several splits, even for test-sized chunks
    (the cost model would pick one GEMM for them)."""
    monkeypatch.setattr(gram_plan, "MIN_BLOCK", 16)
    monkeypatch.setattr(gram_plan, "choose_levels", lambda rows, layout, sm_count, splits=1: layout.max_levels)

    def levels_and_splits(chunk, corr_rows, layout, sm_count):
        least = -(-chunk // gram_plan.FOLD_ROWS[layout.mode])
        return layout.max_levels, max(least, min(layout.slots, 4, chunk // 64))

    monkeypatch.setattr(gram_plan, "choose_levels_and_splits", levels_and_splits)


@pytest.mark.parametrize("mode, dtype, tol", CASES)
@pytest.mark.parametrize("small", [True, False])
@pytest.mark.parametrize("dim", [37, 160])
def test_torch_path_matches_the_float64_reference(many_splits_and_levels, mode, dtype, tol, small, dim):
    x, y = offset_data(3000, dim, 6, seed=120)
    xr = rounded(x, dtype)
    fold = 1 << 10 if mode == "f32" else 1 << 16
    gram = TorchGram(dim, mode, 6, small)
    chunk = 300 if (small and mode == "f32") else 1000  # a small f32 step holds at most 1024 GEMM rows
    model = SlabModel(6, dim, mode, fold_rows=fold, gram=gram).update(xr, y, chunk)
    ref = numpy_stats(xr, y, 6)
    assert rel_err(model.scatter, ref.scatter) < tol
    assert rel_err(model.means, ref.means) < 1e-12
    if dim == 160:  # the plans did use the block split and, off the small step, several splits
        assert any(p.levels > 0 for p in gram.plans)
        assert small or any(p.splits > 1 for p in gram.plans)


@pytest.mark.parametrize("mode", ["bf16", "tf32", "f64"])
def test_torch_path_equals_the_numpy_gemms(many_splits_and_levels, mode):
    """The same slabs through torch's block GEMMs and through one NumPy GEMM: equal to rounding."""
    x, y = offset_data(2000, 96, 5, seed=121)
    xr = rounded(x, torch.float32)
    through_torch = SlabModel(5, 96, mode, gram=TorchGram(96, mode, 5, small=False)).update(xr, y, 700)
    through_numpy = SlabModel(5, 96, mode).update(xr, y, 700)
    assert rel_err(through_torch.scatter, through_numpy.scatter) < (1e-14 if mode == "f64" else 1e-6)


def test_block_gemms_write_only_their_blocks():
    """Entries of the partial no GEMM owns (below the diagonal, outside the last level's diagonal
    blocks) keep their NaN poison, and the fold, which reads only the upper triangle, is clean."""
    dim, splits, levels = 128, 3, 2
    layout = gram_plan.Layout(dim, 128, 2, splits, "bf16")
    gemms = gram_plan.block_gemms(128, splits, levels)
    dp, ld = 128, splits * 128
    covered = torch.zeros(layout.partial_elems, dtype=torch.bool)
    for g in gemms:
        for q in range(g.count):
            for r in range(g.size):
                start = g.out_offset + q * g.out_stride + r * dp
                covered[start : start + g.size] = True
    partial = torch.where(covered, torch.zeros(()), torch.full((), float("nan")))
    gap = torch.ones(layout.partial_elems, dtype=torch.bool)  # the Dp elements between slots
    for s in range(splits):
        gap[s * layout.slot_stride : s * layout.slot_stride + dp * dp] = False
    partial[gap] = 0.0  # the fold never reads them; keep the sum over slots finite
    rng = np.random.default_rng(122)
    rows = 500
    slab = torch.from_numpy(to_slab(rng.standard_normal((rows, ld)), "bf16")).to(torch.bfloat16)
    before = partial.clone()
    gram_gemm.accumulate_(partial, slab.flatten(), slab.flatten(), gemms, rows, ld, dp)
    assert torch.isfinite(partial[covered]).all()
    assert partial[~covered & ~gap].isnan().all()
    assert torch.equal(partial[gap], before[gap])
    w = torch.zeros(dim, dim, dtype=torch.float64)
    sums = partial.clone()
    gram_gemm.fold_(w, partial, splits, dp, torch.zeros(dp, dtype=torch.int32))
    assert torch.isfinite(w).all() and not partial.any()
    z = slab.double().view(rows, splits, dp)
    expected = sum(z[:, s].T @ z[:, s] for s in range(splits))
    assert rel_err(w, expected.numpy()) < 1e-6
    assert torch.isnan(sums).any()  # the poison was there


def test_block_views_are_views():
    partial = torch.zeros(3 * 64 * 65)
    x = torch.zeros(100 * 192, dtype=torch.bfloat16)
    g = gram_plan.block_gemms(64, 3, 1)[0]
    out, xt, yb = gram_gemm.block_views(partial, x, x, g, 100, 192, 64)
    assert out._base is partial and xt._base is x and yb._base is x
    assert out.shape == (3, 32, 32) and xt.shape == (3, 32, 100) and yb.shape == (3, 100, 32)


def test_gemm_precision_sets_and_restores_the_cuda_math_flags():
    """The flags are host-side; they can be exercised without a GPU."""
    matmul = torch.backends.cuda.matmul
    cuda = torch.device("cuda")
    before = matmul.fp32_precision
    with gram_gemm.gemm_precision("tf32", cuda):
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before
    with gram_gemm.gemm_precision("f32", cuda):
        assert matmul.fp32_precision == "ieee"
    assert matmul.fp32_precision == before
    with gram_gemm.gemm_precision("tf32", torch.device("cpu")):
        assert matmul.fp32_precision == before
    if hasattr(matmul, "allow_fp16_accumulation"):
        matmul.allow_fp16_accumulation = True
        try:
            with gram_gemm.gemm_precision("f16", cuda):
                assert matmul.allow_fp16_accumulation is False
            assert matmul.allow_fp16_accumulation is True
        finally:
            matmul.allow_fp16_accumulation = False
