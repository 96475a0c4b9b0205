"""Payload logger against a real drift-detection process that is stopped and restarted.

drift up -> records sent; drift down -> batches spooled on disk; drift back (same port, same
data directory) -> the spool drains; every submitted record is stored exactly once.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mlplatform.core.payloads import InferenceRecord, PayloadBatch
from mlplatform.drift.payload_logger import PayloadLogger
from mlplatform.drift.schemas import IngestRequest
from mlplatform.drift.store import SqliteDriftStore
from tests.helpers import wait_until
from tests.integration.drift.support import drift_env
from tests.procs import free_port, start_service
from tests.unit.drift.tiny_registry import MODEL, make_frame

pytestmark = pytest.mark.integration


def _submit(logger: PayloadLogger, records: list[InferenceRecord]) -> None:
    """Hand ``records`` to the logger the way serving does: one batch per request (two rows each)."""
    by_request: dict[str, list[InferenceRecord]] = {}
    for r in records:
        by_request.setdefault(r.request_id, []).append(r)
    for rows in by_request.values():
        logger.submit(PayloadBatch.from_records(sorted(rows, key=lambda r: r.row_index)))


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


def _logger(port: int, spool, registry: CollectorRegistry, **kw) -> PayloadLogger:
    args = dict(
        batch_size=20,
        sample_rate=1.0,
        spool_dir=spool,
        spool_max_bytes=50_000_000,
        flush_interval_s=0.1,
        registry=registry,
        retry_interval_s=0.2,
        timeout_s=20.0,  # the first batch waits for the service to fetch the reference from MLflow
    )
    return PayloadLogger(f"http://127.0.0.1:{port}", **{**args, **kw})


async def test_every_record_arrives_exactly_once_across_an_outage(drift_registry, tmp_path):
    port = free_port()
    data_dir = tmp_path / "drift-data"
    env = drift_env(drift_registry, tmp_path, 100)  # its data in data_dir
    registry = CollectorRegistry()
    logger = _logger(port, tmp_path / "spool", registry)

    def value(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    svc = start_service("drift-detection", env, tmp_path / "logs", port=port)
    await logger.start()
    try:
        _submit(logger, _records(0, 150))
        await wait_until(lambda: value("mlplatform_payload_records_sent_total") == 150)
        assert value("mlplatform_payload_records_spooled_total") == 0

        svc.stop()
        _submit(logger, _records(1000, 230))  # drift is down: all of it must be spooled
        await wait_until(lambda: value("mlplatform_payload_records_spooled_total") == 230)
        assert logger.spool_bytes > 0

        svc = start_service("drift-detection", env, tmp_path / "logs", port=port)
        _submit(logger, _records(5000, 40))  # new traffic while the spool drains
        await wait_until(lambda: value("mlplatform_payload_records_sent_total") == 150 + 230 + 40)
        await wait_until(lambda: logger.spool_bytes == 0)
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
        (MODEL, "1", r.request_id, r.row_index)
        for r in _records(0, 150) + _records(1000, 230) + _records(5000, 40)
    }
    assert len(keys) == len(set(keys)) == 420
    assert set(keys) == expected
    assert (
        registry.get_sample_value("mlplatform_payload_records_dropped_total", {"reason": "spool_full"})
        is None
    )


async def test_a_killed_process_loses_nothing_and_sigterm_drains_the_spool(drift_registry, tmp_path):
    """A crashed serving process (no stop, records still queued) leaves its write-ahead log; the next
    process on the same volume (a container restart) delivers it. A stopping process (SIGTERM) keeps
    sending the spool until drift detection takes it, within drain_timeout_s."""
    port = free_port()
    env = drift_env(drift_registry, tmp_path, 1000)
    spool = tmp_path / "spool"
    crashed = _logger(port, spool, CollectorRegistry(), flush_interval_s=3600, batch_size=10_000)
    await crashed.start()
    first = _records(0, 50)
    for i in range(0, 50, 10):  # five chunks of five requests, none sent yet (drift is not even up)
        _submit(crashed, first[i : i + 10])
    assert crashed.queue_depth == 50 and list(spool.glob("wal-*.jsonl"))
    crashed._task.cancel()  # the process dies: no stop(), no flush  # noqa: SLF001

    svc = start_service("drift-detection", env, tmp_path / "logs", port=port)
    registry = CollectorRegistry()
    restarted = _logger(port, spool, registry, drain_timeout_s=60.0)
    await restarted.start()  # replays the log through the spool
    try:
        await wait_until(
            lambda: (registry.get_sample_value("mlplatform_payload_records_sent_total") or 0) == 50
        )
        assert not list(spool.glob("wal-*.jsonl")) or all(
            p.stat().st_size == 0 for p in spool.glob("wal-*.jsonl")
        )
        svc.stop()
        second = _records(2000, 60)
        _submit(restarted, second)
        await wait_until(
            lambda: (
                (registry.get_sample_value("mlplatform_payload_records_spooled_total") or 0) == 50 + 60
            )  # the 50 replayed from the log went through the spool too
        )
        svc = start_service("drift-detection", env, tmp_path / "logs", port=port)
        await restarted.stop()  # SIGTERM: the spool is sent before the process exits
        assert restarted.spool_bytes == 0
        assert (registry.get_sample_value("mlplatform_payload_records_undelivered_total") or 0) == 0
        assert not list(spool.glob("*.json")) and not list(spool.glob("wal-*.jsonl"))
    finally:
        svc.stop()
    store = SqliteDriftStore(tmp_path / "drift-data" / "drift" / "drift.db")
    keys = store.record_keys()
    store.close()
    expected = {(MODEL, "1", r.request_id, r.row_index) for r in first + second}
    assert len(keys) == len(expected) and set(keys) == expected


async def test_records_left_at_shutdown_are_counted_not_lost_silently(tmp_path):
    registry = CollectorRegistry()
    logger = _logger(free_port(), tmp_path / "spool", registry, drain_timeout_s=0.5)  # nothing listens
    await logger.start()
    _submit(logger, _records(0, 30))
    await logger.stop()
    assert registry.get_sample_value("mlplatform_payload_records_undelivered_total") == 30
    # they stay on the volume: a restarted container sends them
    assert (
        sum(
            len(IngestRequest.model_validate_json(p.read_bytes()).all_records())
            for p in (tmp_path / "spool").glob("*.json")
        )
        == 30
    )
