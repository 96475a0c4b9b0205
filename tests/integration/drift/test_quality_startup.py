"""drift-detection refuses to start when DRIFT_SEGMENTS names a column the model does not have: one
critical log line naming it, exit code 2 (a real ``mlplatform serve drift-detection`` process and a
real MLflow registry)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.procs import free_port, start_service
from tests.unit.drift.tiny_registry import MODEL

pytestmark = pytest.mark.integration


def test_a_segment_column_the_model_lacks_stops_startup_with_one_line(drift_registry, tmp_path):
    full = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    full.update(
        {
            **drift_registry.env(),
            "MLPLATFORM_DATA_DIR": str(tmp_path),
            "DRIFT_AUTH_ENABLED": "false",
            "DRIFT_SEGMENTS": f'{{"{MODEL}": ["hour", "merchant_category"]}}',
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "serve", "drift-detection", "--port", str(free_port())],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = [line for line in output.splitlines() if "DRIFT_SEGMENTS" in line]
    assert len(lines) == 1, output
    assert '"level":"critical"' in lines[0] and "drift-detection cannot start" in lines[0]
    assert f"model '{MODEL}' (version 2) has no input column 'merchant_category'" in lines[0]
    assert "Traceback" not in output


def test_segment_columns_the_model_has_start(drift_registry, tmp_path):
    env = {
        **drift_registry.env(),
        "MLPLATFORM_DATA_DIR": str(tmp_path / "data"),
        "DRIFT_AUTH_ENABLED": "false",
        "DRIFT_SEGMENTS": f'{{"{MODEL}": ["hour", "is_foreign"]}}',
    }
    svc = start_service("drift-detection", env, tmp_path / "logs")
    svc.stop()
