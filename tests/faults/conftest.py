"""Fixtures of the fault-injection tests: real service processes on free ports over the demo registry.

Every test gets its own data directory for what it writes (model cache, payload spool, drift
store, feature repository copy) while reading the session's demo MLflow registry. Services run
with authentication off and only the ``fraud-detector`` model, to keep start-up short.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.load.payloads import load_samples
from tests.procs import ServiceProcess, start_service

SERVED_MODEL = "fraud-detector"
FEATURE_SERVICE = "fraud_detection_v1"
#: Start-up deadline of one service (loading a model or the Feast repository on 2 busy cores).
START_TIMEOUT_S = 240.0


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


async def start_all(*specs: tuple[Any, ...]) -> list[ServiceProcess]:
    """Start services in parallel: each spec is ``(name, env, log_dir[, port])``.

    Waits for every one to be ready; if one fails, the others are stopped and the error raised.
    """

    async def one(spec: tuple[Any, ...]) -> ServiceProcess:
        name, env, logs, *rest = spec
        port = rest[0] if rest else None
        return await asyncio.to_thread(
            start_service, name, env, logs, port=port, ready_timeout=START_TIMEOUT_S
        )

    results = await asyncio.gather(*(one(s) for s in specs), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for r in results:
            if isinstance(r, ServiceProcess):
                r.stop()
        raise errors[0]
    return list(results)  # type: ignore[arg-type]
