"""``create_app(settings)``: the model-serving FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from mlplatform.core.app import FastRoute, build_app, build_context
from mlplatform.core.payloads import PayloadSink
from mlplatform.core.secrets import SecretsBackend
from mlplatform.serving.dataplane import ServingDataPlane
from mlplatform.serving.metrics import ServingMetrics
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
    plane = ServingDataPlane(
        settings,
        metrics,
        secrets=ctx.secrets,
        registry=ctx.registry,
        feature_client=feature_client,
        payload_sink=payload_sink,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await plane.start()
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
            await plane.stop()

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
    app.state.repository = plane.repository
    app.state.grpc_port = None  # the bound gRPC port once the lifespan has started it
    return app
