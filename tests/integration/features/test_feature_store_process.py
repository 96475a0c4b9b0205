"""The feature-store service as a real process (``mlplatform serve feature-store``) on free ports,
with the embedded SQLite online store and with a real ``redis-server`` started by the test."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from mlplatform.features.client import FeatureStoreClient, FeatureStoreUnavailable
from mlplatform.features.store import FeatureRepoPaths, OnlineStoreSpec, apply_definitions, open_store
from tests.procs import free_port, running_service
from tests.unit.features.conftest import SmallRepo, build_small_repo

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "feast-test-pw"


def _latest(repo: SmallRepo, key: str, value: int) -> dict:
    snap = repo.snapshots[key]
    return snap[snap[key] == value].sort_values("event_timestamp").iloc[-1].to_dict()


async def _check_reads(url: str, repo: SmallRepo) -> None:
    client = FeatureStoreClient(url, timeout_s=2.0, retries=1)
    try:
        tx = repo.transactions.tail(5)
        rows = [
            {"user_id": int(u), "merchant_id": int(m), "amount": 80.0}
            for u, m in zip(tx["user_id"], tx["merchant_id"], strict=True)
        ]
        got = await client.get_online_features("fraud_detection_v1", rows)
        for row, fetched in zip(rows, got, strict=True):
            user = _latest(repo, "user_id", row["user_id"])
            merchant = _latest(repo, "merchant_id", row["merchant_id"])
            assert fetched["user_txn_count_24h"] == user["user_txn_count_24h"]
            assert fetched["user_mean_amount_7d"] == pytest.approx(user["user_mean_amount_7d"])
            assert fetched["merchant_txn_count_7d"] == merchant["merchant_txn_count_7d"]
            assert fetched["amount_over_user_mean_7d"] == pytest.approx(80.0 / user["user_mean_amount_7d"])
    finally:
        await client.aclose()


async def test_sqlite_service_process(tmp_path: Path) -> None:
    repo = build_small_repo(tmp_path / "data", rows=2000, seed=17)
    env = {"MLPLATFORM_DATA_DIR": str(repo.data_dir), "FEATURES_AUTH_ENABLED": "false"}
    with running_service("feature-store", env, tmp_path / "logs") as svc:
        await _check_reads(svc.url, repo)
        metrics = httpx.get(svc.url + "/metrics").text
        assert "mlplatform_features_online_store_read_duration_seconds_bucket" in metrics
    # the service is gone: the client reports the feature store unavailable
    client = FeatureStoreClient(svc.url, timeout_s=0.5, retries=1)
    with pytest.raises(FeatureStoreUnavailable):
        await client.get_online_features(
            "fraud_detection_v1", [{"user_id": 1, "merchant_id": 1, "amount": 1.0}]
        )
    await client.aclose()


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


async def test_redis_service_process(
    tmp_path: Path, redis_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    """Materialise into a real Redis (password from the secrets interface), read, push, re-read; then
    Redis goes away and reads answer 503 naming the online store (no stack trace)."""
    address, redis_proc = redis_server
    repo = build_small_repo(tmp_path / "data", rows=2000, seed=19, materialize=False)
    paths = FeatureRepoPaths(repo.data_dir)
    spec = OnlineStoreSpec(kind="redis", redis_address=address, redis_password=REDIS_PASSWORD)
    store = open_store(paths, spec, environment="staging")
    apply_definitions(store, paths)
    assert REDIS_PASSWORD not in paths.yaml.read_text()
    ts = repo.transactions["event_timestamp"]
    store.materialize(
        ts.min().to_pydatetime() - timedelta(days=31), ts.max().to_pydatetime() + timedelta(days=1)
    )
    env = {
        "MLPLATFORM_DATA_DIR": str(repo.data_dir),
        "MLPLATFORM_ENV": "staging",
        "FEATURES_AUTH_ENABLED": "false",
        "FEATURES_ONLINE_STORE": "redis",
        "FEATURES_REDIS_ADDRESS": address,
        "FEATURES_REDIS_PASSWORD": REDIS_PASSWORD,
    }
    with running_service("feature-store", env, tmp_path / "logs") as svc:
        await _check_reads(svc.url, repo)
        row = {
            "user_id": 5_000_001,
            "event_timestamp": "2026-03-01T00:00:00Z",
            "user_txn_count_1h": 4,
            "user_mean_amount_1h": 10.0,
            "user_txn_count_24h": 5,
            "user_mean_amount_24h": 11.0,
            "user_txn_count_7d": 6,
            "user_mean_amount_7d": 12.0,
        }
        r = httpx.post(
            svc.url + "/v1/features/push", json={"push_source": "user_activity_push", "rows": [row]}
        )
        assert r.status_code == 200, r.text
        r = httpx.post(
            svc.url + "/v1/features/online",
            json={"features": ["user_activity_7d:user_mean_amount_7d"], "rows": [{"user_id": 5_000_001}]},
        )
        assert r.json()["rows"] == [{"user_mean_amount_7d": 12.0}]
        metrics = httpx.get(svc.url + "/metrics").text
        assert 'store="redis"' in metrics
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        r = httpx.post(
            svc.url + "/v1/features/online",
            json={"features": ["user_activity_7d:user_mean_amount_7d"], "rows": [{"user_id": 5_000_001}]},
            timeout=30,
        )
        assert r.status_code == 503, r.text
        assert r.json() == {"error": "online store (redis) is unavailable"}
