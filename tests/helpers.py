"""Helpers that tests in several folders share: one copy of each, imported from here.

Fixtures shared by a folder live in that folder's ``conftest.py``; helpers shared by one area live
in a small support module of that area (``tests/unit/serving/registry_models.py``,
``tests/deploy/rendered.py`` ...). Nothing here imports from a test module or a conftest
(``tests/test_test_imports.py`` enforces that for every module under ``tests/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx
import numpy as np
import pandas as pd

from mlplatform.core.logging import JsonFormatter


def _datatype(series: pd.Series) -> str:
    kind = series.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def v2_body(
    frame: pd.DataFrame,
    datatypes: Mapping[str, str] | None = None,
    *,
    request_id: str | None = None,
    tensor: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An Open Inference Protocol (V2) request with one ``[N]`` tensor per column of ``frame``.

    ``datatypes`` (column -> V2 datatype), when given, picks the columns to send, in its order, and
    their types; without it every column is sent with the type of its dtype (bool -> BOOL,
    integer -> INT64, float -> FP64, anything else -> BYTES). Values go as they are (no cast: a
    test may mean to send a float under INT64).
    ``request_id`` becomes the request's ``id``; ``tensor`` is merged into every input
    (``{"binary": True}``); ``extra`` into the body (``parameters=...``, ``outputs=...``).
    """
    columns = list(frame.columns) if datatypes is None else list(datatypes)
    inputs = []
    for name in columns:
        col = frame[name]
        datatype = datatypes[name] if datatypes is not None else _datatype(col)
        values = col.tolist()
        inputs.append(
            {"name": name, "shape": [len(values)], "datatype": datatype, "data": values, **(tensor or {})}
        )
    body: dict[str, Any] = {"inputs": inputs}
    if request_id:
        body["id"] = request_id
    body.update(extra)
    return body


def random_v2_body(
    meta: Mapping[str, Any], request_id: str, rng: np.random.Generator, rows: int
) -> dict[str, Any]:
    """A V2 request of ``rows`` random rows for every input of a model's V2 metadata ``meta``: FP
    inputs gamma(2, 20) rounded to 3 places, BOOL true 30% of the time, any other type integers 0-4
    (one draw from ``rng`` per input, in the metadata's order)."""
    inputs = []
    for spec in meta["inputs"]:
        dtype = spec["datatype"]
        if dtype.startswith("FP"):
            data = rng.gamma(2.0, 20.0, rows).round(3).tolist()
        elif dtype == "BOOL":
            data = (rng.random(rows) < 0.3).tolist()
        else:
            data = rng.integers(0, 5, rows).tolist()
        inputs.append({"name": spec["name"], "shape": [rows], "datatype": dtype, "data": data})
    return {"id": request_id, "inputs": inputs}


@contextlib.asynccontextmanager
async def in_process(app: Any, base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan (start-up on entry, shut-down on exit) and yield an httpx client that
    calls it in-process over ASGI. An exception the app leaves unhandled reaches the client as the
    500 a server would answer, not as a raise in the test."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


async def wait_until(
    predicate: Callable[[], object],
    deadline_s: float = 120.0,
    what: str = "condition",
    step_s: float = 0.05,
) -> float:
    """Poll ``predicate`` on the running event loop until it is truthy; return the monotonic time it
    became so. Raise ``TimeoutError`` naming ``what`` after ``deadline_s`` (a deadline, not a sleep)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return time.monotonic()
        await asyncio.sleep(step_s)
    raise TimeoutError(f"timed out after {deadline_s}s waiting for {what}")


def wait_until_sync(
    predicate: Callable[[], object],
    deadline_s: float = 120.0,
    what: str = "condition",
    step_s: float = 0.1,
) -> float:
    """The blocking twin of :func:`wait_until`, for tests and harnesses without an event loop."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return time.monotonic()
        time.sleep(step_s)
    raise TimeoutError(f"timed out after {deadline_s}s waiting for {what}")


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
    """Send ``sig`` (SIGTERM) to ``proc``, wait up to ``grace_s``, then SIGKILL; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@contextlib.contextmanager
def json_log(service: str, name: str) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """Logger ``name`` writing core logging's JSON lines (``service`` as the service) into a string
    buffer, not propagated to the root logger; yields both, and removes the handler on exit."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
