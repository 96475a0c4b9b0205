"""The process environments the drift integration tests share: drift-detection, and model-serving
sending its inference payloads to it (both against a test registry, no auth, no retraining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
