"""The request pipeline: the one place a metered request is run, whichever way it arrives.

Every metered request gets the same bookkeeping from :class:`RequestPipeline`: a request id
(``x-request-id`` or a new one), the in-flight gauge, the caller's W3C trace context and, when an
exporter is configured, a server span chosen by the sampler (``OTEL_TRACES_SAMPLER``), the request
metrics by route template (with the trace id as exemplar for sampled requests), the access line, the
body-size limit and the error answer of :func:`~mlplatform.core.errors.error_response`.

Requests arrive three ways, all ending here:

- :class:`~mlplatform.core.server.FastPathProtocol` (production: ``mlplatform serve``) serves a
  :class:`FastRoute` straight from uvicorn's HTTP parser with :meth:`RequestPipeline.run`;
- :class:`PlatformApp` serves the same fast routes over ASGI with :meth:`RequestPipeline.run` (in-process
  clients, and the requests the direct path leaves to uvicorn: chunked bodies, HTTP/1.0, ...);
- every other route goes through FastAPI inside :class:`PipelineMiddleware`, which calls
  :meth:`RequestPipeline.begin`/:meth:`RequestPipeline.finish` around it; FastAPI's exception handlers
  use the same ``error_response``.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from mlplatform.core.errors import PayloadTooLarge, error_response
from mlplatform.core.logging import request_id_var
from mlplatform.core.tracing import DrawnIdGenerator, draw_trace_id, extract_context, root_sampling_bound

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from mlplatform.core.app import AppContext

_RID_PREFIX = os.urandom(8).hex()
_rid_counter = itertools.count(1)

UNMETERED_PATHS = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready", "/v2", "/"})
JSON_HEADER = (b"content-type", b"application/json")
_TRACE_ID_LIMIT = (1 << 64) - 1
_UNSAMPLED = TraceFlags(TraceFlags.RANDOM_TRACE_ID)  # W3C level 2: a random trace id, not sampled


def new_request_id() -> str:
    """A request id unique across processes: a random per-process prefix and a counter (32 hex chars)."""
    return f"{_RID_PREFIX}{next(_rid_counter):016x}"


# returns the JSON body, or (body, headers) where headers may start with its own content-type
FastHandler = Callable[
    [tuple[str, ...], dict[bytes, bytes], bytes], Awaitable[bytes | tuple[bytes, list[tuple[bytes, bytes]]]]
]


@dataclass(frozen=True)
class FastRoute:
    """A hot route served without Starlette routing, middleware objects or a ``Request``.

    ``match`` maps a path to ``(route template, path parameters)`` or ``None``; ``handler`` gets the
    parameters, the raw request headers and the body and returns the JSON response body (status 200), or
    raises (the pipeline turns the exception into the error answer).
    """

    method: str
    match: Callable[[str], tuple[str, tuple[str, ...]] | None]
    handler: FastHandler


class Reply(NamedTuple):
    """A complete answer: status, headers and body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Flight:
    """One request between :meth:`RequestPipeline.begin` and :meth:`RequestPipeline.finish`."""

    __slots__ = ("method", "path", "request_id", "start", "span", "otel_token", "rid_token")

    def __init__(self, method: str, path: str, request_id: str, start: float) -> None:
        self.method = method
        self.path = path
        self.request_id = request_id
        self.start = start
        self.span: trace.Span | None = None
        self.otel_token: object | None = None
        self.rid_token: object | None = None


def too_large(max_body: int, length: int | None = None) -> PayloadTooLarge:
    """The 413 for a body over the limit (by its declared length, or as it streamed in)."""
    if length is not None:
        return PayloadTooLarge(f"request body of {length} bytes exceeds the {max_body}-byte limit")
    return PayloadTooLarge(f"request body exceeds the {max_body}-byte limit")


def declared_length(headers: Mapping[bytes, bytes]) -> int | None:
    """The ``content-length`` header as a number (``None`` when absent or not a plain number)."""
    raw = headers.get(b"content-length")
    return int(raw) if raw is not None and raw.isdigit() else None


class RequestPipeline:
    """Request id, trace context and span, metrics, access log, body limit and error answers."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.metrics = ctx.http_metrics
        self.access = ctx.access_log
        self.max_body = ctx.settings.max_body_bytes
        self.tracer = ctx.tracer if ctx.tracing_active else None
        # requests that start a trace: drawn and judged here when the sampler goes by trace id alone
        # (prod's parentbased_traceidratio); the SDK is asked for a span only when it will be sampled
        ids = getattr(ctx.tracer_provider, "id_generator", None)
        self._ids = ids if isinstance(ids, DrawnIdGenerator) else None
        self._root_bound = (
            root_sampling_bound(ctx.settings.traces_sampler, ctx.settings.traces_sampler_arg)
            if self._ids is not None
            else None
        )

    def begin(self, method: str, path: str, headers: Mapping[bytes, bytes]) -> Flight:
        """A metered request starts: request id, in-flight gauge, trace context (and span)."""
        raw = headers.get(b"x-request-id")
        request_id = raw.decode("latin-1") if raw else new_request_id()
        flight = Flight(method, path, request_id, time.perf_counter())
        flight.rid_token = request_id_var.set(request_id)
        self.metrics.inc_in_flight()
        parent = None
        traceparent = headers.get(b"traceparent")
        if traceparent is not None:
            carrier = {"traceparent": traceparent.decode("latin-1")}
            tracestate = headers.get(b"tracestate")
            if tracestate is not None:
                carrier["tracestate"] = tracestate.decode("latin-1")
            parent = extract_context(carrier)
        if self.tracer is not None:
            if parent is None and self._root_bound is not None:
                trace_id = draw_trace_id()
                if trace_id & _TRACE_ID_LIMIT >= self._root_bound:  # not sampled: no SDK span
                    span: trace.Span = NonRecordingSpan(
                        SpanContext(trace_id, random.getrandbits(64), False, _UNSAMPLED)
                    )
                else:
                    self._ids.use_next(trace_id)  # type: ignore[union-attr]  # the SDK samples this id
                    span = self.tracer.start_span(method, kind=SpanKind.SERVER)
            else:
                span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER)  # type: ignore[arg-type]
            flight.span = span
            flight.otel_token = otel_context.attach(trace.set_span_in_context(span, parent))  # type: ignore[arg-type]
        elif parent is not None:
            flight.otel_token = otel_context.attach(parent)  # type: ignore[arg-type]
        return flight

    def finish(self, flight: Flight, template: str, status: int) -> None:
        """The request is answered: span, metrics (exemplar when sampled), access line, contexts."""
        elapsed = time.perf_counter() - flight.start
        span = flight.span
        if span is not None:
            span_ctx = span.get_span_context()
            if span.is_recording():
                span.update_name(f"{flight.method} {template}")
                span.set_attributes(
                    {
                        "http.request.method": flight.method,
                        "http.route": template,
                        "url.path": flight.path,
                        "http.response.status_code": status,
                        "mlplatform.request_id": flight.request_id,
                    }
                )
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
        elif flight.otel_token is not None:
            span_ctx = trace.get_current_span().get_span_context()
        else:
            span_ctx = None
        trace_id = span_id = ""
        exemplar = ""
        if span_ctx is not None and span_ctx.is_valid:
            trace_id = format(span_ctx.trace_id, "032x")
            span_id = format(span_ctx.span_id, "016x")
            if span_ctx.trace_flags.sampled:
                exemplar = trace_id
        self.metrics.dec_in_flight()
        self.metrics.observe(template, flight.method, status, elapsed, exemplar)
        self.access.record(
            flight.method, flight.path, status, elapsed, template, flight.request_id, trace_id, span_id
        )
        if flight.otel_token is not None:
            otel_context.detach(flight.otel_token)  # type: ignore[arg-type]
        request_id_var.reset(flight.rid_token)  # type: ignore[arg-type]

    def reject(self, method: str, path: str, headers: Mapping[bytes, bytes], exc: Exception) -> Reply:
        """A request answered before it reached a route (a body over the limit): counted as
        ``unmatched`` and logged like any other."""
        flight = self.begin(method, path, headers)
        reply = self.error_reply(exc, flight)
        self.finish(flight, "unmatched", reply.status)
        return reply

    def error_reply(self, exc: BaseException, flight: Flight) -> Reply:
        """:func:`~mlplatform.core.errors.error_response` as a complete answer."""
        err = error_response(exc, f"{flight.method} {flight.path}")
        return Reply(err.status, self._headers(flight, err.body, err.headers), err.body)

    async def run(
        self,
        route: FastRoute,
        hit: tuple[str, tuple[str, ...]],
        method: str,
        path: str,
        headers: dict[bytes, bytes],
        body: bytes,
    ) -> Reply:
        """Run a fast route on a complete request (the body limit is the caller's: it applies before
        the body is read)."""
        flight = self.begin(method, path, headers)
        template, params = hit
        try:
            out = await route.handler(params, headers, body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes its error answer
            reply = self.error_reply(exc, flight)
        except BaseException:  # cancelled (forced shutdown): accounted as a client that went away
            self.finish(flight, template, 499)
            raise
        else:
            if type(out) is tuple:  # (body, headers): its own content type and extra headers
                body, extra = out
                reply = Reply(200, self._headers(flight, body, tuple(extra)), body)
            else:
                reply = Reply(200, self._headers(flight, out), out)
        self.finish(flight, template, reply.status)
        return reply

    @staticmethod
    def _headers(
        flight: Flight, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> list[tuple[bytes, bytes]]:
        if extra and extra[0][0] == b"content-type":
            content_type, extra = extra[0], extra[1:]
        else:
            content_type = JSON_HEADER
        return [
            content_type,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", flight.request_id.encode("latin-1")),
            *extra,
        ]


async def send_reply(send: Send, reply: Reply) -> None:
    """Write a :class:`Reply` as ASGI messages."""
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
    await send({"type": "http.response.body", "body": reply.body})


class _Disconnected(Exception):
    pass


async def read_body(receive: Receive, max_body: int) -> bytes:
    """The whole request body from ASGI ``receive``; raises the 413 past ``max_body`` bytes and
    :class:`_Disconnected` when the client goes away first."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise too_large(max_body)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def serve_fast_asgi(
    pipeline: RequestPipeline,
    route: FastRoute,
    hit: tuple[str, tuple[str, ...]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """A fast route over ASGI: body (limit, disconnect), then :meth:`RequestPipeline.run`."""
    headers: dict[bytes, bytes] = dict(scope["headers"])
    method, path = scope["method"], scope["path"]
    length = declared_length(headers)
    if length is not None and length > pipeline.max_body:
        await send_reply(send, pipeline.reject(method, path, headers, too_large(pipeline.max_body, length)))
        return
    try:
        body = await read_body(receive, pipeline.max_body)
    except _Disconnected:
        flight = pipeline.begin(method, path, headers)
        pipeline.finish(flight, hit[0], 499)
        return
    except PayloadTooLarge as exc:
        flight = pipeline.begin(method, path, headers)
        reply = pipeline.error_reply(exc, flight)
        pipeline.finish(flight, hit[0], reply.status)
        await send_reply(send, reply)
        return
    await send_reply(send, await pipeline.run(route, hit, method, path, headers, body))


class _BodyTooLarge(Exception):
    pass


class PipelineMiddleware:
    """Pure-ASGI middleware running every non-fast route through the pipeline."""

    def __init__(self, app: ASGIApp, pipeline: RequestPipeline) -> None:
        self.app = app
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pipeline = self.pipeline
        method, path = scope["method"], scope["path"]
        headers: dict[bytes, bytes] = dict(scope["headers"])
        length = declared_length(headers)
        if length is not None and length > pipeline.max_body:
            await send_reply(
                send, pipeline.reject(method, path, headers, too_large(pipeline.max_body, length))
            )
            return
        if path in UNMETERED_PATHS:
            token = request_id_var.set((headers.get(b"x-request-id") or b"").decode("latin-1"))
            try:
                await self.app(scope, receive, send)
            finally:
                request_id_var.reset(token)
            return
        flight = pipeline.begin(method, path, headers)
        status = 500
        received = 0
        max_body = pipeline.max_body
        started = False
        rid_header = (b"x-request-id", flight.request_id.encode("latin-1"))

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise _BodyTooLarge
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            if not started:
                reply = pipeline.error_reply(too_large(max_body), flight)
                status = reply.status
                await send_reply(send, reply)
        finally:
            route = scope.get("route")
            pipeline.finish(flight, getattr(route, "path", None) or "unmatched", status)
