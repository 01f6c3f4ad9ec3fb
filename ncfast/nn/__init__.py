"""PyTorch-side tools: forward-hook monitors of neural collapse in chosen layers."""

from .monitor import NCMonitor

__all__ = ["NCMonitor"]
