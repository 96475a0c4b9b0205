"""Payload logger without a drift service: spooling, spool limit, queue limit, sampling."""

from __future__ import annotations

import asyncio
import time

import orjson
from prometheus_client import CollectorRegistry

from mlplatform.core.payloads import InferenceRecord
from mlplatform.drift.payload_logger import PayloadLogger
from tests.procs import free_port


def _record(i: int) -> InferenceRecord:
    return InferenceRecord(
        request_id=f"req-{i}",
        row_index=0,
        model="m",
        version="1",
        timestamp=time.time(),
        inputs={"amount": float(i), "hour": i % 24},
        outputs={"p": 0.5},
    )


def _value(registry: CollectorRegistry, name: str, labels: dict | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


async def _until(predicate, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


async def test_unreachable_drift_spools_atomically_then_drops_at_the_limit(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / ".tmp-half-written.json").write_bytes(b'{"records": [')  # left by a crash
    registry = CollectorRegistry()
    logger = PayloadLogger(
        f"http://127.0.0.1:{free_port()}",  # nothing listens there
        batch_size=10,
        sample_rate=1.0,
        spool_dir=spool,
        spool_max_bytes=6000,
        flush_interval_s=0.05,
        registry=registry,
        drain_timeout_s=0.3,
    )
    await logger.start()
    assert not list(spool.glob(".tmp-*"))
    for i in range(30):
        logger.submit(_record(i))
    await _until(lambda: _value(registry, "mlplatform_payload_records_spooled_total") == 30)
    files = sorted(spool.glob("*.json"))
    assert len(files) == 3
    assert [len(orjson.loads(f.read_bytes())["records"]) for f in files] == [10, 10, 10]
    assert _value(registry, "mlplatform_payload_spool_bytes") == sum(f.stat().st_size for f in files)

    for i in range(30, 60):  # the spool has room for a few more batches only
        logger.submit(_record(i))
    await logger.stop()
    spooled = _value(registry, "mlplatform_payload_records_spooled_total")
    dropped = _value(registry, "mlplatform_payload_records_dropped_total", {"reason": "spool_full"})
    assert dropped > 0 and spooled + dropped == 60
    assert logger.spool_bytes <= 6000
    kept = sum(len(orjson.loads(f.read_bytes())["records"]) for f in spool.glob("*.json"))
    assert kept == spooled
    assert _value(registry, "mlplatform_payload_records_undelivered_total") == kept
    assert _value(registry, "mlplatform_payload_records_submitted_total") == 60
    assert _value(registry, "mlplatform_payload_records_sent_total") == 0


async def test_queue_bound_and_sampling(tmp_path):
    registry = CollectorRegistry()
    logger = PayloadLogger(
        "http://127.0.0.1:9",
        batch_size=100,
        sample_rate=1.0,
        spool_dir=tmp_path,
        spool_max_bytes=10_000_000,
        flush_interval_s=60,
        registry=registry,
        max_queue=5,
    )
    for i in range(8):  # not started: the queue just fills up, submit never blocks
        logger.submit(_record(i))
    assert logger.queue_depth == 5
    assert _value(registry, "mlplatform_payload_queue_records") == 5
    # the overflow is spooled to disk (sent when the sender catches up), not dropped
    assert _value(registry, "mlplatform_payload_records_dropped_total", {"reason": "queue_full"}) == 0
    assert _value(registry, "mlplatform_payload_records_spooled_total") == 3
    spooled = [
        r["request_id"]
        for f in sorted(tmp_path.glob("*.json"))
        for r in orjson.loads(f.read_bytes())["records"]
    ]
    assert spooled == ["req-5", "req-6", "req-7"]

    sampled = PayloadLogger(
        "http://127.0.0.1:9",
        batch_size=100,
        sample_rate=0.25,
        spool_dir=tmp_path,
        spool_max_bytes=10_000_000,
        flush_interval_s=60,
        registry=CollectorRegistry(),
    )
    for i in range(2000):
        sampled.submit(_record(i))
    assert 350 < sampled.queue_depth < 650  # about a quarter, chosen by request id
    again = [sampled._sampled(f"req-{i}") for i in range(50)]
    assert again == [sampled._sampled(f"req-{i}") for i in range(50)]  # deterministic per request


def test_encode_records_is_the_document_pydantic_would_send():
    """The logger's cheap encoding equals ``model_dump(mode="json")`` per record, and drift detection's
    request model reads it back to the same records."""
    import numpy as np

    from mlplatform.core.payloads import encode_records
    from mlplatform.drift.schemas import IngestRequest

    records = [
        _record(1),
        InferenceRecord(
            request_id="r-2",
            row_index=3,
            model="fraud-detector",
            version="7",
            timestamp=1.5,
            inputs={"amount": float("nan"), "merchant_category": "grocery", "flag": True, "n": 2**40},
            outputs={"probability": np.float64(0.25), "label": 1},
            trace_id="5b8efff798038103d269b633813fc60c",
            span_id="b7ad6b7169203331",
        ),
        InferenceRecord.model_construct(
            request_id="r-3",
            row_index=0,
            model="m",
            version="1",
            timestamp=2.0,
            inputs={"x": -0.0},
            outputs={"p": 1e-300},
            trace_id="",
            span_id="",
        ),
    ]
    ours = encode_records(records)
    assert ours == orjson.dumps({"records": [r.model_dump(mode="json") for r in records]})
    back = IngestRequest.model_validate_json(ours).records
    assert [r.request_id for r in back] == ["req-1", "r-2", "r-3"]
    assert back[1].inputs["amount"] is None and back[1].outputs == {"probability": 0.25, "label": 1}


async def test_stop_with_a_backlog_and_a_slow_receiver_loses_nothing(tmp_path):
    """SIGTERM while a backlog is being sent to a slow receiver: the sender is cancelled mid-send
    (stop waits timeout_s + 1), and the batch it held is spooled and re-sent, not lost.

    The receiver is a minimal ASGI app under a real uvicorn server that answers ``POST /v1/records``
    like drift detection (200 after 0.2 s) and keeps what it got, unless the sender hung up first:
    a stand-in for a slow drift tier."""
    import threading

    import uvicorn

    received: set[str] = set()

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        try:  # 0.2 s of work; a sender that hangs up meanwhile gets nothing stored (the worst case)
            if (await asyncio.wait_for(receive(), 0.2))["type"] == "http.disconnect":
                return
        except TimeoutError:
            pass
        received.update(r["request_id"] for r in orjson.loads(body)["records"])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    await _until(lambda: server.started)
    registry = CollectorRegistry()
    logger = PayloadLogger(
        f"http://127.0.0.1:{port}",
        batch_size=10,
        sample_rate=1.0,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=10_000_000,
        flush_interval_s=0.05,
        registry=registry,
        timeout_s=0.5,
        drain_timeout_s=10.0,
    )
    await logger.start()
    try:
        for i in range(100):
            logger.submit_many([_record(i)])
        await asyncio.sleep(0.01)
        await logger.stop()
    finally:
        server.should_exit = True
        thread.join(10)
    assert received == {f"req-{i}" for i in range(100)}
    assert _value(registry, "mlplatform_payload_records_undelivered_total") == 0
    assert not list((tmp_path / "spool").iterdir())  # nothing left: no spool file, no log segment
