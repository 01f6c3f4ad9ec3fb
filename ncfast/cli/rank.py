"""``ncfast rank``: several models' features for one target task, ranked by every score."""

from __future__ import annotations

import math
from typing import Dict, Optional

from ..metrics.registry import HIGHER_IS_BETTER, SCORES
from .common import CommandError, add_common_options, check_outputs, compute_scores, parse_metrics, stats_for
from .output import write_json


def cmd_rank(args) -> int:
    names = parse_metrics(args.metrics)
    check_outputs(args)
    table: Dict[str, Dict[str, Optional[float]]] = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"models: expected NAME=FEATURES, got {spec!r}")
        stats, _, _ = stats_for(args, path, args.labels, label=name, names=names)
        table[name] = compute_scores(stats, names)
    for score in names:
        valid = [(m, s[score]) for m, s in table.items() if s[score] is not None and math.isfinite(s[score])]
        valid.sort(key=lambda kv: kv[1], reverse=HIGHER_IS_BETTER[score])
        order = "  >  ".join(f"{m} ({v:.4g})" for m, v in valid) or "n/a"
        print(f"{score:<18} {order}")
    if args.json:
        write_json(args.json, {"labels": args.labels, "scores": table})
    if args.plot:
        from ..plots import plot_ranking

        plot_ranking(table, args.plot)
    return 0


def register(sub) -> None:
    p = sub.add_parser("rank", help="rank several models' features for one target task")
    p.add_argument("models", nargs="+", help="NAME=FEATURES for each model (features in any format of `score`)")
    p.add_argument("--labels", required=True, help="the target task's labels, one per feature row")
    p.add_argument("--metrics", help=f"comma list from: {', '.join(SCORES)} (default: all)")
    p.add_argument("--json", help="also write every model's scores here")
    p.add_argument("--plot", help="PNG of the ranking (needs matplotlib)")
    add_common_options(p)
    p.set_defaults(run=cmd_rank)
