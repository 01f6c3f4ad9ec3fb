"""What the commands print and write: the score table on stdout, JSON files."""

from __future__ import annotations

import json
from typing import Dict, Optional

from ..io.atomic import atomic_file


def print_table(rows: Dict[str, Optional[float]], title: str) -> None:
    print(title)
    width = max(len(k) for k in rows) + 2
    for key, value in rows.items():
        shown = "n/a" if value is None else f"{value:.6g}"
        print(f"  {key:<{width}}{shown:>14}")


def write_json(path: str, payload: dict) -> None:
    with atomic_file(path, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
