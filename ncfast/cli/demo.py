"""`python -m ncfast`: generates class-clustered features in memory, streams them through
ClassStats in one pass, and explains what it measured and how this build runs."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from .._progress import Progress
from ..backend.core import build_info
from ..stats import ClassStats

NOISE, CENTRE_SCALE, OFFSET = 1.0, 4.0, 10.0


def synthetic_features(rows: int, dim: int, classes: int, seed: int = 0, progress: bool = False,
                       chunk_rows: int = 1 << 16):
    """(features (rows, dim) float32, labels (rows,) int64): OFFSET + centre of the row's class
    (entries CENTRE_SCALE * N(0, 1)) + N(0, NOISE^2) noise, built in memory in chunks (no
    download), with a progress line when `progress`."""
    gen = torch.Generator().manual_seed(seed)
    centres = CENTRE_SCALE * torch.randn(classes, dim, generator=gen)
    labels = torch.randint(0, classes, (rows,), generator=gen)
    features = torch.empty(rows, dim)
    with Progress(rows, label="generating", enabled=progress) as bar:
        for start in range(0, rows, chunk_rows):
            stop = min(rows, start + chunk_rows)
            chunk = torch.randn(stop - start, dim, generator=gen)
            chunk.mul_(NOISE).add_(centres[labels[start:stop]]).add_(OFFSET)
            features[start:stop] = chunk
            bar.update(stop - start)
    return features, labels


def cuda_status(info: dict) -> str:
    """Says whether the core was compiled with CUDA and whether PyTorch sees a GPU: two
    different things (a CUDA build runs on the CPU of a machine without a GPU)."""
    compiled = bool(info.get("cuda"))
    present = torch.cuda.is_available()
    archs = f" (sm {info['cuda_archs'].replace(';', ', ')})" if compiled and info.get("cuda_archs") else ""
    if compiled and present:
        return f"CUDA kernels compiled in{archs}; GPU present ({torch.cuda.get_device_name(0)}): use device='cuda'"
    if compiled:
        return f"CUDA kernels compiled in{archs}; no GPU visible to PyTorch, so everything runs on the CPU"
    if present:
        return "built without CUDA (no nvcc at install time); a GPU is present but the native kernels cannot use it"
    return "built without CUDA; no GPU"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ncfast", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if min(args.rows, args.dim) < 1 or args.classes < 2:
        parser.error("--rows and --dim must be positive and --classes at least 2")

    print(f"ncfast demo: {args.rows:,} rows x {args.dim} dims, {args.classes} classes of synthetic features "
          f"(offset {OFFSET:g} + class centre with entries {CENTRE_SCALE:g} x N(0,1) + N(0,1) noise)")
    sys.stdout.flush()
    features, labels = synthetic_features(args.rows, args.dim, args.classes, progress=not args.quiet)
    stats = ClassStats(args.classes, args.dim)
    start = time.perf_counter()
    stats.update(features, labels)
    seconds = time.perf_counter() - start
    tr_w = float(torch.trace(stats.sigma_w()))
    tr_b = float(torch.trace(stats.sigma_b()))
    present = int((stats.counts > 0).sum())
    expect_w = NOISE ** 2 * args.dim
    expect_b = CENTRE_SCALE ** 2 * args.dim * (present - 1) / present
    info = build_info()
    print(f"one pass of ClassStats.update over the float32 rows: {seconds:.3f} s "
          f"({stats.num_samples / seconds / 1e6:.1f} M rows/s, {stats.num_samples * args.dim * 4 / seconds / 1e9:.2f} GB/s)")
    print(f"  tr(Sigma_W) = {tr_w:10.2f}   within-class spread (expected about {expect_w:,.0f}: noise variance x dims)")
    print(f"  tr(Sigma_B) = {tr_b:10.2f}   between-class spread of the class means "
          f"(expected about {expect_b:,.0f}: centres' variance x dims x (K-1)/K)")
    print(f"  tr(Sigma_W) / tr(Sigma_B) = {tr_w / tr_b:.5f}   the score nc1_trace: 0 when every row sits on its "
          "class mean; lower = more neural collapse")
    print(f"build: {info['num_threads']} CPU threads, OpenMP {'on' if info['openmp'] else 'off'}, "
          f"{' '.join(info['blas'].split()[:2])}, ISA {', '.join(info.get('isa', [])) or 'baseline'}")
    print(f"CUDA: {cuda_status(info)}")
    print("next: `ncfast score` scores a built-in example; `ncfast metrics` explains the scores")
