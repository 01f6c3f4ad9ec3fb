"""ncfast: streaming class statistics of deep features, and the neural-collapse and
transferability scores built on them, with a C++/CUDA core."""

from __future__ import annotations

from ._version import __version__
from .backend.core import build_info, get_num_threads, set_num_threads
from .stats import ClassStats, load_stats, save_stats
from .target_stats import TargetStats
from .pipeline import accumulate
from . import io, metrics, nn, ops, workflows
from .metrics import JointStats, NCCStats, nc_report, transferability
from .nn import NCMonitor, VCReg
from .workflows import ModelRanking, fewshot, finetune, rank_models
from . import integrations  # light: each framework is imported only when its adapter is used

__all__ = [
    "ClassStats",
    "TargetStats",
    "JointStats",
    "NCCStats",
    "metrics",
    "io",
    "accumulate",
    "finetune",
    "integrations",
    "nn",
    "ops",
    "workflows",
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
