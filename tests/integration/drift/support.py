"""The process environments the drift integration tests share: drift-detection, and model-serving
sending its inference payloads to it (both against a test registry, no auth, no retraining); and the
check that drift-detection refuses to start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.procs import serve_until_exit


def drift_env(registry: Any, tmp_path: Path, window: int, **extra: str) -> dict[str, str]:
    """drift-detection's environment: ``registry`` (anything with ``env()``), its data under
    ``tmp_path/drift-data``, windows of ``window`` records; ``extra`` added."""
    return {
        **registry.env(),
        "MLPLATFORM_DATA_DIR": str(tmp_path / "drift-data"),
        "DRIFT_AUTH_ENABLED": "false",
        "DRIFT_WINDOW_SIZE": str(window),
        "DRIFT_RETRAIN_MODE": "off",
        **extra,
    }


def serving_env(
    registry: Any, tmp_path: Path, model: str, drift_port: int, batch_size: int
) -> dict[str, str]:
    """model-serving's environment: ``model`` from ``registry``, its data under
    ``tmp_path/serving-data``, payloads to drift-detection on ``drift_port`` in batches of
    ``batch_size`` (flushed every 0.2 s)."""
    return {
        **registry.env(),
        "MLPLATFORM_DATA_DIR": str(tmp_path / "serving-data"),
        "SERVING_MODELS": model,
        "SERVING_AUTH_ENABLED": "false",
        "SERVING_DRIFT_URL": f"http://127.0.0.1:{drift_port}",
        "SERVING_PAYLOAD_BATCH_SIZE": str(batch_size),
        "SERVING_PAYLOAD_FLUSH_INTERVAL_S": "0.2",
    }


def refused_start(tmp_path: Path, env: Mapping[str, str], fragment: str) -> tuple[str, str]:
    """Start drift-detection with ``env`` over this process's environment less its ``DRIFT_*``
    variables (data under ``tmp_path``, auth off) and check that it refuses to start: exit code 2 and
    exactly one output line with ``fragment``, a critical one saying drift-detection cannot start.
    Returns that line and the whole output."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    full.update({"MLPLATFORM_DATA_DIR": str(tmp_path), "DRIFT_AUTH_ENABLED": "false", **env})
    done = serve_until_exit("drift-detection", full)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = [line for line in output.splitlines() if fragment in line]
    assert len(lines) == 1, output
    assert '"level":"critical"' in lines[0] and "drift-detection cannot start" in lines[0]
    return lines[0], output
