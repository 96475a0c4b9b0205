"""Ship inference records from model-serving to drift detection without ever blocking a request.

``submit`` samples (by request id, so every row of a sampled request is kept) and appends to a
bounded in-process queue; a background task sends batches to ``POST {url}/v1/records``. When
drift detection is unreachable (or answers 5xx/429) the batch is written to a disk spool —
``tmp`` file plus ``os.replace``, so a spool file is either complete or absent — and re-sent,
oldest first, once drift detection answers again. Drift detection ingests idempotently on
``(request_id, row_index)``, so a batch re-sent after an uncertain failure is not counted twice.

Records are only lost when the in-process queue is full, when the spool would exceed
``spool_max_bytes``, or when drift detection rejects a batch with a 4xx (a schema error that
re-sending cannot fix); each of these is counted in ``mlplatform_payload_records_dropped_total``
with its reason and logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from mlplatform.core.http import build_async_client, request_with_retries
from mlplatform.core.payloads import InferenceRecord, encode_records

log = logging.getLogger("mlplatform.payload_logger")

SPOOL_SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class PayloadLogger:
    """A :class:`~mlplatform.core.payloads.PayloadSink` that batches records to drift detection."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int,
        sample_rate: float,
        spool_dir: Path | str,
        spool_max_bytes: int,
        flush_interval_s: float,
        registry: CollectorRegistry,
        api_key: str | None = None,
        max_queue: int = 10_000,
        timeout_s: float = 5.0,
        retry_interval_s: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("sample_rate must be between 0 and 1")
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.sample_rate = sample_rate
        self.spool_dir = Path(spool_dir)
        self.spool_max_bytes = spool_max_bytes
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._queue: collections.deque[InferenceRecord] = collections.deque()
        self._qlock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._spool_bytes = 0
        self._down_until = 0.0
        self._stopping = False
        self._down = False
        self._queue_drops = 0

        self.m_submitted = Counter(
            "mlplatform_payload_records_submitted_total",
            "Records handed to the payload logger (before sampling).",
            registry=registry,
        )
        self.m_sampled_out = Counter(
            "mlplatform_payload_records_sampled_out_total",
            "Records skipped by sampling (sample_rate below 1).",
            registry=registry,
        )
        self.m_sent = Counter(
            "mlplatform_payload_records_sent_total",
            "Records drift detection acknowledged (including re-sent spooled records).",
            registry=registry,
        )
        self.m_spooled = Counter(
            "mlplatform_payload_records_spooled_total",
            "Records written to the disk spool because drift detection was unreachable.",
            registry=registry,
        )
        self.m_dropped = Counter(
            "mlplatform_payload_records_dropped_total",
            "Records lost: queue_full, spool_full or rejected (4xx from drift detection).",
            ["reason"],
            registry=registry,
        )
        self.m_spool_bytes = Gauge(
            "mlplatform_payload_spool_bytes", "Bytes held in the disk spool.", registry=registry
        )
        self.m_queue = Gauge(
            "mlplatform_payload_queue_records", "Records waiting in the in-process queue.", registry=registry
        )
        self.m_queue.set_function(lambda: len(self._queue))

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spool (dropping half-written temp files), then start the sender task."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for stray in self.spool_dir.glob(TMP_PREFIX + "*"):
            stray.unlink(missing_ok=True)
        self._spool_bytes = sum(p.stat().st_size for p in self._spool_files())
        self.m_spool_bytes.set(self._spool_bytes)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = build_async_client(self.url, timeout_s=self.timeout_s, headers=self._headers)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="payload-logger")

    async def stop(self) -> None:
        """Send what is queued (one attempt); what cannot be sent goes to the spool."""
        self._stopping = True
        if self._task is not None:
            if self._wake is not None:
                self._wake.set()
            try:  # let an in-flight send finish (bounded by the client timeout)
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self.timeout_s + 1.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        while True:
            batch = self._take(self.batch_size)
            if not batch:
                break
            if time.monotonic() < self._down_until or not await self._send(batch):
                self._spool(batch)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- request path ----------------------------------------------------------------------------
    def submit(self, record: InferenceRecord) -> None:
        """Queue a record; never blocks and never raises (drops are counted)."""
        self.m_submitted.inc()
        if self.sample_rate < 1.0 and not self._sampled(record.prediction_id or record.request_id):
            self.m_sampled_out.inc()
            return
        with self._qlock:
            if len(self._queue) >= self.max_queue:
                full = True
            else:
                full = False
                self._queue.append(record)
                depth = len(self._queue)
        if full:
            self.m_dropped.labels("queue_full").inc()
            self._queue_drops += 1
            if self._queue_drops % 1000 == 1:  # log the first drop and every 1000th, not each one
                log.warning(
                    "payload queue full (%d records); %d records dropped so far",
                    self.max_queue,
                    self._queue_drops,
                )
            return
        if depth >= self.batch_size:
            self._notify()

    def _sampled(self, request_id: str) -> bool:
        return (zlib.crc32(request_id.encode()) % 10_000) < self.sample_rate * 10_000

    def _notify(self) -> None:
        if self._wake is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _take(self, n: int) -> list[InferenceRecord]:
        with self._qlock:
            return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def spool_bytes(self) -> int:
        return self._spool_bytes

    # -- sender ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._drain_spool()
                while self._queue:
                    if len(self._queue) < self.batch_size and not self._flush_due():
                        break
                    batch = self._take(self.batch_size)
                    if time.monotonic() < self._down_until or not await self._send(batch):
                        self._spool(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the sender must survive anything; logged
                log.exception("payload logger iteration failed")
            self._last_flush = time.monotonic()

    _last_flush = 0.0

    def _flush_due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_interval_s * 0.9

    async def _send(self, batch: list[InferenceRecord]) -> bool:
        """POST one batch; True when it is settled (sent or rejected for good), False to spool it."""
        body = encode_records(batch)
        return await self._post(body, len(batch))

    async def _post(self, body: bytes, n: int) -> bool:
        assert self._client is not None
        try:
            response = await request_with_retries(
                self._client,
                "POST",
                "/v1/records",
                retries=0,
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self._mark_down(f"{type(exc).__name__}: {exc}")
            return False
        if response.status_code < 300:
            self.m_sent.inc(n)
            self._down_until = 0.0
            if self._down:
                log.warning("drift detection reachable again; re-sending %d spooled bytes", self._spool_bytes)
                self._down = False
            return True
        if response.status_code in RETRY_STATUS:
            self._mark_down(f"HTTP {response.status_code}")
            return False
        self.m_dropped.labels("rejected").inc(n)
        log.error(
            "drift detection rejected %d records with %d: %s", n, response.status_code, response.text[:500]
        )
        return True

    def _mark_down(self, why: str) -> None:
        if not self._down:
            log.warning("drift detection unreachable (%s); spooling to %s", why, self.spool_dir)
            self._down = True
        self._down_until = time.monotonic() + self.retry_interval_s

    # -- spool -----------------------------------------------------------------------------------
    def _spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*" + SPOOL_SUFFIX))

    def _spool(self, batch: list[InferenceRecord]) -> None:
        body = encode_records(batch)
        if self._spool_bytes + len(body) > self.spool_max_bytes:
            self.m_dropped.labels("spool_full").inc(len(batch))
            log.error(
                "payload spool full (%d of %d bytes): dropped %d records",
                self._spool_bytes,
                self.spool_max_bytes,
                len(batch),
            )
            return
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
        tmp = self.spool_dir / f"{TMP_PREFIX}{name}"
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.spool_dir / name)
        self._spool_bytes += len(body)
        self.m_spool_bytes.set(self._spool_bytes)
        self.m_spooled.inc(len(batch))

    async def _drain_spool(self) -> None:
        """Re-send spooled batches, oldest first, until one fails."""
        if self._spool_bytes == 0 or time.monotonic() < self._down_until:
            return
        for path in self._spool_files():
            if self._stopping:
                return
            try:
                body = path.read_bytes()
                n = len(orjson.loads(body)["records"])
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                log.error("unreadable spool file %s (%s); removing it", path, exc)
                self._unspool(path)
                continue
            if not await self._post(body, n):
                return
            self._unspool(path)

    def _unspool(self, path: Path) -> None:
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
        self._spool_bytes = max(0, self._spool_bytes - size)
        self.m_spool_bytes.set(self._spool_bytes)

    def stats(self) -> dict[str, Any]:
        """Counters as plain numbers (for logs and tests)."""
        return {
            "queue": len(self._queue),
            "spool_bytes": self._spool_bytes,
            "spool_files": len(self._spool_files()),
        }
