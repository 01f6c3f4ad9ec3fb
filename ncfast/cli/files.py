"""``ncfast stats`` and ``ncfast merge``: statistics files written, and merged exactly."""

from __future__ import annotations

from ..io import SPEC_HELP
from ..io.atomic import check_writable
from ..stats import load_stats, save_stats
from .output import describe_classes, emit
from .common import (CommandError, add_checkpoint_options, add_common_options, check_outputs, start_distributed,
                     stats_for)


def cmd_stats(args) -> int:
    check_outputs(args)
    ranks = start_distributed(args)
    stats, _, _ = stats_for(args, args.features, args.labels, ranks=ranks)
    if not ranks.is_main:
        return 0
    save_stats(stats, args.output)
    emit(f"wrote {args.output}: {stats.num_samples:,} rows, {describe_classes(stats.counts)}, {stats.dim} dims")
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
    emit(f"wrote {args.output}: {merged.num_samples:,} rows, {describe_classes(merged.counts)}, {merged.dim} dims, "
         f"from {len(args.inputs)} files")
    return 0


def register(sub) -> None:
    p = sub.add_parser("stats", help="write the statistics of a dump (.safetensors or .pt)")
    p.add_argument("features", help=SPEC_HELP)
    p.add_argument("labels", help="labels in the same formats, or a .txt/.csv of one integer per line")
    p.add_argument("-o", "--output", required=True, help="file to write: .pt (torch.save), otherwise safetensors")
    add_checkpoint_options(p)
    p.add_argument("--distributed", action="store_true", help="under torchrun: rows shared among the ranks")
    add_common_options(p)
    p.set_defaults(run=cmd_stats)

    p = sub.add_parser("merge", help="merge statistics files (e.g. from several machines)")
    p.add_argument("inputs", nargs="+", help="statistics files written by `ncfast stats` (.safetensors or .pt)")
    p.add_argument("-o", "--output", required=True, help="file to write: .pt (torch.save), otherwise safetensors")
    p.set_defaults(run=cmd_merge)
