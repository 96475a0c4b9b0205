"""Feature store killed mid-load.

Requirement: while the feature store is down, entity-based infers (which need it) fail fast with
a 503 and the ``{"error": ...}`` body naming the feature store; tensor infers (which do not) keep
succeeding; once the store is back on the same address, entity infers succeed again without
restarting serving.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import SERVED_MODEL, START_TIMEOUT_S, base_env, copy_feature_repo, start_all
from tests.faults.harness import Burst, Call, percentile, run_for, summary
from tests.helpers import wait_until
from tests.load.payloads import entity_request, tensor_request
from tests.procs import free_port, start_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

FAST_503_S = 2.0  # the serving feature lookup deadline is ~1.5 s with the default timeout and retry
RECOVERY_S = 10.0  # from the restarted store answering its readiness probe to entity infers succeeding


async def test_feature_store_killed_mid_load(demo_registry: Any, samples: list[dict], workdir: Path) -> None:
    data = copy_feature_repo(demo_registry, workdir / "data")
    env = base_env(demo_registry, data)
    logs = workdir / "logs"
    store_port = free_port()
    store, serving = await start_all(
        ("feature-store", env, logs, store_port),
        ("model-serving", {**env, "SERVING_FEATURE_STORE_URL": f"http://127.0.0.1:{store_port}"}, logs),
    )
    try:
        url = f"{serving.url}/v2/models/{SERVED_MODEL}/infer"

        def make(worker: int, i: int) -> Call:
            row = samples[(worker * 97 + i) % len(samples)]
            if i % 2:
                return Call("entity", url, entity_request([row]))
            return Call("tensor", url, tensor_request([row]))

        async with Burst(make, concurrency=4, interval_s=0.02) as burst:
            await burst.warmed_up()
            before = list(burst.results)
            assert before and all(o.ok for o in before), summary(before)

            store.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(store.proc.wait, 10)
            t_down = time.monotonic()
            await run_for(3.0)
            down_entity = burst.since(t_down, "entity")
            down_tensor = burst.since(t_down, "tensor")

            store = await asyncio.to_thread(
                start_service, "feature-store", env, logs, port=store.port, ready_timeout=START_TIMEOUT_S
            )
            t_ready = time.monotonic()
            t_back = await wait_until(
                lambda: any(o.ok for o in burst.since(time.monotonic() - 0.5, "entity")),
                RECOVERY_S,
                "entity infers to succeed again after the feature store came back",
            )
            await run_for(1.0)
            after = burst.since(t_back)

        assert serving.proc.poll() is None, "serving must not exit when the feature store dies"
        assert down_entity and down_tensor, summary(burst.results)
        # Entity infers during the outage: fast 503 with the error body naming the feature store.
        for o in down_entity:
            assert o.status == 503, f"entity infer during the outage: {o.status} {o.error} {o.body}"
            assert isinstance(o.body, dict) and set(o.body) == {"error"}, o.body
            assert "feature store" in o.body["error"], o.body
        lat = [o.latency for o in down_entity]
        assert max(lat) < FAST_503_S, f"slow 503s: p50={percentile(lat, 0.5):.3f}s max={max(lat):.3f}s"
        # Tensor infers never need the feature store.
        bad_tensor = [o for o in burst.results if o.kind == "tensor" and not o.ok]
        assert not bad_tensor, f"tensor infers failed: {summary(bad_tensor)}"
        # Recovery without restarting serving: everything after the store is back succeeds.
        assert after and all(o.ok for o in after), summary(after)
        assert t_back - t_ready < RECOVERY_S
    finally:
        serving.stop()
        store.stop()
