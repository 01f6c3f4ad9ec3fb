"""Exact all-reduce of the statistics across torch.distributed ranks (``ClassStats.all_reduce``).

Summing covariances is wrong (each rank centres on its own class means). The merge of
DESIGN.md section 3 generalises to R ranks as two all-reduces of fixed-size buffers:

1. n_c = sum_r n_c^r and n_c mu_c = sum_r n_c^r mu_c^r give the global class means;
2. with d_c^r = mu_c^r - mu_c (small, so no cancellation), every rank adds its own
   correction and the sums are exact:
       W    = sum_r (W^r    + sum_c n_c^r d_c^r d_c^r^T)
       tr_c = sum_r (tr_c^r + n_c^r ||d_c^r||^2)
       q_cj = sum_r (q_cj^r + n_c^r (d_cj^r)^2)
       W_c  = sum_r (W_c^r  + n_c^r d_c^r d_c^r^T)           (per_class_gram=True)
   and each rank moves its fourth moments to the global mean before they are summed
   (fourth_moments=True; ncfast/_moments.py).

Memory and traffic are O(D^2 + K D) per rank whatever the number of ranks (bandwidth-optimal
ring all-reduce on NCCL), and every rank ends with the same bits.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _moments
from ._state import StatsState, grow_classes, truncate_classes


def require_initialised():
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "all_reduce: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group(...) first (torchrun sets up the environment)"
        )
    return dist


def comm_device(dist, group, device: torch.device) -> torch.device:
    """NCCL moves CUDA tensors only; gloo takes CPU tensors (and the statistics' own device)."""
    if dist.get_backend(group) == "nccl" and device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _agree_on_shape(dist, group, state: StatsState, fixed_classes: bool, device) -> int:
    """All ranks must have the same D and optional statistics; K becomes the largest."""
    world = dist.get_world_size(group)
    mine = torch.tensor([state.num_classes, state.dim, int(state.class_diag is not None), int(fixed_classes),
                         int(state.fourth_moment is not None), int(state.class_gram is not None)],
                        dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine, group=group)
    table = torch.stack(every).cpu()
    for column, name in ((1, "dim"), (2, "per_class_diag"), (4, "fourth_moments"), (5, "per_class_gram")):
        values = table[:, column].tolist()
        if len(set(values)) > 1:
            raise ValueError(f"all_reduce: ranks disagree on {name}: {values} (rank order)")
    ks = table[:, 0].tolist()
    fixed = table[:, 3].tolist()
    if any(fixed) and len({k for k, f in zip(ks, fixed) if f}) > 1:
        raise ValueError(f"all_reduce: ranks disagree on num_classes: {ks} (rank order)")
    return max(ks)


def all_reduce_state_(s: StatsState, fixed_classes: bool, group: Optional[object] = None) -> None:
    """Replaces the state on every rank by the statistics of all ranks' data together.
    `fixed_classes`: whether this rank's K is fixed (ranks with a fixed K must agree on it)."""
    dist = require_initialised()
    if dist.get_world_size(group) == 1:
        return
    device = comm_device(dist, group, s.device)
    k = _agree_on_shape(dist, group, s, fixed_classes, device)
    classes_before = s.num_classes
    if k > s.num_classes:
        grow_classes(s, k)
    d = s.dim
    SUM = dist.ReduceOp.SUM

    # Round 1: counts and count-weighted means.
    n_local = s.counts.to(device=device, dtype=torch.float64)
    first = torch.cat([n_local, (s.means.to(device) * n_local[:, None]).reshape(-1)])
    dist.all_reduce(first, op=SUM, group=group)
    n = first[:k]
    safe_n = torch.where(n > 0, n, torch.ones_like(n))
    mu = first[k:].reshape(k, d) / safe_n[:, None]

    # Round 2: each rank's scatter plus its between-rank correction.
    delta = torch.where(n_local[:, None] > 0, s.means.to(device) - mu, torch.zeros_like(mu))
    weighted = delta * n_local[:, None]
    scatter = s.scatter.to(device) + weighted.T @ delta
    parts = [
        (0.5 * (scatter + scatter.T)).reshape(-1),
        s.class_scatter.to(device) + (weighted * delta).sum(dim=1),
    ]
    if s.class_diag is not None:
        parts.append((s.class_diag.to(device) + weighted * delta).reshape(-1))
    if s.class_gram is not None:
        parts.append((s.class_gram.to(device) + weighted[:, :, None] * delta[:, None, :]).reshape(-1))
    centre = None
    if s.fourth_moment is not None:
        centre = (first[k:].reshape(k, d).sum(dim=0) / n.sum().clamp(min=1)).to(s.scatter.device)
        fourth, third = _moments.shifted(s, s.fourth_moment, s.third_moment, s.moment_centre, centre)
        parts += [fourth.reshape(1).to(device), third.to(device)]
    parts.append(torch.tensor([float(s.skipped_rows)], dtype=torch.float64, device=device))
    second = torch.cat(parts)
    dist.all_reduce(second, op=SUM, group=group)

    # Every rank holds the same sums, so every rank takes this branch or none does.
    if not bool(torch.isfinite(second).all() & torch.isfinite(mu).all()):
        truncate_classes(s, classes_before)
        raise ValueError("all_reduce: the merged statistics overflow float64 (class means too far apart across "
                         "ranks); the statistics are unchanged")
    _unpack_into(s, n, mu, second, k, d, centre)


def _unpack_into(s: StatsState, n: Tensor, mu: Tensor, packed: Tensor, k: int, d: int,
                 centre: Optional[Tensor] = None) -> None:
    home = s.scatter.device
    at = 0

    def take(count: int) -> Tensor:
        nonlocal at
        out = packed[at : at + count]
        at += count
        return out.to(home)

    s.scatter.copy_(take(d * d).reshape(d, d))
    s.class_scatter.copy_(take(k))
    if s.class_diag is not None:
        s.class_diag.copy_(take(k * d).reshape(k, d))
    if s.class_gram is not None:
        s.class_gram.copy_(take(k * d * d).reshape(k, d, d))
    if s.fourth_moment is not None:
        s.fourth_moment.copy_(take(1).reshape(()))
        s.third_moment.copy_(take(d))
        s.moment_centre.copy_(centre)
    s.skipped_rows = int(round(float(take(1))))
    s.counts.copy_(n.round().to(torch.int64).to(home))
    s.means.copy_(mu.to(home))
