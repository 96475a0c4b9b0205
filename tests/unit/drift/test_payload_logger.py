"""Payload logger without a drift service: spooling, spool limit, queue limit, sampling."""

from __future__ import annotations

import asyncio
import time

import orjson
from prometheus_client import CollectorRegistry

from mlplatform.core.payloads import InferenceRecord, PayloadBatch
from mlplatform.drift.payload_logger import PayloadLogger
from mlplatform.drift.schemas import IngestRequest
from tests.helpers import wait_until
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


def _batch(i: int) -> PayloadBatch:
    return PayloadBatch.from_records([_record(i)])


def _spooled(path) -> list[InferenceRecord]:  # noqa: ANN001
    """The records a spool file holds, as drift detection reads them."""
    return IngestRequest.model_validate_json(path.read_bytes()).all_records()


def _logger(url: str, spool_dir, registry: CollectorRegistry, **kw) -> PayloadLogger:  # noqa: ANN001
    """A logger to ``url`` keeping every record, batches of 10 flushed every 0.05 s, a 10 MB spool in
    ``spool_dir``; ``kw`` sets any other argument or overrides these."""
    args = dict(batch_size=10, sample_rate=1.0, spool_max_bytes=10_000_000, flush_interval_s=0.05)
    return PayloadLogger(url, spool_dir=spool_dir, registry=registry, **{**args, **kw})


def _value(registry: CollectorRegistry, name: str, labels: dict | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


async def test_unreachable_drift_spools_atomically_then_drops_at_the_limit(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / ".tmp-half-written.json").write_bytes(b'{"records": [')  # left by a crash
    registry = CollectorRegistry()
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    logger = _logger(nowhere, spool, registry, spool_max_bytes=6000, drain_timeout_s=0.3)
    await logger.start()
    assert not list(spool.glob(".tmp-*"))
    for i in range(30):
        logger.submit(_batch(i))
    await wait_until(
        lambda: _value(registry, "mlplatform_payload_records_spooled_total") == 30, 10.0, step_s=0.02
    )
    files = sorted(spool.glob("*.json"))
    assert len(files) == 3
    assert [len(_spooled(f)) for f in files] == [10, 10, 10]
    assert _value(registry, "mlplatform_payload_spool_bytes") == sum(f.stat().st_size for f in files)

    for i in range(30, 60):  # the spool has room for a few more batches only
        logger.submit(_batch(i))
    await logger.stop()
    spooled = _value(registry, "mlplatform_payload_records_spooled_total")
    dropped = _value(registry, "mlplatform_payload_records_dropped_total", {"reason": "spool_full"})
    assert dropped > 0 and spooled + dropped == 60
    assert logger.spool_bytes <= 6000
    kept = sum(len(_spooled(f)) for f in spool.glob("*.json"))
    assert kept == spooled
    assert _value(registry, "mlplatform_payload_records_undelivered_total") == kept
    assert _value(registry, "mlplatform_payload_records_submitted_total") == 60
    assert _value(registry, "mlplatform_payload_records_sent_total") == 0


async def test_queue_bound_and_sampling(tmp_path):
    registry = CollectorRegistry()
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    logger = _logger(nowhere, tmp_path, registry, batch_size=100, flush_interval_s=60, max_queue=5)
    await logger.start()
    for i in range(8):  # submit never blocks; past max_queue the oldest rows move to the disk spool
        logger.submit(_batch(i))
    # the spill takes rows off the queue first, then writes them in a worker thread: wait for both
    spooled = "mlplatform_payload_records_spooled_total"
    await wait_until(lambda: logger.queue_depth == 5 and _value(registry, spooled) == 3, 10.0, step_s=0.02)
    assert _value(registry, "mlplatform_payload_queue_records") == 5
    assert _value(registry, "mlplatform_payload_records_dropped_total", {"reason": "queue_full"}) == 0
    assert _value(registry, "mlplatform_payload_records_spooled_total") == 3
    spooled = [r.request_id for f in sorted(tmp_path.glob("*.json")) for r in _spooled(f)]
    assert spooled == ["req-0", "req-1", "req-2"]
    await logger.stop()

    # a queue the spool cannot drain (no event loop running the spill): bounded at 4 x max_queue
    stuck_registry = CollectorRegistry()
    stuck = _logger(
        "http://127.0.0.1:9",
        tmp_path / "stuck",
        stuck_registry,
        batch_size=100,
        flush_interval_s=60,
        max_queue=5,
    )
    for i in range(25):
        stuck.submit(_batch(i))
    assert stuck.queue_depth == 20
    assert _value(stuck_registry, "mlplatform_payload_records_dropped_total", {"reason": "queue_full"}) == 5

    sampled = _logger(
        "http://127.0.0.1:9",
        tmp_path,
        CollectorRegistry(),
        batch_size=100,
        flush_interval_s=60,
        sample_rate=0.25,
    )
    for i in range(2000):
        sampled.submit(_batch(i))
    assert 350 < sampled.queue_depth < 650  # about a quarter, chosen by request id
    again = [sampled._sampled(f"req-{i}") for i in range(50)]
    assert again == [sampled._sampled(f"req-{i}") for i in range(50)]  # deterministic per request


def test_batches_read_back_as_the_records_they_hold():
    """The columnar document serving sends (numpy columns, one per input and output) is read by drift
    detection's request model as one record per row, equal to the records pydantic would build."""
    import numpy as np

    from mlplatform.core.payloads import encode_batches

    matrix = np.array([[1.5, 3.0], [float("nan"), 7.0]])
    batch = PayloadBatch(
        request_id="r-2",
        prediction_id="pid-2",
        model="fraud-detector",
        version="7",
        timestamp=1.5,
        names=("amount", "hour"),
        matrix=matrix,
        extra={"user_id": [11, 12]},
        outputs={"probability": np.array([0.25, 1e-300]), "label": np.array([1, 0])},
        n_rows=2,
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id="b7ad6b7169203331",
    )
    columns = PayloadBatch(
        request_id="r-3",
        prediction_id="pid-3",
        model="m",
        version="1",
        timestamp=2.0,
        names=("merchant_category", "flag"),
        columns={"merchant_category": np.array(["grocery"], dtype=object), "flag": np.array([True])},
        outputs={"p": np.array([-0.0])},
        n_rows=1,
    )
    back = IngestRequest.model_validate_json(encode_batches([batch, columns])).all_records()
    expected = [
        InferenceRecord(
            request_id="r-2",
            prediction_id="pid-2",
            row_index=i,
            model="fraud-detector",
            version="7",
            timestamp=1.5,
            inputs={"amount": a, "hour": h, "user_id": u},
            outputs={"probability": p, "label": lab},
            trace_id="5b8efff798038103d269b633813fc60c",
            span_id="b7ad6b7169203331",
        )
        for i, (a, h, u, p, lab) in enumerate([(1.5, 3.0, 11, 0.25, 1), (None, 7.0, 12, 1e-300, 0)])
    ] + [
        InferenceRecord(
            request_id="r-3",
            prediction_id="pid-3",
            model="m",
            version="1",
            timestamp=2.0,
            inputs={"merchant_category": "grocery", "flag": True},
            outputs={"p": -0.0},
        )
    ]
    assert [r.model_dump() for r in back] == [r.model_dump() for r in expected]
    # columns of different lengths are a 422 naming the batch, not a half-stored request
    bad = orjson.loads(encode_batches([batch]))
    bad["batches"][0]["inputs"]["hour"] = [1.0]
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="one value per row"):
        IngestRequest.model_validate(bad)


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
        received.update(r.request_id for r in IngestRequest.model_validate_json(body).all_records())
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
    await wait_until(lambda: server.started, 10.0, step_s=0.02)
    registry = CollectorRegistry()
    logger = _logger(
        f"http://127.0.0.1:{port}", tmp_path / "spool", registry, timeout_s=0.5, drain_timeout_s=10.0
    )
    await logger.start()
    try:
        for i in range(100):
            logger.submit(_batch(i))
        await asyncio.sleep(0.01)
        await logger.stop()
    finally:
        server.should_exit = True
        thread.join(10)
    assert received == {f"req-{i}" for i in range(100)}
    assert _value(registry, "mlplatform_payload_records_undelivered_total") == 0
    assert not list((tmp_path / "spool").iterdir())  # nothing left: no spool file, no log segment
