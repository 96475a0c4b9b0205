"""Adaptive batching: concurrent requests to one model are merged into one model call.

An idle model runs a request at once (no added latency). Requests that arrive while the model is
busy with the previous batch are merged (up to ``max_batch_size`` requests); a busy model waits at
most ``max_wait_s`` for a batch to fill. Each caller gets exactly its own rows back. Slow runtimes
(native scikit-learn, torch) run on one worker thread per model, so requests queue and batch while
a call runs. Cheap runtimes (ONNX Runtime, ~10 us a row) run on the event loop: a request is queued
and the queue is drained by a callback scheduled for the end of the current event-loop turn, so the
requests whose bytes arrived in the same turn (under load, many connections are readable at once)
share one model call. An idle model still answers in the same turn, with no timer and no thread hop.

``close()`` stops accepting work and waits until every queued request has its answer (drain).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mlplatform.serving.runtimes import Prediction
from mlplatform.v2.codec import Frame


class BatcherClosed(Exception):
    """The batcher was retired (model swapped or shutting down); retry on the current model."""


def merge_frames(frames: list[Frame]) -> Frame:
    """Concatenate frames row-wise (same schema)."""
    if len(frames) == 1:
        return frames[0]
    n = sum(f.n_rows for f in frames)
    if frames[0].matrix is not None:
        return Frame(matrix=np.vstack([f.matrix for f in frames]), columns={}, n_rows=n)  # type: ignore[misc]
    keys = frames[0].columns.keys()
    return Frame(
        matrix=None, columns={k: np.concatenate([f.columns[k] for f in frames]) for k in keys}, n_rows=n
    )


class AdaptiveBatcher:
    """Queue + single consumer per model. ``submit(frame)`` returns that frame's outputs."""

    def __init__(
        self,
        predict: Callable[[Frame], Prediction],
        *,
        inline: bool,
        max_batch_size: int = 64,
        max_wait_s: float = 0.001,
        on_batch: Callable[[int, int], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
        name: str = "model",
    ) -> None:
        self._predict = predict
        self._inline = inline
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        # An inline queue is drained within the event-loop turn that filled it, so a scrape (which runs
        # on the loop, between turns) always reads 0: skip the two gauge updates per request.
        self._on_queue = None if inline else on_queue
        self._queue: deque[tuple[Frame, asyncio.Future[Prediction]]] = deque()
        self._scheduled = False
        self._worker: asyncio.Task[None] | None = None
        self._filled: asyncio.Event | None = None
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._executor = (
            None if inline else ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        )
        self.batches = 0

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(self, frame: Frame) -> Prediction:
        """Queue ``frame`` and wait for its outputs."""
        if self._closed:
            raise BatcherClosed()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append((frame, fut))
        if self._on_queue is not None:
            self._on_queue(len(self._queue))
        if self._inline:
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._drain_inline)
        else:
            if self._worker is None or self._worker.done():
                self._worker = loop.create_task(self._run_worker())
            elif self._filled is not None and len(self._queue) >= self.max_batch_size:
                self._filled.set()
        return await fut

    def _take(self) -> list[tuple[Frame, asyncio.Future[Prediction]]]:
        batch = []
        q = self._queue
        while q and len(batch) < self.max_batch_size:
            item = q.popleft()
            if not item[1].cancelled():
                batch.append(item)
        if self._on_queue is not None:
            self._on_queue(len(q))
        return batch

    def _deliver(self, batch: list[tuple[Frame, asyncio.Future[Prediction]]], result: Prediction) -> None:
        start = 0
        for frame, fut in batch:
            stop = start + frame.n_rows
            if not fut.done():
                fut.set_result(result.slice(start, stop) if len(batch) > 1 else result)
            start = stop

    def _fail(self, batch: list[tuple[Frame, asyncio.Future[Prediction]]], exc: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)

    def _drain_inline(self) -> None:
        self._scheduled = False
        while self._queue:
            batch = self._take()
            if not batch:
                break
            self._run_batch_sync(batch)
        self._notify_idle()

    def _run_batch_sync(self, batch: list[tuple[Frame, asyncio.Future[Prediction]]]) -> None:
        try:
            merged = merge_frames([f for f, _ in batch])
            result = self._predict(merged)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
            self._fail(batch, exc)
            return
        self.batches += 1
        if self._on_batch is not None:
            self._on_batch(len(batch), merged.n_rows)
        self._deliver(batch, result)

    async def _run_worker(self) -> None:
        loop = asyncio.get_running_loop()
        busy = False
        while self._queue:
            if busy and self.max_wait_s > 0 and len(self._queue) < self.max_batch_size:
                # The model was busy: give the batch a bounded chance to fill up.
                self._filled = asyncio.Event()
                deadline = time.perf_counter() + self.max_wait_s
                try:
                    await asyncio.wait_for(self._filled.wait(), max(0.0, deadline - time.perf_counter()))
                except TimeoutError:
                    pass
                self._filled = None
            batch = self._take()
            if not batch:
                break
            try:
                merged = merge_frames([f for f, _ in batch])
                result = await loop.run_in_executor(self._executor, self._predict, merged)
            except Exception as exc:  # noqa: BLE001
                self._fail(batch, exc)
                busy = True
                continue
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(len(batch), merged.n_rows)
            self._deliver(batch, result)
            busy = True
        self._notify_idle()

    def _notify_idle(self) -> None:
        if self._idle is not None and not self._queue:
            self._idle.set()

    def _busy(self) -> bool:
        return bool(self._queue) or self._scheduled or (self._worker is not None and not self._worker.done())

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting requests and wait (up to ``timeout_s``) until queued ones are answered."""
        self._closed = True
        deadline = time.monotonic() + timeout_s
        while self._busy() and time.monotonic() < deadline:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            # one more turn so callbacks scheduled alongside the last batch finish
            await asyncio.sleep(0)
        if self._queue:
            self._fail(list(self._queue), BatcherClosed())
            self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
