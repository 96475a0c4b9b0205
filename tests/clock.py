"""A controllable monotonic clock for code that takes a ``clock`` callable (schedules, TTL checks)."""

from __future__ import annotations


class FakeClock:
    """``clock()`` returns ``now``; ``advance(s)`` moves it forward."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
