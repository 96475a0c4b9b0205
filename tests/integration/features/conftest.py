"""Fixtures of the feature-store integration tests: a real ``redis-server`` on a free port, and the
check that a running service answers with the snapshot values."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplatform.features.client import FeatureStoreClient
from tests.procs import free_port
from tests.unit.features.conftest import SmallRepo

REDIS_PASSWORD = "feast-test-pw"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real redis-server with a password on a free port (make test installs it via mk/features.mk)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: `make sysdeps` installs it (APT_PACKAGES in mk/features.mk)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            REDIS_PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=REDIS_PASSWORD)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}", proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def latest(repo: SmallRepo, key: str, value: int) -> dict:
    snap = repo.snapshots[key]
    return snap[snap[key] == value].sort_values("event_timestamp").iloc[-1].to_dict()


async def check_reads(url: str, repo: SmallRepo) -> None:
    """The service at ``url`` answers the feature service for the last five transactions with the
    latest snapshot values of their user and merchant."""
    client = FeatureStoreClient(url, timeout_s=2.0, retries=1)
    try:
        tx = repo.transactions.tail(5)
        rows = [
            {"user_id": int(u), "merchant_id": int(m), "amount": 80.0}
            for u, m in zip(tx["user_id"], tx["merchant_id"], strict=True)
        ]
        got = await client.get_online_features("fraud_detection_v1", rows)
        for row, fetched in zip(rows, got, strict=True):
            user = latest(repo, "user_id", row["user_id"])
            merchant = latest(repo, "merchant_id", row["merchant_id"])
            assert fetched["user_txn_count_24h"] == user["user_txn_count_24h"]
            assert fetched["user_mean_amount_7d"] == pytest.approx(user["user_mean_amount_7d"])
            assert fetched["merchant_txn_count_7d"] == merchant["merchant_txn_count_7d"]
            assert fetched["amount_over_user_mean_7d"] == pytest.approx(80.0 / user["user_mean_amount_7d"])
    finally:
        await client.aclose()
