"""App factory of the feature-store service: ``create_app(settings)``."""

from __future__ import annotations

from fastapi import FastAPI

from mlplatform.core.app import build_app, build_context, planes_lifespan
from mlplatform.core.secrets import SecretsBackend
from mlplatform.features.dataplane import FeatureDataPlane
from mlplatform.features.feast_routes import feast_fast_route
from mlplatform.features.metrics import FeatureMetrics
from mlplatform.features.routes import build_router, online_fast_route
from mlplatform.features.settings import FeatureSettings

SERVICE = "feature-store"


def create_app(settings: FeatureSettings, *, secrets: SecretsBackend | None = None) -> FastAPI:
    """Build the feature-store app from ``settings`` (the Feast repository is opened at start-up).

    With a database configured it must answer now: a malformed or unreachable URL raises
    :class:`~mlplatform.features.database.DatabaseConfigError` (a ``ValueError``) naming the setting."""
    ctx = build_context(SERVICE, settings, secrets=secrets)
    metrics = FeatureMetrics(ctx.registry)
    plane = FeatureDataPlane(settings, metrics, secrets=ctx.secrets)
    # fail fast with one line naming the setting (a bad or unreachable database URL), before serving
    plane.check_database()

    app = build_app(
        ctx,
        title="mlplatform feature store",
        description="Online features from the Feast repository: reads, pushes and materialisation "
        "(/v1 API, and Feast's feature-server API as `feast serve` speaks it).",
        lifespan=planes_lifespan(plane),
        is_ready=plane.ready,
        routers=[build_router(plane)],
    )
    # served ahead of FastAPI (same contract as the documented routes)
    app.fast_routes = (online_fast_route(plane, ctx.auth), feast_fast_route(plane, ctx.auth))
    app.state.dataplane = plane
    app.state.feature_metrics = metrics
    return app
