"""The Redis online store restarted while the feature store serves reads.

Requirement: while Redis is down (5 s), a read either waits at most 3 s or fails with a 503
``{"error": ...}`` (a dependency outage, never a 500 or a hang as long as the outage); a 200 never
carries null features that ``missing`` does not report; failures happen only around the
outage and stop within a few seconds of Redis coming back; the same feature values are served
again, and the feature-store process is never restarted. Uses a real ``redis-server``
on a free port that saves its data on shutdown (so the restart keeps the materialised values).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FEATURE_SERVICE, START_TIMEOUT_S, base_env, copy_feature_repo
from tests.faults.harness import Burst, Call, run_for, summary
from tests.helpers import wait_until
from tests.load.payloads import feature_read_request
from tests.procs import free_port, start_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

OUTAGE_S = 5.0  # Redis is down this long (a restart that loads a real dataset takes seconds)
READ_BOUND_S = 3.0  # no read may hang longer than this, however long Redis is down
HISTORY = ("user_txn_count_7d", "user_mean_amount_7d", "merchant_txn_count_7d")
RECOVERY_S = 10.0


class Redis:
    """A ``redis-server`` on ``port`` that keeps its dataset in ``workdir/dump.rdb`` across restarts."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = 20.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: `make sysdeps` installs it (mk/features.mk)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "3600 1"]
            + ["--appendonly", "no", "--dir", str(self.workdir), "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        end = time.monotonic() + deadline_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    pass
                except redis.exceptions.BusyLoadingError:
                    pass
                if time.monotonic() > end or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: with a save point configured Redis writes dump.rdb before exiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


async def test_redis_restarted_while_serving_reads(
    demo_registry: Any, samples: list[dict], workdir: Path
) -> None:
    data = copy_feature_repo(demo_registry, workdir / "data")
    (workdir / "redis").mkdir()
    redis = Redis(free_port(), workdir / "redis")
    redis.start()
    store = None
    try:
        env = {
            **base_env(demo_registry, data),
            "FEATURES_ONLINE_STORE": "redis",
            "FEATURES_REDIS_ADDRESS": f"127.0.0.1:{redis.port}",
        }
        store = await asyncio.to_thread(
            start_service, "feature-store", env, workdir / "logs", ready_timeout=START_TIMEOUT_S
        )
        r = httpx.post(f"{store.url}/v1/features/materialize", json={}, timeout=300.0)
        assert r.status_code == 200, r.text
        url = f"{store.url}/v1/features/online"
        probe = feature_read_request(samples[:20], FEATURE_SERVICE)
        expected = httpx.post(url, json=probe, timeout=10.0).json()["rows"]
        assert any(v is not None for row in expected for v in row.values()), expected[:2]

        def make(worker: int, i: int) -> Call:
            start = (worker * 37 + i) % (len(samples) - 4)
            return Call("read", url, feature_read_request(samples[start : start + 4], FEATURE_SERVICE))

        async with Burst(make, concurrency=3, interval_s=0.02) as burst:
            await burst.warmed_up()
            t_stop = time.monotonic()
            await asyncio.to_thread(redis.stop)
            t_down = time.monotonic()
            await run_for(OUTAGE_S)
            await asyncio.to_thread(redis.start)
            t_up = time.monotonic()
            t_ok = await wait_until(
                lambda: any(o.ok for o in burst.since(time.monotonic() - 0.3)),
                RECOVERY_S + 20.0,
                "reads to succeed again after Redis came back",
            )
            await run_for(1.5)

        before = [o for o in burst.results if o.end < t_stop]
        assert before and all(o.ok for o in before), summary(before)
        # Reads that overlapped the outage: each either waited and succeeded or failed with a 503
        # error body, and none hung for longer than the bound.
        overlapping = [o for o in burst.results if o.start < t_up and o.end > t_down]
        assert overlapping, "no read overlapped the Redis outage"
        for o in burst.results:
            assert o.ok or (o.status == 503 and isinstance(o.body, dict) and set(o.body) == {"error"}), (
                f"read around the Redis restart: {o.status} {o.error} {o.body}"
            )
            assert o.latency < READ_BOUND_S, f"a read took {o.latency:.2f}s (bound {READ_BOUND_S}s)"
        # A 200 never passes off a failed read as data: a row whose history features are null must
        # be reported in ``missing``.
        for o in burst.results:
            if not o.ok:
                continue
            reported = {m["row"] for m in o.body["missing"]}
            for i, row in enumerate(o.body["rows"]):
                if all(row.get(f) is None for f in HISTORY):
                    assert i in reported, f"row {i} has null features but is not in 'missing': {o.body}"
        # Bounded: failures only around the outage, and everything after recovery succeeds.
        failures = [o for o in burst.results if not o.ok]
        assert all(t_stop - 1.0 <= o.start <= t_ok for o in failures), summary(failures)
        assert t_ok - t_up < RECOVERY_S, f"recovery took {t_ok - t_up:.1f}s"
        late = burst.since(t_ok + 0.5)
        assert late and all(o.ok for o in late), summary(late)
        assert store.proc.poll() is None, "the feature store must recover without a restart"
        again = httpx.post(url, json=probe, timeout=10.0).json()["rows"]
        assert again == expected
    finally:
        if store is not None:
            store.stop()
        redis.stop()
