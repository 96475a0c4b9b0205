"""SIGTERM under load.

Requirement: serving stops accepting, lets in-flight requests finish with their answers, flushes
what it holds, and exits 0; nothing is half-written. Drift detection is unreachable for the whole
test, so every accepted payload record must end up in the disk spool: complete files only (no
temporary files left), and exactly the records of the requests that got a 200.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from mlplatform.drift.payload_logger import TMP_PREFIX
from mlplatform.drift.schemas import IngestRequest
from tests.faults.conftest import SERVED_MODEL, START_TIMEOUT_S, base_env
from tests.faults.harness import Burst, Call, run_for, summary
from tests.load.payloads import tensor_request
from tests.procs import free_port, start_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

ROWS = 40  # several records per request; requests are in flight inside the server at the signal
GRACE_S = 0.2  # requests sent this long before the signal have certainly reached the server


async def test_sigterm_under_load(demo_registry: Any, samples: list[dict], workdir: Path) -> None:
    spool = workdir / "spool"
    env = {
        **base_env(demo_registry, workdir / "data"),
        "SERVING_DRIFT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "SERVING_PAYLOAD_BATCH_SIZE": "50",
        "SERVING_PAYLOAD_FLUSH_INTERVAL_S": "0.2",
        "SERVING_PAYLOAD_SPOOL_DIR": str(spool),
        "SERVING_PAYLOAD_DRAIN_TIMEOUT_S": "1",  # drift stays down: stop trying after a second
    }
    serving = await asyncio.to_thread(
        start_service, "model-serving", env, workdir / "logs", ready_timeout=START_TIMEOUT_S
    )
    try:
        url = f"{serving.url}/v2/models/{SERVED_MODEL}/infer"

        def make(worker: int, i: int) -> Call:
            start = (worker * 59 + i * 7) % (len(samples) - ROWS)
            rid = f"sigterm-{worker}-{i}"
            return Call("tensor", url, tensor_request(samples[start : start + ROWS], rid), rid)

        async with Burst(make, concurrency=4, interval_s=0.01, timeout_s=30.0) as burst:
            await burst.warmed_up()
            await run_for(1.0)  # steady load before the signal
            t_sig = time.monotonic()
            serving.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(serving.proc.wait, 45)
            t_exit = time.monotonic()

        # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit too.
        assert code in (0, -signal.SIGTERM), f"serving exited with {code}:\n{serving.logs()[-3000:]}"
        results = burst.results
        server_errors = [o for o in results if o.status is not None and o.status != 200]
        assert not server_errors, f"error responses around SIGTERM: {summary(server_errors)}"
        early = [o for o in results if o.start < t_sig - GRACE_S]
        assert early and all(o.ok for o in early), f"requests sent before SIGTERM failed: {summary(early)}"
        drained = [o for o in results if o.start < t_sig < o.end and o.ok]
        assert drained, "no request was in flight at SIGTERM and answered: the drain was not exercised"
        after = [o for o in results if o.start > t_exit]
        assert all(not o.ok for o in after), "requests answered after the process exited?"

        # Nothing half-written: only complete spool files, exactly the accepted records.
        assert spool.is_dir()
        leftovers = [p.name for p in spool.iterdir() if p.name.startswith(TMP_PREFIX)]
        assert not leftovers, f"half-written spool files: {leftovers}"
        spooled: list[tuple[str, int]] = []
        for path in sorted(spool.glob("*.json")):
            doc = IngestRequest.model_validate_json(path.read_bytes())
            spooled.extend((r.request_id, r.row_index) for r in doc.all_records())
        accepted = {(o.request_id, i) for o in results if o.ok for i in range(ROWS)}
        assert len(spooled) == len(set(spooled)), "a record was spooled twice"
        missing = accepted - set(spooled)
        assert not missing, f"{len(missing)} accepted records lost at shutdown, e.g. {sorted(missing)[:3]}"
        assert set(spooled) <= accepted, "spooled records of requests that were not answered 200"
    finally:
        serving.stop()
