"""Fixtures for serving unit tests: a real SQLite MLflow registry with small sklearn/torch models."""

from __future__ import annotations

import contextlib

import pytest

from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.serving.app import create_app
from tests.helpers import in_process, wait_until
from tests.unit.serving.registry_models import Registry, shared_registry
from tests.unit.serving.support import RunningApp, make_settings


@pytest.fixture(scope="session")
def serving_registry(tmp_path_factory) -> Registry:
    return shared_registry(tmp_path_factory.getbasetemp() / "serving-registry")


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
        client = await stack.enter_async_context(in_process(app, "http://t"))
        running = RunningApp(app, client)
        if wait_ready:
            await wait_until(running.repository.ready)
        return running

    yield _make
    await stack.aclose()
