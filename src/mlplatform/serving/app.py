"""``create_app(settings)``: the model-serving FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from mlplatform.core.app import FastRoute, build_app, build_context
from mlplatform.core.payloads import PayloadSink
from mlplatform.core.secrets import SecretsBackend, follow_secret
from mlplatform.features.client import build_feature_client
from mlplatform.serving.dataplane import DataPlane
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.repository import ModelRepository
from mlplatform.serving.routes import build_router, infer_handler, match_infer
from mlplatform.serving.settings import ServingSettings
from mlplatform.serving.text.routes import build_text_router

log = logging.getLogger("mlplatform.serving")


def create_app(
    settings: ServingSettings,
    *,
    secrets: SecretsBackend | None = None,
    feature_client: Any = None,
    payload_sink: PayloadSink | None = None,
    tracer_provider: Any = None,
) -> FastAPI:
    """Build the serving app. ``feature_client``/``payload_sink`` override the ones built from settings."""
    ctx = build_context("model-serving", settings, secrets=secrets, tracer_provider=tracer_provider)
    metrics = ServingMetrics(ctx.registry)
    repository = ModelRepository(settings, metrics)
    plane = DataPlane(settings, repository, metrics, feature_client=feature_client, payload_sink=payload_sink)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        owned: list[Any] = []
        if plane.feature_client is None and settings.feature_store_url:
            plane.feature_client = build_feature_client(settings, ctx.secrets, ctx.registry)
            owned.append(plane.feature_client)
        logger = None
        if plane.payload_sink is None and settings.drift_url:
            logger = _payload_logger(settings, ctx)
            await logger.start()
            plane.payload_sink = logger
        await repository.start()
        grpc_server = None
        if settings.grpc_port:
            from mlplatform.serving.grpc_server import GrpcServer, InferenceServicer

            servicer = InferenceServicer(
                plane, ctx.pipeline, ctx.auth, lambda: not app.draining and plane.ready()
            )
            grpc_server = GrpcServer(servicer, settings.host, settings.grpc_port, settings.max_body_bytes)
            app.state.grpc_port = await grpc_server.start()
        try:
            yield
        finally:
            if grpc_server is not None:  # after HTTP has drained: in-flight calls finish, new ones refused
                await grpc_server.stop(settings.grpc_shutdown_grace_s)
            await repository.stop()
            if logger is not None:
                await logger.stop()
                plane.payload_sink = None
            for client in owned:
                await client.aclose()
                plane.feature_client = None

    handler = infer_handler(plane, ctx.auth)
    app = build_app(
        ctx,
        title="mlplatform model-serving",
        description="Open Inference Protocol (V2) REST (and, on SERVING_GRPC_PORT, gRPC) serving of "
        "registered MLflow models.",
        lifespan=lifespan,
        is_ready=plane.ready,
        routers=[build_router(plane, handler), build_text_router(plane)],
    )
    # V2 infer is a fast route: served ahead of FastAPI's routing by the request pipeline
    app.fast_routes = (FastRoute("POST", match_infer, handler),)
    app.state.dataplane = plane
    app.state.repository = repository
    app.state.grpc_port = None  # the bound gRPC port once the lifespan has started it
    return app


def _payload_logger(settings: ServingSettings, ctx: Any) -> Any:
    from mlplatform.drift.payload_logger import PayloadLogger

    kwargs: dict[str, Any] = dict(
        batch_size=settings.payload_batch_size,
        sample_rate=settings.payload_sample_rate,
        spool_dir=settings.resolved_spool_dir(),
        spool_max_bytes=settings.payload_spool_max_bytes,
        flush_interval_s=settings.payload_flush_interval_s,
        drain_timeout_s=settings.payload_drain_timeout_s,
        registry=ctx.registry,
    )
    api_key = ctx.secrets.get(settings.drift_api_key_secret)
    if api_key:
        kwargs["api_key"] = api_key
    logger = PayloadLogger(settings.drift_url, **kwargs)
    follow_secret(ctx.secrets, settings.drift_api_key_secret, logger.set_api_key)
    return logger
