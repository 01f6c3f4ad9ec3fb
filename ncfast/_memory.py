"""How much memory a device has free, for refusing an allocation that cannot fit before it is
attempted (with a message naming the size, not the allocator's)."""

from __future__ import annotations

import os
from typing import Optional

import torch


def free_memory(device: torch.device) -> Optional[int]:
    """Free bytes on `device` (CPU: the machine's available RAM), or None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
