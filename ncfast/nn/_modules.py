"""Small helpers on modules: where a module lives, and running one for inference."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from torch import nn


def module_device(*modules: nn.Module) -> Optional[torch.device]:
    """Device of the first parameter or buffer found in `modules` (in order), else None."""
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            return tensor.device
    return None


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """No grad, and eval mode for an nn.Module, for the block; the module's training flag is
    restored afterwards whatever happens (a plain callable only gets no grad)."""
    was_training = model.training if isinstance(model, nn.Module) else None
    try:
        if was_training is not None:
            model.eval()
        with torch.no_grad():
            yield
    finally:
        if was_training is not None:
            model.train(was_training)
