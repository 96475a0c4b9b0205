"""drift-detection refuses to start without a usable database, in one log line and exit code 2.

Real processes (``mlplatform serve drift-detection``); the databases are a closed port and an
unset secret, as a wrong Secret key or a missing Vault key would leave them.
"""

from __future__ import annotations

import pytest

from tests.integration.drift.support import refused_start
from tests.procs import free_port

pytestmark = pytest.mark.integration


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
    _, output = refused_start(tmp_path, env, expected)
    assert "hunter2" not in output and "Traceback" not in output
