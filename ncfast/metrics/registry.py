"""The scores the command line and the model ranking compute by name, and which way is better."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

from . import nc, spectrum, transfer_scores

# name -> function of the statistics, in the order tables show them.
SCORE_FUNCTIONS: Dict[str, Callable] = {
    "nc1": nc.nc1,
    "nc1_trace": nc.nc1_trace,
    "cdnv": nc.cdnv,
    "nc2_etf": lambda stats: nc.nc2(stats.centred_means()).etf_distance,
    "logme": transfer_scores.logme,
    "h_score": transfer_scores.h_score,
    "h_score_shrinkage": transfer_scores.h_score_shrinkage,
    "face": lambda stats: transfer_scores.face(stats).score,
    "gbc": transfer_scores.gbc,
    "rankme": spectrum.rankme,
}
SCORES = tuple(SCORE_FUNCTIONS)
# True where a higher score predicts better transfer.
HIGHER_IS_BETTER = {
    "nc1": False, "nc1_trace": False, "cdnv": False, "nc2_etf": False, "logme": True, "h_score": True,
    "h_score_shrinkage": True, "face": True, "gbc": True, "rankme": True,
}


def score_stats(stats, names: Sequence[str] = SCORES) -> Tuple[Dict[str, Optional[float]], Dict[str, str]]:
    """({score: value}, {score: why it is undefined}) for the requested scores. A score that is
    undefined for these statistics (e.g. LogME with N <= D) is None, with the reason."""
    values: Dict[str, Optional[float]] = {}
    notes: Dict[str, str] = {}
    for name in names:
        try:
            values[name] = float(SCORE_FUNCTIONS[name](stats))
        except (ValueError, MemoryError) as err:
            values[name], notes[name] = None, str(err)
    return values, notes
