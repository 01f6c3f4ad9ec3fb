"""``ncfast rank``: several models' features for one target task, ranked by every score, and
(with ``--truth``) how well each score's ranking agrees with the models' measured accuracy."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Dict, Optional

from ..metrics.registry import HIGHER_IS_BETTER, REGISTRY, SCORES, score_stats
from . import glossary
from .common import CommandError, add_common_options, check_outputs, parse_metrics, stats_for
from .output import emit, format_column, run_info, write_json


def read_truth(path: str) -> Dict[str, float]:
    """{model: measured accuracy (or any quality, higher is better)} from a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            truth = json.load(f)
    except FileNotFoundError:
        raise CommandError(f"--truth: no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CommandError(f"--truth: cannot read {path} as JSON ({err})") from None
    if not isinstance(truth, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in truth.values()):
        raise CommandError(f'--truth: {path} must hold one object of numbers, {{"model": accuracy, ...}}')
    return {str(k): float(v) for k, v in truth.items()}


def cmd_rank(args) -> int:
    from ..workflows.ranking import ModelRanking

    names = parse_metrics(args.metrics)
    check_outputs(args)
    models = []
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"models: expected NAME=FEATURES, got {spec!r}")
        models.append((name, path))
    truth = read_truth(args.truth) if args.truth else None
    if truth is not None:
        missing = [m for m, _ in models if m not in truth]
        if missing:
            raise CommandError(f"--truth: {args.truth} has no value for {', '.join(missing)}")
        if len(models) < 2:
            raise CommandError("--truth: a rank correlation needs at least 2 models")
    ranking = ModelRanking(scores={}, higher_is_better={n: HIGHER_IS_BETTER[n] for n in names})
    fingerprint: Dict[str, object] = {}
    for name, path in models:
        stats, feats, labels = stats_for(args, path, args.labels, label=name, names=names)
        values, notes = score_stats(stats, names)
        ranking.scores[name], ranking.dims[name], ranking.num_samples[name] = values, stats.dim, stats.num_samples
        if notes:
            ranking.notes[name] = notes
        fingerprint[name] = feats.fingerprint()
        fingerprint["labels"] = labels.fingerprint()
    _print_rankings(ranking, args.labels)
    correlation = None
    if truth is not None:
        truth = {m: truth[m] for m, _ in models}
        correlation = {method: ranking.correlation(truth, method) for method in ("kendall", "weighted")}
        _print_correlation(correlation, names)
    if args.json:
        payload = {**run_info(args, fingerprint), "labels": args.labels, "scores": ranking.scores,
                   "direction": {n: REGISTRY[n].direction for n in names},
                   "meaning": {n: REGISTRY[n].meaning for n in names},
                   "rankings": {n: ranking.ranking(n) for n in names}, "notes": ranking.notes}
        if truth is not None:
            payload.update(truth=truth, correlation=correlation)
        write_json(args.json, payload)
    if args.plot:
        ranking.plot(args.plot, truth=truth, title=f"{len(models)} models on the target task {args.labels}")
    return 0


def _print_rankings(ranking, labels: str) -> None:
    models = ranking.models
    emit(f"{len(models)} models on {labels}, best first by each score (value in brackets):")
    width = max(len("score"), *(len(n) for n in ranking.score_names))
    emit(f"  {'score':<{width}}  better  ranking")
    for score in ranking.score_names:
        order = ranking.ranking(score)
        shown = dict(zip(order, format_column([ranking.scores[m][score] for m in order])))
        cells = "   ".join(f"{i}. {m} ({shown[m]})" for i, m in enumerate(order, 1)) or "n/a"
        undefined = [m for m in models if m not in shown]
        if undefined and order:
            cells += f"   n/a: {', '.join(undefined)}"
        emit(f"  {score:<{width}}  {REGISTRY[score].direction:<6}  {cells}")
    for model, notes in ranking.notes.items():
        for score, why in notes.items():
            print(f"ncfast: {model}: {score} not computed: {why}", file=sys.stderr)


def _print_correlation(correlation: Dict[str, Dict[str, Optional[float]]], names) -> None:
    emit("agreement with --truth (rank correlation; +1 = the score orders the models as the truth does):")
    width = max(len("score"), *(len(n) for n in names))
    emit(f"  {'score':<{width}}  {'kendall':>8}  {'weighted':>8}")
    for n in names:
        k, w = correlation["kendall"][n], correlation["weighted"][n]
        cell = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v:+.3f}"  # noqa: E731
        emit(f"  {n:<{width}}  {cell(k):>8}  {cell(w):>8}")


def register(sub) -> None:
    p = sub.add_parser("rank", help="rank several models' features for one target task",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Ranks models by every score, best first (`ncfast metrics` says what each "
                                   "score means and which way is better).",
                       epilog="scores (--metrics):\n" + glossary.short_list(SCORES, 18))
    p.add_argument("models", nargs="+", help="NAME=FEATURES for each model (features in any format of `score`)")
    p.add_argument("--labels", required=True, help="the target task's labels, one per feature row")
    p.add_argument("--metrics", help="comma list of scores (default: all; see `ncfast metrics`)")
    p.add_argument("--truth", help='JSON {"model": accuracy, ...} measured after transfer: adds Kendall and '
                                   "weighted tau of each score, and score-vs-accuracy panels to --plot")
    p.add_argument("--json", help="also write every model's scores here")
    p.add_argument("--plot", help="PNG of the ranking (needs matplotlib)")
    add_common_options(p)
    p.set_defaults(run=cmd_rank)
