"""A real drift-detection process with ``secrets_backend=vault`` against the session's OpenBao (role
``mlplatform-dev-drift-detection``, secret ``mlplatform/dev/drift-detection``): its environment and
its start. Shared by the Vault service and PostgreSQL DSN rotation tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
        "VAULT_ADDR": vault.addr,
        "VAULT_ROLE": ROLE,
        "VAULT_SECRET_PATH": PATH,
        "VAULT_SA_TOKEN_PATH": str(token),
        "VAULT_REFRESH_INTERVAL_S": "0.5",
        **extra,
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
