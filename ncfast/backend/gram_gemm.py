"""The torch side of the CUDA slab path: the block GEMMs of a slab into the partial Gram, and a
torch version of the fold (the CUDA kernels fold on the device; this one is their reference and
runs on any device, the CPU included).

The GEMMs are ``torch.baddbmm`` on strided views of the slab and of the partial buffer (no copy):
cuBLAS strided batched GEMMs, float32 output for 16-bit slabs (``out_dtype``, CUDA only, torch >=
2.8), TF32 or plain float32 FMA for float32 slabs as the mode asks, DGEMM for float64 slabs. On
the CPU (tests) 16-bit slabs are widened to float32 first: the same products, exact in float32,
with float32 sums.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .gram_plan import BlockGemm

SLAB_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "tf32": torch.float32, "f32": torch.float32,
               "f64": torch.float64}
PARTIAL_DTYPES = {"bf16": torch.float32, "f16": torch.float32, "tf32": torch.float32, "f32": torch.float32,
                  "f64": torch.float64}


@contextlib.contextmanager
def gemm_precision(mode: str, device: torch.device) -> Iterator[None]:
    """cuBLAS math for the mode while the GEMMs are enqueued: TF32 on for "tf32", off for "f32"
    (whatever the process set), and no float16 accumulation for "f16" (torch refuses float32 output
    with it). Host-side flags, restored on exit; no effect off CUDA."""
    if device.type != "cuda" or mode not in ("tf32", "f32", "f16"):
        yield
        return
    matmul = torch.backends.cuda.matmul
    if mode == "f16":
        previous = bool(getattr(matmul, "allow_fp16_accumulation", False))
        if previous:
            matmul.allow_fp16_accumulation = False
        try:
            yield
        finally:
            if previous:
                matmul.allow_fp16_accumulation = True
        return
    previous = matmul.fp32_precision
    matmul.fp32_precision = "tf32" if mode == "tf32" else "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def block_views(partial: Tensor, x: Tensor, y: Tensor, gemm: BlockGemm, rows: int, ld: int, padded_dim: int):
    """(out, X^T blocks, Y blocks) of one batched GEMM as strided views (no copy) of the partial
    buffer (1-D) and of the slabs (1-D, row stride ``ld``), over the first ``rows`` slab rows."""
    xt = x.as_strided((gemm.count, gemm.size, rows), (gemm.col_stride, 1, ld), x.storage_offset() + gemm.x_col)
    yb = y.as_strided((gemm.count, rows, gemm.size), (gemm.col_stride, ld, 1), y.storage_offset() + gemm.y_col)
    out = partial.as_strided((gemm.count, gemm.size, gemm.size), (gemm.out_stride, padded_dim, 1),
                             partial.storage_offset() + gemm.out_offset)
    return out, xt, yb


def baddbmm_(out: Tensor, a: Tensor, b: Tensor, alpha: float) -> None:
    """out += alpha * a @ b, batched, in the partial's dtype."""
    if a.dtype in (torch.float16, torch.bfloat16) and out.dtype == torch.float32:
        if a.device.type in ("cuda", "meta"):
            torch.baddbmm(out, a, b, out_dtype=torch.float32, alpha=alpha, out=out)
        else:
            out.baddbmm_(a.float(), b.float(), alpha=alpha)
        return
    out.baddbmm_(a, b, alpha=alpha)


def accumulate_(partial: Tensor, x: Tensor, y: Tensor, gemms: Sequence[BlockGemm], rows: int, ld: int,
                padded_dim: int, alpha: float = 1.0) -> None:
    """partial += alpha * (the upper-triangle blocks of X^T Y) over the first ``rows`` slab rows."""
    if rows <= 0:
        return
    for gemm in gemms:
        out, xt, yb = block_views(partial, x, y, gemm, rows, ld, padded_dim)
        baddbmm_(out, xt, yb, alpha)


def fold_(scatter: Tensor, partial: Tensor, slots: int, padded_dim: int, exponents: Tensor) -> None:
    """W += the partial's slots, each entry (i, j) times 2^(e_i + e_j), into W's upper triangle,
    then W's lower triangle from the upper; the partial is zeroed (csrc/cuda/slab_update_cuda.cu's
    fold and mirror). ``exponents`` (int) are the columns' current scale exponents."""
    dim, dp = scatter.shape[0], padded_dim
    sums = partial.as_strided((slots, dp, dp), (dp * (dp + 1), dp, 1)).to(torch.float64).sum(dim=0)
    scale = torch.ldexp(torch.ones(dp, dtype=torch.float64, device=scatter.device),
                        exponents.to(device=scatter.device, dtype=torch.float64))
    upper = torch.triu(sums * scale[:, None] * scale[None, :])[:dim, :dim] + torch.triu(scatter)
    scatter.copy_(upper + torch.triu(upper, 1).T)
    partial.zero_()
