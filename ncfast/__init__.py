"""ncfast: streaming class statistics of deep features, and the neural-collapse and
transferability scores built on them, with a C++/CUDA core."""

from __future__ import annotations

from ._core import _C
from .stats import ClassStats
from . import io, metrics
from ._persist import load_stats, save_stats
from .pipeline import accumulate
from . import fewshot, finetune, nn, ops, transfer
from .nn import NCMonitor, VCReg
from .transfer import ModelRanking, rank_models
from .metrics import JointStats, NCCStats, nc_report, transferability

__version__ = "0.1.0"


def build_info() -> dict:
    """What this build of the core was compiled with: C++ flags, the CPU instruction sets they
    enabled (``isa``), OpenMP, the BLAS and its configuration, threads, CUDA and its archs."""
    return dict(_C.build_info())


def get_num_threads() -> int:
    """Threads used by the CPU kernels (OpenMP)."""
    return _C.get_num_threads()


def set_num_threads(num_threads: int) -> None:
    """Sets the threads used by the CPU kernels."""
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads: expected a positive int, got {num_threads!r}")
    _C.set_num_threads(num_threads)


__all__ = [
    "ClassStats",
    "JointStats",
    "NCCStats",
    "metrics",
    "io",
    "accumulate",
    "finetune",
    "nn",
    "ops",
    "transfer",
    "NCMonitor",
    "VCReg",
    "fewshot",
    "ModelRanking",
    "rank_models",
    "load_stats",
    "save_stats",
    "nc_report",
    "transferability",
    "build_info", "get_num_threads", "set_num_threads", "__version__"]
