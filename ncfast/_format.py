"""Numbers for people: one format for a column of values (tables, figure cells)."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence


def format_column(values: Sequence[Optional[float]], decimals: int = 4) -> List[str]:
    """The values of one column in one format: `decimals` decimals when every finite value is
    0 or between 0.01 and 1e5 in size, else scientific with `decimals` decimals for all (so
    -2.67e-81 beside 13.72 reads -2.6700e-81 and 1.3720e+01); None is "n/a"."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    fixed = all(1e-2 <= v < 1e5 for v in finite)
    out = []
    for v in values:
        if v is None:
            out.append("n/a")
        elif not math.isfinite(v):
            out.append(str(v))
        else:
            out.append(f"{v:.{decimals}f}" if fixed else f"{v:.{decimals}e}")
    return out
