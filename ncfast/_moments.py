"""The optional extra statistics of ClassStats, in float64 on the statistics' device (torch; the
native CPU backend passes the batch's fourth-moment sums to :func:`prepare` from one C++ pass):

- the fourth central moment sum_i ||x_i - mu_G||^4 (Ledoit-Wolf's shrinkage coefficient), kept
  as a scalar P4 and a D-vector P3 = sum_i ||x_i - c||^2 (x_i - c) about a centre c that follows
  the running global mean;
- the per-class scatter matrices W_c = sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T (K x D x D, for
  TransRate), updated and merged by Chan's formula class by class.

Both are exact up to rounding; the update, the shift of P4/P3 to another centre and the merge
are derived in docs/CONVENTIONS.md ("Fourth moments in one pass"). Nothing here runs unless
the option is on, so the default update costs nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ._memory import free_memory

# Rows are widened to float64 in blocks of about this many entries, so the extra memory is
# bounded by a small block, not by the chunk.
_BLOCK_ENTRIES = 1 << 18


def class_gram_bytes(num_classes: int, dim: int) -> int:
    return 8 * num_classes * dim * dim


def check_class_gram_memory(num_classes: int, dim: int, device: torch.device) -> None:
    """Refuses, with a MemoryError naming the size, a K x D x D float64 buffer that cannot fit."""
    needed = class_gram_bytes(num_classes, dim)
    if needed == 0:
        return
    free = free_memory(device)
    if free is not None and needed > free:
        raise MemoryError(
            f"per_class_gram: {num_classes} classes x {dim} x {dim} float64 need {needed / 2**30:.1f} GiB, "
            f"only {free / 2**30:.1f} GiB free on {device}; reduce D (e.g. PCA) or the number of classes"
        )


# ------------------------------------------------------------------ moments about a point


def _second_moments_about(state, point: Tensor, vector: Tensor):
    """(P2(p) v, tr P2(p), P1(p)) of the rows the state summarises, with
    P2(p) = sum_i (x_i - p)(x_i - p)^T = W + sum_c n_c (mu_c - p)(mu_c - p)^T and
    P1(p) = sum_i (x_i - p) = sum_c n_c (mu_c - p): O(D^2 + K D), no D x D matrix formed."""
    n = state.counts.to(torch.float64)
    dm = state.means - point
    weighted = dm * n[:, None]
    p2v = state.scatter @ vector + weighted.T @ (dm @ vector)
    trace = torch.trace(state.scatter) + (weighted * dm).sum()
    return p2v, trace, weighted.sum(dim=0)


def shifted(state, fourth: Tensor, third: Tensor, origin: Tensor, target: Tensor):
    """(P4, P3) about `target` from (P4, P3) about `origin` for the rows of `state`.

    With z = x - origin, a = target - origin, Q = ||z||^2, L = a.z, A = ||a||^2, so that
    ||x - target||^2 = Q - 2L + A:
        P4' = P4 + 4 a^T P2 a + n A^2 - 4 a.P3 + 2 A tr P2 - 4 A a.P1
        P3' = P3 - (tr P2) a - 2 P2 a + 2 (a.P1) a + A P1 - n A a
    with P2, P1 the second and first moments about `origin` (docs/CONVENTIONS.md)."""
    a = target - origin
    n = state.counts.to(torch.float64).sum()
    p2a, tr2, p1 = _second_moments_about(state, origin, a)
    aa = a @ a
    ap1 = a @ p1
    new_fourth = fourth + 4.0 * (a @ p2a) + n * aa * aa - 4.0 * (a @ third) + 2.0 * aa * tr2 - 4.0 * aa * ap1
    new_third = third - tr2 * a - 2.0 * p2a + 2.0 * ap1 * a + aa * p1 - n * aa * a
    return new_fourth, new_third


def global_mean(state) -> Tensor:
    n = state.counts.to(torch.float64)
    total = n.sum()
    return (n @ state.means) / total if float(total) > 0 else state.means.new_zeros(state.means.shape[1])


def recentre_(state) -> None:
    """Moves the centre of P4/P3 to the current global mean (keeps the shifts small)."""
    target = global_mean(state)
    fourth, third = shifted(state, state.fourth_moment, state.third_moment, state.moment_centre, target)
    state.fourth_moment.copy_(fourth)
    state.third_moment.copy_(third)
    state.moment_centre.copy_(target)


def central_moments(state):
    """(sum_i ||x_i - mu_G||^4, sum_i ||x_i - mu_G||^2 (x_i - mu_G)) as float64 tensors."""
    return shifted(state, state.fourth_moment, state.third_moment, state.moment_centre, global_mean(state))


# ------------------------------------------------------------------ the chunk update


@dataclass
class PendingExtras:
    """The increments of one chunk, computed before the chunk update and applied after it
    succeeded, so that a rejected batch leaves every statistic unchanged."""

    centre: Optional[Tensor] = None  # (D,) centre the chunk's moments are about
    fourth: Optional[Tensor] = None  # () sum ||x - centre||^4
    third: Optional[Tensor] = None  # (D,) sum ||x - centre||^2 (x - centre)
    # per-class scatter: the chunk's rows sorted by class and the classes' counts and means
    # before the chunk (the increments themselves are formed after the update, class group by
    # class group, so that no second K x D x D buffer is ever held)
    gram_rows: Optional[Tensor] = None  # (B, D) rows sorted by class
    gram_classes: Optional[Tensor] = None  # (k,) classes present in the chunk
    gram_sizes: Optional[Tensor] = None  # (k,) their rows in the chunk
    gram_counts: Optional[Tensor] = None  # (k,) their rows before the chunk
    gram_means: Optional[Tensor] = None  # (k, D) their means before the chunk


def _row_step(dim: int) -> int:
    return max(1, _BLOCK_ENTRIES // max(dim, 1))


def _chunk_mean(x: Tensor) -> Tensor:
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    step = _row_step(x.shape[1])
    for start in range(0, x.shape[0], step):
        total += x[start : start + step].sum(dim=0, dtype=torch.float64)
    return total / max(x.shape[0], 1)


def _chunk_moments(x: Tensor, centre: Tensor):
    """(sum ||x - c||^4, sum ||x - c||^2 (x - c)) in float64, a cache-sized block of rows at a
    time through one reused buffer (a fresh float64 copy of the chunk per operation would cost
    more in page faults than in arithmetic)."""
    step = min(_row_step(x.shape[1]), max(x.shape[0], 1))
    z = torch.empty(step, x.shape[1], dtype=torch.float64, device=x.device)
    fourth = torch.zeros((), dtype=torch.float64, device=x.device)
    third = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], step):
        rows = x[start : start + step]
        block = z[: rows.shape[0]]
        torch.sub(rows, centre, out=block)  # widened to float64 in the subtraction
        q = torch.einsum("ij,ij->i", block, block)
        fourth += q @ q
        third += q @ block
    return fourth, third


# Classes are batched so that a group's zero-padded rows and its Grams stay under this many entries.
_GROUP_ENTRIES = 1 << 23


def _sorted_by_class(state, x: Tensor, y: Tensor, pending: PendingExtras) -> None:
    order = torch.argsort(y, stable=True)
    classes, sizes = torch.unique_consecutive(y[order], return_counts=True)
    pending.gram_rows = x[order]
    pending.gram_classes, pending.gram_sizes = classes, sizes
    pending.gram_counts = state.counts[classes].clone()
    pending.gram_means = state.means[classes].clone()


def _groups(sizes: list, dim: int):
    """(first, stop) ranges of consecutive classes whose padded rows and Grams fit the budget."""
    first, widest = 0, 0
    for i, m in enumerate(sizes):
        widest_now = max(widest, m)
        count = i - first + 1
        if i > first and count * max(widest_now * dim, dim * dim) > _GROUP_ENTRIES:
            yield first, i
            first, widest_now = i, m
        widest = widest_now
    yield first, len(sizes)


def _add_class_grams_(state, pending: PendingExtras) -> None:
    """W_c += Z^T Z - m d d^T + (n m / (n + m)) e e^T for every class c of the chunk: the shifted
    update of DESIGN.md section 3 applied to one class (ncfast/backend/reference.py's form), with
    Z = X_c - s for a shift s, d = mean(Z), e = xbar_c - mu_c = d + s - mu_c, n and m the class's
    rows before and in the chunk. s is the class's running mean (its mean in this chunk for a new
    class), rounded to the product's precision; Z^T Z is float64 for float64 rows and float32
    otherwise, as the pooled W (README "Precision"). Classes are batched into zero-padded groups
    and one batched product per group."""
    rows = pending.gram_rows
    dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
    rows = rows.to(dtype)
    device, d = rows.device, rows.shape[1]
    sizes_t, n_old, means_old = pending.gram_sizes, pending.gram_counts, pending.gram_means
    k = sizes_t.shape[0]
    owner = torch.repeat_interleave(torch.arange(k, device=device), sizes_t)
    sums = torch.zeros(k, d, dtype=dtype, device=device).index_add_(0, owner, rows)
    shift = torch.where((n_old > 0)[:, None], means_old.to(dtype), sums / sizes_t[:, None].to(dtype))
    z = rows - shift[owner]
    starts = torch.cumsum(sizes_t, dim=0) - sizes_t
    position = torch.arange(rows.shape[0], device=device) - starts[owner]
    sizes = sizes_t.tolist()
    n64, m64 = n_old.to(torch.float64), sizes_t.to(torch.float64)
    row_starts = starts.tolist()
    for first, stop in _groups(sizes, d):
        lo, hi = row_starts[first], row_starts[stop - 1] + sizes[stop - 1]
        padded = torch.zeros(stop - first, max(sizes[first:stop]), d, dtype=dtype, device=device)
        padded[owner[lo:hi] - first, position[lo:hi]] = z[lo:hi]
        gram = torch.bmm(padded.transpose(1, 2), padded).to(torch.float64)
        mean = padded.sum(dim=1, dtype=torch.float64) / m64[first:stop, None]
        e = mean + (shift[first:stop].to(torch.float64) - means_old[first:stop])
        w = torch.where(n64[first:stop] > 0, n64[first:stop] * m64[first:stop] / (n64[first:stop] + m64[first:stop]),
                        torch.zeros_like(n64[first:stop]))
        inc = 0.5 * (gram + gram.transpose(1, 2))
        inc -= m64[first:stop, None, None] * mean[:, :, None] * mean[:, None, :]
        inc += w[:, None, None] * e[:, :, None] * e[:, None, :]
        state.class_gram.index_add_(0, pending.gram_classes[first:stop], inc)


def prepare(state, x: Tensor, y: Tensor, row_moments=None) -> PendingExtras:
    """The extra statistics' increments for the finite rows `x` (labels `y`, all in range).
    `row_moments(x, centre)` -> (P4, P3) of the rows (default: torch, :func:`_chunk_moments`; the
    native backend passes the C++ pass)."""
    pending = PendingExtras()
    if x.shape[0] == 0:
        return pending
    if state.fourth_moment is not None:
        empty = int(state.counts.sum()) == 0
        pending.centre = _chunk_mean(x) if empty else state.moment_centre.clone()
        pending.fourth, pending.third = (row_moments or _chunk_moments)(x, pending.centre)
    if state.class_gram is not None:
        _sorted_by_class(state, x, y, pending)
    return pending


def commit_(state, pending: PendingExtras) -> None:
    """Applies `pending` once the chunk update of the other statistics has succeeded (the batch
    has been checked by then; only running out of memory could stop it half-way)."""
    if pending.fourth is not None and state.fourth_moment is not None:
        state.moment_centre.copy_(pending.centre)
        state.fourth_moment += pending.fourth
        state.third_moment += pending.third
        recentre_(state)
    if pending.gram_rows is not None and state.class_gram is not None:
        _add_class_grams_(state, pending)


# ------------------------------------------------------------------ merge


def merge_moments_before(dst, src):
    """Step 1 of a merge, before dst's counts and means change: src's (P4, P3) moved to dst's
    centre (or dst takes src's centre when dst has no rows). Returns what to add."""
    if dst.fourth_moment is None:
        return None
    if src.fourth_moment is None:
        raise ValueError("other: fourth_moments is off there but on here; both must track it to merge")
    if int(dst.counts.sum()) == 0:
        return src.moment_centre.clone(), src.fourth_moment.clone(), src.third_moment.clone()
    fourth, third = shifted(src, src.fourth_moment, src.third_moment, src.moment_centre, dst.moment_centre)
    return dst.moment_centre.clone(), fourth, third


def merge_moments_after(dst, moved) -> None:
    """Step 2, once dst holds the merged counts and means: add and recentre."""
    if moved is None:
        return
    centre, fourth, third = moved
    dst.moment_centre.copy_(centre)
    dst.fourth_moment += fourth
    dst.third_moment += third
    recentre_(dst)


def merge_class_gram_(dst, src, weight: Tensor, delta: Tensor) -> None:
    """W_c <- W_Ac + W_Bc + (n_Ac n_Bc / n_c) delta_c delta_c^T (Chan, per class)."""
    if dst.class_gram is None:
        return
    if src.class_gram is None:
        raise ValueError("other: per_class_gram is off there but on here; both must track it to merge")
    k = src.num_classes
    dst.class_gram[:k] += src.class_gram + weight[:, None, None] * delta[:, :, None] * delta[:, None, :]
