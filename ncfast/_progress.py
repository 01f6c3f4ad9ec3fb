"""A small progress line on stderr: percent, rows, rows/s and ETA."""

from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    """Redrawn in place on a terminal (every `every` seconds); one line per `log_every`
    seconds when stderr is a file or a pipe, so long runs do not flood logs. Rows counted by
    `skip` (e.g. resumed from a checkpoint) move the percentage but not the rate."""

    def __init__(self, total: int, *, label: str = "", enabled: bool = True, stream=None, every: float = 0.5,
                 log_every: float = 15.0) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self._tty = getattr(self.stream, "isatty", lambda: False)()
        self.every = every if self._tty else log_every
        self.done = 0
        self._skipped = 0
        self._start = time.perf_counter()
        self._last: Optional[float] = None

    def skip(self, rows: int) -> None:
        """Counts rows done before this run (a resumed checkpoint)."""
        self.done += rows
        self._skipped += rows

    def update(self, rows: int) -> None:
        self.done += rows
        if rows == 0:
            return
        now = time.perf_counter()
        if self.enabled and (self._last is None or now - self._last >= self.every or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._skipped) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        line = (f"{self.label} {pct:5.1f}% {self.done:,}/{self.total:,} rows  "
                f"{rate / 1e6:.2f} M rows/s  ETA {left:.0f}s")
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
