"""Fixtures for serving unit tests: a real SQLite MLflow registry with small sklearn/torch models."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.serving.app import create_app
from mlplatform.serving.settings import ServingSettings
from tests.unit.serving.registry_models import FOREST, HGB, MLP, Registry, shared_registry


@pytest.fixture(scope="session")
def serving_registry(tmp_path_factory) -> Registry:
    return shared_registry(tmp_path_factory.getbasetemp() / "serving-registry")


def make_settings(reg: Registry, tmp_path, **kw) -> ServingSettings:
    base = dict(
        data_dir=tmp_path,
        mlflow_tracking_uri=reg.uri,
        models=f"{FOREST},{MLP},{HGB}",
        auth_enabled=False,
        poll_interval_s=0,
        model_cache_dir=reg.data_dir / "cache",
    )
    base.update(kw)
    return ServingSettings(**base)


class RunningApp:
    """An app with its lifespan entered, and an in-process client."""

    def __init__(self, app, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def plane(self):
        return self.app.state.dataplane

    @property
    def repository(self):
        return self.app.state.repository


async def wait_until(predicate, deadline_s: float = 120.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met before the deadline")


@pytest.fixture
async def app_factory(serving_registry, tmp_path):
    """Build, start (lifespan) and wait for readiness; everything is closed after the test."""
    stack = contextlib.AsyncExitStack()

    async def _make(
        wait_ready: bool = True,
        secrets_env: dict | None = None,
        feature_client=None,
        payload_sink=None,
        **kw,
    ) -> RunningApp:
        settings = make_settings(serving_registry, tmp_path, **kw)
        app = create_app(
            settings,
            secrets=EnvSecretsBackend(secrets_env or {}),
            feature_client=feature_client,
            payload_sink=payload_sink,
        )
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
        )
        await stack.enter_async_context(client)
        running = RunningApp(app, client)
        if wait_ready:
            await wait_until(running.repository.ready)
        return running

    yield _make
    await stack.aclose()
