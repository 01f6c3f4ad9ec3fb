"""`python -m ncfast`: streams a built-in example through ClassStats and prints a summary."""

from __future__ import annotations

import argparse
import time

import torch

from ..backend.core import build_info
from ..stats import ClassStats


def synthetic_features(rows: int, dim: int, classes: int, seed: int = 0):
    """Class-clustered features with a common offset, built in memory (no download)."""
    gen = torch.Generator().manual_seed(seed)
    centres = 4.0 * torch.randn(classes, dim, generator=gen)
    labels = torch.randint(0, classes, (rows,), generator=gen)
    features = 10.0 + centres[labels] + torch.randn(rows, dim, generator=gen)
    return features, labels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ncfast", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args(argv)

    features, labels = synthetic_features(args.rows, args.dim, args.classes)
    stats = ClassStats(args.classes, args.dim)
    start = time.perf_counter()
    stats.update(features, labels)
    seconds = time.perf_counter() - start
    tr_w = float(torch.trace(stats.sigma_w()))
    tr_b = float(torch.trace(stats.sigma_b()))
    info = build_info()
    print(f"rows={stats.num_samples:,} dim={stats.dim} classes={stats.num_classes}")
    print(f"one pass: {seconds:.3f} s  ({stats.num_samples / seconds / 1e6:.1f} M rows/s, "
          f"{stats.num_samples * args.dim * 4 / seconds / 1e9:.2f} GB/s)")
    print(f"tr(Sigma_W) = {tr_w:.4f}   tr(Sigma_B) = {tr_b:.4f}   tr(Sigma_W)/tr(Sigma_B) = {tr_w / tr_b:.5f}")
    print(f"build: BLAS {info['blas'].split()[1]}, OpenMP {info['openmp']}, CUDA {info['cuda']}, "
          f"{info['num_threads']} threads")
