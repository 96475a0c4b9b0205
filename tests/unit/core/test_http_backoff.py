"""``core.http``: the back-off bound that deadlines are computed from holds for the real retry loop."""

from __future__ import annotations

import socket

import httpx
import pytest

from mlplatform.core import http


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("retries", [0, 1, 2, 4])
async def test_sleeps_stay_under_backoff_bound(retries, monkeypatch):
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(http.asyncio, "sleep", record)
    monkeypatch.setattr(http.random, "random", lambda: 0.999999)  # the longest jitter
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{_closed_port()}") as client:
        with pytest.raises(httpx.ConnectError):
            await http.request_with_retries(client, "GET", "/", retries=retries)
    assert len(slept) == retries
    assert slept == [pytest.approx(http.DEFAULT_BACKOFF_S * 2**a * 1.5, rel=1e-5) for a in range(retries)]
    assert sum(slept) <= http.backoff_bound_s(retries)
