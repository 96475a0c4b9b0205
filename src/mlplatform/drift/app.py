"""App factory of the drift-detection service: ``create_app(settings)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from mlplatform.core.app import build_app, build_context, planes_lifespan
from mlplatform.core.secrets import SecretsBackend, follow_secret
from mlplatform.drift.dataplane import DriftDataPlane
from mlplatform.drift.metrics import DriftMetrics
from mlplatform.drift.quality import QualityService
from mlplatform.drift.quality_metrics import QualityMetrics
from mlplatform.drift.quality_routes import quality_router
from mlplatform.drift.retrain import RetrainLauncher
from mlplatform.drift.routes import build_router
from mlplatform.drift.settings import DriftSettings
from mlplatform.drift.store import open_store

SERVICE = "drift-detection"


def create_app(
    settings: DriftSettings,
    *,
    secrets: SecretsBackend | None = None,
    launcher: RetrainLauncher | None = None,
    mlflow_client_factory: Callable[[], Any] | None = None,
) -> FastAPI:
    """Build the drift-detection app from ``settings``; ``launcher``/``mlflow_client_factory`` replace defaults.

    The store is opened here, so a bad ``DRIFT_DATABASE_URL`` or an unreachable database fails start-up
    with one :class:`RuntimeError` line (``mlplatform serve`` logs it and exits 2).
    """
    ctx = build_context(SERVICE, settings, secrets=secrets)
    metrics = DriftMetrics(ctx.registry)
    store = open_store(settings.resolved_database_url(ctx.secrets), settings.drift_dir())
    set_dsn = getattr(store, "set_dsn", None)
    if set_dsn is not None and not (settings.database_url and settings.database_url.get_secret_value()):
        follow_secret(ctx.secrets, "DRIFT_DATABASE_URL", set_dsn)  # a rotated DSN, no restart
    svc = DriftDataPlane(
        settings,
        metrics,
        launcher=launcher,
        client_factory=mlflow_client_factory,
        tracer=ctx.tracer,
        store=store,
    )
    quality = QualityService(svc, QualityMetrics(ctx.registry))
    try:
        quality.check_segments()  # a segment column a model lacks: one start-up error naming it
    except RuntimeError:
        store.close()
        raise

    app = build_app(
        ctx,
        title="mlplatform drift detection",
        description="Evidently-compatible data and prediction drift per model version, with retraining triggers.",
        lifespan=planes_lifespan(svc, quality),
        is_ready=svc.ready,
        routers=[build_router(svc, quality), quality_router(quality)],
    )
    app.state.dataplane = svc
    app.state.drift_metrics = metrics
    app.state.quality = quality
    return app
