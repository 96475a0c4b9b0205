"""drift-detection refuses to start without a usable database, in one log line and exit code 2.

Real processes (``mlplatform serve drift-detection``); the databases are a closed port and an
unset secret, as a wrong Secret key or a missing Vault key would leave them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.procs import free_port

pytestmark = pytest.mark.integration


def _serve(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    full.update({"MLPLATFORM_DATA_DIR": str(tmp_path), "DRIFT_AUTH_ENABLED": "false", **env})
    return subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "serve", "drift-detection", "--port", str(free_port())],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"DRIFT_DATABASE_URL": "postgresql://drift:hunter2@127.0.0.1:{port}/drift?connect_timeout=2"},
            "DRIFT_DATABASE_URL: cannot use PostgreSQL at 127.0.0.1:",
        ),
        (
            {"DRIFT_DATABASE_URL": "postgresql://drift:hunter2@db:notaport/x"},
            "DRIFT_DATABASE_URL: cannot use PostgreSQL at db:notaport/x: ",
        ),
        ({"DRIFT_DATABASE_REQUIRED": "true"}, "DRIFT_DATABASE_URL is not set"),
    ],
    ids=["unreachable", "malformed", "missing"],
)
def test_unusable_database_stops_startup_with_one_line(env, expected, tmp_path):
    env = {k: v.replace("{port}", str(free_port())) for k, v in env.items()}
    done = _serve(env, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if expected in line]
    assert len(lines) == 1, output
    assert '"level":"critical"' in lines[0] and "drift-detection cannot start" in lines[0]
    assert "hunter2" not in output and "Traceback" not in output
