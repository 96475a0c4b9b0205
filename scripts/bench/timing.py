"""Timing helpers the bench scripts share (a module, not a bench: ``make bench`` runs ``bench_*.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def median_time(fn: Callable[[], T], runs: int) -> tuple[float, T]:
    """Call ``fn`` ``runs`` times; the median wall-clock seconds of one call, and the last result."""
    times: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out
