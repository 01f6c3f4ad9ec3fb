"""The plan of the CUDA slab path (docs/CUDA.md, "The slab path"): how a chunk's centred rows are
laid out in the scratch slab, and which batched GEMMs compute the upper-triangle blocks of its Gram.

Pure Python on host integers (no torch, no device), so the plan is unit-tested on any machine and
a CUDA update never waits for it.

The Gram of a slab with ``splits`` groups of rows side by side (split s in columns
[s Dp, (s + 1) Dp)) goes to ``splits`` partial matrices of Dp x Dp (row stride Dp), slot s at
element s Dp (Dp + 1). Level l < L of the block-triangular split computes, for each of the
2^l diagonal blocks of width 2h = Dp / 2^l, its upper-right h x h block; the last level computes
the 2^L diagonal blocks of width Dp / 2^L in full. With that slot spacing the blocks of one level,
over every split, are evenly spaced in the slab's columns and in the partial buffer, so each level
is ONE strided batched GEMM. Work: (1 + 2^-L) / 2 of the full Gram (the upper triangle, plus the
strict lower halves of the last level's diagonal blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

# Slab modes: the slab element type and the GEMM that multiplies it.
#   bf16 / f16: 16-bit slab, tensor cores, float32 accumulation and output (precision="fast")
#   tf32: float32 slab, TF32 tensor cores (float32 input, precision="fast")
#   f64: float64 slab, DGEMM (float64 input; precision="exact" on GPUs whose float64 rate equals
#        their float32 FMA rate: A100, H100, H200)
#   f32: float32 slab, float32 FMA (precision="exact" on other GPUs)
MODES = ("bf16", "f16", "tf32", "f32", "f64")
SLAB_BYTES = {"bf16": 2, "f16": 2, "tf32": 4, "f32": 4, "f64": 8}
PARTIAL_BYTES = {"bf16": 4, "f16": 4, "tf32": 4, "f32": 4, "f64": 8}
# DType codes of the slab types (ncfast/_dtypes.py, csrc/core/dtype.h).
SLAB_DTYPE_CODES = {"bf16": 3, "f16": 2, "tf32": 0, "f32": 0, "f64": 1}

# Rows a float32 partial accumulates before it is folded into the float64 W. A GEMM sums each
# entry sequentially over its rows: about u sqrt(rows) / 3 relative error (u = 2^-24), 1.3e-6 at
# 8192 rows and 4e-7 at 1024, so the float32 "exact" mode folds every 1024 rows; the 16-bit and
# TF32 modes, whose operands carry 2^-9 .. 2^-12 already, every 65536.
FOLD_ROWS = {"bf16": 1 << 16, "f16": 1 << 16, "tf32": 1 << 16, "f32": 1 << 10, "f64": 1 << 40}

# Correction rows per slot: a 16-bit or TF32 slab splits each into hi + lo and spends three GEMM
# rows on it (hi hi^T + lo hi^T + hi lo^T), so that the correction of a class first seen in a
# chunk, about as large as its scatter, keeps twice the slab's precision.
CORR_SPLIT = {"bf16": 3, "f16": 3, "tf32": 3, "f32": 1, "f64": 1}

SMALL_ROWS = 4096  # a call this short, under nan_policy="raise", is one fused step (one prep kernel)
# (also needs its rows and correction rows within the mode's fold limit: one GEMM sums them)
MIN_BLOCK = 128  # narrowest diagonal block of the last level (GEMM efficiency)
MAX_LEVELS = 6
PAD_LIMIT = 1.1  # largest (Dp / D)^2 accepted to allow more levels
MIN_SPLIT_ROWS = 4096  # rows of one split's GEMM when the rows are split for parallelism
MAX_SPLITS = 64

# Cost model of the level choice (rough H100 figures; benchmarks/gpu_probe.py measures them).
GEMM_RATE = {"bf16": 6e14, "f16": 6e14, "tf32": 3e14, "f32": 5e13, "f64": 5e13}  # FLOP/s
LAUNCH_SECONDS = 6e-6
TILE = 128  # the GEMM's output tile edge, for the count of tiles in flight

SLAB_BUDGET = 1 << 30  # bytes of one slab at most (both slabs of a small step are far smaller)
PARTIAL_BUDGET = 1 << 28  # bytes of the partial's slots together, unless one slot is larger
CLASS_BUDGET = 1 << 30  # bytes of the per-slot moments (16 bytes per slot and column)


def slab_mode(feature_dtype: str, precision: str, fast_float64: bool) -> str:
    """The slab mode of a batch: ``feature_dtype`` one of "float32", "float64", "float16",
    "bfloat16"; ``precision`` "exact" or "fast" (resolved); ``fast_float64`` whether the GPU runs
    DGEMM at its float32 FMA rate."""
    if feature_dtype == "float64":
        return "f64"
    if precision == "fast":
        return {"bfloat16": "bf16", "float16": "f16", "float32": "tf32"}[feature_dtype]
    if precision != "exact":
        raise ValueError(f"precision: expected 'exact' or 'fast', got {precision!r}")
    return "f64" if fast_float64 else "f32"


def fast_float64(capability: Tuple[int, int]) -> bool:
    """GPUs whose float64 (tensor-core DGEMM) rate matches their float32 FMA rate: sm_80, sm_90."""
    return tuple(capability) in ((8, 0), (9, 0))


@dataclass(frozen=True)
class Layout:
    """What the partial Gram of one statistics object looks like; fixed while it holds rows."""

    dim: int
    padded_dim: int  # Dp: a multiple of 8 << max_levels
    max_levels: int
    slots: int  # partial slots (the most splits any chunk may use)
    mode: str

    @property
    def slot_stride(self) -> int:
        return self.padded_dim * (self.padded_dim + 1)

    @property
    def partial_elems(self) -> int:
        return self.slots * self.slot_stride

    @property
    def partial_bytes(self) -> int:
        return self.partial_elems * PARTIAL_BYTES[self.mode]


def padded_dim(dim: int) -> Tuple[int, int]:
    """(Dp, max_levels): D rounded up to a multiple of 8 << L for the most levels L whose last
    diagonal blocks stay at least MIN_BLOCK wide, while (Dp / D)^2 stays within PAD_LIMIT."""
    if dim < 1:
        raise ValueError(f"dim: expected a positive int, got {dim!r}")
    best = (_round_up(dim, 8), 0)
    for levels in range(1, MAX_LEVELS + 1):
        dp = _round_up(dim, 8 << levels)
        if dp >> levels < MIN_BLOCK or (dp / dim) ** 2 > PAD_LIMIT:
            break
        best = (dp, levels)
    return best


def make_layout(dim: int, mode: str) -> Layout:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    dp, levels = padded_dim(dim)
    slot_bytes = dp * (dp + 1) * PARTIAL_BYTES[mode]  # the slot stride
    slots = max(1, min(MAX_SPLITS, PARTIAL_BUDGET // slot_bytes))
    return Layout(dim, dp, levels, slots, mode)


@dataclass(frozen=True)
class BlockGemm:
    """One strided batched GEMM: for q < count,
    out[q] += alpha * X[:, x_col + q * col_stride : +size]^T @ Y[:, y_col + q * col_stride : +size],
    out[q] the size x size block at element out_offset + q * out_stride of the partial buffer
    (row stride Dp). Columns are slab columns (the slab's row stride is splits * Dp)."""

    level: int
    count: int
    size: int
    x_col: int
    y_col: int
    col_stride: int
    out_offset: int
    out_stride: int

    @property
    def flops(self) -> int:
        """Per slab row (multiply and add counted apart)."""
        return 2 * self.count * self.size * self.size


def block_gemms(dp: int, splits: int, levels: int) -> Tuple[BlockGemm, ...]:
    """The L + 1 batched GEMMs of the block-triangular split of ``splits`` slots of Dp x Dp."""
    if dp % (8 << levels) != 0:
        raise ValueError(f"padded_dim {dp} is not a multiple of 8 << {levels}")
    gemms = []
    for level in range(levels):
        h = dp >> (level + 1)
        gemms.append(BlockGemm(level, splits << level, h, 0, h, 2 * h, h, 2 * h * (dp + 1)))
    w = dp >> levels
    gemms.append(BlockGemm(levels, splits << levels, w, 0, 0, w, 0, w * (dp + 1)))
    return tuple(gemms)


def _tiles(size: int) -> int:
    return max(1, -(-size // TILE)) ** 2


def gemm_seconds(rows: int, dp: int, levels: int, mode: str, sm_count: int, splits: int = 1) -> float:
    """Modelled time of the GEMMs over ``rows`` slab rows (all splits together) with ``levels``
    levels: each launch costs LAUNCH_SECONDS and runs at GEMM_RATE, scaled down when its output
    tiles (TILE x TILE, over every split) are fewer than the SMs."""
    total = 0.0
    for g in block_gemms(dp, 1, levels):
        fill = min(1.0, splits * g.count * _tiles(g.size) / max(sm_count, 1))
        total += LAUNCH_SECONDS + rows * g.flops / (GEMM_RATE[mode] * fill)
    return total


def choose_levels(rows: int, layout: Layout, sm_count: int, splits: int = 1) -> int:
    """The level count with the least modelled time (ties: fewer launches)."""
    best, best_time = 0, math.inf
    for levels in range(layout.max_levels + 1):
        t = gemm_seconds(rows, layout.padded_dim, levels, layout.mode, sm_count, splits)
        if t < best_time * (1 - 1e-9):
            best, best_time = levels, t
    return best


def choose_levels_and_splits(chunk: int, slots: int, layout: Layout, sm_count: int) -> Tuple[int, int]:
    """(levels, splits) of a chunk of ``chunk`` rows with ``slots`` correction rows: splits enough
    that no partial slot passes FOLD_ROWS rows and, rows allowing (MIN_SPLIT_ROWS per split), that
    the level with the fewest output tiles fills the SMs; then the least modelled time."""
    fold = FOLD_ROWS[layout.mode]
    least = -(-chunk // fold)
    most = max(least, min(layout.slots, chunk // MIN_SPLIT_ROWS))
    best, best_time = (0, least), math.inf
    for levels in range(layout.max_levels + 1):
        gemms = block_gemms(layout.padded_dim, 1, levels)
        fewest = min(g.count * _tiles(g.size) for g in gemms)
        splits = max(least, min(-(-sm_count // fewest), most))
        t = (gemm_seconds(chunk, layout.padded_dim, levels, layout.mode, sm_count, splits)
             + gemm_seconds(slots, layout.padded_dim, levels, layout.mode, sm_count, 1))
        if t < best_time * (1 - 1e-9):
            best, best_time = (levels, splits), t
    return best


@dataclass(frozen=True)
class SlabPlan:
    """How one call is cut into chunks and how each chunk's slab is multiplied."""

    layout: Layout
    small: bool  # one fused step; dual slab (X = [Z; corrections], Y = [Z; -corrections])
    rows: int  # the call's rows
    chunk_rows: int  # rows of each chunk but the last
    max_slots: int  # min(K, chunk_rows): correction rows per chunk
    splits: int
    levels: int
    prevalidated: bool  # the whole call is checked up front (several chunks, or nan_policy="skip")
    gemms: Tuple[BlockGemm, ...]  # over the slab
    corr_gemms: Tuple[BlockGemm, ...]  # over the correction rows (alpha -1), unless small

    @property
    def mode(self) -> str:
        return self.layout.mode

    @property
    def corr_split(self) -> int:
        return CORR_SPLIT[self.layout.mode]

    @property
    def corr_rows(self) -> int:
        """GEMM rows of the corrections: corr_split blocks of max_slots rows."""
        return self.corr_split * self.max_slots

    @property
    def num_chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    def chunks(self):
        """(first row, rows) of every chunk."""
        return [(r0, min(self.chunk_rows, self.rows - r0)) for r0 in range(0, self.rows, self.chunk_rows)]

    def split_rows(self, rows: int) -> int:
        """Rows of each split of a chunk of ``rows`` rows (the last split padded with zero rows)."""
        return -(-rows // self.splits)

    @property
    def ld(self) -> int:
        """Elements between slab rows."""
        return self.splits * self.layout.padded_dim

    @property
    def slab_rows(self) -> int:
        """Rows of each slab buffer: the splits' rows (and, small, the correction rows after them)."""
        return self.split_rows(self.chunk_rows) + (self.corr_rows if self.small else 0)

    @property
    def slab_elems(self) -> int:
        return self.slab_rows * self.ld

    @property
    def corr_elems(self) -> int:
        """Elements of each separate correction buffer (0 when small: they follow the Z rows)."""
        return 0 if self.small else self.corr_rows * self.layout.padded_dim

    def gemm_rows(self, rows: int) -> int:
        """Rows each GEMM of the slab sums over for a chunk of ``rows`` rows."""
        return self.split_rows(rows) + (self.corr_rows if self.small else 0)

    def add_rows(self, rows: int) -> int:
        """Rows a chunk adds to its fullest partial slot (slot 0 also takes the corrections)."""
        return self.split_rows(rows) + self.corr_rows

    @property
    def computed_fraction(self) -> float:
        """Entries the GEMMs compute over the D (D + 1) / 2 wanted (the waste factor)."""
        dim = self.layout.dim
        computed = sum(g.count * g.size * g.size for g in self.gemms) / self.splits
        return computed / (dim * (dim + 1) / 2)


def plan_update(rows: int, num_classes: int, layout: Layout, *, nan_policy: str = "raise", chunk_rows: int = 0,
                sm_count: int = 132, slab_budget: int = SLAB_BUDGET) -> SlabPlan:
    """The plan of a call of ``rows`` rows into statistics with ``num_classes`` classes whose partial
    has ``layout``. ``chunk_rows`` > 0 caps the chunk (the block_rows of the update)."""
    if rows < 1:
        raise ValueError(f"rows: expected a positive int, got {rows!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    dp, mode = layout.padded_dim, layout.mode
    fold = FOLD_ROWS[mode]
    cap = chunk_rows if chunk_rows > 0 else rows
    split = CORR_SPLIT[mode]
    slots = min(num_classes, rows)
    small = rows <= SMALL_ROWS and nan_policy == "raise" and cap >= rows and rows + split * slots <= fold
    if small:
        levels = choose_levels(rows + split * slots, layout, sm_count)
        return SlabPlan(layout, True, rows, rows, slots, 1, levels, False, block_gemms(dp, 1, levels), ())

    # Chunk rows: the caller's cap, the slab budget, the per-slot moments, the partial's slots.
    elem = SLAB_BYTES[mode]
    budget_rows = slab_budget // (dp * elem)  # the last split's padding (< splits rows) may pass it
    chunk = min(rows, cap, max(1, budget_rows), (1 << 31) - 1, layout.slots * fold)
    while chunk > 1024 and min(num_classes, chunk) * layout.dim * 16 > CLASS_BUDGET:
        chunk //= 2
    slots = min(num_classes, chunk)
    levels, splits = choose_levels_and_splits(chunk, split * slots, layout, sm_count)
    prevalidated = nan_policy == "skip" or chunk < rows
    return SlabPlan(layout, False, rows, chunk, slots, splits, levels, prevalidated,
                    block_gemms(dp, splits, levels), block_gemms(dp, 1, levels))


def _round_up(a: int, b: int) -> int:
    return -(-a // b) * b
