"""Every probe and scrape path in the rendered manifests is a GET route the service really serves.

Routes come from the service's FastAPI app built with its ``create_app(settings)`` (no lifespan is
run, so nothing is loaded); for a service whose package is not written yet, from the core app
skeleton (health router and /metrics), which every service is built on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from mlplatform.core.app import build_app, build_context
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.core.settings import ServiceSettings
from mlplatform.deploy.render import ENVIRONMENTS, RELEASES
from mlplatform.services import SERVICES
from tests.deploy.k8s import by_kind, containers, workloads


def _build_app(service: str, data_dir: Path) -> tuple[FastAPI, str]:
    spec = SERVICES[service]
    factory_module = spec.factory.partition(":")[0]
    if (
        importlib.util.find_spec(factory_module.rpartition(".")[0]) is None
        or importlib.util.find_spec(factory_module) is None
    ):
        settings = ServiceSettings(data_dir=data_dir, auth_enabled=False)
        ctx = build_context(service, settings, secrets=EnvSecretsBackend({}))
        return build_app(ctx, title=service), "core skeleton"
    settings = spec.load_settings_class()(data_dir=data_dir, auth_enabled=False)
    return spec.load_factory()(settings), "create_app"


PATHS = ("/v2/health/live", "/v2/health/ready", "/metrics", "/healthz", "/health")


async def _served_get_paths(app: FastAPI, paths: tuple[str, ...]) -> set[str]:
    """The paths a GET reaches a handler on (anything but 404/405), asked over ASGI in process."""
    served = set()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        for path in paths:
            response = await client.get(path)
            if response.status_code not in (404, 405):
                served.add(path)
    return served


@pytest.fixture(scope="module")
async def served_routes(tmp_path_factory, rendered) -> dict[str, set[str]]:
    wanted = set(PATHS)
    for objects in rendered.values():
        for w in workloads(objects):
            for c in containers(w):
                wanted |= {
                    c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
                }
        for monitor in by_kind(objects, "ServiceMonitor"):
            wanted |= {e["path"] for e in monitor["spec"]["endpoints"]}
    routes = {}
    for service in SERVICES:
        app, _how = _build_app(service, tmp_path_factory.mktemp(service))
        routes[service] = await _served_get_paths(app, tuple(sorted(wanted)))
    return routes


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_probes_hit_served_paths(rendered, served_routes, env):
    for w in workloads(rendered[env]):
        service = w["metadata"]["labels"]["app.kubernetes.io/component"]
        for c in containers(w):
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert c["args"] == ["serve", service, "--port", str(ports["http"])]
            assert ports["http"] == SERVICES[service].port
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = c[probe]["httpGet"]
                assert get["path"] in served_routes[service], f"{service} {probe} {get['path']}"
                assert get["port"] in ports
            assert c["readinessProbe"]["httpGet"]["path"] != c["livenessProbe"]["httpGet"]["path"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_service_monitors_scrape_served_metrics(rendered, served_routes, env):
    monitors = by_kind(rendered[env], "ServiceMonitor")
    assert len(monitors) == len(RELEASES)
    for monitor in monitors:
        service = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] in served_routes[service]
            assert endpoint["port"] == "http"


def test_route_check_fails_for_an_unserved_path(served_routes):
    for service in SERVICES:
        assert {"/v2/health/live", "/v2/health/ready", "/metrics"} <= served_routes[service]
        assert "/healthz" not in served_routes[service] and "/health" not in served_routes[service]
