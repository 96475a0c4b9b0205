"""The FastAPI app skeleton every service is built on.

:func:`build_app` wires the error handlers, the request middleware (request id, tracing span,
body-size limit, request metrics, JSON access log), ``/metrics`` and the health probes
``GET /v2/health/live`` and ``GET /v2/health/ready``. Services add their routers and lifespan.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from mlplatform.core.auth import ApiKeyAuth
from mlplatform.core.environment import apply_environment_defaults
from mlplatform.core.errors import install_error_handlers
from mlplatform.core.logging import AccessLog
from mlplatform.core.metrics import HttpMetrics, metrics_router
from mlplatform.core.mlflow_auth import follow_mlflow_credentials
from mlplatform.core.pipeline import (
    FastHandler,
    FastRoute,
    PipelineMiddleware,
    RequestPipeline,
    new_request_id,
    serve_fast_asgi,
)
from mlplatform.core.responses import JSONResponse
from mlplatform.core.secrets import SecretsBackend, build_secrets_backend, register_secrets_metrics
from mlplatform.core.settings import ServiceSettings
from mlplatform.core.tracing import build_sampler, build_tracer_provider

__all__ = [
    "AppContext",
    "FastHandler",
    "FastRoute",
    "PlatformApp",
    "build_app",
    "build_context",
    "new_request_id",
]


class HealthStatus(BaseModel):
    live: bool | None = None
    ready: bool | None = None


@dataclass
class AppContext:
    """What :func:`build_app` hands a service: its registry, tracer, secrets and auth."""

    service: str
    settings: ServiceSettings
    registry: CollectorRegistry
    tracer_provider: TracerProvider
    secrets: SecretsBackend
    auth: ApiKeyAuth
    http_metrics: HttpMetrics
    access_log: AccessLog
    tracing_active: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
    _pipeline: RequestPipeline | None = None

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer(f"mlplatform.{self.service}")

    @property
    def pipeline(self) -> RequestPipeline:
        """The app's request pipeline (built on first use)."""
        if self._pipeline is None:
            self._pipeline = RequestPipeline(self)
        return self._pipeline


class PlatformApp(FastAPI):
    """FastAPI plus :class:`~mlplatform.core.pipeline.FastRoute` dispatch in front of the middleware
    stack (both through the app's :class:`~mlplatform.core.pipeline.RequestPipeline`)."""

    fast_routes: tuple[FastRoute, ...] = ()
    platform_ctx: AppContext | None = None
    # set on SIGTERM during the shutdown delay: readiness answers 503 while requests are still served
    draining: bool = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.platform_ctx
        if self.fast_routes and scope["type"] == "http" and ctx is not None:
            method = scope["method"]
            for route in self.fast_routes:
                if route.method == method:
                    hit = route.match(scope["path"])
                    if hit is not None:
                        await serve_fast_asgi(ctx.pipeline, route, hit, scope, receive, send)
                        return
        await super().__call__(scope, receive, send)


def build_context(
    service: str,
    settings: ServiceSettings,
    *,
    secrets: SecretsBackend | None = None,
    tracer_provider: TracerProvider | None = None,
) -> AppContext:
    """Create the per-app registry, tracer provider, secrets backend and auth from settings."""
    apply_environment_defaults()  # the one start-up place for process environment defaults
    registry = CollectorRegistry(auto_describe=True)
    secrets = secrets or build_secrets_backend(settings.secrets_backend)
    register_secrets_metrics(registry, secrets)
    follow_mlflow_credentials(secrets)  # MLflow credentials from Vault, rotated without a restart
    provider = tracer_provider or build_tracer_provider(
        service,
        settings.otlp_endpoint,
        sampler=build_sampler(settings.traces_sampler, settings.traces_sampler_arg),
    )
    auth = ApiKeyAuth(secrets, settings.api_keys_secret, enabled=settings.auth_enabled)
    return AppContext(
        service=service,
        settings=settings,
        registry=registry,
        tracer_provider=provider,
        secrets=secrets,
        auth=auth,
        http_metrics=HttpMetrics(registry, service),
        access_log=AccessLog(service, settings.slow_request_ms),
        tracing_active=bool(settings.otlp_endpoint) or tracer_provider is not None,
    )


def health_router(is_ready: Callable[[], bool]) -> APIRouter:
    """Liveness and readiness probes (same paths on every service)."""
    router = APIRouter(tags=["health"])

    @router.get("/v2/health/live", response_model=HealthStatus)
    async def live() -> HealthStatus:
        return HealthStatus(live=True)

    @router.get(
        "/v2/health/ready",
        response_model=HealthStatus,
        responses={503: {"description": "not ready yet", "model": HealthStatus}},
    )
    async def ready() -> JSONResponse:
        ok = bool(is_ready())
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    return router


def build_app(
    ctx: AppContext,
    *,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    is_ready: Callable[[], bool] = lambda: True,
    routers: list[APIRouter] | None = None,
    description: str = "",
) -> PlatformApp:
    """A FastAPI app with the platform's handlers, middleware, probes and metrics."""
    from mlplatform import __version__

    service_lifespan = lifespan or noop_lifespan

    @asynccontextmanager
    async def frozen_lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with service_lifespan(app):
                settle_heap()
                yield
        finally:
            ctx.access_log.flush()

    app = PlatformApp(
        title=title,
        version=__version__,
        description=description,
        lifespan=frozen_lifespan,
        default_response_class=JSONResponse,
    )
    app.state.ctx = ctx
    app.platform_ctx = ctx
    app.state.auth = ctx.auth
    install_error_handlers(app)
    app.include_router(health_router(lambda: not app.draining and is_ready()))
    app.include_router(metrics_router(ctx.registry))
    for router in routers or []:
        app.include_router(router)
    app.add_middleware(PipelineMiddleware, pipeline=ctx.pipeline)
    return app


def settle_heap() -> None:
    """Move every object alive now out of the cyclic collector's generations (``gc.freeze``).

    A service holds ~10^6 long-lived objects after start-up (libraries, models, feature registries);
    each full collection walks them all, a stall of hundreds of milliseconds in the middle of serving.
    Call after start-up and after loading something big. Frozen objects are still freed by reference
    counting; only cyclic garbage that already existed is kept.
    """
    gc.freeze()


@asynccontextmanager
async def noop_lifespan(_: FastAPI) -> AsyncIterator[None]:
    """A lifespan that does nothing (for services with no start-up work)."""
    yield


ReadyCheck = Callable[[], bool]
AsyncHook = Callable[[], Awaitable[None]]


def planes_lifespan(*planes: Any) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:  # noqa: ANN401
    """A lifespan that starts ``planes`` (objects with async ``start``/``stop``: a service's data plane
    and its companions) in order, and stops the started ones in reverse order."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started: list[Any] = []
        try:
            for plane in planes:
                await plane.start()
                started.append(plane)
            yield
        finally:
            for plane in reversed(started):
                await plane.stop()

    return lifespan
