"""What the generator scripts (render.py, chart_values.py) print when a generated file is stale: a
module of theirs, not a script. Standard library only."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def report_stale(items: Sequence[object], target: str) -> bool:
    """Print each stale item, then the ``make`` target that regenerates them, to stderr; return
    whether there was any (the caller exits 1 then)."""
    for item in items:
        print(item, file=sys.stderr)
    if items:
        print(f"run: make {target}", file=sys.stderr)
    return bool(items)
