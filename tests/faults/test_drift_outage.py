"""Drift detection killed mid-load, then restarted.

Requirement: inference never fails and never slows beyond its budget because drift detection is
down (payload logging is off the request path); every record serving accepted is ingested by drift
detection exactly once after it comes back — counted by ``(prediction_id, row_index)`` (the id
serving assigned and returned in ``parameters.prediction_id``) in drift's own SQLite store.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import SERVED_MODEL, START_TIMEOUT_S, base_env, start_all
from tests.faults.harness import Burst, Call, percentile, run_for, summary
from tests.helpers import wait_until
from tests.load.payloads import tensor_request
from tests.procs import free_port, start_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

ROWS_PER_REQUEST = 2
INFER_P99_BUDGET_S = 0.5  # single-request p99 budget while drift detection is down (2 shared cores)


def _stored_keys(db: Path) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        return [(r, int(i)) for r, i in con.execute("SELECT prediction_id, row_index FROM drift_records")]
    except sqlite3.OperationalError:  # table not created yet
        return []
    finally:
        con.close()


async def test_drift_killed_mid_load_then_restarted(
    demo_registry: Any, samples: list[dict], workdir: Path
) -> None:
    env = base_env(demo_registry, workdir / "data")
    logs = workdir / "logs"
    drift_env = {**env, "DRIFT_RETRAIN_MODE": "off", "DRIFT_WINDOW_SIZE": "100000"}
    drift_port = free_port()
    serving_env = {
        **env,
        "SERVING_DRIFT_URL": f"http://127.0.0.1:{drift_port}",
        "SERVING_PAYLOAD_SAMPLE_RATE": "1.0",
        "SERVING_PAYLOAD_BATCH_SIZE": "20",
        "SERVING_PAYLOAD_FLUSH_INTERVAL_S": "0.2",
        "SERVING_PAYLOAD_SPOOL_DIR": str(workdir / "spool"),
    }
    drift, serving = await start_all(
        ("drift-detection", drift_env, logs, drift_port), ("model-serving", serving_env, logs)
    )
    try:
        url = f"{serving.url}/v2/models/{SERVED_MODEL}/infer"

        def make(worker: int, i: int) -> Call:
            start = (worker * 131 + i * ROWS_PER_REQUEST) % (len(samples) - ROWS_PER_REQUEST)
            rid = f"fault-drift-{worker}-{i}"
            return Call("tensor", url, tensor_request(samples[start : start + ROWS_PER_REQUEST], rid), rid)

        async with Burst(make, concurrency=4, interval_s=0.02) as burst:
            await burst.warmed_up()
            t_kill = time.monotonic()
            drift.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(drift.proc.wait, 10)
            await run_for(3.0)
            t_restart = time.monotonic()
            drift = await asyncio.to_thread(
                start_service,
                "drift-detection",
                drift_env,
                logs,
                port=drift.port,
                ready_timeout=START_TIMEOUT_S,
            )
            await run_for(1.0)

        results = burst.results
        failed = [o for o in results if not o.ok]
        assert not failed, f"inference failed while drift detection was down: {summary(failed)}"
        before = [o.latency for o in results if o.start < t_kill]
        during = [o.latency for o in burst.between(t_kill, t_restart)]
        assert during, "no requests were sent while drift detection was down"
        p99 = percentile(during, 0.99)
        assert p99 < INFER_P99_BUDGET_S, (
            f"p99 {p99:.3f}s while drift was down (before: p99 {percentile(before, 0.99):.3f}s); "
            f"budget {INFER_P99_BUDGET_S}s"
        )
        for o in results:
            assert o.body["id"] == o.request_id, o.body

        expected = {
            (o.body["parameters"]["prediction_id"], i) for o in results for i in range(ROWS_PER_REQUEST)
        }
        db = workdir / "data" / "drift" / "drift.db"
        await wait_until(
            lambda: len(_stored_keys(db)) >= len(expected),
            90.0,
            f"drift detection to hold all {len(expected)} accepted records",
            step_s=0.25,
        )
        keys = _stored_keys(db)
        assert len(keys) == len(set(keys)), "a record was stored twice"
        missing = expected - set(keys)
        extra = set(keys) - expected
        assert not missing, f"{len(missing)} accepted records never reached drift, e.g. {sorted(missing)[:3]}"
        assert not extra, f"{len(extra)} records stored that serving never accepted, e.g. {sorted(extra)[:3]}"
        assert serving.proc.poll() is None
    finally:
        serving.stop()
        drift.stop()
