"""drift-detection refuses to start when DRIFT_SEGMENTS names a column the model does not have: one
critical log line naming it, exit code 2 (a real ``mlplatform serve drift-detection`` process and a
real MLflow registry)."""

from __future__ import annotations

import pytest

from tests.integration.drift.support import refused_start
from tests.procs import start_service
from tests.unit.drift.tiny_registry import MODEL

pytestmark = pytest.mark.integration


def test_a_segment_column_the_model_lacks_stops_startup_with_one_line(drift_registry, tmp_path):
    env = {**drift_registry.env(), "DRIFT_SEGMENTS": f'{{"{MODEL}": ["hour", "merchant_category"]}}'}
    line, output = refused_start(tmp_path, env, "DRIFT_SEGMENTS")
    assert f"model '{MODEL}' (version 2) has no input column 'merchant_category'" in line
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
