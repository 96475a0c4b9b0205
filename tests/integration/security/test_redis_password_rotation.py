"""The feature store's secrets rotated live: a real ``redis-server``, a real feature-store process
with ``secrets_backend=vault`` on the session's OpenBao (role mlplatform-dev-feature-store), and
model-serving's and explainability's own feature-store clients (built by
``features.client.build_feature_client`` with Vault backends logged in as mlplatform-dev-model-serving
and mlplatform-dev-explainability) reading online features back to back.

1. The outbound feature-store API keys: the feature store's keyring {k1} -> {k1, k2}; serving's
   ``SERVING_FEATURE_STORE_API_KEY`` and explainability's ``EXPLAIN_FEATURE_STORE_API_KEY`` k1 -> k2
   (followed without a restart); keyring -> {k2}: k1 refused.
2. The Redis password, as an operator does it with Redis ACLs: add the new password to the user,
   write it to Vault, wait for the service to apply it, remove the old password and drop every open
   connection, so the service can only go on with the new one; the old one is refused by Redis.

0 failed reads throughout; no key or password in the service's log.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry

from mlplatform.core.auth import hash_key
from mlplatform.explain.settings import ExplainSettings
from mlplatform.features.client import build_feature_client
from mlplatform.features.store import FeatureRepoPaths, OnlineStoreSpec, apply_definitions, open_store
from mlplatform.serving.settings import ServingSettings
from tests.helpers import wait_until
from tests.integration.security.vault_service import login_as, vault_env
from tests.openbao import OpenBao
from tests.procs import running_service
from tests.redis_proc import REDIS_PASSWORD
from tests.unit.features.small_repo import build_small_repo

pytestmark = pytest.mark.integration

PATH = "mlplatform/dev/feature-store"
SERVING_PATH = "mlplatform/dev/model-serving"
EXPLAIN_PATH = "mlplatform/dev/explainability"
NEW_PASSWORD = "r3dis-rotated-Secret"
K1, K2 = "fs-key-one-outbound", "fs-key-two-outbound"


def keyring(*keys: str) -> str:
    return ",".join(f"{hash_key(k)}:features:read" for k in keys)


async def until(predicate, deadline_s: float = 30) -> float:  # noqa: ANN001
    """Seconds until ``predicate`` holds (fails after ``deadline_s``)."""
    start = time.monotonic()
    return await wait_until(predicate, deadline_s) - start


async def test_feature_store_key_and_redis_password_rotation_under_load(
    openbao: OpenBao,
    tmp_path: Path,
    redis_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    address, _ = redis_server
    host, _, port = address.rpartition(":")
    repo = build_small_repo(tmp_path / "data", rows=2000, seed=23, materialize=False)
    paths = FeatureRepoPaths(repo.data_dir)
    spec = OnlineStoreSpec(kind="redis", redis_address=address, redis_password=REDIS_PASSWORD)
    store = open_store(paths, spec, environment="dev")
    apply_definitions(store, paths)
    ts = repo.transactions["event_timestamp"]
    store.materialize(
        ts.min().to_pydatetime() - timedelta(days=31), ts.max().to_pydatetime() + timedelta(days=1)
    )
    secret = {"FEATURES_REDIS_PASSWORD": REDIS_PASSWORD, "MLPLATFORM_API_KEYS": keyring(K1)}
    openbao.put(PATH, secret)
    openbao.put(SERVING_PATH, {"SERVING_FEATURE_STORE_API_KEY": K1})
    env = {
        "MLPLATFORM_DATA_DIR": str(repo.data_dir),
        "MLPLATFORM_ENV": "dev",
        "FEATURES_AUTH_ENABLED": "true",
        "FEATURES_ONLINE_STORE": "redis",
        "FEATURES_REDIS_ADDRESS": address,
        "FEATURES_SECRETS_BACKEND": "vault",
        **vault_env(openbao, tmp_path, "feature-store", PATH),
    }
    openbao.put(EXPLAIN_PATH, {"EXPLAIN_FEATURE_STORE_API_KEY": K1})

    serving_secrets = login_as(openbao, tmp_path, "model-serving", SERVING_PATH)
    explain_secrets = login_as(openbao, tmp_path, "explainability", EXPLAIN_PATH)
    admin = redis.Redis(host=host, port=int(port), password=REDIS_PASSWORD)
    tx = repo.transactions.tail(3)
    rows = [
        {"user_id": int(u), "merchant_id": int(m), "amount": 80.0}
        for u, m in zip(tx["user_id"], tx["merchant_id"], strict=True)
    ]
    reads: list[tuple[str, str]] = []  # serving's client: (key sent, "ok" or the error)
    explain_reads: list[tuple[str, str]] = []  # explainability's client, the same
    stop = asyncio.Event()

    with running_service("feature-store", env, tmp_path / "logs") as svc:
        client = build_feature_client(
            ServingSettings(feature_store_url=svc.url, feature_store_timeout_s=5.0),
            serving_secrets,
            CollectorRegistry(),
        )
        explain_client = build_feature_client(
            ExplainSettings(feature_store_url=svc.url, feature_store_timeout_s=5.0),
            explain_secrets,
            CollectorRegistry(),
        )

        async def read(c, out: list[tuple[str, str]]) -> None:  # noqa: ANN001
            sent = c._client.headers.get("Authorization", "")
            try:
                got = await c.get_online_features("fraud_detection_v1", rows)
                ok = len(got) == len(rows) and all(r.get("user_txn_count_24h") is not None for r in got)
                out.append((sent, "ok" if ok else f"empty values: {got}"))
            except Exception as exc:  # noqa: BLE001 - counted as a failed read
                out.append((sent, repr(exc)))

        async def load() -> None:
            while not stop.is_set():
                await read(client, reads)
                await read(explain_client, explain_reads)

        def accepted(key: str) -> bool:
            r = httpx.post(
                f"{svc.url}/v1/features/online",
                json={"feature_service": "fraud_detection_v1", "rows": rows},
                headers={"X-API-Key": key},
            )
            return r.status_code != 401

        task = asyncio.create_task(load())
        try:
            await until(lambda: len(reads) > 20)
            # 1. the serving -> feature-store and explainability -> feature-store keys
            openbao.put(PATH, {**secret, "MLPLATFORM_API_KEYS": keyring(K1, K2)})
            await until(lambda: accepted(K2))
            openbao.put(SERVING_PATH, {"SERVING_FEATURE_STORE_API_KEY": K2})
            openbao.put(EXPLAIN_PATH, {"EXPLAIN_FEATURE_STORE_API_KEY": K2})
            switched = await until(lambda: client._client.headers.get("Authorization") == f"Bearer {K2}")
            await until(lambda: explain_client._client.headers.get("Authorization") == f"Bearer {K2}")
            secret["MLPLATFORM_API_KEYS"] = keyring(K2)
            openbao.put(PATH, secret)
            await until(lambda: not accepted(K1))
            n = len(reads)
            await until(lambda: len(reads) > n + 20)
            # 2. the Redis password
            admin.execute_command("ACL", "SETUSER", "default", "on", f">{NEW_PASSWORD}")  # both valid
            secret["FEATURES_REDIS_PASSWORD"] = NEW_PASSWORD
            openbao.put(PATH, secret)
            applied = await until(lambda: "rotated secret FEATURES_REDIS_PASSWORD applied" in svc.logs())
            admin = redis.Redis(host=host, port=int(port), password=NEW_PASSWORD)
            admin.execute_command("ACL", "SETUSER", "default", f"<{REDIS_PASSWORD}")  # old one removed
            killed = admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis(host=host, port=int(port), password=REDIS_PASSWORD).ping()
            n = len(reads)
            await until(lambda: len(reads) > n + 50)  # reads go on, over new connections
        finally:
            stop.set()
            await task
            await client.aclose()
            await explain_client.aclose()
            serving_secrets.close()
            explain_secrets.close()
        logs = svc.logs()
    admin.close()
    failed = [r for r in reads if r[1] != "ok"]
    assert failed == [], f"{len(failed)} of {len(reads)} reads failed: {failed[:3]}"
    assert {k for k, _ in reads} == {f"Bearer {K1}", f"Bearer {K2}"}
    failed = [r for r in explain_reads if r[1] != "ok"]
    assert failed == [], f"explainability: {len(failed)} of {len(explain_reads)} reads failed: {failed[:3]}"
    assert {k for k, _ in explain_reads} == {f"Bearer {K1}", f"Bearer {K2}"}
    assert killed >= 1  # the service's Redis connections were dropped and re-made with the new password
    for value in (REDIS_PASSWORD, NEW_PASSWORD, K1, K2):
        assert value not in logs
    print(
        f"feature store rotation: {len(reads)} reads, 0 failed; serving's key switched {switched:.2f}s and "
        f"the Redis password applied {applied:.2f}s after the write"
    )
