"""The progress line: a tqdm bar on a terminal, a plain line every few seconds in logs, nothing
when disabled; the rate counts only this run's work. The clock is replaced by a fake one, so
no result depends on how busy the machine is."""

from __future__ import annotations

import io
import sys

import pytest

import ncfast._progress as progress_module
from ncfast._progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", fake)
    return fake


def test_log_lines_every_log_every_seconds_and_the_last(clock):
    log = io.StringIO()
    bar = Progress(1000, label="feats", stream=log, log_every=15.0)
    for _ in range(10):  # 100 rows a second for 10 s: one line at the first update, none after
        clock.now += 1.0
        bar.update(100)
        if bar.done == 500:
            clock.now += 20.0  # a slow chunk: the next update writes again
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("feats ") and "10.0% 100/1,000 rows" in lines[0]
    assert "100.0% 1,000/1,000 rows" in lines[-1] and "ETA 0s" in lines[-1]
    assert "\r" not in log.getvalue()


def test_rate_counts_only_this_runs_rows(clock):
    log = io.StringIO()
    bar = Progress(1000, stream=log, log_every=0.0)
    bar.skip(900)  # resumed from a checkpoint
    clock.now += 2.0
    bar.update(100)
    line = log.getvalue().strip().splitlines()[-1]
    assert "100.0% 1,000/1,000 rows" in line
    assert "50.0 rows/s" in line  # 100 rows in 2 s, not 1000


def test_large_rates_in_millions_and_the_unit_shown(clock):
    log = io.StringIO()
    bar = Progress(10_000_000, stream=log, log_every=0.0, unit="batches")
    clock.now += 2.0
    bar.update(5_000_000)
    assert "50.0% 5,000,000/10,000,000 batches  2.50 M batches/s  ETA 2s" in log.getvalue()


def test_disabled_writes_nothing(clock):
    for stream in (io.StringIO(), Terminal()):
        with Progress(10, stream=stream, enabled=False) as bar:
            bar.update(5)
            bar.update(5)
        assert stream.getvalue() == ""


def test_terminal_gets_a_tqdm_bar(clock):
    pytest.importorskip("tqdm")
    term = Terminal()
    with Progress(1000, label="nc4 pass", stream=term) as bar:
        bar.skip(400)
        for _ in range(6):
            clock.now += 1.0
            bar.update(100)
    text = term.getvalue()
    assert "nc4 pass" in text and "\r" in text
    final = text.split("\r")[-1]
    assert "100%" in final and "1.00k/1.00k" in final
    assert text.endswith("\n")
    assert bar.done == 1000


def test_terminal_without_tqdm_redraws_a_plain_line(clock, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` now raises ImportError
    term = Terminal()
    with Progress(300, stream=term, every=0.0) as bar:
        for _ in range(3):
            clock.now += 1.0
            bar.update(100)
    frames = term.getvalue().split("\r")[1:]
    assert len(frames) == 3 and "100.0% 300/300 rows" in frames[-1]
    assert term.getvalue().endswith("\n")


def test_unknown_total_shows_count_and_rate_and_the_final_count(clock):
    log = io.StringIO()
    bar = Progress(None, label="resnet", stream=log, log_every=15.0, unit="rows")
    for _ in range(4):
        clock.now += 1.0
        bar.update(256)
    bar.close()
    lines = log.getvalue().splitlines()
    assert lines == ["resnet 256 rows  256.0 rows/s", "resnet 1,024 rows  256.0 rows/s"]
