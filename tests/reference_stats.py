"""An independent float64 NumPy reference of the statistics, and test data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import ncfast


@dataclass
class Expected:
    counts: np.ndarray
    means: np.ndarray
    scatter: np.ndarray
    class_scatter: np.ndarray
    class_diag: np.ndarray
    global_mean: np.ndarray
    sigma_b_balanced: np.ndarray
    between_scatter: np.ndarray
    gram: np.ndarray


def numpy_stats(x, y, num_classes: int) -> Expected:
    """Two-pass float64 statistics straight from the definitions (DESIGN.md section 3)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    n, d = x.shape
    counts = np.bincount(y, minlength=num_classes)
    means = np.zeros((num_classes, d))
    for c in range(num_classes):
        if counts[c]:
            means[c] = x[y == c].mean(axis=0)
    z = x - means[y]
    scatter = z.T @ z
    class_scatter = np.array([(z[y == c] ** 2).sum() for c in range(num_classes)])
    class_diag = np.stack([(z[y == c] ** 2).sum(axis=0) for c in range(num_classes)])
    global_mean = x.mean(axis=0)
    present = counts > 0
    m = means[present] - global_mean
    sigma_b_balanced = m.T @ m / present.sum()
    between = (m * counts[present][:, None]).T @ m
    return Expected(counts, means, scatter, class_scatter, class_diag, global_mean, sigma_b_balanced, between, x.T @ x)


def rel_err(actual, expected) -> float:
    """Normwise relative error ||a - e|| / ||e||."""
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    e = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-300))


def offset_data(rows: int, dim: int, classes: int, seed: int = 0, offset: float = 1e3):
    """Features with a large common offset (mean 1e3, spread 1) and class-dependent means."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, rows)
    x = offset + centres[y] + rng.standard_normal((rows, dim))
    return x, y


def clustered(rows=3000, dim=12, classes=6, seed=0, spread=1.0, offset=0.0):
    """Class clusters with unequal spreads (for the scores)."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, rows)
    scales = rng.uniform(0.5, 2.0, classes)[y, None]  # unequal class spreads
    x = offset + centres[y] + spread * scales * rng.standard_normal((rows, dim))
    return x, y


def stats_of(x, y, k=None, **kw):
    """ClassStats (with per-class diagonals and fourth moments) of the rows x, labels y, in one
    update."""
    k = k if k is not None else int(y.max()) + 1
    kw = {"per_class_diag": True, "fourth_moments": True, **kw}
    return ncfast.ClassStats(k, x.shape[1], **kw).update(x, y)


def snapshot(stats):
    """A copy of everything in stats.state_dict(), to compare with later."""
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in stats.state_dict().items()}


def assert_unchanged(stats, before):
    """stats holds exactly what `snapshot` saw."""
    after = stats.state_dict()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after[key], value), key
        else:
            assert after[key] == value, key
