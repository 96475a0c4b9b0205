"""Helpers that tests in several folders share: one copy of each, imported from here.

Fixtures shared by a folder live in that folder's ``conftest.py``; helpers shared by one area live
in a small support module of that area (``tests/unit/serving/registry_models.py``,
``tests/deploy/rendered.py`` ...). Nothing here imports from a test module or a conftest
(``tests/test_test_imports.py`` enforces that for every module under ``tests/``).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

_CASTS = {"INT64": "int64", "FP64": "float64", "FP32": "float32", "BOOL": "bool"}


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
    *,
    columns: Iterable[str] | None = None,
    datatypes: Mapping[str, str] | None = None,
    request_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An Open Inference Protocol (V2) request with one ``[N]`` tensor per column of ``frame``.

    ``columns`` picks and orders the columns (default: all, in frame order). A column's datatype
    comes from ``datatypes`` when it names it, else from the column's dtype (bool -> BOOL,
    integer -> INT64, float -> FP64, anything else -> BYTES); the values are cast to that type.
    ``request_id`` becomes the request's ``id``; ``extra`` is merged into the body
    (``parameters=...``, ``outputs=...``).
    """
    inputs = []
    for name in frame.columns if columns is None else columns:
        col = frame[name]
        datatype = (datatypes or {}).get(name) or _datatype(col)
        cast = _CASTS.get(datatype)
        values = (col.astype(cast) if cast else col.astype(str)).tolist()
        inputs.append({"name": name, "shape": [len(values)], "datatype": datatype, "data": values})
    body: dict[str, Any] = {"inputs": inputs}
    if request_id:
        body["id"] = request_id
    body.update(extra)
    return body


async def wait_until(
    predicate: Callable[[], object],
    deadline_s: float = 60.0,
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
    deadline_s: float = 60.0,
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


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 20.0) -> int | None:
    """SIGTERM ``proc``, wait up to ``grace_s``, then SIGKILL; return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode
