"""Fixtures of the fault-injection tests: real service processes on free ports over the demo registry.

Every test gets its own data directory for what it writes (model cache, payload spool, drift
store, feature repository copy) while reading the session's demo MLflow registry. Services run
with authentication off and only the ``fraud-detector`` model, to keep start-up short.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.load.payloads import load_samples

SERVED_MODEL = "fraud-detector"
FEATURE_SERVICE = "fraud_detection_v1"


@pytest.fixture(scope="session")
def samples(demo_registry: Any) -> list[dict[str, Any]]:
    """500 demo transactions with entity keys, request fields and model features."""
    return load_samples(demo_registry.data_dir, n=500, seed=3)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Per-test data directory (logs go under ``logs/``)."""
    (tmp_path / "logs").mkdir()
    return tmp_path


def base_env(demo_registry: Any, data_dir: Path) -> dict[str, str]:
    """Auth off, the demo registry, a per-test data dir, one model, JSON logs at INFO."""
    env = {
        "MLFLOW_TRACKING_URI": demo_registry.tracking_uri,
        "MLPLATFORM_DATA_DIR": str(data_dir),
        "SERVING_MODELS": SERVED_MODEL,
        "SERVING_POLL_INTERVAL_S": "0",
        "SERVING_RUNTIME": "native",
        "EXPLAIN_MODELS": SERVED_MODEL,
    }
    for prefix in ("SERVING_", "FEATURES_", "DRIFT_", "EXPLAIN_"):
        env[f"{prefix}AUTH_ENABLED"] = "false"
    return env


def copy_feature_repo(demo_registry: Any, data_dir: Path) -> Path:
    """Copy the demo feature sources, Feast registry and online store into ``data_dir``.

    The feature store applies its definitions (and renders ``feature_store.yaml``) at start-up, so a
    test that changes the online store must not touch the session's shared copy.
    """
    src = Path(demo_registry.data_dir)
    for sub in ("features", "feature_repo"):
        shutil.copytree(src / sub, data_dir / sub, dirs_exist_ok=True)
    return data_dir
