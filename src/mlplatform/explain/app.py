"""App factory of the explainability service: ``create_app(settings)``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from mlplatform.core.app import build_app, build_context, planes_lifespan
from mlplatform.core.secrets import SecretsBackend
from mlplatform.explain.dataplane import ExplainDataPlane
from mlplatform.explain.metrics import ExplainMetrics
from mlplatform.explain.routes import build_router
from mlplatform.explain.settings import ExplainSettings

SERVICE = "explainability"


def create_app(
    settings: ExplainSettings,
    *,
    secrets: SecretsBackend | None = None,
    feature_client: Any | None = None,
    mlflow: Any | None = None,
) -> FastAPI:
    """Build the explainability app from ``settings``; ``feature_client``/``mlflow`` replace the defaults."""
    ctx = build_context(SERVICE, settings, secrets=secrets)
    metrics = ExplainMetrics(ctx.registry)
    plane = ExplainDataPlane(
        settings,
        metrics,
        secrets=ctx.secrets,
        registry=ctx.registry,
        feature_client=feature_client,
        mlflow=mlflow,
    )

    app = build_app(
        ctx,
        title="mlplatform explainability",
        description="SHAP explanations of the model version that serving uses.",
        lifespan=planes_lifespan(plane),
        is_ready=plane.ready,
        routers=[build_router(plane)],
    )
    app.state.dataplane = plane
    app.state.explain_metrics = metrics
    return app
