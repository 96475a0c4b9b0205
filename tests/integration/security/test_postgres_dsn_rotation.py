"""drift-detection's PostgreSQL DSN (``DRIFT_DATABASE_URL`` in Vault) rotated live: the session's real
PostgreSQL (a role of this test's own, password-authenticated), a real drift-detection process with
``secrets_backend=vault`` on the session's OpenBao, steady reads that query the database.

Rotation as an operator does it: ``ALTER ROLE ... PASSWORD`` in PostgreSQL, then the new URL in
Vault. The service swaps its pool's connection string and replaces the pooled connections: 0 failed
requests, every connection of the role afterwards opened with the new password (the old one is
refused by PostgreSQL), no password in the service's log.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.security.vault_service import PATH, role_backends, seconds_until, serve, service_env
from tests.openbao import OpenBao
from tests.procs import free_port, wait_ready

pytestmark = pytest.mark.integration


def test_drift_database_url_rotation_under_load(openbao: OpenBao, postgres, tmp_path: Path) -> None:
    role = f"drift_rot_{uuid.uuid4().hex[:8]}"
    old_pw, new_pw = "0ld-pg-Secret", "n3w-pg-Secret"
    db_dsn = postgres.create_database()
    db = db_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{old_pw}'")
        conn.execute(f'ALTER DATABASE "{db}" OWNER TO {role}')
    postgres.require_password(db, role)  # the cluster trusts everyone else, as before

    def url(password: str) -> str:
        return f"postgresql://{role}:{password}@127.0.0.1:{postgres.port}/{db}"

    openbao.put(PATH, {"DRIFT_DATABASE_URL": url(old_pw)})
    port = free_port()
    log = tmp_path / "drift.log"
    proc = serve(
        service_env(
            openbao,
            tmp_path,
            openbao.kube.mint("mlplatform-dev", "drift-detection"),
            DRIFT_AUTH_ENABLED="false",
        ),
        port,
        log,
    )
    base = f"http://127.0.0.1:{port}"
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not stop.is_set():
                results.append(client.get("/v1/models").status_code)  # a query on the drift store

    loader = threading.Thread(target=load, daemon=True)
    try:
        wait_ready(base, 120, proc, path="/v2/health/ready")
        loader.start()
        seconds_until(lambda: len(results) > 20)
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} PASSWORD '{new_pw}'")
            rotated_at = float(conn.execute("SELECT extract(epoch FROM now())").fetchone()[0])
        openbao.put(PATH, {"DRIFT_DATABASE_URL": url(new_pw)})
        applied = seconds_until(
            lambda: "rotated secret DRIFT_DATABASE_URL applied" in log.read_text(errors="replace")
        )
        n = len(results)
        seconds_until(lambda: len(results) > n + 100)
        # every connection of the role now was opened after the password change
        seconds_until(
            lambda: (
                role_backends(postgres.dsn(), role)
                and all(start > rotated_at for _, start in role_backends(postgres.dsn(), role))
            )
        )
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url(old_pw), connect_timeout=3).close()
    finally:
        stop.set()
        loader.join(timeout=30)
        proc.terminate()
        proc.wait(timeout=40)
    failed = [s for s in results if s != 200]
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {sorted(set(failed))}"
    output = log.read_text(errors="replace")
    assert old_pw not in output and new_pw not in output
    print(f"DSN rotation: {len(results)} requests, 0 failed; applied {applied:.2f}s after the Vault write")


def test_malformed_or_removed_dsn_is_refused_and_the_store_keeps_working(postgres) -> None:
    from mlplatform.drift.store_pg import PostgresDriftStore

    store = PostgresDriftStore(postgres.create_database())
    try:
        for bad in ("postgresql://u:p@h:notaport/db x=", "", None):
            with pytest.raises(ValueError, match="DRIFT_DATABASE_URL") as info:
                store.set_dsn(bad)
            assert "notaport" not in str(info.value) and ":p@" not in str(info.value)
        assert store.known_models() == []  # still on the current database
    finally:
        store.close()
