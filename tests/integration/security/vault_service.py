"""A real drift-detection process with ``secrets_backend=vault`` against the session's OpenBao (role
``mlplatform-dev-drift-detection``, secret ``mlplatform/dev/drift-detection``): its environment and
its start. Shared by the Vault service and PostgreSQL DSN rotation tests; and what the other rotation
tests share: a Vault login (in process or as a process environment), a role's PostgreSQL sessions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from mlplatform.core.vault import VaultSecretsBackend
from tests.helpers import wait_until_sync
from tests.openbao import OpenBao

SERVICE = "drift-detection"
ROLE = "mlplatform-dev-drift-detection"
PATH = "mlplatform/dev/drift-detection"


def service_env(vault: OpenBao, tmp_path: Path, jwt: str, **extra: str) -> dict[str, str]:
    """The process environment: Vault login with ``jwt`` as the projected token, refresh every 0.5 s."""
    token = tmp_path / "sa-token"
    token.write_text(jwt)
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MLPLATFORM_DATA_DIR": str(tmp_path / "data"),
        "MLPLATFORM_ENV": "dev",
        "DRIFT_SECRETS_BACKEND": "vault",
        "DRIFT_RETRAIN_MODE": "off",
        **_vault_vars(vault, ROLE, PATH, token),
        **extra,
    }


def _vault_vars(vault: OpenBao, role: str, path: str, token: Path) -> dict[str, str]:
    """The ``VAULT_*`` variables of a login as ``role`` reading ``path``, refreshed every 0.5 s."""
    return {
        "VAULT_ADDR": vault.addr,
        "VAULT_ROLE": role,
        "VAULT_SECRET_PATH": path,
        "VAULT_SA_TOKEN_PATH": str(token),
        "VAULT_REFRESH_INTERVAL_S": "0.5",
    }


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start ``mlplatform serve drift-detection`` on ``port``, output to ``log`` (not waited for)."""
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlplatform.cli",
                "serve",
                SERVICE,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def login_as(vault: OpenBao, tmp_path: Path, service: str, path: str) -> VaultSecretsBackend:
    """A VaultSecretsBackend logged in as ``service`` (role ``mlplatform-dev-<service>``, a token the
    Kubernetes double minted for its service account) reading ``path``, refreshed every 0.5 s: built
    from :func:`vault_env` as a service process builds it from its environment."""
    return VaultSecretsBackend.from_env(vault_env(vault, tmp_path, service, path), tick_interval_s=0.1)


def vault_env(vault: OpenBao, tmp_path: Path, service: str, path: str) -> dict[str, str]:
    """The ``VAULT_*`` environment of a ``service`` process: the same login as ``login_as``, through a
    token file written to ``tmp_path``."""
    token = tmp_path / f"{service}.jwt"
    token.write_text(vault.kube.mint("mlplatform-dev", service))
    return _vault_vars(vault, f"mlplatform-dev-{service}", path, token)


def role_backends(dsn: str, role: str) -> list[tuple[int, float]]:
    """(pid, start time in epoch seconds) of each PostgreSQL session of ``role``, from pg_stat_activity."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, extract(epoch FROM backend_start) FROM pg_stat_activity WHERE usename = %s",
            (role,),
        ).fetchall()
    return [(int(pid), float(start)) for pid, start in rows]


def seconds_until(predicate: Callable[[], object], deadline_s: float = 30, what: str = "condition") -> float:
    """Seconds until ``predicate`` holds (``wait_until_sync``, polled every 50 ms)."""
    start = time.monotonic()
    return wait_until_sync(predicate, deadline_s, what, step_s=0.05) - start
