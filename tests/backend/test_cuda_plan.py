"""The block planner of the CUDA slab path (ncfast/backend/gram_plan.py), on the CPU.

Every property the kernels and the GEMM views rely on: the padded width, the GEMMs' offsets and
strides (each upper-triangle entry of each partial slot computed exactly once, nothing written
outside the slots), the level count and its waste bound, and the chunking of a call (rows covered,
partial slots never past their fold limit, buffers within their budgets).
"""

from __future__ import annotations

import numpy as np
import pytest

from ncfast.backend import gram_plan as gp

DIMS = [1, 7, 8, 37, 128, 129, 300, 1000, 1024, 2048, 4096]


def coverage(layout: gp.Layout, gemms, splits: int) -> np.ndarray:
    """How many times each element of the partial buffer is written by the GEMMs (one row of the
    partial's slot stride per element), from the GEMMs' offsets and strides alone."""
    dp = layout.padded_dim
    hits = np.zeros(layout.slots * layout.slot_stride + dp, dtype=np.int64)
    for g in gemms:
        for q in range(g.count):
            base = g.out_offset + q * g.out_stride
            for r in range(g.size):
                hits[base + r * dp : base + r * dp + g.size] += 1
    return hits


def slot_matrix(hits: np.ndarray, layout: gp.Layout, slot: int) -> np.ndarray:
    dp = layout.padded_dim
    start = slot * layout.slot_stride
    return hits[start : start + dp * dp].reshape(dp, dp)


@pytest.mark.parametrize("dim", DIMS)
def test_padded_dim_allows_its_levels(dim):
    dp, levels = gp.padded_dim(dim)
    assert dp >= dim and dp % (8 << levels) == 0
    assert levels == 0 or dp >> levels >= gp.MIN_BLOCK
    assert levels == 0 or (dp / dim) ** 2 <= gp.PAD_LIMIT
    assert dp - dim < 8 << levels  # the smallest such width


@pytest.mark.parametrize("dim, splits", [(8, 1), (37, 3), (256, 2), (1000, 4), (2048, 1)])
def test_block_gemms_cover_every_upper_entry_of_every_slot_once(dim, splits):
    layout = gp.make_layout(dim, "bf16")
    layout = gp.Layout(dim, layout.padded_dim, layout.max_levels, max(layout.slots, splits), "bf16")
    dp = layout.padded_dim
    for levels in range(layout.max_levels + 1):
        gemms = gp.block_gemms(dp, splits, levels)
        assert len(gemms) == levels + 1
        hits = coverage(layout, gemms, splits)
        upper = np.triu(np.ones((dp, dp), dtype=bool))
        for slot in range(layout.slots):
            m = slot_matrix(hits, layout, slot)
            if slot < splits:
                assert (m[upper] == 1).all(), (levels, slot)
                # below the diagonal: only the strict lower halves of the last level's blocks
                w = dp >> levels
                blocks = np.kron(np.eye(dp // w, dtype=np.int64), np.ones((w, w), dtype=np.int64))
                assert np.array_equal(m[~upper], blocks[~upper])
            else:
                assert not m.any()
        # nothing between slots, nothing past the last slot
        inside = np.zeros_like(hits, dtype=bool)
        for slot in range(layout.slots):
            inside[slot * layout.slot_stride : slot * layout.slot_stride + dp * dp] = True
        assert not hits[~inside].any()


@pytest.mark.parametrize("dp, splits, levels", [(8, 1, 0), (256, 3, 1), (1024, 2, 3), (512, 1, 2)])
def test_block_gemm_slab_columns_pair_the_right_blocks(dp, splits, levels):
    """X columns of batch entry q are those of the output block's rows, Y columns those of its
    columns, within split q // 2^l; every read stays inside the slab's row (splits * dp)."""
    for g in gp.block_gemms(dp, splits, levels):
        per_split = g.count // splits
        for q in range(g.count):
            split, b = divmod(q, per_split)
            out = g.out_offset + q * g.out_stride - split * dp * (dp + 1)
            row, col = divmod(out, dp)
            assert g.x_col + q * g.col_stride == split * dp + row
            assert g.y_col + q * g.col_stride == split * dp + col
            assert g.y_col + q * g.col_stride + g.size <= splits * dp
            assert row <= col and 0 <= row < dp and col + g.size <= dp


@pytest.mark.parametrize("dim", [64, 1000, 4096])
def test_waste_of_a_plan_is_within_its_bound(dim):
    layout = gp.make_layout(dim, "bf16")
    for rows in (256, 4096, 100_000, 4 << 20):
        plan = gp.plan_update(rows, 1000, layout, sm_count=132)
        bound = (1 + 2.0 ** -plan.levels) * (layout.padded_dim / dim) ** 2 * dim / (dim + 1)
        assert plan.computed_fraction == pytest.approx(bound, rel=1e-12)
        assert plan.computed_fraction <= (1 + 2.0 ** -plan.levels) * gp.PAD_LIMIT


def test_levels_follow_the_cost_model():
    step = gp.make_layout(2048, "bf16")
    assert gp.choose_levels(512, step, 132) == 0  # B=256 rows + 256 corrections: one launch beats less work
    big = gp.make_layout(4096, "bf16")
    assert gp.choose_levels(1 << 20, big, 132, splits=8) >= 3  # a long chunk: the work dominates
    assert gp.choose_levels(1 << 20, gp.make_layout(64, "bf16"), 132) == 0  # no levels below 128 wide


@pytest.mark.parametrize("mode", gp.MODES)
@pytest.mark.parametrize("rows, dim, k, nan_policy, chunk_rows", [
    (1, 16, 3, "raise", 0),
    (4096, 2048, 1000, "raise", 0),
    (4097, 2048, 1000, "raise", 0),
    (3000, 37, 5, "skip", 0),
    (2500, 24, 9, "raise", 333),
    (1 << 22, 128, 1000, "raise", 0),
    (1 << 22, 4096, 1000, "raise", 0),
    (1500, 200, 50_000, "raise", 0),
    (200_000, 512, 100_000, "raise", 0),
])
def test_plans_cover_the_call_within_every_limit(mode, rows, dim, k, nan_policy, chunk_rows):
    layout = gp.make_layout(dim, mode)
    budget = 1 << 28
    plan = gp.plan_update(rows, k, layout, nan_policy=nan_policy, chunk_rows=chunk_rows, sm_count=132,
                          slab_budget=budget)
    chunks = plan.chunks()
    assert chunks[0][0] == 0 and sum(n for _, n in chunks) == rows
    assert all(a + n == b for (a, n), (b, _) in zip(chunks, chunks[1:]))
    assert plan.max_slots == min(k, plan.chunk_rows)
    assert 1 <= plan.splits <= layout.slots
    assert plan.small == (rows <= gp.SMALL_ROWS and nan_policy == "raise" and (chunk_rows == 0 or chunk_rows >= rows)
                          and rows + gp.CORR_SPLIT[mode] * min(k, rows) <= gp.FOLD_ROWS[mode])
    if chunk_rows:
        assert plan.chunk_rows <= chunk_rows
    if plan.small:
        assert plan.splits == 1 and plan.num_chunks == 1 and not plan.prevalidated
        assert plan.gemm_rows(rows) == rows + plan.corr_split * plan.max_slots and plan.corr_gemms == ()
    else:
        assert plan.prevalidated == (nan_policy == "skip" or plan.num_chunks > 1)
        assert plan.chunk_rows * layout.padded_dim * gp.SLAB_BYTES[mode] <= max(budget, layout.padded_dim * gp.SLAB_BYTES[mode])
        assert min(k, plan.chunk_rows) * dim * 16 <= max(gp.CLASS_BUDGET, 1024 * dim * 16)
        assert len(plan.corr_gemms) == plan.levels + 1
    for _, n in chunks:
        assert plan.split_rows(n) * plan.splits >= n
        assert plan.split_rows(n) * plan.splits - n < plan.splits  # zero rows pad the last split only
        assert plan.gemm_rows(n) <= plan.slab_rows
        assert plan.split_rows(n) <= gp.FOLD_ROWS[mode]  # one GEMM's rows within the fold limit
        if plan.small:
            assert plan.gemm_rows(n) <= gp.FOLD_ROWS[mode]
    assert plan.ld == plan.splits * layout.padded_dim
    assert layout.partial_bytes <= max(gp.PARTIAL_BUDGET, layout.slot_stride * gp.PARTIAL_BYTES[mode])


def test_slab_modes():
    assert gp.slab_mode("bfloat16", "fast", True) == "bf16"
    assert gp.slab_mode("float16", "fast", False) == "f16"
    assert gp.slab_mode("float32", "fast", True) == "tf32"
    assert gp.slab_mode("float32", "exact", True) == "f64"
    assert gp.slab_mode("float32", "exact", False) == "f32"
    assert gp.slab_mode("bfloat16", "exact", True) == "f64"
    assert gp.slab_mode("float64", "fast", False) == "f64"
    assert gp.fast_float64((9, 0)) and gp.fast_float64((8, 0)) and not gp.fast_float64((8, 9))
    with pytest.raises(ValueError, match="precision"):
        gp.slab_mode("float32", "auto", True)


def test_bad_arguments_are_refused():
    layout = gp.make_layout(16, "bf16")
    with pytest.raises(ValueError, match="rows"):
        gp.plan_update(0, 3, layout)
    with pytest.raises(ValueError, match="num_classes"):
        gp.plan_update(10, 0, layout)
    with pytest.raises(ValueError, match="mode"):
        gp.make_layout(16, "int8")
    with pytest.raises(ValueError, match="dim"):
        gp.padded_dim(0)
    with pytest.raises(ValueError, match="multiple"):
        gp.block_gemms(24, 1, 2)
