"""What every command shares: argument types and options, user errors, the ranks of a
``--distributed`` run, and the one pass that turns a dump into statistics."""

from __future__ import annotations

import argparse
import math
import os
import sys
import zipfile
from typing import List, Optional

import numpy as np
import torch

from ..io import open_array
from ..io.atomic import check_writable
from ..metrics.registry import REGISTRY, SCORES, stats_options
from ..pipeline import accumulate


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def device(text: str) -> str:
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this PyTorch has no usable CUDA device")
    return text


def parse_metrics(text: Optional[str]) -> List[str]:
    if not text:
        return list(SCORES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise CommandError(f"--metrics: unknown {', '.join(unknown)} (choose from {', '.join(REGISTRY)})")
    return names


def load_matrix(path: str, what: str) -> torch.Tensor:
    """A numeric .npy as float64, its header checked against the file's size before anything
    is allocated (a header claiming 1e15 rows is an error, not a 56 PiB allocation)."""
    if not os.path.exists(path):
        raise CommandError(f"{what}: no such file: {path}")
    if not os.path.isfile(path):
        raise CommandError(f"{what}: {path} is not a regular file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n[:-4] if n.endswith(".npy") else n for n in archive.namelist()]
        raise CommandError(f"{what}: {path} is a .npz archive (of {', '.join(names[:5]) or 'nothing'}); "
                           "save the one matrix with np.save as .npy")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            data_bytes = os.path.getsize(path) - f.tell()
    except (ValueError, OSError, SyntaxError) as err:
        raise CommandError(f"{what}: {path} is not a readable .npy file ({err})") from None
    if dtype.hasobject or dtype.kind not in "fiub":
        raise CommandError(f"{what}: {path} holds {dtype}, expected a numeric matrix")
    needed = math.prod(shape) * dtype.itemsize
    if needed > data_bytes:
        raise CommandError(f"{what}: {path} claims shape {shape} ({needed:,} bytes) but holds {data_bytes:,} "
                           "bytes of data (truncated or corrupt)")
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False)).to(torch.float64)
    except ValueError as err:
        raise CommandError(f"{what}: cannot read {path} ({err})") from None


class Ranks:
    """This process's place in a `--distributed` run (rank 0 of 1 otherwise)."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, rows: int) -> tuple:
        """This rank's contiguous slice of the rows."""
        return rows * self.rank // self.world, rows * (self.rank + 1) // self.world


def start_distributed(args) -> Ranks:
    """Joins the torchrun group: gloo on CPU, NCCL with one GPU per local rank."""
    if not getattr(args, "distributed", False):
        return Ranks()
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise CommandError("--distributed: RANK/WORLD_SIZE are not set; start the command with torchrun "
                           "(torchrun --nproc_per_node=N -m ncfast.cli score ... --distributed)")
    backend = "gloo"
    if args.device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        args.device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    dist.init_process_group(backend)
    return Ranks(dist.get_rank(), dist.get_world_size())


def open_input(spec, what: str):
    """``open_array``, with a hint when the file holds ncfast statistics rather than rows."""
    hint = _statistics_file_hint(spec, what, cheap=True)
    if hint:
        raise CommandError(hint)
    try:
        return open_array(spec, what)
    except (ValueError, TypeError) as err:
        hint = _statistics_file_hint(spec, what, cheap=False)
        if hint:
            raise CommandError(hint) from None
        raise err


def _statistics_file_hint(spec, what: str, cheap: bool) -> Optional[str]:
    """The message for a statistics file given where rows are expected: a safetensors header
    is checked up front (cheap), a .pt file only once reading it as rows has failed."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    path = os.fspath(spec)
    if not os.path.isfile(path) and ".safetensors:" in path:
        path = path.rsplit(":", 1)[0]
    if not os.path.isfile(path):
        return None
    try:
        if path.endswith(".safetensors"):
            from ..io import safetensors

            is_stats = "ncfast" in safetensors.read_header(path)[1]
        elif path.endswith(".pt") and not cheap:
            from ..io import statsfile

            statsfile.read(path)
            is_stats = True
        else:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not is_stats:
        return None
    return (f"{what}: {path} holds ncfast statistics, not {what}; "
            f"score them with: ncfast score --stats {path}")


def file_fingerprint(path: str) -> list:
    """[absolute path, size in bytes, modification time in ns] of a file given by the user."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def read_names(path: str) -> List[str]:
    """Class names from a text file, one per line in label order (blank lines ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise CommandError(f"--names: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CommandError(f"--names: cannot read {path} ({err})") from None


def check_names(names: List[str], path: str, num_classes: int) -> List[str]:
    if len(names) < num_classes:
        raise CommandError(f"--names: {path} has {len(names)} names for {num_classes} classes "
                           "(one per line, in label order)")
    return names[:num_classes]


def stats_for(args, features_spec, labels_spec, label="", ranks: Ranks = Ranks(), names=()):
    """One pass over a dump into ClassStats with per-class diagonals and whatever else the
    scores in `names` need (e.g. fourth moments for h_score_shrinkage)."""
    feats = open_input(features_spec, "features")
    labels = open_input(labels_spec, "labels")
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and ranks.world > 1:
        checkpoint = f"{checkpoint}.rank{ranks.rank}-of-{ranks.world}"
    options = {**stats_options(names), "per_class_diag": True}
    stats = accumulate(
        feats, labels, num_classes=args.num_classes, device=args.device, **options,
        chunk_rows=args.chunk_rows, checkpoint=checkpoint, checkpoint_every=getattr(args, "checkpoint_every", None),
        nan_policy=args.nan_policy, ignore_index=args.ignore_index,
        progress=not args.quiet and ranks.is_main, label=label or _short_name(features_spec),
        row_range=ranks.share(feats.rows),
    )
    if ranks.world > 1:
        stats.all_reduce()
    return stats, feats, labels


def _short_name(spec) -> str:
    """A dump's name for its progress line: the file or folder, without its directory."""
    return os.path.basename(os.path.normpath(str(spec))) or str(spec)


def check_outputs(args) -> None:
    """Fails before the pass, not after it, when an output cannot be written."""
    for option in ("json", "plot", "output", "checkpoint"):
        path = getattr(args, option, None)
        if path:
            check_writable(path, "-o" if option == "output" else f"--{option}")
    if getattr(args, "plot", None):
        from ..plots import pyplot

        pyplot()  # matplotlib is an optional extra: say so now, not after the pass


def stop_distributed() -> None:
    dist = sys.modules.get("torch.distributed")  # imported only by a --distributed run
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def ignore_index(text: str):
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer label or 'none', got {text!r}") from None


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=positive_int, default=None, help="K (default: largest label + 1)")
    p.add_argument("--device", type=device, default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--chunk-rows", type=positive_int, default=None,
                   help="rows per chunk (default: about 64 MiB of features; memory holds about 4 chunks)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--nan-policy", choices=("raise", "skip"), default="raise",
                   help="rows with NaN/Inf: an error (default), or dropped and counted")
    p.add_argument("--ignore-index", type=ignore_index, default=-100, metavar="LABEL",
                   help="rows with this label are dropped and counted (default -100, PyTorch's padding label; "
                        "'none' to refuse them as any negative label)")


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="save the statistics here as the pass goes; rerunning the same "
                                        "command after a crash resumes from it")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="rows between checkpoints (default: every 10 chunks)")
