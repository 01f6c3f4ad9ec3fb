"""Turning a layer's output into one feature row per sample (shared by the monitor, model
ranking and fine-tuning helpers)."""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor

Pool = Union[str, Callable[[Tensor], Tensor]]
POOLS = ("avg", "flatten")


def check_pool(pool: Pool, name: str = "pool") -> Pool:
    if callable(pool) or pool in POOLS:
        return pool
    raise ValueError(f"{name}: expected 'avg', 'flatten' or a callable, got {pool!r}")


def pool_kind(pool: Pool) -> str:
    """'avg', 'flatten' or 'custom' (what a checkpoint records about a pool)."""
    return pool if isinstance(pool, str) else "custom"


def pool_rows(output: Tensor, pool: Pool, where: str) -> Tensor:
    """(B, ...) -> (B, D).

    "avg": global average over every dimension after the channel one, so (N, C, H, W) conv maps
    and (N, C, L) sequences become (N, C); (N, D) passes through. 16-bit inputs are averaged in
    float32. "flatten": (N, C, H, W) -> (N, C*H*W). A callable gets the output and must return
    a (B, D) tensor with the same batch size.
    """
    if output.ndim < 2:
        raise ValueError(f"{where}: output has shape {tuple(output.shape)}; expected (batch, features, ...)")
    if callable(pool):
        rows = pool(output)
        if not isinstance(rows, Tensor) or rows.ndim != 2 or rows.shape[0] != output.shape[0]:
            shape = tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__
            raise ValueError(f"{where}: the pool callable returned {shape}; expected a ({output.shape[0]}, D) tensor")
        return rows
    if output.ndim == 2:
        return output
    if pool == "flatten":
        return output.reshape(output.shape[0], -1)
    acc = torch.float32 if output.dtype in (torch.float16, torch.bfloat16) else None
    return output.mean(dim=tuple(range(2, output.ndim)), dtype=acc)
