"""The `ncfast` command: score feature dumps, rank models, write and merge statistics.

    ncfast score                         # a built-in example, no files needed
    ncfast score feats.npy labels.npy --json scores.json
    ncfast rank resnet=r.npy vit=v.npy --labels labels.npy
    ncfast stats feats.npy labels.npy -o stats.safetensors
    ncfast merge a.safetensors b.safetensors -o all.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from .. import metrics
from .._progress import Progress
from ..pipeline import accumulate
from ..io import open_array, stream
from ..io.atomic import atomic_path, check_writable
from ..metrics.registry import HIGHER_IS_BETTER, SCORES, score_stats
from ..stats import load_stats, save_stats

class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _device(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this PyTorch has no usable CUDA device")
    return text


def _parse_metrics(text: Optional[str]) -> List[str]:
    if not text:
        return list(SCORES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise CommandError(f"--metrics: unknown {', '.join(unknown)} (choose from {', '.join(SCORES)})")
    return names


def _scores(stats, names: List[str], quiet: bool = False) -> Dict[str, Optional[float]]:
    """The requested scores; one undefined for these statistics is None, its reason on stderr."""
    values, notes = score_stats(stats, names)
    if not quiet:
        for name, why in notes.items():
            print(f"ncfast: {name} skipped: {why}", file=sys.stderr)
    return values


def _print_table(rows: Dict[str, Optional[float]], title: str) -> None:
    print(title)
    width = max(len(k) for k in rows) + 2
    for key, value in rows.items():
        shown = "n/a" if value is None else f"{value:.6g}"
        print(f"  {key:<{width}}{shown:>14}")


def _write_json(path: str, payload: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")


def _load_matrix(path: str, what: str) -> torch.Tensor:
    try:
        return torch.from_numpy(np.load(path)).to(torch.float64)
    except FileNotFoundError:
        raise CommandError(f"{what}: no such file: {path}") from None
    except ValueError as err:
        raise CommandError(f"{what}: cannot read {path} ({err})") from None


def _example_data():
    """A built-in example: 200k rows, 256 dims, 20 classes, features of a half-collapsed model."""
    gen = torch.Generator().manual_seed(0)
    k, d, n = 20, 256, 200_000
    centres = 0.25 * torch.randn(k, d, generator=gen)
    y = torch.randint(0, k, (n,), generator=gen)
    x = (centres[y] + torch.randn(n, d, generator=gen) * (1.0 + torch.rand(k, generator=gen)[y, None])).float()
    return open_array(x, "features"), open_array(y, "labels"), centres


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


def _start_distributed(args) -> Ranks:
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


def _stats_for(args, features_spec, labels_spec, label="", ranks: Ranks = Ranks()):
    feats = open_array(features_spec, "features")
    labels = open_array(labels_spec, "labels")
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and ranks.world > 1:
        checkpoint = f"{checkpoint}.rank{ranks.rank}-of-{ranks.world}"
    stats = accumulate(
        feats, labels, num_classes=args.num_classes, per_class_diag=True, device=args.device,
        chunk_rows=args.chunk_rows, checkpoint=checkpoint, checkpoint_every=getattr(args, "checkpoint_every", None),
        nan_policy=args.nan_policy,
        progress=not args.quiet and ranks.is_main, label=label, row_range=ranks.share(feats.rows),
    )
    if ranks.world > 1:
        stats.all_reduce()
    return stats, feats, labels


def _check_outputs(args) -> None:
    """Fails before the pass, not after it, when an output cannot be written."""
    for option in ("json", "plot", "output", "checkpoint"):
        path = getattr(args, option, None)
        if path:
            check_writable(path, "-o" if option == "output" else f"--{option}")
    if getattr(args, "plot", None):
        from .plots import pyplot

        pyplot()  # matplotlib is an optional extra: say so now, not after the pass


def _early_classifier(args, dim: int) -> Optional[torch.Tensor]:
    """Loads --classifier and checks its width before the pass (its rows are checked after)."""
    if not args.classifier:
        return None
    classifier = _load_matrix(args.classifier, "--classifier")
    if classifier.ndim != 2 or classifier.shape[1] != dim:
        raise CommandError(f"--classifier: {args.classifier} has shape {tuple(classifier.shape)}, "
                           f"expected (K, {dim}) for {dim}-dimensional features")
    return classifier


def cmd_score(args) -> int:
    names = _parse_metrics(args.metrics)
    _check_outputs(args)
    if args.stats and (args.features or args.labels):
        raise CommandError("--stats: scores saved statistics; give it without FEATURES and LABELS")
    if args.stats and args.bias:
        raise CommandError("--bias: NC4 needs the features (a second pass); it cannot come from --stats")
    start = time.perf_counter()
    ranks = _start_distributed(args)
    if ranks.world > 1 and (args.stats or args.features is None):
        raise CommandError("--distributed: give FEATURES and LABELS files to share among the ranks")
    classifier = None
    given = None
    if args.features and args.classifier:
        shape = open_array(args.features, "features").shape
        if len(shape) != 2:
            raise CommandError(f"features: expected a 2-D (rows, dim) array in {args.features}, got shape {shape}")
        given = _early_classifier(args, shape[1])
    if args.stats:
        stats, _ = load_stats(args.stats)
        source = args.stats
    elif args.features is None:
        feats, labels, centres = _example_data()
        print("ncfast: no files given, scoring a built-in example (200,000 x 256, 20 classes)", file=sys.stderr)
        stats = accumulate(feats, labels, per_class_diag=True, device=args.device, progress=not args.quiet)
        classifier = centres  # a classifier aligned with the class centres, to show NC3/NC4
        source = "built-in example"
    else:
        if args.labels is None:
            raise CommandError("labels: give a LABELS file after FEATURES")
        stats, feats, labels = _stats_for(args, args.features, args.labels, ranks=ranks)
        source = args.features
    if stats.num_samples == 0:
        raise CommandError(f"{source}: holds no rows, nothing to score")
    if args.classifier:
        classifier = given if given is not None else _early_classifier(args, stats.dim)
    scores = _scores(stats, names, quiet=not ranks.is_main)
    if classifier is not None:
        report = metrics.nc_report(stats, classifier=classifier)
        scores["nc3"] = report.nc3
        scores["nc2_classifier_etf"] = report.nc2_classifier.etf_distance
        if args.stats:
            print("ncfast: nc4 and ncc_accuracy need the features (a second pass); not computed from --stats",
                  file=sys.stderr)
        else:
            bias = _load_matrix(args.bias, "--bias") if args.bias else None
            second = metrics.NCCStats.from_stats(stats, classifier=classifier, bias=bias)
            feats_src = feats if args.features is None else open_array(args.features, "features")
            labels_src = labels if args.features is None else open_array(args.labels, "labels")
            first, stop = ranks.share(feats_src.rows)
            bar = Progress(stop - first, label="nc4 pass", enabled=not args.quiet and ranks.is_main)
            for _, x, y in stream(feats_src, labels_src, chunk_rows=1 << 16, start_row=first, stop_row=stop,
                                  device=args.device):
                bar.update(x.shape[0])
                second.update(x, y)  # drops NaN/Inf rows when the first pass did
            bar.close()
            if ranks.world > 1:
                second.all_reduce()
            scores["nc4"] = second.nc4
            scores["ncc_accuracy"] = second.ncc_accuracy
    seconds = time.perf_counter() - start
    if not ranks.is_main:
        return 0
    skipped = f" ({stats.skipped_rows:,} with NaN/Inf skipped)" if stats.skipped_rows else ""
    _print_table(scores, f"{source}: {stats.num_samples:,} rows{skipped}, {stats.dim} dims, "
                         f"{int((stats.counts > 0).sum())} classes, {seconds:.2f} s")
    if args.json:
        _write_json(args.json, {"source": str(source), "rows": stats.num_samples, "skipped_rows": stats.skipped_rows,
                                "dim": stats.dim, "classes": int((stats.counts > 0).sum()), "seconds": seconds,
                                "ranks": ranks.world, "scores": scores})
    if args.plot:
        from .plots import plot_geometry

        plot_geometry(stats, args.plot)
    return 0


def cmd_rank(args) -> int:
    names = _parse_metrics(args.metrics)
    _check_outputs(args)
    table: Dict[str, Dict[str, Optional[float]]] = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"models: expected NAME=FEATURES, got {spec!r}")
        stats, _, _ = _stats_for(args, path, args.labels, label=name)
        table[name] = _scores(stats, names)
    for score in names:
        valid = [(m, s[score]) for m, s in table.items() if s[score] is not None and math.isfinite(s[score])]
        valid.sort(key=lambda kv: kv[1], reverse=HIGHER_IS_BETTER[score])
        order = "  >  ".join(f"{m} ({v:.4g})" for m, v in valid) or "n/a"
        print(f"{score:<18} {order}")
    if args.json:
        _write_json(args.json, {"labels": args.labels, "scores": table})
    if args.plot:
        from .plots import plot_ranking

        plot_ranking(table, args.plot)
    return 0


def cmd_stats(args) -> int:
    _check_outputs(args)
    ranks = _start_distributed(args)
    stats, _, _ = _stats_for(args, args.features, args.labels, ranks=ranks)
    if not ranks.is_main:
        return 0
    save_stats(stats, args.output)
    print(f"wrote {args.output}: {stats.num_samples:,} rows, {stats.num_classes} classes, {stats.dim} dims")
    return 0


def cmd_merge(args) -> int:
    check_writable(args.output, "-o")
    merged = None
    for path in args.inputs:
        stats, _ = load_stats(path)
        try:
            merged = stats if merged is None else merged.merge(stats)
        except ValueError as err:
            raise CommandError(f"{path}: cannot merge with {args.inputs[0]}: {err}") from None
    save_stats(merged, args.output)
    print(f"wrote {args.output}: {merged.num_samples:,} rows from {len(args.inputs)} files")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ncfast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--num-classes", type=_positive_int, default=None, help="K (default: largest label + 1)")
        p.add_argument("--device", type=_device, default="cpu", help="cpu (default) or cuda[:i]")
        p.add_argument("--chunk-rows", type=_positive_int, default=None,
                       help="rows per chunk (default: about 64 MiB of features; memory holds about 4 chunks)")
        p.add_argument("--quiet", action="store_true", help="no progress line")
        p.add_argument("--nan-policy", choices=("raise", "skip"), default="raise",
                       help="rows with NaN/Inf: an error (default), or dropped and counted")

    def checkpointing(p):
        p.add_argument("--checkpoint", help="save the statistics here as the pass goes; rerunning the same "
                                            "command after a crash resumes from it")
        p.add_argument("--checkpoint-every", type=_positive_int, default=None,
                       help="rows between checkpoints (default: every 10 chunks)")

    p = sub.add_parser("score", help="score one feature dump")
    p.add_argument("features", nargs="?", help=".npy, folder/glob of .npy shards, or file.safetensors[:name]")
    p.add_argument("labels", nargs="?", help="labels in the same formats")
    p.add_argument("--stats", help="score saved statistics instead of features")
    p.add_argument("--metrics", help=f"comma list from: {', '.join(SCORES)} (default: all)")
    p.add_argument("--classifier", help="(K, D) .npy of last-layer weights: adds NC2/NC3 and NC4 (second pass)")
    p.add_argument("--bias", help="(K,) .npy classifier bias for NC4")
    p.add_argument("--json", help="also write the scores here")
    checkpointing(p)
    p.add_argument("--plot", help="PNG of the class-mean geometry and spectrum (needs matplotlib)")
    p.add_argument("--distributed", action="store_true",
                   help="under torchrun: each rank reads its share of the rows, statistics are all-reduced")
    common(p)
    p.set_defaults(run=cmd_score)

    p = sub.add_parser("rank", help="rank several models' features for one target task")
    p.add_argument("models", nargs="+", help="NAME=FEATURES for each model (features in any format of `score`)")
    p.add_argument("--labels", required=True, help="the target task's labels, one per feature row")
    p.add_argument("--metrics", help=f"comma list from: {', '.join(SCORES)} (default: all)")
    p.add_argument("--json", help="also write every model's scores here")
    p.add_argument("--plot", help="PNG of the ranking (needs matplotlib)")
    common(p)
    p.set_defaults(run=cmd_rank)

    p = sub.add_parser("stats", help="write the statistics of a dump (.safetensors or .pt)")
    p.add_argument("features", help=".npy, folder/glob of .npy shards, or file.safetensors[:name]")
    p.add_argument("labels", help="labels in the same formats")
    p.add_argument("-o", "--output", required=True, help="file to write: .pt (torch.save), otherwise safetensors")
    checkpointing(p)
    p.add_argument("--distributed", action="store_true", help="under torchrun: rows shared among the ranks")
    common(p)
    p.set_defaults(run=cmd_stats)

    p = sub.add_parser("merge", help="merge statistics files (e.g. from several machines)")
    p.add_argument("inputs", nargs="+", help="statistics files written by `ncfast stats` (.safetensors or .pt)")
    p.add_argument("-o", "--output", required=True, help="file to write: .pt (torch.save), otherwise safetensors")
    p.set_defaults(run=cmd_merge)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        _stop_distributed()


def _stop_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run(args) -> int:
    try:
        return args.run(args)
    except (CommandError, ValueError, TypeError, FileNotFoundError, MemoryError, ImportError) as err:
        message = str(err).replace("pass nan_policy='skip'", "pass --nan-policy skip")  # the CLI's name for it
        print(f"ncfast: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"ncfast: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ncfast: interrupted", file=sys.stderr)
        return 130
