"""The live observability stack: the four real services, an OTLP receiver and a real Prometheus.

Started once per session (module ``stack`` fixture) and shared by the live metrics tests and the
tracing test, so the services start only once. A service whose package has not been written yet is
left out, and the tests that need it skip with that reason.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.observability.otlp import OtlpReceiver
from tests.observability.prom import Prometheus
from tests.observability.traffic import MODEL
from tests.procs import ServiceProcess, free_port, start_service

PREFIX = {
    "model-serving": "SERVING_",
    "feature-store": "FEATURES_",
    "drift-detection": "DRIFT_",
    "explainability": "EXPLAIN_",
}
APP_MODULE = {
    "model-serving": "mlplatform.serving.app",
    "feature-store": "mlplatform.features.app",
    "drift-detection": "mlplatform.drift.app",
    "explainability": "mlplatform.explain.app",
}


def available(service: str) -> bool:
    """Whether the service's app module exists yet (services are written in parallel)."""
    try:
        return importlib.util.find_spec(APP_MODULE[service]) is not None
    except ModuleNotFoundError:
        return False


@dataclass
class Stack:
    services: dict[str, ServiceProcess]
    prometheus: Prometheus
    otlp: OtlpReceiver
    workdir: Path
    data_dir: Path
    notes: dict[str, object] = field(default_factory=dict)

    def url(self, service: str) -> str:
        if service not in self.services:
            pytest.skip(f"{service} is not implemented yet (no {APP_MODULE[service]})")
        return self.services[service].url

    def need(self, *services: str) -> None:
        for s in services:
            self.url(s)


def _common_env(demo_registry, otlp: OtlpReceiver, workdir: Path) -> dict[str, str]:  # noqa: ANN001
    env = {**demo_registry.env(), "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint}
    for prefix in PREFIX.values():
        env[f"{prefix}AUTH_ENABLED"] = "false"
        env[f"{prefix}LOG_LEVEL"] = "INFO"
    return env


@pytest.fixture(scope="session")
def stack(demo_registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: ANN001
    workdir = tmp_path_factory.mktemp("observability")
    logs = workdir / "logs"
    started: dict[str, ServiceProcess] = {}
    with OtlpReceiver() as otlp:
        env = _common_env(demo_registry, otlp, workdir)
        prom: Prometheus | None = None
        try:
            # Ports first, so all four start in parallel already pointing at each other.
            ports = {name: free_port() for name in PREFIX if available(name)}
            url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            envs: dict[str, dict[str, str]] = {}
            if "feature-store" in ports:
                envs["feature-store"] = {**env, **feature_store_env(demo_registry, workdir)}
            if "drift-detection" in ports:
                envs["drift-detection"] = {
                    **env,
                    "DRIFT_WINDOW_MODE": "count",
                    "DRIFT_WINDOW_SIZE": "60",
                    "DRIFT_RETRAIN_MODE": "off",
                    # opt-in (off by default): on here, small, so the multivariate panels have data
                    "DRIFT_MULTIVARIATE": '{"methods": ["mmd", "domain_classifier"], "permutations": 20, '
                    '"max_rows": 300}',
                    # segments and fairness per merchant category and hour (the demo's, as `mlplatform up`)
                    "DRIFT_SEGMENTS": '{"fraud-detector": ["merchant_category", "hour"]}',
                }
            if "model-serving" in ports:
                # one model, native runtime: the ONNX conversion checks cost a minute on a busy machine
                serving = {**env, "SERVING_MODELS": MODEL, "SERVING_RUNTIME": "native"}
                grpc_port = free_port()  # V2 over gRPC on (the root conftest turns it off by default)
                serving["SERVING_GRPC_PORT"] = str(grpc_port)
                if "feature-store" in ports:
                    serving["SERVING_FEATURE_STORE_URL"] = url["feature-store"]
                if "drift-detection" in ports:
                    serving |= {
                        "SERVING_DRIFT_URL": url["drift-detection"],
                        "SERVING_PAYLOAD_SAMPLE_RATE": "1.0",
                        "SERVING_PAYLOAD_BATCH_SIZE": "10",
                        "SERVING_PAYLOAD_FLUSH_INTERVAL_S": "0.2",
                        "SERVING_PAYLOAD_SPOOL_DIR": str(workdir / "spool"),
                    }
                envs["model-serving"] = serving
            if "explainability" in ports:
                explain = {**env, "EXPLAIN_MODELS": MODEL}
                if "feature-store" in ports:
                    explain["EXPLAIN_FEATURE_STORE_URL"] = url["feature-store"]
                envs["explainability"] = explain
            started.update(_start_all(envs, ports, logs))
            if "feature-store" in started:
                materialise(started["feature-store"].url)
            prom = Prometheus(
                workdir / "prometheus",
                {name: f"127.0.0.1:{svc.port}" for name, svc in started.items()},
                interval="1s",
            )
            notes: dict[str, object] = {}
            if "model-serving" in started:
                notes["grpc"] = f"127.0.0.1:{grpc_port}"
            yield Stack(started, prom, otlp, workdir, demo_registry.data_dir, notes)
        finally:
            if prom is not None:
                prom.stop()
            for svc in started.values():
                svc.stop()


def _start_all(
    envs: dict[str, dict[str, str]], ports: dict[str, int], logs: Path
) -> dict[str, ServiceProcess]:
    """Start services in parallel; if one fails, stop the others and re-raise."""
    if not envs:
        return {}
    with ThreadPoolExecutor(len(envs)) as pool:
        futures = {
            name: pool.submit(start_service, name, env, logs, port=ports[name], ready_timeout=240.0)
            for name, env in envs.items()
        }
        done: dict[str, ServiceProcess] = {}
        error: BaseException | None = None
        for name, future in futures.items():
            try:
                done[name] = future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below after cleanup
                error = error or exc
        if error is not None:
            for svc in done.values():
                svc.stop()
            raise error
        return done


def feature_store_env(demo_registry, workdir: Path) -> dict[str, str]:  # noqa: ANN001
    """feature-store over the demo data: the Feast repo under the data dir is applied at start-up."""
    return {"FEATURES_ONLINE_STORE": "sqlite", "FEATURES_MATERIALIZE_INTERVAL_S": "0"}


def materialise(url: str) -> None:
    """Load the demo feature sources into the online store (what the materialisation CronJob does)."""
    r = httpx.post(f"{url}/v1/features/materialize", json={}, timeout=300.0)
    assert r.status_code == 200, f"materialize -> {r.status_code} {r.text[:500]}"
