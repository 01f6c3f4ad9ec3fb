"""``ncfast score``: the scores of one dump (or of saved statistics, or of a built-in example),
with NC2/NC3 and the NC4 second pass when a classifier is given."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import torch

from .. import metrics
from .._inputs import drop_ignored
from .._progress import Progress
from ..io import SPEC_HELP, open_array, stream
from ..metrics.registry import SCORES, score_stats, stats_options
from ..pipeline import accumulate
from ..stats import load_stats
from . import glossary
from .common import (CommandError, add_checkpoint_options, add_common_options, check_outputs, file_fingerprint,
                     check_names, load_matrix, open_input, parse_metrics, read_names, start_distributed, stats_for)
from .output import describe_classes, print_table, run_info, write_json


def example_data():
    """A built-in example: 200k rows, 256 dims, 20 classes in 5 groups of 4 similar classes,
    features of a half-collapsed model."""
    gen = torch.Generator().manual_seed(0)
    k, d, n, groups = 20, 256, 200_000, 5
    group_centres = torch.randn(groups, d, generator=gen)
    centres = 0.25 * (0.8 * group_centres[torch.arange(k) % groups] + 0.6 * torch.randn(k, d, generator=gen))
    y = torch.randint(0, k, (n,), generator=gen)
    x = (centres[y] + torch.randn(n, d, generator=gen) * (1.0 + torch.rand(k, generator=gen)[y, None])).float()
    return open_array(x, "features"), open_array(y, "labels"), centres


def _early_classifier(args, dim: int) -> Optional[torch.Tensor]:
    """Loads --classifier and checks its width before the pass (its rows are checked after)."""
    if not args.classifier:
        return None
    classifier = load_matrix(args.classifier, "--classifier")
    if classifier.ndim != 2 or classifier.shape[1] != dim:
        raise CommandError(f"--classifier: {args.classifier} has shape {tuple(classifier.shape)}, "
                           f"expected (K, {dim}) for {dim}-dimensional features")
    return classifier


def cmd_score(args) -> int:
    if args.list:
        return glossary.cmd_metrics(args)
    names = parse_metrics(args.metrics)
    check_outputs(args)
    class_names = read_names(args.names) if args.names else None
    if args.stats and (args.features or args.labels):
        raise CommandError("--stats: scores saved statistics; give it without FEATURES and LABELS")
    if args.per_class and not args.json:
        raise CommandError("--per-class: the per-class outputs go to the JSON file; give --json too")
    if args.stats and args.bias:
        raise CommandError("--bias: NC4 needs the features (a second pass); it cannot come from --stats")
    start = time.perf_counter()
    ranks = start_distributed(args)
    if ranks.world > 1 and (args.stats or args.features is None):
        raise CommandError("--distributed: give FEATURES and LABELS files to share among the ranks")
    classifier = None
    given = None
    if args.features and args.classifier:
        shape = open_input(args.features, "features").shape
        if len(shape) != 2:
            raise CommandError(f"features: expected a 2-D (rows, dim) array in {args.features}, got shape {shape}")
        given = _early_classifier(args, shape[1])
    if args.stats:
        stats, _ = load_stats(args.stats)
        source = args.stats
        fingerprint = {"stats": file_fingerprint(args.stats)}
    elif args.features is None:
        feats, labels, centres = example_data()
        print("ncfast: no files given, scoring a built-in example (200,000 x 256, 20 classes in 5 groups)", file=sys.stderr)
        stats = accumulate(feats, labels, device=args.device, progress=not args.quiet, label="built-in example",
                           **{**stats_options(names), "per_class_diag": True})
        classifier = centres  # a classifier aligned with the class centres, to show NC3/NC4
        source = "built-in example"
        fingerprint = {"features": "built-in example (seed 0)"}
    else:
        if args.labels is None:
            raise CommandError("labels: give a LABELS file after FEATURES")
        stats, feats, labels = stats_for(args, args.features, args.labels, ranks=ranks, names=names)
        source = args.features
        fingerprint = {"features": feats.fingerprint(), "labels": labels.fingerprint()}
    if stats.num_samples == 0:
        raise CommandError(f"{source}: holds no rows, nothing to score")
    if args.classifier:
        classifier = given if given is not None else _early_classifier(args, stats.dim)
        fingerprint["classifier"] = file_fingerprint(args.classifier)
    scores, notes = score_stats(stats, names)
    second = None
    if classifier is not None:
        report = metrics.nc_report(stats, classifier=classifier)
        scores["nc3"] = report.nc3
        scores["nc2_classifier_etf"] = report.nc2_classifier.etf_distance
        if args.stats:
            print("ncfast: nc4 and ncc_accuracy need the features (a second pass); not computed from --stats",
                  file=sys.stderr)
        else:
            bias = load_matrix(args.bias, "--bias") if args.bias else None
            second = metrics.NCCStats.from_stats(stats, classifier=classifier, bias=bias)
            feats_src = feats if args.features is None else open_array(args.features, "features")
            labels_src = labels if args.features is None else open_array(args.labels, "labels")
            first, stop = ranks.share(feats_src.rows)
            bar = Progress(stop - first, label="nc4 pass", enabled=not args.quiet and ranks.is_main)
            for _, x, y in stream(feats_src, labels_src, chunk_rows=1 << 16, start_row=first, stop_row=stop,
                                  device=args.device):
                bar.update(x.shape[0])
                x, y, _ = drop_ignored(x, y, args.ignore_index)  # the rows the first pass left out
                second.update(x, y)  # drops NaN/Inf rows when the first pass did
            bar.close()
            if ranks.world > 1:
                second.all_reduce()
            scores["nc4"] = second.nc4
            scores["ncc_accuracy"] = second.ncc_accuracy
    per_class = None
    if args.per_class:
        try:
            per_class = metrics.per_class_report(stats, classifier, ncc=second).as_dict()
        except ValueError as err:
            raise CommandError(f"--per-class: {err}") from None
    seconds = time.perf_counter() - start
    if not ranks.is_main:
        return 0
    known = glossary.entries()
    directions = {n: known[n].direction for n in scores}
    meanings = {n: known[n].meaning for n in scores}
    why = {"raise": f"labelled {args.ignore_index}", "skip": "with NaN/Inf"}[args.nan_policy]
    if args.stats or (args.nan_policy == "skip" and args.ignore_index is not None):
        why = "with NaN/Inf or an ignored label" if args.stats else f"with NaN/Inf or label {args.ignore_index}"
    skipped = f" ({stats.skipped_rows:,} {why} skipped)" if stats.skipped_rows else ""
    print_table(scores, f"{source}: {stats.num_samples:,} rows{skipped}, {stats.dim} dims, "
                        f"{describe_classes(stats.counts)}, {seconds:.2f} s",
                directions=directions, meanings=meanings, notes=notes)
    if args.json:
        counts = stats.counts
        write_json(args.json, {**run_info(args, fingerprint),
                               "source": str(source), "rows": stats.num_samples, "skipped_rows": stats.skipped_rows,
                               "dim": stats.dim, "classes": int((counts > 0).sum()), "num_classes": stats.num_classes,
                               "seconds": seconds, "ranks": ranks.world, "scores": scores,
                               "direction": directions, "meaning": meanings, "notes": notes,
                               **({"per_class": per_class} if per_class is not None else {})})
    if args.plot:
        from ..plots import plot_geometry

        if class_names is not None:
            class_names = check_names(class_names, args.names, stats.num_classes)
        plot_geometry(stats, args.plot, names=class_names)
    return 0


def register(sub) -> None:
    p = sub.add_parser("score", help="score one feature dump", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Scores one feature dump (or saved statistics, or a built-in example when no "
                                   "files are given).",
                       epilog="scores (--metrics; `ncfast metrics` explains each):\n" + glossary.short_list(SCORES, 18)
                              + "\nwith --classifier:\n"
                              + glossary.short_list(["nc2_classifier_etf", "nc3", "nc4", "ncc_accuracy"], 18))
    p.add_argument("features", nargs="?", help=SPEC_HELP)
    p.add_argument("labels", nargs="?", help="labels in the same formats, or a .txt/.csv of one integer per line")
    p.add_argument("--stats", help="score saved statistics (from `ncfast stats`) instead of features")
    p.add_argument("--metrics", help=f"comma list of scores (default: {', '.join(SCORES)}; `ncfast metrics` "
                                     "lists every score)")
    p.add_argument("--list", action="store_true", help="print what each score means and exit (= ncfast metrics)")
    p.add_argument("--classifier", help="(K, D) .npy of last-layer weights: adds NC2/NC3 and NC4 (second pass)")
    p.add_argument("--bias", help="(K,) .npy classifier bias for NC4")
    p.add_argument("--json", help="also write the scores here")
    p.add_argument("--per-class", action="store_true",
                   help="also write per-class outputs to the JSON (within-class variance, CDNV row means, "
                        "mean norms, classifier cosines, interference matrix, NC4 agreement)")
    add_checkpoint_options(p)
    p.add_argument("--plot", help="PNG of the class-mean geometry and spectrum (needs matplotlib)")
    p.add_argument("--names", help="text file of class names, one per line in label order (for --plot)")
    p.add_argument("--distributed", action="store_true",
                   help="under torchrun: each rank reads its share of the rows, statistics are all-reduced")
    add_common_options(p)
    p.set_defaults(run=cmd_score)
