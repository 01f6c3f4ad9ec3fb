"""docs/quickstart.md runs as written, and the scores and rankings it shows are what the code
prints (timings aside)."""

from __future__ import annotations

import re

import pytest

from quickstart_runner import PAGE, blocks, run

SCORE_ROW = re.compile(r"^\s+(\w+)\s+(-?[0-9.]+(?:e[+-][0-9]+)?)\s+(lower|higher)\s")
RANK_ROW = re.compile(r"^\s+(\w+)\s+(lower|higher)\s+(1\. .*)$")


def shown_after_each_run():
    """The ```text block that follows each bash/python block of the page (None if none)."""
    found, pending = [], False
    for lang, code in blocks(PAGE.read_text()):
        if lang in ("bash", "python"):
            if pending:
                found.append(None)
            pending = True
        elif lang == "text" and pending:
            found.append(code)
            pending = False
    if pending:
        found.append(None)
    return found


def scores(text: str) -> dict:
    return {m.group(1): float(m.group(2)) for m in map(SCORE_ROW.match, text.splitlines()) if m}


def rankings(text: str) -> dict:
    return {m.group(1): re.findall(r"\d+\. (\w+) \(", m.group(3)) for m in map(RANK_ROW.match, text.splitlines()) if m}


@pytest.mark.slow
def test_quickstart_runs_and_shows_what_it_prints(tmp_path):
    results = run(tmp_path)
    shown = shown_after_each_run()
    assert len(results) == len(shown)
    checked = 0
    for (lang, code, printed), page in zip(results, shown):
        if page is None:
            continue
        expected, got = scores(page), scores(printed)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-3, abs=1e-4), (code, name)
            checked += 1
        assert rankings(printed) == rankings(page), code
    assert checked >= 20
    training = results[0][2]
    monitor = [float(line.split()[4]) for line in training.splitlines() if line.startswith("0.3 ")]
    by_hand = [float(line.rsplit("=", 1)[1]) for line in training.splitlines() if line.startswith("by hand")]
    assert monitor == pytest.approx(by_hand, abs=1e-4) and len(monitor) == 3
    assert (tmp_path / "dump" / "geometry.png").exists() and (tmp_path / "zoo" / "ranking.png").exists()
