"""Progress of a long step on stderr: a tqdm bar on a terminal, a plain line every
`log_every` seconds in a log file or pipe (so long runs neither flood logs nor stay silent).

tqdm (a dependency; imported only when a bar is drawn on a terminal) handles the terminal's
width, redrawing and rate smoothing; without it the plain line is redrawn in place instead.
"""

from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    """Counts `total` units of work (rows by default) as ``update(n)`` reports them.

    Parameters
    ----------
    total : int or None
        Units the step will do (rows of a pass, batches of a model run); None when unknown
        (e.g. a loader without a length): the count and rate are shown, no percentage.
    label : str
        Shown before the bar (e.g. the model's name, "nc4 pass").
    enabled : bool
        False draws nothing (``--quiet``, or a rank other than 0).
    stream : file, optional
        Where to draw (default: ``sys.stderr``).
    every : float
        Seconds between redraws on a terminal.
    log_every : float
        Seconds between lines when `stream` is not a terminal; the last line is always written.
    unit : str
        What is counted, for the line ("rows", "batches").

    Units counted by :meth:`skip` (e.g. rows resumed from a checkpoint) move the percentage but
    not the rate. Also a context manager (closes on exit).
    """

    def __init__(self, total: Optional[int], *, label: str = "", enabled: bool = True, stream=None, every: float = 0.5,
                 log_every: float = 15.0, unit: str = "rows") -> None:
        self.total = None if total is None else int(total)
        self.label, self.enabled, self.unit = label, enabled, unit
        self.stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if self._tty else log_every
        self.done = 0
        self._skipped = 0
        self._start = time.perf_counter()
        self._last: Optional[float] = None
        self._bar = None  # the tqdm bar, made at the first update on a terminal
        self._plain = not self._tty  # a plain line: off a terminal, or on one without tqdm

    def skip(self, n: int) -> None:
        """Counts units done before this run (a resumed checkpoint)."""
        self.done += n
        self._skipped += n
        if self._bar is not None:
            self._bar.n += n
            self._bar.initial += n  # tqdm's rate is (n - initial) / elapsed

    def update(self, n: int) -> None:
        """Counts `n` more units done by this run."""
        self.done += n
        if n == 0 or not self.enabled:
            return
        if not self._plain and self._tqdm(n):
            return
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if self._last is None or now - self._last >= self.every or finished:
            self._last = now
            self._draw(now)

    def _tqdm(self, n: int) -> bool:
        """Advances the tqdm bar (made on first use); False when tqdm is not installed."""
        if self._bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self._plain = True
                return False
            self._bar = tqdm(total=self.total, initial=self._skipped, desc=self.label or None, unit=f" {self.unit}",
                             unit_scale=True, file=self.stream, mininterval=self.every, dynamic_ncols=True)
            self._bar.start_t -= time.perf_counter() - self._start  # the rate counts from the start of the step
            n = self.done - self._skipped
        self._bar.update(n)
        return True

    def _draw(self, now: float) -> None:
        self._drawn = self.done
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._skipped) / elapsed
        shown_rate = f"{rate / 1e6:.2f} M {self.unit}/s" if rate >= 1e5 else f"{rate:,.1f} {self.unit}/s"
        label = self.label + " " if self.label else ""
        if self.total is None:
            line = f"{label}{self.done:,} {self.unit}  {shown_rate}"
        else:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            pct = 100.0 * self.done / self.total if self.total else 100.0
            eta = f"ETA {left:.0f}s" if left != float("inf") else "ETA ?"
            line = f"{label}{pct:5.1f}% {self.done:,}/{self.total:,} {self.unit}  {shown_rate}  {eta}"
        if self._tty:
            line, self._width = "\r" + line.ljust(getattr(self, "_width", 0)), len(line)  # cover a longer line
        else:
            line += "\n"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        """Ends the bar (a terminal gets its final state and a newline)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        if not self.enabled or self._last is None:
            return
        if getattr(self, "_drawn", None) != self.done:  # the final count (an unknown total never reached it)
            self._draw(time.perf_counter())
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
