"""MLflow registry unavailable at start-up, and after start-up.

Requirement: serving started while nothing listens at its MLflow URI stays live but not ready and
keeps retrying with back-off; once a real ``mlflow server`` comes up at that address it loads the
model and becomes ready on its own. When the registry goes away after start-up, the loaded model
keeps serving (and readiness stays green) while the alias poller fails.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import SERVED_MODEL, base_env
from tests.faults.harness import Burst, Call, run_for, summary
from tests.faults.registry import MlflowServer, copy_registry
from tests.helpers import wait_until
from tests.load.payloads import tensor_request
from tests.procs import ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

#: From the registry answering /health to serving's readiness probe going green (download, load,
#: warm-up of one small model on 2 busy cores included).
READY_AFTER_REGISTRY_S = 90.0


def _spawn_serving(env: dict[str, str], logs: Path) -> ServiceProcess:
    """Start serving without waiting for readiness (it must not become ready yet)."""
    port = free_port()
    log_path = logs / f"model-serving-{port}.log"
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlplatform.cli", "serve", "model-serving", "--port", str(port)]
            + ["--host", "127.0.0.1"],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess("model-serving", port, proc, log_path)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=1.0).status_code
    except httpx.HTTPError:
        return None


async def test_registry_unavailable_at_startup_then_after(
    demo_registry: Any, samples: list[dict], workdir: Path
) -> None:
    backend = copy_registry(demo_registry, workdir / "registry")
    mlflow_port = free_port()
    registry = MlflowServer(backend, mlflow_port, workdir / "registry")
    env = {
        **base_env(demo_registry, workdir / "data"),
        "MLFLOW_TRACKING_URI": registry.url,
        "SERVING_LOAD_RETRY_INITIAL_S": "0.2",
        "SERVING_LOAD_RETRY_MAX_S": "1.0",
        "SERVING_POLL_INTERVAL_S": "0.5",
    }
    serving = _spawn_serving(env, workdir / "logs")
    try:
        live = f"{serving.url}/v2/health/live"
        ready = f"{serving.url}/v2/health/ready"
        await wait_until(lambda: _status(live) == 200, 120.0, "serving to be live")
        # Not ready while the registry is down, and it keeps retrying (more than one attempt logged).
        await wait_until(
            lambda: serving.logs().count("loading model") >= 3,
            180.0,  # the first attempt imports mlflow, slow on 2 busy cores
            "serving to retry loading the model at least 3 times",
        )
        assert _status(ready) == 503
        assert serving.proc.poll() is None
        infer_url = f"{serving.url}/v2/models/{SERVED_MODEL}/infer"
        r = httpx.post(infer_url, json=tensor_request(samples[:1]), timeout=5.0)
        assert r.status_code == 503 and "not loaded" in r.json()["error"], r.text

        await asyncio.to_thread(registry.start)
        await wait_until(
            lambda: _status(ready) == 200,
            READY_AFTER_REGISTRY_S,
            "serving to load the model once MLflow is up",
        )
        r = httpx.post(infer_url, json=tensor_request(samples[:4]), timeout=5.0)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == str(demo_registry.summary["models"][SERVED_MODEL]["version"])

        # Registry goes away after start-up: the loaded model keeps serving.
        def make(worker: int, i: int) -> Call:
            return Call("tensor", infer_url, tensor_request([samples[(worker * 53 + i) % len(samples)]]))

        async with Burst(make, concurrency=2, interval_s=0.02) as burst:
            await burst.warmed_up()
            registry.stop()
            t_down = time.monotonic()
            polls_before = serving.logs().count("alias poll for")
            await wait_until(
                lambda: serving.logs().count("alias poll for") > polls_before,
                30.0,
                "the alias poller to hit the stopped registry",
            )
            await run_for(1.0)
            assert _status(ready) == 200, "serving went not-ready when the registry went away"
        after = burst.since(t_down)
        assert after, "no requests after the registry stopped"
        failed = [o for o in burst.results if not o.ok]
        assert not failed, f"requests failed after the registry went away: {summary(failed)}"
    finally:
        registry.stop()
        serving.stop()
