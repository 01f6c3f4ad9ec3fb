"""An executable NumPy model of the CUDA slab path (csrc/cuda/slab_*.cu, ncfast/backend/cuda_slab.py),
step for step: the chunk's gram words, slots in class order, rows in class order, float64 moments
about the exact shift, the slab entries (x - p) 2^-e rounded to the slab type, the column
exponents and their window, the class update with its one correction row per slot, the due and
rescale folds, and the GEMMs' float32 (float64) partial. The GEMMs and the fold are pluggable
(``NumpyGram`` here; the torch path in test_cuda_torch_path.py), so the same slabs run through
both. The kernels themselves are tested in test_cuda_cublas.py (GPU only).
"""

from __future__ import annotations

import numpy as np

# Exponent windows of the slab types (csrc/cuda/slab_common.cuh, exponent_window).
WINDOWS = {"bf16": (-40, 40), "f16": (-6, 6), "tf32": (-40, 40), "f32": (-40, 40), "f64": (-200, 200)}
PARTIAL = {"bf16": np.float32, "f16": np.float32, "tf32": np.float32, "f32": np.float32, "f64": np.float64}


def round_bf16(v: np.ndarray) -> np.ndarray:
    """float64 -> bfloat16 (8 significant bits), round to nearest even, in one step."""
    m, e = np.frexp(v)
    return np.ldexp(np.round(m * 256.0) / 256.0, e)


def round_tf32(v32: np.ndarray) -> np.ndarray:
    """float32 -> TF32 (11 significant bits), round to nearest even (slab_common.cuh, round_tf32)."""
    bits = v32.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~np.uint64(0x1FFF)
    return bits.astype(np.uint32).view(np.float32)


def to_slab(v: np.ndarray, mode: str) -> np.ndarray:
    """float64 values rounded as the kernels store them in a slab of ``mode``; returned as float64."""
    if mode == "bf16":
        return round_bf16(v)
    if mode == "f16":
        return v.astype(np.float16).astype(np.float64)
    if mode == "f32":
        return v.astype(np.float32).astype(np.float64)
    if mode == "tf32":
        return round_tf32(v.astype(np.float32)).astype(np.float64)
    return v.astype(np.float64)


def next_exponent(zmax: np.ndarray, e: np.ndarray, window) -> np.ndarray:
    """Per column: e, unless the binary exponent of zmax 2^-e leaves the window; then that of zmax
    (slab_common.cuh, next_exponent). Columns with zmax == 0 keep e."""
    lo, hi = window
    out = e.copy()
    live = zmax > 0
    k = np.frexp(zmax[live])[1] - 1  # ilogb
    scaled = k - e[live]
    out[live] = np.where((scaled >= lo) & (scaled <= hi), e[live], k)
    return out


# Correction rows per slot: the 16-bit and TF32 slabs split each into hi + lo (three GEMM rows).
CORR_SPLIT = {"bf16": 3, "f16": 3, "tf32": 3, "f32": 1, "f64": 1}


def correction_rows(a: np.ndarray, mode: str):
    """(X rows, Y rows) whose X^T Y is a^T a up to the slab's rounding squared: one row a for the
    float32/float64 slabs; else hi = round(a), lo = round(a - hi), X = [hi; lo; hi], Y = [hi; hi; lo]
    (hi hi^T + lo hi^T + hi lo^T = a a^T - lo lo^T)."""
    hi = to_slab(a, mode)
    if CORR_SPLIT[mode] == 1:
        return hi, hi
    lo = to_slab(a - hi, mode)
    return np.concatenate([hi, lo, hi]), np.concatenate([hi, hi, lo])


class NumpyGram:
    """The GEMMs and the fold in NumPy: partial += S^T S - Cx^T Cy in the partial's precision."""

    def __init__(self, dim: int, mode: str):
        self.mode = mode
        self.dtype = PARTIAL[mode]
        self.partial = np.zeros((dim, dim), dtype=self.dtype)

    def accumulate(self, slab: np.ndarray, corr_x: np.ndarray, corr_y: np.ndarray) -> None:
        s = slab.astype(self.dtype)  # exact: the slab values are representable
        self.partial = (self.partial + (s.T @ s)).astype(self.dtype)
        self.partial = (self.partial - (corr_x.astype(self.dtype).T @ corr_y.astype(self.dtype))).astype(self.dtype)

    def fold(self, upper: np.ndarray, exponents: np.ndarray) -> None:
        scale = np.ldexp(1.0, exponents)
        upper += np.triu(self.partial.astype(np.float64) * scale[:, None] * scale[None, :])
        self.partial[:] = 0


class SlabModel:
    """The statistics and the chunk update exactly as the slab path computes them."""

    def __init__(self, num_classes: int, dim: int, mode: str, *, fold_rows: int = 1 << 16, rescale: bool = True,
                 gram=None):
        self.k, self.d, self.mode = num_classes, dim, mode
        self.fold_rows, self.rescale, self.window = fold_rows, rescale, WINDOWS[mode]
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.means = np.zeros((num_classes, dim))
        self.upper = np.zeros((dim, dim))  # W's upper triangle (the lower is mirrored at a read)
        self.class_scatter = np.zeros(num_classes)
        self.class_diag = np.zeros((num_classes, dim))
        self.exps = np.zeros((2, dim), dtype=np.int64)
        self.cur = self.next = 0
        self.partial_rows = 0
        self.folds = self.rescales = 0
        self.gram = gram if gram is not None else NumpyGram(dim, mode)

    def update(self, x: np.ndarray, y: np.ndarray, chunk_rows: int) -> "SlabModel":
        for start in range(0, len(y), chunk_rows):
            self.chunk(x[start : start + chunk_rows], y[start : start + chunk_rows])
        return self

    def chunk(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)  # the input's values, exact in float64
        classes = np.flatnonzero(np.bincount(y, minlength=self.k))  # slots in class order
        add = len(y) + CORR_SPLIT[self.mode] * min(self.k, len(y))  # the plan's rows + correction rows
        # begin_chunk
        self.cur = self.next
        due = self.partial_rows > 0 and self.partial_rows + add > self.fold_rows
        self.partial_rows = add if due else self.partial_rows + add
        e_cur = self.exps[self.cur]
        # moments about the exact shift, in class order (stable)
        order = np.argsort(y, kind="stable")
        shift = np.zeros((len(classes), self.d))
        seen = self.counts[classes] > 0
        for slot, c in enumerate(classes):
            first = order[np.searchsorted(y[order], c)]
            shift[slot] = self.means[c] if seen[slot] else x[first]
        slot_of = np.full(self.k, -1)
        slot_of[classes] = np.arange(len(classes))
        z = x - shift[slot_of[y]]
        zmax = np.where(np.isfinite(z), np.abs(z), 0.0).max(axis=0) if len(y) else np.zeros(self.d)
        e_new = next_exponent(zmax, e_cur, self.window) if self.rescale else e_cur
        rescale = bool((e_new != e_cur).any())
        # class update and correction rows
        corr = np.zeros((len(classes), self.d))
        for slot, c in enumerate(classes):
            rows = z[y == c]
            m, n = float(len(rows)), float(self.counts[c])
            s1, s2 = rows.sum(axis=0), (rows * rows).sum(axis=0)
            coef = m * m / (n + m) if seen[slot] else m
            d = s1 / m
            dq = s2 - coef * d * d
            self.class_diag[c] += dq
            self.class_scatter[c] += dq.sum()
            self.means[c] = self.means[c] + (m / (n + m)) * d if seen[slot] else shift[slot] + d
            self.counts[c] += int(m)
            corr[slot] = np.sqrt(coef) * d
        slab = to_slab(np.ldexp(z[order], -e_new), self.mode)
        corr_x, corr_y = correction_rows(np.ldexp(corr, -e_new), self.mode)
        if due or rescale:
            self.gram.fold(self.upper, e_cur)
            self.folds += 1
        if rescale:
            self.exps[1 - self.cur] = e_new
            self.next = 1 - self.cur
            self.partial_rows = add
            self.rescales += 1
        self.gram.accumulate(slab, corr_x, corr_y)

    @property
    def scatter(self) -> np.ndarray:
        """W at a read: the partial folded at the current exponents, the lower triangle mirrored."""
        self.gram.fold(self.upper, self.exps[self.next])
        self.partial_rows = 0
        return self.upper + np.triu(self.upper, 1).T
