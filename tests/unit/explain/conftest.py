"""Fixtures for the explainability unit tests.

``explain_app`` runs the real app (lifespan entered) on the demo models from the shared
``demo_registry`` (real SQLite MLflow); ``extra_app`` runs it on small models of our own registry
(``tests/unit/explain/models.py``): a logistic regression, a pt2 torch MLP and a forest whose
alias the tests move.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.explain.app import create_app
from mlplatform.explain.settings import ExplainSettings
from tests.helpers import in_process, wait_until
from tests.unit.explain.models import BOOSTED, LINEAR, MLP, TREE, Registry, register_models

DEMO_TREE = "fraud-detector"
DEMO_MLP = "fraud-detector-mlp"


@dataclass
class RunningApp:
    app: Any
    client: httpx.AsyncClient

    @property
    def plane(self) -> Any:
        return self.app.state.dataplane


@contextlib.asynccontextmanager
async def running(settings: ExplainSettings, secrets_env: dict | None = None) -> AsyncIterator[RunningApp]:
    app = create_app(settings, secrets=EnvSecretsBackend(secrets_env or {}))
    async with in_process(app, "http://explain") as client:
        await wait_until(app.state.dataplane.ready)
        yield RunningApp(app, client)


def explain_settings(data_dir, tracking_uri: str, models: str, **kw: Any) -> ExplainSettings:  # noqa: ANN001
    """Settings for ``models`` from the registry at ``tracking_uri``: no auth, no registry polling
    within a test run; ``kw`` sets any other setting or overrides these."""
    base: dict[str, Any] = dict(
        data_dir=data_dir,
        mlflow_tracking_uri=tracking_uri,
        models=models,
        auth_enabled=False,
        poll_interval_s=3600,
    )
    return ExplainSettings(**{**base, **kw})


def demo_settings(demo_registry, tmp_path, **kw) -> ExplainSettings:
    kw = {"models": f"{DEMO_TREE},{DEMO_MLP}", "importance_sample_size": 200, **kw}
    return explain_settings(tmp_path, demo_registry.tracking_uri, **kw)


@pytest.fixture(scope="session")
async def explain_app(demo_registry, tmp_path_factory) -> AsyncIterator[RunningApp]:
    settings = demo_settings(demo_registry, tmp_path_factory.mktemp("explain-app"))
    async with running(settings) as app:
        yield app


@pytest.fixture(scope="session")
def extra_registry(tmp_path_factory) -> Registry:
    return register_models(tmp_path_factory.mktemp("explain-registry"))


@pytest.fixture(scope="session")
async def extra_app(extra_registry, tmp_path_factory) -> AsyncIterator[RunningApp]:
    models = f"{LINEAR},{MLP},{TREE},{BOOSTED}"
    data_dir = tmp_path_factory.mktemp("explain-extra")
    settings = explain_settings(data_dir, extra_registry.tracking_uri, models, kernel_nsamples=200)
    async with running(settings) as app:
        yield app
