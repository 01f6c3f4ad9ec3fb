"""``ncfast metrics``: what every score the commands print means, which way is better, the
range of its values and its paper. The scores of the statistics come from
:data:`ncfast.metrics.registry.REGISTRY`; the ones that need a classifier or a second pass
are described here."""

from __future__ import annotations

import textwrap
from typing import Dict, List, NamedTuple

from ..metrics.registry import REGISTRY


class Entry(NamedTuple):
    name: str
    higher_is_better: bool
    meaning: str
    reference: str
    scale: str = ""
    needs: str = ""

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"


_WITH_CLASSIFIER = "score --classifier W.npy"
EXTRA: Dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("nc2_classifier_etf", False, "distance of the classifier rows' Gram matrix from a simplex "
              "equiangular tight frame", "Papyan, Han & Donoho 2020", needs=_WITH_CLASSIFIER),
        Entry("nc3", False, "self-duality: squared distance between the normalised classifier and the "
              "normalised centred class means", "Papyan, Han & Donoho 2020", scale="between 0 and 4",
              needs=_WITH_CLASSIFIER),
        Entry("nc4", False, "fraction of rows where the classifier and the nearest class mean disagree",
              "Papyan, Han & Donoho 2020", scale="between 0 and 1",
              needs=_WITH_CLASSIFIER + " (a second pass over the features)"),
        Entry("ncc_accuracy", True, "accuracy of the nearest-class-mean classifier on the rows",
              "Papyan, Han & Donoho 2020", scale="between 0 and 1",
              needs=_WITH_CLASSIFIER + " (a second pass over the features)"),
        Entry("sfda", True, "mean probability of the true class under a self-challenging regularised Fisher "
              "fit of the features", "Shao et al. 2022", scale="between 0 and 1",
              needs="ncfast.metrics.sfda_score (two more passes over the features)"),
        Entry("leep", True, "log expected empirical prediction of the target labels from the source "
              "model's predictions", "Nguyen et al. 2020", scale="at most 0",
              needs="ncfast.rank_models(..., source_heads=)"),
        Entry("nce", True, "negative conditional entropy of the target labels given the source model's "
              "predicted class", "Tran et al. 2019", scale="at most 0",
              needs="ncfast.rank_models(..., source_heads=)"),
    )
}


def entries() -> Dict[str, Entry]:
    """Every score by name: the registry's, then those that need more than the statistics."""
    out = {name: Entry(s.name, s.higher_is_better, s.meaning, s.reference, s.scale)
           for name, s in REGISTRY.items()}
    out.update(EXTRA)
    return out


def direction(name: str) -> str:
    """"higher" or "lower" (is better) for any score the commands print."""
    return entries()[name].direction


def meaning(name: str) -> str:
    return entries()[name].meaning


def short_list(names, width: int = 0) -> str:
    """Name, direction and meaning, one line per score (for ``--help``); names padded to `width`."""
    width = max(width, *(len(n) for n in names))
    known = entries()
    return "\n".join(f"  {n:<{width}}  {known[n].direction:>6} is better  {known[n].meaning}" for n in names)


def glossary(width: int = 100) -> str:
    """The glossary: each score's name, direction, meaning, range of values and paper."""
    lines: List[str] = ["Scores of ncfast score and ncfast rank (\"better\" = predicts better transfer, or more",
                        "neural collapse for the NC scores). Rankings put the better value first.", ""]
    wrap = lambda text: textwrap.wrap(text, width, initial_indent="    ", subsequent_indent="    ")  # noqa: E731
    for entry in entries().values():
        lines.append(f"{entry.name}  ({entry.direction} is better)")
        lines += wrap(entry.meaning + ".")
        if entry.scale:
            lines += wrap("Values: " + entry.scale + ".")
        if entry.needs:
            lines += wrap("Needs: " + entry.needs + ".")
        lines += wrap(entry.reference + ".")
        lines.append("")
    return "\n".join(lines).rstrip()


def cmd_metrics(args) -> int:
    from .output import emit

    emit(glossary())
    return 0


def register(sub) -> None:
    p = sub.add_parser("metrics", help="what each score means and which way is better",
                       description="Prints the glossary of every score: meaning, direction, range of values, paper.")
    p.set_defaults(run=cmd_metrics)
