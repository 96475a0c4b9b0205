"""Payload logger against a real drift-detection process that is stopped and restarted.

drift up -> records sent; drift down -> batches spooled on disk; drift back (same port, same
data directory) -> the spool drains; every submitted record is stored exactly once.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mlplatform.core.payloads import InferenceRecord
from mlplatform.drift.payload_logger import PayloadLogger
from mlplatform.drift.store import SqliteDriftStore
from tests.procs import free_port, start_service
from tests.unit.drift.tiny_registry import MODEL, make_frame

pytestmark = pytest.mark.integration


async def _until(predicate, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


def _records(start: int, n: int) -> list[InferenceRecord]:
    frame = make_frame(n, seed=start)
    feats = [c for c in frame.columns if c != "prediction"]
    return [
        InferenceRecord(
            request_id=f"outage-{start + i // 2}",
            row_index=i % 2,  # two rows per request
            model=MODEL,
            version="1",
            timestamp=time.time(),
            inputs={c: row[c] for c in feats},
            outputs={"fraud_probability": row["prediction"]},
        )
        for i, row in enumerate(frame.to_dict("records"))
    ]


async def test_every_record_arrives_exactly_once_across_an_outage(drift_registry, tmp_path):
    port = free_port()
    data_dir = tmp_path / "drift-data"
    env = {
        **drift_registry.env(),
        "MLPLATFORM_DATA_DIR": str(data_dir),
        "DRIFT_AUTH_ENABLED": "false",
        "DRIFT_WINDOW_SIZE": "100",
        "DRIFT_RETRAIN_MODE": "off",
    }
    registry = CollectorRegistry()
    logger = PayloadLogger(
        f"http://127.0.0.1:{port}",
        batch_size=20,
        sample_rate=1.0,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=50_000_000,
        flush_interval_s=0.1,
        registry=registry,
        retry_interval_s=0.2,
        timeout_s=20.0,  # the first batch waits for the service to fetch the reference from MLflow
    )

    def value(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    svc = start_service("drift-detection", env, tmp_path / "logs", port=port)
    await logger.start()
    try:
        for rec in _records(0, 150):
            logger.submit(rec)
        await _until(lambda: value("mlplatform_payload_records_sent_total") == 150)
        assert value("mlplatform_payload_records_spooled_total") == 0

        svc.stop()
        for rec in _records(1000, 230):  # drift is down: all of it must be spooled
            logger.submit(rec)
        await _until(lambda: value("mlplatform_payload_records_spooled_total") == 230)
        assert logger.spool_bytes > 0

        svc = start_service("drift-detection", env, tmp_path / "logs", port=port)
        for rec in _records(5000, 40):  # new traffic while the spool drains
            logger.submit(rec)
        await _until(lambda: value("mlplatform_payload_records_sent_total") == 150 + 230 + 40)
        await _until(lambda: logger.spool_bytes == 0)
        # re-sending the very first records again changes nothing (idempotent ingest)
        r = httpx.post(
            f"{svc.url}/v1/records",
            json={"records": [x.model_dump(mode="json") for x in _records(0, 10)]},
            timeout=10,
        )
        assert r.json()["accepted"] == 0 and r.json()["duplicates"] == 10
        status = httpx.get(f"{svc.url}/v1/models/{MODEL}/drift", timeout=10).json()
        assert status["window"] is not None
    finally:
        await logger.stop()
        svc.stop()
    store = SqliteDriftStore(data_dir / "drift" / "drift.db")
    keys = store.record_keys()
    store.close()
    expected = {
        (MODEL, "1", r.request_id, r.row_index) for r in _records(0, 150) + _records(1000, 230) + _records(5000, 40)
    }
    assert len(keys) == len(set(keys)) == 420
    assert set(keys) == expected
    assert (
        registry.get_sample_value("mlplatform_payload_records_dropped_total", {"reason": "spool_full"})
        is None
    )
