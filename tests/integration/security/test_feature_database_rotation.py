"""The feature store's database URL (``FEATURES_DATABASE_URL`` in Vault) rotated live: the session's
real PostgreSQL (a role of this test's own, authenticated by scram-sha-256), a real feature-store
process with ``secrets_backend=vault`` on the session's OpenBao (role mlplatform-dev-feature-store),
Feast's SQL registry and PostgreSQL offline store in that database, and a client listing the feature
views back to back (each listing is a query of the SQL registry: ``allow_cache=False``).

Rotation as an operator does it: ``ALTER ROLE ... PASSWORD``, then the new URL in Vault; the
service opens a new store with it, swaps it in for new requests, drains and disposes of the old one
(log line), then the operator ends the role's older sessions. 0 failed requests, the old password
refused by PostgreSQL, no password in the log. Then a malformed URL: one log line naming the
secret, ``mlplatform_secrets_rejected_total{secret="FEATURES_DATABASE_URL"}`` counts it, requests
go on with the last good URL.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from mlplatform.features.contract import entity_snapshots
from mlplatform.features.database import DatabaseURL
from mlplatform.features.store import FeatureRepoPaths, write_sources
from mlplatform.training.data import generate_transactions
from tests.helpers import wait_until_sync
from tests.integration.security.vault_service import role_backends, seconds_until, vault_env
from tests.openbao import OpenBao
from tests.procs import running_service

pytestmark = pytest.mark.integration

PATH = "mlplatform/dev/feature-store"
SECRET = "FEATURES_DATABASE_URL"
VIEWS = {
    "merchant_activity",
    "user_activity_1h",
    "user_activity_24h",
    "user_activity_7d",
    "transaction_ratios",
}


def test_feature_database_url_rotation_under_load(openbao: OpenBao, postgres, tmp_path: Path) -> None:
    role = f"fs_rot_{uuid.uuid4().hex[:8]}"
    old_pw, new_pw = "0ld-fs-pg-Secret", "n3w-fs-pg-Secret"
    db = postgres.create_database().rsplit("/", 1)[1]
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{old_pw}'")
        conn.execute(f'ALTER DATABASE "{db}" OWNER TO {role}')
    with psycopg.connect(postgres.dsn(db), autocommit=True) as conn:
        conn.execute(f"ALTER SCHEMA public OWNER TO {role}")
    postgres.require_password(db, role)

    def url(password: str) -> str:
        return f"postgresql://{role}:{password}@127.0.0.1:{postgres.port}/{db}"

    data_dir = tmp_path / "data"
    transactions = generate_transactions(600, 31)
    write_sources(entity_snapshots(transactions), FeatureRepoPaths(data_dir), DatabaseURL.parse(url(old_pw)))
    openbao.put(PATH, {SECRET: url(old_pw)})
    env = {
        "MLPLATFORM_DATA_DIR": str(data_dir),
        "MLPLATFORM_ENV": "dev",
        "FEATURES_AUTH_ENABLED": "false",
        "FEATURES_DATABASE_REQUIRED": "true",
        "FEATURES_SECRETS_BACKEND": "vault",
        **vault_env(openbao, tmp_path, "feature-store", PATH),
    }
    results: list[str] = []  # "ok" or what went wrong
    stop = threading.Event()

    with running_service("feature-store", env, tmp_path / "logs") as svc:

        def load() -> None:
            with httpx.Client(base_url=svc.url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        r = client.get("/v1/features/views")
                        names = {v["name"] for v in r.json().get("feature_views", [])}
                        results.append(
                            "ok" if r.status_code == 200 and names == VIEWS else f"{r.status_code}"
                        )
                    except Exception as exc:  # noqa: BLE001 - counted as a failed request
                        results.append(repr(exc))

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            seconds_until(lambda: len(results) > 20)
            with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
                conn.execute(f"ALTER ROLE {role} PASSWORD '{new_pw}'")
                rotated_at = float(conn.execute("SELECT extract(epoch FROM now())").fetchone()[0])
            n = len(results)
            seconds_until(lambda: len(results) > n + 5)  # pooled sessions keep serving before the Vault write
            openbao.put(PATH, {SECRET: url(new_pw)})
            applied = seconds_until(lambda: f"rotated secret {SECRET} applied" in svc.logs())
            drained = seconds_until(lambda: "previous store drained and disposed" in svc.logs())
            # the operator ends what is left of the old password's sessions
            with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
                old_sessions = [
                    pid for pid, start in role_backends(postgres.dsn(), role) if start <= rotated_at
                ]
                for pid in old_sessions:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            n = len(results)
            seconds_until(
                lambda: len(results) > n + 50
            )  # requests go on, on sessions opened with the new password
            assert role_backends(postgres.dsn(), role) and all(
                start > rotated_at for _, start in role_backends(postgres.dsn(), role)
            )
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(url(old_pw), connect_timeout=3).close()

            # a malformed URL: refused, counted, the last good one kept
            openbao.put(PATH, {SECRET: f"postgresql://{role}:{new_pw}@127.0.0.1:notaport/{db}"})
            seconds_until(lambda: f"rotated secret {SECRET} refused" in svc.logs())
            metrics = httpx.get(svc.url + "/metrics", timeout=5).text
            assert f'mlplatform_secrets_rejected_total{{secret="{SECRET}"}} 1.0' in metrics
            n = len(results)
            seconds_until(lambda: len(results) > n + 20)
        finally:
            stop.set()
            loader.join(timeout=30)
        logs = svc.logs()
    failed = [r for r in results if r != "ok"]
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {sorted(set(failed))[:5]}"
    refused = [line for line in logs.splitlines() if f"rotated secret {SECRET} refused" in line]
    assert len(refused) == 1 and "the port is not a number" in refused[0]
    assert old_pw not in logs and new_pw not in logs
    print(
        f"feature store database URL rotation: {len(results)} requests, 0 failed; applied {applied:.2f}s "
        f"after the Vault write, old store drained and disposed {drained:.2f}s later; "
        f"{len(old_sessions)} old session(s) left to terminate"
    )


def test_a_url_postgresql_refuses_or_a_removed_one_is_rejected_before_the_swap(
    postgres, tmp_path: Path
) -> None:
    """DatabaseRotation.apply checks the new URL on the real server before opening anything: a URL
    PostgreSQL refuses, or none at all, raises DatabaseConfigError (a ValueError: one line naming the
    secret, never the password) and the data plane keeps what it has."""
    from prometheus_client import CollectorRegistry

    from mlplatform.features.database import DatabaseConfigError
    from mlplatform.features.dataplane import FeatureDataPlane
    from mlplatform.features.metrics import FeatureMetrics
    from mlplatform.features.rotation import DatabaseRotation
    from mlplatform.features.settings import FeatureSettings

    plane = FeatureDataPlane(
        FeatureSettings(data_dir=tmp_path, database_timeout_s=3), FeatureMetrics(CollectorRegistry())
    )
    rotation = DatabaseRotation(plane)
    refused = f"postgresql://mlplatform:s3cret-Pw@127.0.0.1:{postgres.port}/no_such_database"
    with pytest.raises(DatabaseConfigError, match=f"{SECRET}: cannot use PostgreSQL") as info:
        rotation.apply(refused)
    assert "s3cret-Pw" not in str(info.value) and "no_such_database" in str(info.value)
    for gone in (None, ""):
        with pytest.raises(DatabaseConfigError, match=f"{SECRET}: removed"):
            rotation.apply(gone)
    assert plane.store is None and rotation.applied == 0


async def test_work_in_flight_on_the_old_store_finishes_before_it_is_disposed(
    postgres, tmp_path: Path
) -> None:
    """In process, on the real PostgreSQL: a job already running in the data plane's write pool holds
    the old Feast store across a rotation and still queries it after the swap; the old store is
    disposed (its registry engine's pooled connections closed) only once that job has finished."""
    import asyncio
    import threading as th

    from prometheus_client import CollectorRegistry

    from mlplatform.core.secrets import EnvSecretsBackend
    from mlplatform.features.dataplane import FeatureDataPlane
    from mlplatform.features.metrics import FeatureMetrics
    from mlplatform.features.rotation import DatabaseRotation
    from mlplatform.features.settings import FeatureSettings

    dsn = postgres.create_database()
    write_sources(
        entity_snapshots(generate_transactions(300, 7)), FeatureRepoPaths(tmp_path), DatabaseURL.parse(dsn)
    )
    plane = FeatureDataPlane(
        FeatureSettings(data_dir=tmp_path),
        FeatureMetrics(CollectorRegistry()),
        secrets=EnvSecretsBackend({SECRET: dsn}),
    )
    plane.check_database()
    await plane.start()
    rotation = DatabaseRotation(plane)
    old, old_engine = plane.store, plane.store.registry.write_engine
    started, release = th.Event(), th.Event()

    def in_flight() -> set[str]:
        started.set()
        release.wait(30)
        return {v.name for v in old.list_feature_views()}  # the old store, after the swap

    job = plane._write_pool.submit(in_flight)  # noqa: SLF001 - where pushes and materialisation run
    try:
        assert started.wait(30)
        await asyncio.to_thread(rotation.apply, dsn + "?application_name=rotated")  # a new URL
        assert plane.store is not old and rotation.applied == 1
        assert {v.name for v in plane.store.list_feature_views()} == VIEWS - {"transaction_ratios"}
        await asyncio.sleep(0.5)
        assert rotation.disposed == 0  # the old store waits for the job
        release.set()
        assert await asyncio.wrap_future(job) == VIEWS - {"transaction_ratios"}
        await asyncio.to_thread(wait_until_sync, lambda: rotation.disposed == 1, 30, "the disposal")
        assert old_engine.pool.checkedin() == 0  # its pooled connections closed
    finally:
        release.set()
        await plane.stop()
