"""Fuzz every service's OpenAPI document with schemathesis against a real server process.

For each service in ``mlplatform.services.SERVICES`` whose app factory imports, the service runs
as ``mlplatform serve <name>`` on a free port, pointed at a copy of the ``demo_registry`` data
(trained demo models in a SQLite MLflow registry, the demo feature data), with API keys off so
the generated requests reach the handlers. Schemathesis then generates a bounded number of valid
(positive) and invalid (negative) requests for every operation of ``/openapi.json``; each response
must not be a 5xx and must match the documented schema (status-specific body schema, content
type). Time is bounded: ``EXAMPLES`` per operation and mode, no shrinking, a fixed seed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from mlplatform.services import SERVICES
from tests.procs import start_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = int(os.environ.get("MLPLATFORM_FUZZ_EXAMPLES", "6"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _importable(name: str) -> str | None:
    spec = SERVICES[name]
    try:
        spec.load_settings_class()
        spec.load_factory()
    except ImportError as exc:
        return str(exc)
    return None


def _service_env(name: str, demo: Any, data_dir: Path) -> dict[str, str]:
    prefix = SERVICES[name].load_settings_class().model_config.get("env_prefix", "")
    tracking = demo.tracking_uri
    original = str(demo.data_dir)
    if original in tracking:  # the copied SQLite registry (artifacts stay readable where they are)
        tracking = tracking.replace(original, str(data_dir))
    return {
        "MLFLOW_TRACKING_URI": tracking,
        "MLPLATFORM_DATA_DIR": str(data_dir),
        "MLPLATFORM_ENV": "local",
        f"{prefix}AUTH_ENABLED": "false",
        f"{prefix}LOG_LEVEL": "WARNING",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        # a fuzzed POST .../retrain must not start real retraining jobs
        "DRIFT_RETRAIN_MODE": "off",
        # smaller SHAP background/importance samples: start-up in seconds on a busy 2-core machine
        "EXPLAIN_BACKGROUND_SIZE": "20",
        "EXPLAIN_IMPORTANCE_SAMPLE_SIZE": "50",
    }


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    for sub in getattr(exc, "exceptions", ()) or ():
        parts.append(_describe(sub))
    return "\n".join(parts)


def fuzz(schema: Any, base_url: str, examples: int) -> tuple[int, list[str]]:
    """Run every operation in both modes; returns (cases sent, failure descriptions)."""
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @seed(20261123)
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal sent
                sent += 1
                case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=60)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET without parameters)
                continue
            except Exception as exc:  # collect every operation's failure, report them together
                failures.append(f"{operation.label} [{mode.value}]: {_describe(exc)[:3000]}")
    return sent, failures


@pytest.fixture(scope="module")
def fuzz_targets(demo_registry, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Every importable service started at once (start-up in parallel), on copies of the demo data."""
    base = tmp_path_factory.mktemp("fuzz")
    wanted = os.environ.get("MLPLATFORM_FUZZ_SERVICES")  # e.g. "drift-detection,model-serving"
    names = [n for n in sorted(SERVICES) if _importable(n) is None and (not wanted or n in wanted.split(","))]

    def start(name: str) -> Any:
        data_dir = base / name / "data"
        shutil.copytree(demo_registry.data_dir, data_dir, ignore=shutil.ignore_patterns("*.lock"))
        env = _service_env(name, demo_registry, data_dir)
        started = time.monotonic()
        svc = start_service(name, env, base / name / "logs", ready_timeout=300)
        print(f"\nfuzz {name}: ready in {time.monotonic() - started:.1f}s")
        return svc

    targets: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        futures = {name: pool.submit(start, name) for name in names}
        errors = {}
        for name, future in futures.items():
            try:
                targets[name] = future.result()
            except Exception as exc:
                errors[name] = exc
    try:
        if errors:
            raise RuntimeError("; ".join(f"{n}: {e}" for n, e in errors.items()))
        yield targets
    finally:
        for svc in targets.values():
            svc.stop()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_fuzz_openapi(name, fuzz_targets):
    missing = _importable(name)
    if missing:
        pytest.skip(f"{name} is not importable yet: {missing}")
    if name not in fuzz_targets:
        pytest.skip(f"{name} not selected by MLPLATFORM_FUZZ_SERVICES")
    svc = fuzz_targets[name]
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{svc.url}/openapi.json")
    sent, failures = fuzz(schema, svc.url, EXAMPLES)
    elapsed = time.monotonic() - started
    print(f"\nfuzz {name}: {sent} requests in {elapsed:.1f}s, {len(failures)} failing operations")
    assert svc.proc.poll() is None, f"{name} died while fuzzed:\n{svc.logs()[-4000:]}"
    assert not failures, "\n\n".join(failures) + f"\n--- {name} log ---\n{svc.logs()[-3000:]}"
    assert sent >= EXAMPLES, f"only {sent} requests generated for {name}"
