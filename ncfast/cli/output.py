"""What the commands print and write: the score table on stdout, JSON files.

Output to a closed pipe (``ncfast score ... | head -1``) is dropped quietly: the command goes
on, so its JSON and plots are still written."""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, Mapping, Optional

from .._format import format_column
from .._version import __version__
from ..io.atomic import atomic_file


def emit(text: str = "") -> None:
    """Prints `text` to stdout; once the reader has gone (a closed pipe) the rest is dropped."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    """Points stdout at /dev/null, so neither later prints nor the final flush at exit fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (e.g. captured)
        pass


def print_table(rows: Mapping[str, Optional[float]], title: str, *, directions: Mapping[str, str] = None,
                meanings: Mapping[str, str] = None, notes: Mapping[str, str] = None) -> None:
    """The title, then one line per score: name, value, which way is better, meaning (or, for a
    score that could not be computed, why)."""
    emit(title)
    if not rows:
        return
    directions, meanings, notes = directions or {}, meanings or {}, notes or {}
    shown = format_column(list(rows.values()))
    name_w = max(len("score"), *(len(k) for k in rows))
    value_w = max(len("value"), *(len(s) for s in shown))
    emit(f"  {'score':<{name_w}}  {'value':>{value_w}}  better  meaning")
    for (key, _), text in zip(rows.items(), shown):
        about = f"not computed: {notes[key]}" if key in notes else meanings.get(key, "")
        emit(f"  {key:<{name_w}}  {text:>{value_w}}  {directions.get(key, ''):<6}  {about}".rstrip())


def write_json(path: str, payload: dict) -> None:
    with atomic_file(path, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")


def describe_classes(counts) -> str:
    """"17 classes with rows, labels up to 29" when some labels below the largest have no rows
    (or K was set larger), else "17 classes"."""
    present = [i for i, c in enumerate(counts.tolist()) if c > 0]
    k = len(counts)
    if len(present) == k:
        return f"{k} classes"
    text = f"{len(present)} classes with rows"
    if present:
        text += f", labels up to {present[-1]}"
    if not present or present[-1] + 1 < k:
        text += f" (K = {k})"
    return text


def run_info(args, fingerprint: Dict[str, object]) -> Dict[str, object]:
    """What makes a JSON result reproducible: ncfast's version, the input's fingerprint (paths,
    sizes, modification times) and every option of the command."""
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command") and not callable(v)}
    return {"ncfast": __version__, "command": getattr(args, "command", None), "input": fingerprint,
            "options": options}
