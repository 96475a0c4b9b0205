"""The feature-store service as a real process (``mlplatform serve feature-store``) on free ports,
with the embedded SQLite online store and with a real ``redis-server`` started by the test."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from mlplatform.features.client import FeatureStoreClient, FeatureStoreUnavailable
from mlplatform.features.store import FeatureRepoPaths, OnlineStoreSpec, apply_definitions, open_store
from tests.integration.features.conftest import REDIS_PASSWORD, check_reads
from tests.procs import running_service
from tests.unit.features.small_repo import build_small_repo

pytestmark = pytest.mark.integration


async def test_sqlite_service_process(tmp_path: Path) -> None:
    repo = build_small_repo(tmp_path / "data", rows=2000, seed=17)
    env = {"MLPLATFORM_DATA_DIR": str(repo.data_dir), "FEATURES_AUTH_ENABLED": "false"}
    with running_service("feature-store", env, tmp_path / "logs") as svc:
        await check_reads(svc.url, repo)
        metrics = httpx.get(svc.url + "/metrics").text
        assert "mlplatform_features_online_store_read_duration_seconds_bucket" in metrics
    # the service is gone: the client reports the feature store unavailable
    client = FeatureStoreClient(svc.url, timeout_s=0.5, retries=1)
    with pytest.raises(FeatureStoreUnavailable):
        await client.get_online_features(
            "fraud_detection_v1", [{"user_id": 1, "merchant_id": 1, "amount": 1.0}]
        )
    await client.aclose()


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
        await check_reads(svc.url, repo)
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
