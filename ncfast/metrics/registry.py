"""The scores computed by name (the command line, model ranking, reports): what each measures,
which way is better, and the function that computes it from the statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from . import bhattacharyya, coding_rate, evidence, hscore, nc, per_class, spectrum, transfer_scores


@dataclass(frozen=True)
class Score:
    """One score of the statistics.

    name: the key in tables and JSON; compute: stats -> float; higher_is_better: the direction
    in which it predicts better transfer (or more collapse, for the NC scores); meaning: one
    line for tables and ``--help``; reference: the paper; needs: the ClassStats options
    (``per_class_diag``, ``fourth_moments``, ``per_class_gram``) the statistics must be created
    with; default: whether it is among the scores computed when none are named (off for those
    whose statistics can be too large to turn on unasked); scale: optional note on the range of
    values and how to read their size (for the glossary).
    """

    name: str
    compute: Callable[[Any], float]
    higher_is_better: bool
    meaning: str
    reference: str
    needs: Tuple[str, ...] = ()
    default: bool = True
    scale: str = ""

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"


REGISTRY: Dict[str, Score] = {
    s.name: s
    for s in (
        Score("nc1", nc.nc1, False,
              "within-class variability relative to between-class separation, tr(Sigma_W Sigma_B^+)/K",
              "Papyan, Han & Donoho 2020", scale="0 for fully collapsed classes; no upper bound"),
        Score("nc1_trace", nc.nc1_trace, False, "tr(Sigma_W) / tr(Sigma_B), a well-conditioned NC1",
              "Papyan, Han & Donoho 2020"),
        Score("cdnv", nc.cdnv, False,
              "class-distance-normalised variance: class spread over squared distance of class means, "
              "averaged over pairs", "Galanti et al. 2022"),
        Score("nc2_etf", lambda stats: nc.nc2(stats.centred_means()).etf_distance, False,
              "distance of the class-mean Gram matrix from a simplex equiangular tight frame",
              "Papyan, Han & Donoho 2020"),
        Score("logme", evidence.logme, True,
              "log marginal evidence of a Bayesian linear model from the features to the labels, per row",
              "You et al. 2021", scale="a log-likelihood per row: compare models on the same target rows only"),
        Score("h_score", hscore.h_score, True,
              "tr(cov(f)^+ cov(E[f|y])): how much of the feature covariance the classes explain",
              "Bao et al. 2019", scale="between 0 and K - 1 (K classes with rows)"),
        Score("h_score_shrinkage", hscore.h_score_shrinkage, True,
              "H-score with a Ledoit-Wolf shrunk feature covariance (stable when N is small or D large)",
              "Ibrahim et al. 2023", needs=("fourth_moments",)),
        Score("face", lambda stats: transfer_scores.face(stats).score, True,
              "Fair Collapse: variance collapse plus fairness of the class overlaps (reconstruction)",
              "Ding et al. 2023", scale="at most 0 (= -NC1 - std/mean of the class overlaps)"),
        Score("gbc", bhattacharyya.gbc, True,
              "minus the summed Bhattacharyya overlap of per-class diagonal Gaussians (0 = separated)",
              "Pandy et al. 2022", needs=("per_class_diag",),
              scale="between -K(K-1) and 0: minus a sum of exp(-distance) over class pairs, so well separated "
                    "classes give tiny values such as -2.7e-81; compare models by the exponent"),
        Score("transrate", coding_rate.transrate, True,
              "coding rate of the features minus the mean coding rate within each class",
              "Huang et al. 2022", needs=("per_class_gram",), default=False),
        Score("uniformity_log", lambda stats: per_class.hyperspherical_uniformity(stats, "log").mean, False,
              "mean log-kernel energy of the normalised class means (lower: more uniform on the sphere)",
              "Liu et al. 2023", default=False),
        Score("uniformity_riesz", lambda stats: per_class.hyperspherical_uniformity(stats, "riesz").mean, False,
              "mean Riesz (s = D - 2) energy of the normalised class means (lower: more uniform)",
              "Liu et al. 2023", default=False),
        Score("rankme", spectrum.rankme, True, "effective rank of the feature covariance (entropy of its spectrum)",
              "Garrido et al. 2023", scale="between 1 and D"),
    )
}
# Computed when no score is named: every score whose statistics are cheap to keep.
SCORES = tuple(name for name, s in REGISTRY.items() if s.default)
SCORE_FUNCTIONS: Dict[str, Callable] = {name: s.compute for name, s in REGISTRY.items()}
HIGHER_IS_BETTER: Dict[str, bool] = {name: s.higher_is_better for name, s in REGISTRY.items()}


STATS_OPTIONS = ("per_class_diag", "fourth_moments", "per_class_gram")

def stats_options(names: Sequence[str]) -> Dict[str, bool]:
    """The ClassStats options the named scores need, e.g. {"per_class_diag": True,
    "fourth_moments": True, "per_class_gram": False}, for the pass that builds the statistics."""
    wanted = {need for name in names if name in REGISTRY for need in REGISTRY[name].needs}
    return {option: option in wanted for option in STATS_OPTIONS}


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
