"""The FastAPI app skeleton every service is built on.

:func:`build_app` wires the error handlers, the request middleware (request id, tracing span,
body-size limit, request metrics, JSON access log), ``/metrics`` and the health probes
``GET /v2/health/live`` and ``GET /v2/health/ready``. Services add their routers and lifespan.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import time
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
from mlplatform.core.errors import PlatformError, install_error_handlers
from mlplatform.core.logging import request_id_var
from mlplatform.core.metrics import HttpMetrics, metrics_router
from mlplatform.core.responses import JSONResponse
from mlplatform.core.secrets import SecretsBackend, build_secrets_backend
from mlplatform.core.settings import ServiceSettings
from mlplatform.core.tracing import build_tracer_provider, current_trace_id, extract_context

access_log = logging.getLogger("mlplatform.access")

_RID_PREFIX = os.urandom(8).hex()
_rid_counter = itertools.count(1)


def new_request_id() -> str:
    """A request id unique across processes: a random per-process prefix and a counter (32 hex chars)."""
    return f"{_RID_PREFIX}{next(_rid_counter):016x}"


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
        request_id = headers.get("x-request-id") or new_request_id()
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
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        finish_request(self.ctx, scope["method"], scope["path"], template, code, start)
        return template


def finish_request(
    ctx: AppContext,
    method: str,
    path: str,
    template: str,
    code: int,
    start: float,
    trace_id: str | None = None,
) -> None:
    """A metered request is done: in-flight gauge, request metrics and the JSON access log line."""
    elapsed = time.perf_counter() - start
    metrics = ctx.http_metrics
    metrics.dec_in_flight()
    metrics.observe(template, method, code, elapsed, trace_id)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s",
            method,
            path,
            code,
            extra={"status": code, "duration_ms": round(elapsed * 1000, 3), "route": template},
        )


FastHandler = Callable[[tuple[str, ...], dict[bytes, bytes], bytes], Awaitable[bytes]]


@dataclass(frozen=True)
class FastRoute:
    """A hot route served without Starlette routing, middleware objects or a ``Request``.

    ``match`` maps a path to ``(route template, path parameters)`` or ``None``; ``handler`` gets the
    parameters, the raw request headers and the body and returns the JSON response body (status 200), or
    raises :class:`~mlplatform.core.errors.PlatformError`. The app still does everything the request
    middleware does for it: request id, body limit, in-flight gauge, request metrics, access log, and the
    caller's trace context. With an OTLP exporter configured, requests take the full middleware path
    instead (which opens the server span) and reach the same handler from there.
    """

    method: str
    match: Callable[[str], tuple[str, tuple[str, ...]] | None]
    handler: FastHandler


_JSON_HEADER = (b"content-type", b"application/json")


class PlatformApp(FastAPI):
    """FastAPI plus :class:`FastRoute` dispatch in front of the middleware stack."""

    fast_routes: tuple[FastRoute, ...] = ()
    platform_ctx: AppContext | None = None
    # set on SIGTERM during the shutdown delay: readiness answers 503 while requests are still served
    draining: bool = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.platform_ctx
        if self.fast_routes and scope["type"] == "http" and ctx is not None:
            if not ctx.tracing_active:
                method = scope["method"]
                for route in self.fast_routes:
                    if route.method == method:
                        hit = route.match(scope["path"])
                        if hit is not None:
                            await _serve_fast(ctx, route, hit, scope, receive, send)
                            return
        await super().__call__(scope, receive, send)


async def _serve_fast(
    ctx: AppContext,
    route: FastRoute,
    hit: tuple[str, tuple[str, ...]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """A fast route over ASGI: read the body (size limit, disconnect), then :func:`run_fast_route`."""
    headers: dict[bytes, bytes] = dict(scope["headers"])
    max_body = ctx.settings.max_body_bytes
    method = scope["method"]
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        await _send_error(send, 413, f"request body of {int(length)} bytes exceeds the {max_body}-byte limit")
        ctx.http_metrics.observe("unmatched", method, 413, 0.0, "")
        return
    start = time.perf_counter()
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            ctx.http_metrics.inc_in_flight()
            finish_request(ctx, method, scope["path"], hit[0], 499, start)
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            await _send_error(send, 413, f"request body exceeds the {max_body}-byte limit")
            ctx.http_metrics.inc_in_flight()
            finish_request(ctx, method, scope["path"], hit[0], 413, start)
            return
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    status, response_headers, out = await run_fast_route(
        ctx, route, hit, method, scope["path"], headers, body, start
    )
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": out})


async def run_fast_route(
    ctx: AppContext,
    route: FastRoute,
    hit: tuple[str, tuple[str, ...]],
    method: str,
    path: str,
    headers: dict[bytes, bytes],
    body: bytes,
    start: float | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run a fast route on a complete request; returns ``(status, headers, body)`` of the response.

    Does what the request middleware does for a metered route: request id, in-flight gauge, the
    caller's trace context, request metrics and access log; a :class:`PlatformError` becomes its
    ``{"error"}`` body, anything else a generic 500 (logged, never shown). The body size limit is the
    caller's (it is enforced before the body is read). Shared by the ASGI dispatch (:func:`_serve_fast`)
    and the server's direct dispatch (:mod:`mlplatform.core.server`).
    """
    raw_rid = headers.get(b"x-request-id")
    request_id = raw_rid.decode("latin-1") if raw_rid else new_request_id()
    rid_token = request_id_var.set(request_id)
    template, params = hit
    ctx.http_metrics.inc_in_flight()
    if start is None:
        start = time.perf_counter()
    trace_id = ""
    otel_token = None
    status = 500
    try:
        if b"traceparent" in headers:
            otel_token = otel_context.attach(
                extract_context({k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()})  # type: ignore[arg-type]
            )
            trace_id = current_trace_id()
        response_headers = [
            _JSON_HEADER,
            (b"content-length", b""),
            (b"x-request-id", request_id.encode("latin-1")),
        ]
        try:
            out = await route.handler(params, headers, body)
            status = 200
        except PlatformError as exc:
            status, out = exc.status_code, orjson.dumps({"error": exc.message})
            if status == 401:
                response_headers.append((b"www-authenticate", b"Bearer"))
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            logging.getLogger("mlplatform.app").exception("unhandled error on %s %s", method, path)
            out = orjson.dumps({"error": "internal error; see the service logs with this request's trace id"})
        response_headers[1] = (b"content-length", str(len(out)).encode())
        return status, response_headers, out
    finally:
        finish_request(ctx, method, path, template, status, start, trace_id)
        if otel_token is not None:
            otel_context.detach(otel_token)
        request_id_var.reset(rid_token)


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
) -> PlatformApp:
    """A FastAPI app with the platform's handlers, middleware, probes and metrics."""
    from mlplatform import __version__

    service_lifespan = lifespan or noop_lifespan

    @asynccontextmanager
    async def frozen_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service_lifespan(app):
            settle_heap()
            yield

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
    app.add_middleware(RequestMiddleware, ctx=ctx)
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
