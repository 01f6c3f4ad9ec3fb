"""The scores the command line and the model ranking compute by name, and which way is better."""

from __future__ import annotations

import sys
from typing import Dict, List, Optional

from . import nc, spectrum, transfer

SCORES = ("nc1", "nc1_trace", "cdnv", "nc2_etf", "logme", "h_score", "h_score_shrinkage", "face", "gbc", "rankme")
# For `rank`: True where a higher score predicts better transfer.
HIGHER_IS_BETTER = {
    "nc1": False, "nc1_trace": False, "cdnv": False, "nc2_etf": False, "logme": True, "h_score": True,
    "h_score_shrinkage": True, "face": True, "gbc": True, "rankme": True,
}


def compute_scores(stats, names: List[str], quiet: bool = False) -> Dict[str, Optional[float]]:
    """The requested scores; one that is undefined for these statistics becomes None, with
    the reason on stderr."""
    table = {
        "nc1": lambda: nc.nc1(stats),
        "nc1_trace": lambda: nc.nc1_trace(stats),
        "cdnv": lambda: nc.cdnv(stats),
        "nc2_etf": lambda: nc.nc2(stats.centred_means()).etf_distance,
        "logme": lambda: transfer.logme(stats),
        "h_score": lambda: transfer.h_score(stats),
        "h_score_shrinkage": lambda: transfer.h_score_shrinkage(stats),
        "face": lambda: transfer.face(stats).score,
        "gbc": lambda: transfer.gbc(stats),
        "rankme": lambda: spectrum.rankme(stats),
    }
    out = {}
    for name in names:
        try:
            out[name] = float(table[name]())
        except (ValueError, MemoryError) as err:
            if not quiet:
                print(f"ncfast: {name} skipped: {err}", file=sys.stderr)
            out[name] = None
    return out
