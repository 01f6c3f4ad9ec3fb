"""The scores computed by name (the command line, model ranking, reports): what each measures,
which way is better, and the function that computes it from the statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from . import nc, spectrum, transfer_scores


@dataclass(frozen=True)
class Score:
    """One score of the statistics.

    name: the key in tables and JSON; compute: stats -> float; higher_is_better: the direction
    in which it predicts better transfer (or more collapse, for the NC scores); meaning: one
    line for tables and ``--help``; reference: the paper.
    """

    name: str
    compute: Callable[[Any], float]
    higher_is_better: bool
    meaning: str
    reference: str

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"


REGISTRY: Dict[str, Score] = {
    s.name: s
    for s in (
        Score("nc1", nc.nc1, False,
              "within-class variability relative to between-class separation, tr(Sigma_W Sigma_B^+)/K",
              "Papyan, Han & Donoho 2020"),
        Score("nc1_trace", nc.nc1_trace, False, "tr(Sigma_W) / tr(Sigma_B), a well-conditioned NC1",
              "Papyan, Han & Donoho 2020"),
        Score("cdnv", nc.cdnv, False,
              "class-distance-normalised variance: class spread over squared distance of class means, "
              "averaged over pairs", "Galanti et al. 2022"),
        Score("nc2_etf", lambda stats: nc.nc2(stats.centred_means()).etf_distance, False,
              "distance of the class-mean Gram matrix from a simplex equiangular tight frame",
              "Papyan, Han & Donoho 2020"),
        Score("logme", transfer_scores.logme, True,
              "log marginal evidence of a Bayesian linear model from the features to the labels, per row",
              "You et al. 2021"),
        Score("h_score", transfer_scores.h_score, True,
              "tr(cov(f)^+ cov(E[f|y])): how much of the feature covariance the classes explain",
              "Bao et al. 2019"),
        Score("h_score_shrinkage", transfer_scores.h_score_shrinkage, True,
              "H-score with a shrunk feature covariance (stable when N is small or D large)",
              "Ibrahim et al. 2022"),
        Score("face", lambda stats: transfer_scores.face(stats).score, True,
              "Fair Collapse: variance collapse plus fairness of the class overlaps (reconstruction)",
              "Ding et al. 2023"),
        Score("gbc", transfer_scores.gbc, True,
              "minus the summed Bhattacharyya overlap of per-class diagonal Gaussians (0 = separated)",
              "Pandy et al. 2022"),
        Score("rankme", spectrum.rankme, True, "effective rank of the feature covariance (entropy of its spectrum)",
              "Garrido et al. 2023"),
    )
}
SCORES = tuple(REGISTRY)
SCORE_FUNCTIONS: Dict[str, Callable] = {name: s.compute for name, s in REGISTRY.items()}
HIGHER_IS_BETTER: Dict[str, bool] = {name: s.higher_is_better for name, s in REGISTRY.items()}


def score_stats(stats, names: Sequence[str] = SCORES) -> Tuple[Dict[str, Optional[float]], Dict[str, str]]:
    """({score: value}, {score: why it is undefined}) for the requested scores. A score that is
    undefined for these statistics (e.g. LogME with N <= D) is None, with the reason."""
    values: Dict[str, Optional[float]] = {}
    notes: Dict[str, str] = {}
    for name in names:
        try:
            values[name] = float(REGISTRY[name].compute(stats))
        except (ValueError, MemoryError) as err:
            values[name], notes[name] = None, str(err)
    return values, notes
