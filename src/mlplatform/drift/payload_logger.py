"""Ship inference records from model-serving to drift detection without ever blocking a request.

``submit`` takes the rows of one request as a columnar :class:`~mlplatform.core.payloads.PayloadBatch`,
samples it (by prediction id, so every row of a sampled request is kept), appends it to the in-process
queue and to a write-ahead log file in the spool folder (one ``write`` per request, no fsync: it
survives the process being killed, which is what a container restart is); a background task sends
batches to ``POST {url}/v1/records`` (``{"batches": [...]}``). Disk spool writes (with their fsync)
run in a worker thread, never on the event loop. When drift detection is unreachable (or
answers 5xx/429) the batch is written to a disk spool — ``tmp`` file plus ``os.replace``, so a spool
file is either complete or absent — and re-sent, oldest first, once drift detection answers again.
Once every logged record is settled (sent, spooled or dropped) the write-ahead log is truncated; at
start-up, records left in it by a killed process are re-queued through the spool. Drift detection
ingests idempotently on ``(model, version, prediction_id, row_index)``, so a batch re-sent after an
uncertain failure, or replayed from the log, is not counted twice.

On shutdown (SIGTERM) the logger keeps sending the queue and the spool for up to ``drain_timeout_s``
(set below the pod's termination grace period). Records still in the spool then are counted in
``mlplatform_payload_records_undelivered_total`` and logged: they are delivered later if the pod's
volume survives (a container restart), lost if the pod is deleted.

When the in-process queue holds more than ``max_queue`` rows (drift detection slower than this
replica's traffic), a spill task moves the oldest of them to the disk spool (in a worker thread).
Records are only dropped when the spool would exceed ``spool_max_bytes`` (or cannot be written), when
the queue reaches four times ``max_queue`` because the disk cannot keep up either (``queue_full``), or
when drift detection rejects a batch with a 4xx (a schema error that re-sending cannot fix); each of
these is counted in ``mlplatform_payload_records_dropped_total`` with its reason and logged.

A POST (and a spool file, re-sent as one POST) holds at most ``batch_size`` rows and, whole requests
permitting, at most ``max_body_bytes`` bytes (default 3 MiB, under drift detection's 4 MiB body limit):
a text model's rows are large, and a body over the limit would be refused for good. Only one request
whose own rows exceed the limit travels alone, and is refused if it is over drift detection's limit.
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
from prometheus_client import CollectorRegistry

from mlplatform.core.http import build_async_client, request_with_retries
from mlplatform.core.payloads import PayloadBatch, encode_batches
from mlplatform.drift.metrics import PayloadMetrics

log = logging.getLogger("mlplatform.payload_logger")

SPOOL_SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
WAL_PREFIX = "wal-"
WAL_SUFFIX = ".jsonl"


class _Segment:
    """One write-ahead log file and how many of its records are not settled yet."""

    __slots__ = ("path", "fd", "written", "pending", "closed")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.written = 0
        self.pending = 0
        self.closed = False


RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: bytes per POST body by default: under drift detection's default 4 MiB request body limit
MAX_BODY_BYTES = 3 * 1024 * 1024


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
        drain_timeout_s: float = 20.0,
        max_body_bytes: int = MAX_BODY_BYTES,
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
        self.drain_timeout_s = drain_timeout_s
        self.max_body_bytes = max_body_bytes
        # write-ahead log segments, oldest first; records settle in queue (FIFO) order
        self._segments: collections.deque[_Segment] = collections.deque()
        self._segment_records = max(10_000, 8 * batch_size)
        self._wal_open = False
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._queue: collections.deque[PayloadBatch] = collections.deque()
        self._queued_rows = 0
        self._spill_task: asyncio.Task[None] | None = None
        self._qlock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._spool_bytes = 0
        self._down_until = 0.0
        self._stopping = False
        self._down = False
        self._queue_drops = 0  # records that found the queue full (spooled instead)
        self._spool_lock = threading.Lock()

        self.metrics = PayloadMetrics(registry)  # families: core/metrics_catalogue.yaml
        self.metrics.queue.set_function(lambda: self._queued_rows)

    # -- lifecycle -------------------------------------------------------------------------------
    def set_api_key(self, api_key: str | None) -> None:
        """Send ``api_key`` from the next batch on (a rotated secret, no restart)."""
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        client = getattr(self, "_client", None)
        if client is not None:
            client.headers.pop("Authorization", None)
            client.headers.update(self._headers)

    async def start(self) -> None:
        """Open the spool (dropping half-written temp files), then start the sender task."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for stray in self.spool_dir.glob(TMP_PREFIX + "*"):
            stray.unlink(missing_ok=True)
        self._spool_bytes = sum(p.stat().st_size for p in self._spool_files())
        self._recover_wal()
        self._wal_open = True
        self.metrics.spool_bytes.set(self._spool_bytes)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = build_async_client(self.url, timeout_s=self.timeout_s, headers=self._headers)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="payload-logger")

    async def stop(self) -> None:
        """Drain: send the queue and the spool for up to ``drain_timeout_s``; count what is left."""
        deadline = time.monotonic() + self.drain_timeout_s
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
        if self._spill_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._spill_task
            self._spill_task = None
        while True:
            batch = self._take(self.batch_size)
            if not batch:
                break
            await self._deliver(batch, give_up_at=deadline)
        # re-send the spool until it is empty or the grace period is used up
        self._down_until = 0.0
        while self._spool_bytes > 0 and time.monotonic() < deadline:
            if await self._drain_spool(deadline):
                break
            await asyncio.sleep(min(self.retry_interval_s, max(0.0, deadline - time.monotonic())))
        left = self._spooled_records()
        if left:
            self.metrics.undelivered.inc(left)
            log.error(
                "stopping with %d payload records undelivered in the spool %s (drift detection unreachable "
                "for %.0f s): delivered after a container restart, lost if the pod is deleted",
                left,
                self.spool_dir,
                self.drain_timeout_s,
                extra={"undelivered_records": left},
            )
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        with self._qlock:
            self._wal_open = False
            while self._segments:  # settled segments go; one with records still pending stays
                seg = self._segments.popleft()
                self._close_segment(seg, unlink=seg.pending == 0)

    async def _deliver(self, batch: list[PayloadBatch], give_up_at: float | None = None) -> None:
        """Send batches taken off the queue, or spool them (in a worker thread); they are settled
        either way, also when the task is cancelled mid-send (they go to the spool: nothing taken is
        ever lost)."""
        try:
            now = time.monotonic()
            if now < self._down_until or (give_up_at is not None and now >= give_up_at):
                unsent = batch
            else:
                unsent = await self._send(batch)
            if unsent:
                await asyncio.to_thread(self._spool, unsent)
        except asyncio.CancelledError:
            self._spool(batch)  # drift detection may have it too: ingest is idempotent
            raise
        finally:
            self._settle(batch)

    # -- request path ----------------------------------------------------------------------------
    def submit(self, batch: PayloadBatch) -> None:
        """Queue the rows of one request and log them ahead; never blocks and never raises (drops are
        counted)."""
        n = batch.n_rows
        if n == 0:
            return
        self.metrics.submitted.inc(n)
        if self.sample_rate < 1.0 and not self._sampled(batch.prediction_id or batch.request_id):
            self.metrics.sampled_out.inc(n)
            return
        with self._qlock:
            if self._queued_rows + n > 4 * self.max_queue:
                full = True
            else:
                full = False
                self._log_ahead(batch)
                self._queue.append(batch)
                self._queued_rows += n
            depth = self._queued_rows
        if full:
            # neither drift detection nor the disk keeps up with this replica's traffic
            self.metrics.dropped.labels("queue_full").inc(n)
            self._queue_drops += n
            if self._queue_drops == n or self._queue_drops // 1000 > (self._queue_drops - n) // 1000:
                log.error(
                    "payload queue full (%d rows) and the spool cannot keep up: %d rows dropped so far",
                    4 * self.max_queue,
                    self._queue_drops,
                )
            return
        if depth > self.max_queue:
            self._start_spill()
        if depth >= self.batch_size:
            self._notify()

    def _start_spill(self) -> None:
        """Queue over ``max_queue``: move its oldest rows to the disk spool (a task, writes in a thread)."""
        if self._spill_task is not None or self._loop is None or self._stopping:
            return
        if self._on_own_loop():
            self._spill_task = self._loop.create_task(self._spill(), name="payload-spill")
        else:
            self._loop.call_soon_threadsafe(self._start_spill)

    async def _spill(self) -> None:
        try:
            while self._queued_rows > self.max_queue and not self._stopping:
                batch = self._take(min(self.batch_size * 4, self._queued_rows - self.max_queue))
                if not batch:
                    break
                try:
                    await asyncio.to_thread(self._spool, batch)
                except OSError as exc:
                    rows = sum(b.n_rows for b in batch)
                    self.metrics.dropped.labels("queue_full").inc(rows)
                    log.error(
                        "payload queue over its bound and the spool is not writable (%s): %d rows dropped",
                        exc,
                        rows,
                    )
                finally:
                    self._settle(batch)
                if self._spill_log_due():
                    log.warning(
                        "payload queue over %d rows (drift detection slower than this replica): "
                        "%d rows moved to the disk spool so far",
                        self.max_queue,
                        int(self.metrics.spooled._value.get()),
                    )
        finally:
            self._spill_task = None

    _last_spill_log = 0.0

    def _spill_log_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_spill_log >= 10.0:
            self._last_spill_log = now
            return True
        return False

    # -- write-ahead log -------------------------------------------------------------------------
    def _log_ahead(self, batch: PayloadBatch) -> None:
        """Append one request's rows to the write-ahead log (caller holds ``_qlock``)."""
        if not self._wal_open:
            return
        try:
            seg = self._segments[-1] if self._segments else None
            if seg is None or seg.written >= self._segment_records:
                seg = _Segment(self.spool_dir / f"{WAL_PREFIX}{time.time_ns():020d}{WAL_SUFFIX}")
                self._segments.append(seg)
            os.write(seg.fd, batch.encode() + b"\n")
            seg.written += batch.n_rows
            seg.pending += batch.n_rows
            batch.segment = seg
        except OSError as exc:  # a full disk must not fail predictions; the queue still has them
            log.error("cannot write the payload write-ahead log: %s", exc)

    def _settle(self, batches: list[PayloadBatch]) -> None:
        """These batches left the queue for good (sent, spooled or dropped): delete the log segments
        that hold nothing pending any more (except the one being written)."""
        with self._qlock:
            for batch in batches:
                seg = batch.segment
                if seg is not None:
                    seg.pending -= batch.n_rows
                    batch.segment = None
            while self._segments:
                seg = self._segments[0]
                if seg.pending > 0:
                    break
                if len(self._segments) == 1 and seg.written < self._segment_records:
                    break  # the segment being written: kept open
                self._segments.popleft()
                self._close_segment(seg, unlink=True)
            # a later segment may be fully settled before an older one: delete it too
            for seg in [sg for sg in list(self._segments)[:-1] if sg.pending == 0]:
                self._segments.remove(seg)
                self._close_segment(seg, unlink=True)

    @staticmethod
    def _close_segment(seg: _Segment, *, unlink: bool) -> None:
        if not seg.closed:
            os.close(seg.fd)
            seg.closed = True
        if unlink:
            seg.path.unlink(missing_ok=True)

    def _recover_wal(self) -> None:
        """Records a killed process logged ahead but may not have settled: into the spool (drift
        detection drops the ones it already has)."""
        paths = sorted(self.spool_dir.glob(f"{WAL_PREFIX}*{WAL_SUFFIX}"))
        records: list[Any] = []  # lines written by versions that logged a record per row
        batches: list[bytes] = []
        rows = 0
        for path in paths:
            for line in path.read_bytes().splitlines():
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # the last line of a killed write
                if "row_index" in doc:
                    records.append(doc)
                else:
                    batches.append(line)
                    rows += _batch_rows(doc)
        if records:
            self._write_spool(orjson.dumps({"records": records}), len(records))
        for i in range(0, len(batches), max(1, self.batch_size)):
            for chunk in _groups(batches[i : i + self.batch_size], self.max_body_bytes):
                body = b'{"batches":[' + b",".join(chunk) + b"]}"
                self._write_spool(body, _spooled_rows(body))
        if records or batches:
            log.warning(
                "recovered %d payload records from the write-ahead log of a stopped process",
                len(records) + rows,
            )
        for path in paths:
            path.unlink()

    def _sampled(self, request_id: str) -> bool:
        return (zlib.crc32(request_id.encode()) % 10_000) < self.sample_rate * 10_000

    def _notify(self) -> None:
        if self._wake is None or self._loop is None:
            return
        if self._on_own_loop():
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _on_own_loop(self) -> bool:
        """Whether the caller runs on the logger's event loop (else it hands work over with
        ``call_soon_threadsafe``: ``submit`` is called from any thread)."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _take(self, n: int) -> list[PayloadBatch]:
        """The oldest queued requests, at least ``n`` rows of them (or all)."""
        taken: list[PayloadBatch] = []
        rows = 0
        with self._qlock:
            queue = self._queue
            while queue and rows < n:
                batch = queue.popleft()
                taken.append(batch)
                rows += batch.n_rows
            self._queued_rows -= rows
        return taken

    @property
    def queue_depth(self) -> int:
        """Rows waiting in the in-process queue."""
        return self._queued_rows

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
                while self._queue and not self._stopping:  # stop() drains the rest itself
                    if self._queued_rows < self.batch_size and not self._flush_due():
                        break
                    await self._deliver(self._take(self.batch_size))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the sender must survive anything; logged
                log.exception("payload logger iteration failed")
            self._last_flush = time.monotonic()

    _last_flush = 0.0

    def _flush_due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_interval_s * 0.9

    async def _send(self, batch: list[PayloadBatch]) -> list[PayloadBatch]:
        """POST queued requests, in bodies of at most ``max_body_bytes``; returns the ones to spool
        (not settled: drift detection unreachable or busy), from the first body that failed on."""
        groups = _groups([b.encode() for b in batch], self.max_body_bytes)
        start = 0
        for group in groups:
            part = batch[start : start + len(group)]
            if not await self._post(encode_batches(part), sum(b.n_rows for b in part)):
                return batch[start:]
            start += len(group)
        return []

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
            self.metrics.sent.inc(n)
            self._down_until = 0.0
            if self._down:
                log.warning("drift detection reachable again; re-sending %d spooled bytes", self._spool_bytes)
                self._down = False
            return True
        if response.status_code in RETRY_STATUS:
            self._mark_down(f"HTTP {response.status_code}")
            return False
        self.metrics.dropped.labels("rejected").inc(n)
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

    def _spool(self, batch: list[PayloadBatch]) -> None:
        start = 0
        for group in _groups([b.encode() for b in batch], self.max_body_bytes):
            part = batch[start : start + len(group)]
            self._write_spool(encode_batches(part), sum(b.n_rows for b in part))
            start += len(group)

    def _write_spool(self, body: bytes, n: int) -> None:
        with self._spool_lock:  # the request path spools queue overflow; the sender spools and unspools
            self._write_spool_locked(body, n)

    def _write_spool_locked(self, body: bytes, n: int) -> None:
        if self._spool_bytes + len(body) > self.spool_max_bytes:
            self.metrics.dropped.labels("spool_full").inc(n)
            log.error(
                "payload spool full (%d of %d bytes): dropped %d records",
                self._spool_bytes,
                self.spool_max_bytes,
                n,
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
        self.metrics.spool_bytes.set(self._spool_bytes)
        self.metrics.spooled.inc(n)

    async def _drain_spool(self, deadline: float | None = None) -> bool:
        """Re-send spooled batches, oldest first, until one fails; True when the spool is empty.

        While running, a stop ends the loop early (stop drains itself, with ``deadline``)."""
        if self._spool_bytes == 0:
            return True
        if time.monotonic() < self._down_until:
            return False
        for path in self._spool_files():
            if deadline is None and self._stopping:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            try:
                body = path.read_bytes()
                n = _spooled_rows(body)
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                log.error("unreadable spool file %s (%s); removing it", path, exc)
                self._unspool(path)
                continue
            if not await self._post(body, n):
                return False
            self._unspool(path)
        return not self._spool_files()

    def _spooled_records(self) -> int:
        n = 0
        for path in self._spool_files():
            try:
                n += _spooled_rows(path.read_bytes())
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                continue
        return n

    def _unspool(self, path: Path) -> None:
        with self._spool_lock:
            size = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            self._spool_bytes = max(0, self._spool_bytes - size)
            self.metrics.spool_bytes.set(self._spool_bytes)

    def stats(self) -> dict[str, Any]:
        """Counters as plain numbers (for logs and tests)."""
        return {
            "queue": self._queued_rows,
            "spool_bytes": self._spool_bytes,
            "spool_files": len(self._spool_files()),
        }


def _groups(encoded: list[bytes], max_bytes: int) -> list[list[bytes]]:
    """Consecutive batch documents grouped into ``{"batches": [...]}`` bodies of at most ``max_bytes``
    (a document over the limit on its own makes a body of its own)."""
    groups: list[list[bytes]] = []
    size = max_bytes + 1
    for doc in encoded:
        if size + len(doc) + 1 > max_bytes:
            groups.append([])
            size = len(b'{"batches":[]}')
        groups[-1].append(doc)
        size += len(doc) + 1
    return groups


def _batch_rows(doc: dict[str, Any]) -> int:
    """Rows of one batch document (its columns' length)."""
    if doc.get("input_rows"):
        return len(doc["input_rows"])
    for column in (*doc.get("inputs", {}).values(), *doc["outputs"].values()):
        return len(column)
    return 0


def _spooled_rows(body: bytes) -> int:
    """Rows in a spool file: ``{"batches": [...]}`` and/or ``{"records": [...]}`` (older versions)."""
    doc = orjson.loads(body)
    if not isinstance(doc, dict) or not ("batches" in doc or "records" in doc):
        raise KeyError("batches")
    return len(doc.get("records", ())) + sum(_batch_rows(b) for b in doc.get("batches", ()))
