"""The FastAPI app skeleton every service is built on.

:func:`build_app` wires the error handlers, the request middleware (request id, tracing span,
body-size limit, request metrics, JSON access log), ``/metrics`` and the health probes
``GET /v2/health/live`` and ``GET /v2/health/ready``. Services add their routers and lifespan.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlplatform.core.auth import ApiKeyAuth
from mlplatform.core.errors import install_error_handlers
from mlplatform.core.logging import request_id_var
from mlplatform.core.metrics import HttpMetrics, metrics_router
from mlplatform.core.responses import JSONResponse
from mlplatform.core.secrets import SecretsBackend, build_secrets_backend
from mlplatform.core.settings import ServiceSettings
from mlplatform.core.tracing import build_tracer_provider, extract_context

access_log = logging.getLogger("mlplatform.access")

UNMETERED_PATHS = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready", "/v2", "/"})


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
    tracing_active: bool = True
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer(f"mlplatform.{self.service}")


class RequestMiddleware:
    """Pure-ASGI middleware: request id, server span, body limit, metrics, access log."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx
        self.max_body = ctx.settings.max_body_bytes
        self.tracer = ctx.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        metered = path not in UNMETERED_PATHS
        try:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await _send_error(
                    send, 413, f"request body of {length} bytes exceeds the {self.max_body}-byte limit"
                )
                if metered:
                    self.ctx.http_metrics.observe("unmatched", scope["method"], 413, 0.0)
                return
            if not metered:
                await self.app(scope, receive, send)
                return
            await self._handle(scope, receive, send, headers, request_id)
        finally:
            request_id_var.reset(token)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
    ) -> None:
        status = {"code": 500}
        received = {"n": 0}
        max_body = self.max_body

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received["n"] += len(message.get("body", b""))
                if received["n"] > max_body:
                    raise _BodyTooLarge()
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        metrics = self.ctx.http_metrics
        parent = extract_context(headers)
        if not self.ctx.tracing_active:
            await self._handle_untraced(
                scope, limited_receive, send_wrapper, send, parent, status, request_id
            )
            return
        metrics.inc_in_flight()
        start = time.perf_counter()
        with self.tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}", context=parent, kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, limited_receive, send_wrapper)
            except _BodyTooLarge:
                status["code"] = 413
                await _send_error(send, 413, f"request body exceeds the {max_body}-byte limit")
            finally:
                template = self._finish(scope, status["code"], start)
                span.update_name(f"{scope['method']} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status["code"])
                span.set_attribute("mlplatform.request_id", request_id)
                if status["code"] >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    async def _handle_untraced(
        self,
        scope: Scope,
        receive: Receive,
        send_wrapper: Send,
        send: Send,
        parent: object,
        status: dict[str, int],
        request_id: str,
    ) -> None:
        """No exporter configured: skip the SDK span (it would go nowhere) but keep the caller's trace
        context attached, so logs, exemplars and outbound calls still carry an upstream trace id."""
        metrics = self.ctx.http_metrics
        metrics.inc_in_flight()
        start = time.perf_counter()
        token = otel_context.attach(parent)  # type: ignore[arg-type]
        try:
            await self.app(scope, receive, send_wrapper)
        except _BodyTooLarge:
            status["code"] = 413
            await _send_error(send, 413, f"request body exceeds the {self.max_body}-byte limit")
        finally:
            self._finish(scope, status["code"], start)
            otel_context.detach(token)

    def _finish(self, scope: Scope, code: int, start: float) -> str:
        """Request done: in-flight gauge, metrics and access log. Returns the route template."""
        elapsed = time.perf_counter() - start
        metrics = self.ctx.http_metrics
        metrics.dec_in_flight()
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        metrics.observe(template, scope["method"], code, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                code,
                extra={"status": code, "duration_ms": round(elapsed * 1000, 3), "route": template},
            )
        return template


class _BodyTooLarge(Exception):
    pass


async def _send_error(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_context(
    service: str,
    settings: ServiceSettings,
    *,
    secrets: SecretsBackend | None = None,
    tracer_provider: TracerProvider | None = None,
) -> AppContext:
    """Create the per-app registry, tracer provider, secrets backend and auth from settings."""
    registry = CollectorRegistry(auto_describe=True)
    secrets = secrets or build_secrets_backend(settings.secrets_backend)
    provider = tracer_provider or build_tracer_provider(service, settings.otlp_endpoint)
    auth = ApiKeyAuth(secrets, settings.api_keys_secret, enabled=settings.auth_enabled)
    return AppContext(
        service=service,
        settings=settings,
        registry=registry,
        tracer_provider=provider,
        secrets=secrets,
        auth=auth,
        http_metrics=HttpMetrics(registry, service),
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
) -> FastAPI:
    """A FastAPI app with the platform's handlers, middleware, probes and metrics."""
    from mlplatform import __version__

    app = FastAPI(
        title=title,
        version=__version__,
        description=description,
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.ctx = ctx
    app.state.auth = ctx.auth
    install_error_handlers(app)
    app.include_router(health_router(is_ready))
    app.include_router(metrics_router(ctx.registry))
    for router in routers or []:
        app.include_router(router)
    app.add_middleware(RequestMiddleware, ctx=ctx)
    return app


@asynccontextmanager
async def noop_lifespan(_: FastAPI) -> AsyncIterator[None]:
    """A lifespan that does nothing (for services with no start-up work)."""
    yield


ReadyCheck = Callable[[], bool]
AsyncHook = Callable[[], Awaitable[None]]
