"""The shared test helpers (tests/helpers.py) do what the tests that use them rely on."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest
from fastapi import FastAPI

from tests.helpers import in_process, stop_process, v2_body, wait_until, wait_until_sync


def test_v2_body_types_columns_from_their_dtypes():
    frame = pd.DataFrame({"n": [1, 2], "x": [0.5, 1.5], "b": [True, False], "s": ["a", "b"]})
    assert v2_body(frame, request_id="r-1", parameters={"top_k": 2}) == {
        "inputs": [
            {"name": "n", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]},
            {"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        ],
        "id": "r-1",
        "parameters": {"top_k": 2},
    }


def test_v2_body_datatypes_pick_and_order_the_columns_and_values_go_uncast():
    frame = pd.DataFrame({"a": [1.5], "b": [2], "unused": [0]})
    body = v2_body(frame, {"b": "FP64", "a": "INT64"}, tensor={"binary": True})
    assert body == {
        "inputs": [
            {"name": "b", "shape": [1], "datatype": "FP64", "data": [2], "binary": True},
            {"name": "a", "shape": [1], "datatype": "INT64", "data": [1.5], "binary": True},
        ]
    }


async def test_wait_until_returns_when_true_and_names_what_it_waited_for():
    start = time.monotonic()
    calls = []
    t = await wait_until(lambda: calls.append(1) or len(calls) >= 3, 5.0, step_s=0.01)
    assert len(calls) == 3 and start < t <= time.monotonic()
    with pytest.raises(TimeoutError, match=r"after 0.05s waiting for the moon"):
        await wait_until(lambda: False, 0.05, "the moon", step_s=0.01)


def test_wait_until_sync_times_out_with_its_reason():
    assert wait_until_sync(lambda: True, 1.0) <= time.monotonic()
    with pytest.raises(TimeoutError, match="waiting for never"):
        wait_until_sync(lambda: False, 0.05, "never", step_s=0.01)


def test_stop_process_kills_what_ignores_sigterm():
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"1\n"  # the handler is installed
    assert stop_process(proc, grace_s=0.3) == -9
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_process(polite) == -15


async def test_in_process_runs_the_lifespan_and_answers_unhandled_errors_with_500():
    events: list[str] = []

    async def lifespan(_: FastAPI):  # noqa: ANN202
        events.append("start")
        yield
        events.append("stop")

    app = FastAPI(lifespan=lifespan)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    async with in_process(app) as client:
        assert events == ["start"]
        assert (await client.get("/boom")).status_code == 500
    assert events == ["start", "stop"]
