"""Outbound HTTP between services: pooled connections, timeouts, bounded retries, trace headers."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from mlplatform.core.tracing import inject_trace_headers

RETRYABLE_STATUS = frozenset({502, 503, 504})
#: First back-off of :func:`request_with_retries`, doubled on each retry (with jitter 0.5x..1.5x).
DEFAULT_BACKOFF_S = 0.05


def backoff_bound_s(retries: int, backoff_s: float = DEFAULT_BACKOFF_S) -> float:
    """An upper bound of the time :func:`request_with_retries` sleeps between ``retries + 1`` attempts:
    ``backoff_s * 2 ** (retries + 1)`` (the sleeps add up to at most 1.5 x ``backoff_s`` x (2^retries - 1))."""
    return backoff_s * 2 ** (retries + 1)


def build_async_client(
    base_url: str, *, timeout_s: float, max_connections: int = 64, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """A pooled async client with a total timeout per attempt."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        headers=headers,
    )


async def request_with_retries(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    retries: int = 2,
    backoff_s: float = DEFAULT_BACKOFF_S,
    **kwargs: Any,
) -> httpx.Response:
    """Send with W3C trace headers; retry connection errors, timeouts and 502/503/504 with jittered backoff.

    Raises the last ``httpx.HTTPError`` when every attempt fails; returns non-retryable responses as-is.
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        headers = inject_trace_headers(kwargs.pop("headers", None) or {})
        try:
            response = await client.request(method, url, headers=headers, **kwargs)
            if response.status_code not in RETRYABLE_STATUS or attempt == retries:
                return response
            last = httpx.HTTPStatusError(
                f"{response.status_code}", request=response.request, response=response
            )
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            last = exc
            if attempt == retries:
                raise
        kwargs["headers"] = headers
        await asyncio.sleep(backoff_s * (2**attempt) * (0.5 + random.random()))
    assert last is not None
    raise last
