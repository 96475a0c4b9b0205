"""The feature store's Redis password rotated live: a real ``redis-server``, a real feature-store
process with ``secrets_backend=vault`` on the session's OpenBao (role mlplatform-dev-feature-store),
steady online reads throughout.

Rotation as an operator does it with Redis ACLs: add the new password to the user, write it to
Vault, wait for the service to apply it, remove the old password and drop every open connection, so
the service can only go on with the new one. 0 failed reads; the old password is refused by Redis
afterwards; no password in the service's log.
"""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis

from mlplatform.features.store import FeatureRepoPaths, OnlineStoreSpec, apply_definitions, open_store
from tests.integration.features.conftest import REDIS_PASSWORD, redis_server  # noqa: F401 - fixture
from tests.openbao import OpenBao
from tests.procs import running_service
from tests.unit.features.conftest import build_small_repo

pytestmark = pytest.mark.integration

PATH = "mlplatform/dev/feature-store"
NEW_PASSWORD = "r3dis-rotated-Secret"


def test_redis_password_rotation_under_load(
    openbao: OpenBao,
    tmp_path: Path,
    redis_server: tuple[str, subprocess.Popen[bytes]],  # noqa: F811 - the imported fixture
) -> None:
    address, _ = redis_server
    host, _, port = address.rpartition(":")
    repo = build_small_repo(tmp_path / "data", rows=2000, seed=23, materialize=False)
    paths = FeatureRepoPaths(repo.data_dir)
    store = open_store(
        paths,
        OnlineStoreSpec(kind="redis", redis_address=address, redis_password=REDIS_PASSWORD),
        environment="dev",
    )
    apply_definitions(store, paths)
    ts = repo.transactions["event_timestamp"]
    store.materialize(
        ts.min().to_pydatetime() - timedelta(days=31), ts.max().to_pydatetime() + timedelta(days=1)
    )
    openbao.put(PATH, {"FEATURES_REDIS_PASSWORD": REDIS_PASSWORD})
    jwt = tmp_path / "sa-token"
    jwt.write_text(openbao.kube.mint("mlplatform-dev", "feature-store"))
    env = {
        "MLPLATFORM_DATA_DIR": str(repo.data_dir),
        "MLPLATFORM_ENV": "dev",
        "FEATURES_AUTH_ENABLED": "false",
        "FEATURES_ONLINE_STORE": "redis",
        "FEATURES_REDIS_ADDRESS": address,
        "FEATURES_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": openbao.addr,
        "VAULT_ROLE": "mlplatform-dev-feature-store",
        "VAULT_SECRET_PATH": PATH,
        "VAULT_SA_TOKEN_PATH": str(jwt),
        "VAULT_REFRESH_INTERVAL_S": "0.5",
    }
    admin = redis.Redis(host=host, port=int(port), password=REDIS_PASSWORD)
    user = int(repo.transactions["user_id"].iloc[-1])
    body = {"features": ["user_activity_7d:user_mean_amount_7d"], "rows": [{"user_id": user}]}
    results: list[int] = []
    stop = threading.Event()

    with running_service("feature-store", env, tmp_path / "logs") as svc:

        def load() -> None:
            with httpx.Client(base_url=svc.url, timeout=10) as client:
                while not stop.is_set():
                    results.append(client.post("/v1/features/online", json=body).status_code)

        def until(predicate, deadline_s: float = 30) -> float:  # noqa: ANN001
            start = time.monotonic()
            while not predicate():
                assert time.monotonic() - start < deadline_s, "not within the deadline"
                time.sleep(0.05)
            return time.monotonic() - start

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            until(lambda: len(results) > 20)
            admin.execute_command("ACL", "SETUSER", "default", "on", f">{NEW_PASSWORD}")  # both valid
            openbao.put(PATH, {"FEATURES_REDIS_PASSWORD": NEW_PASSWORD})
            applied = until(lambda: "rotated secret FEATURES_REDIS_PASSWORD applied" in svc.logs())
            admin = redis.Redis(host=host, port=int(port), password=NEW_PASSWORD)
            admin.execute_command("ACL", "SETUSER", "default", f"<{REDIS_PASSWORD}")  # old one removed
            killed = admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis(host=host, port=int(port), password=REDIS_PASSWORD).ping()
            n = len(results)
            until(lambda: len(results) > n + 50)  # reads go on, over new connections
        finally:
            stop.set()
            loader.join(timeout=30)
        logs = svc.logs()
    admin.close()
    failed = [s for s in results if s != 200]
    assert failed == [], f"{len(failed)} of {len(results)} reads failed: {sorted(set(failed))}"
    assert killed >= 1  # the service's connections were dropped and re-made with the new password
    assert REDIS_PASSWORD not in logs and NEW_PASSWORD not in logs
    print(f"Redis password rotation: {len(results)} reads, 0 failed; applied {applied:.2f}s after the write")
