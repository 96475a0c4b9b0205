"""Short load bursts for the fault tests: asyncio workers over one pooled ``httpx.AsyncClient``.

Each request's outcome (kind, start/end on the monotonic clock, status, JSON body or transport
error, request id) is appended to a shared list while the burst runs, so a test can watch it
live (wait until entity infers succeed again, say) and judge the whole run afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.helpers import wait_until


@dataclass
class Outcome:
    """One request's result."""

    kind: str
    start: float
    end: float
    status: int | None
    body: Any
    error: str | None
    request_id: str

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Call:
    """What one request is: its kind (for grouping), URL, JSON body and request id."""

    kind: str
    url: str
    body: dict[str, Any]
    request_id: str = ""


@dataclass
class Burst:
    """``concurrency`` workers each sending ``make(worker, i)`` every ``interval_s`` until stopped."""

    make: Callable[[int, int], Call]
    concurrency: int = 4
    interval_s: float = 0.02
    timeout_s: float = 10.0
    results: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Burst:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, w) for w in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient, worker: int) -> None:
        i = 0
        while not self._stop.is_set():
            call = self.make(worker, i)
            i += 1
            start = time.monotonic()
            status: int | None = None
            body: Any = None
            error: str | None = None
            try:
                r = await client.post(call.url, json=call.body)
                status = r.status_code
                try:
                    body = r.json()
                except ValueError:
                    body = r.text
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            end = time.monotonic()
            self.results.append(Outcome(call.kind, start, end, status, body, error, call.request_id))
            pause = self.interval_s - (end - start)
            if pause > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), pause)
                except TimeoutError:
                    pass

    async def warmed_up(self, n: int = 10, deadline_s: float = 60.0) -> None:
        """Wait until ``n`` requests have been answered (the burst is really running)."""
        await wait_until(lambda: len(self.results) >= n, deadline_s, f"{n} answered requests")

    def since(self, t: float, kind: str | None = None) -> list[Outcome]:
        """Outcomes of requests started at or after ``t`` (monotonic), optionally of one kind."""
        return [o for o in self.results if o.start >= t and (kind is None or o.kind == kind)]

    def between(self, t0: float, t1: float, kind: str | None = None) -> list[Outcome]:
        """Outcomes of requests started in ``[t0, t1)``, optionally of one kind."""
        return [o for o in self.results if t0 <= o.start < t1 and (kind is None or o.kind == kind)]


async def run_for(seconds: float) -> None:
    """Let a burst run for ``seconds`` (the load is the point here, not synchronisation)."""
    await asyncio.sleep(seconds)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0.0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(outcomes: list[Outcome]) -> str:
    """A short description of outcomes for assertion messages."""
    by: dict[str, int] = {}
    for o in outcomes:
        key = f"{o.kind}:{o.status if o.status is not None else (o.error or '').split(':')[0]}"
        by[key] = by.get(key, 0) + 1
    return ", ".join(f"{k}={v}" for k, v in sorted(by.items()))
