"""Adaptive batcher: each caller gets exactly its own rows back under concurrency; idle means no wait; drain."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from mlplatform.serving.batching import AdaptiveBatcher, BatcherClosed
from mlplatform.serving.runtimes import Prediction
from mlplatform.v2.codec import Frame


def frame(values: list[float]) -> Frame:
    m = np.array([[v, v * 2] for v in values], dtype=np.float64)
    return Frame(matrix=m, columns={}, n_rows=len(values))


class Recorder:
    """A predict function that returns a row-identifying output and records batch sizes."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, f: Frame) -> Prediction:
        self.batches.append(f.n_rows)
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        return Prediction(
            {"probability": f.matrix[:, 0] + f.matrix[:, 1], "label": (f.matrix[:, 0] * 10).astype(np.int64)}
        )


@pytest.mark.parametrize("inline", [True, False])
async def test_concurrent_callers_get_exactly_their_rows(inline):
    rec = Recorder(delay_s=0.0 if inline else 0.005)
    batcher = AdaptiveBatcher(rec, inline=inline, max_batch_size=16, max_wait_s=0.002)
    # 200 callers with distinct inputs and row counts 1..4
    requests = [[i * 10.0 + k for k in range(1 + i % 4)] for i in range(200)]
    results = await asyncio.gather(*(batcher.submit(frame(r)) for r in requests))
    for req, res in zip(requests, results, strict=True):
        expected = np.array(req) * 3
        np.testing.assert_array_equal(res.outputs["probability"], expected)
        np.testing.assert_array_equal(res.outputs["label"], (np.array(req) * 10).astype(np.int64))
    assert sum(rec.batches) == sum(len(r) for r in requests)
    # inline: the callers submitted in one event-loop turn share model calls (16 requests per call)
    assert len(rec.batches) < len(requests), "concurrent requests were not merged"
    assert max(rec.batches) <= 16 * 4
    if inline:
        assert len(rec.batches) == -(-len(requests) // 16)
    await batcher.close()


async def test_threaded_runtime_runs_off_the_event_loop():
    rec = Recorder()
    batcher = AdaptiveBatcher(rec, inline=False, max_batch_size=8, max_wait_s=0.0)
    await batcher.submit(frame([1.0]))
    assert rec.threads and all(t.startswith("predict-") for t in rec.threads)
    await batcher.close()


@pytest.mark.parametrize("inline", [True, False])
async def test_idle_model_dispatches_at_once(inline):
    """A lone request is not held back for max_wait (set to 2 s here)."""
    rec = Recorder()
    batcher = AdaptiveBatcher(rec, inline=inline, max_batch_size=64, max_wait_s=2.0)
    start = time.perf_counter()
    for i in range(3):
        res = await batcher.submit(frame([float(i)]))
        assert res.outputs["probability"][0] == 3 * i
    assert time.perf_counter() - start < 1.0
    assert rec.batches == [1, 1, 1]
    await batcher.close()


async def test_busy_model_fills_batches_up_to_max_size():
    rec = Recorder(delay_s=0.02)
    batcher = AdaptiveBatcher(rec, inline=False, max_batch_size=10, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(frame([float(i)])) for i in range(41)))
    assert [r.outputs["probability"][0] for r in results] == [3.0 * i for i in range(41)]
    assert rec.batches[0] <= 10 and max(rec.batches) == 10
    assert len(rec.batches) <= 6
    await batcher.close()


async def test_errors_reach_every_caller_of_the_batch():
    def boom(_: Frame) -> Prediction:
        raise ValueError("model exploded")

    batcher = AdaptiveBatcher(boom, inline=True, max_batch_size=8)
    results = await asyncio.gather(*(batcher.submit(frame([1.0])) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    await batcher.close()


async def test_close_drains_requests_in_flight_then_refuses_new_ones():
    rec = Recorder(delay_s=0.03)
    batcher = AdaptiveBatcher(rec, inline=False, max_batch_size=4, max_wait_s=0.0)
    pending = [asyncio.create_task(batcher.submit(frame([float(i)]))) for i in range(10)]
    await asyncio.sleep(0)  # let them queue
    await batcher.close(timeout_s=10)
    results = [t.result() for t in pending]  # all answered, none failed
    assert [r.outputs["probability"][0] for r in results] == [3.0 * i for i in range(10)]
    with pytest.raises(BatcherClosed):
        await batcher.submit(frame([1.0]))
