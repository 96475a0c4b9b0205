"""The request pipeline's sampling, exemplars and access log (``core/pipeline.py``, ``core/logging.py``).

A tiny ``PlatformApp`` with one fast route and one FastAPI route, driven in-process over ASGI; spans go
to the OpenTelemetry SDK's in-memory exporter through a provider built by ``build_tracer_provider`` (the
one services use), with the sampler named by the OTEL_TRACES_SAMPLER settings.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import orjson
import pytest
from fastapi import APIRouter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from mlplatform.core.app import FastRoute, build_app, build_context
from mlplatform.core.settings import ServiceSettings
from mlplatform.core.tracing import build_sampler, build_tracer_provider
from tests.unit.core.fast_kinds import match_fast_kind, raise_for_kind

SERVICE = "pipeline-test"
LIMIT = (1 << 64) - 1


def make(sampler: str = "parentbased_always_on", arg: float | None = None, **settings: object):
    """(ctx, app, spans, access lines): tracing on with the named sampler."""
    st = ServiceSettings(auth_enabled=False, traces_sampler=sampler, traces_sampler_arg=arg, **settings)
    spans = InMemorySpanExporter()
    provider = build_tracer_provider(
        SERVICE, None, [SimpleSpanProcessor(spans)], sampler=build_sampler(sampler, arg)
    )
    ctx = build_context(SERVICE, st, tracer_provider=provider)
    router = APIRouter()

    @router.get("/slow/{ms}")
    async def slow(ms: int) -> dict[str, int]:
        await asyncio.sleep(ms / 1000)
        return {"slept": ms}

    app = build_app(ctx, title=SERVICE, routers=[router])

    async def handler(params: tuple[str, ...], headers: dict[bytes, bytes], body: bytes) -> bytes:
        raise_for_kind(params[0])
        return orjson.dumps({"kind": params[0]})

    app.fast_routes = (FastRoute("POST", match_fast_kind, handler),)
    lines: list[dict] = []
    ctx.access_log.write = lambda data: lines.extend(orjson.loads(x) for x in data.splitlines())
    return ctx, app, spans, lines


async def drive(app, requests: list[tuple[str, str, dict[str, str]]]) -> list[httpx.Response]:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        out = []
        for method, path, headers in requests:
            out.append(await c.request(method, path, headers=headers, content=b"{}"))
        return out


def exemplars(ctx) -> list[str]:  # noqa: ANN001
    """trace_id exemplars on the request-latency histogram's buckets."""
    found = []
    for metric in ctx.registry.collect():
        if metric.name == "mlplatform_http_request_duration_seconds":
            found += [s.exemplar.labels["trace_id"] for s in metric.samples if s.exemplar]
    return found


@pytest.mark.parametrize(
    ("name", "arg", "message"),
    [
        ("sometimes", None, "OTEL_TRACES_SAMPLER: 'sometimes' is not one of"),
        ("parentbased_traceidratio", 1.5, "OTEL_TRACES_SAMPLER_ARG: 1.5 is not a ratio"),
    ],
)
def test_a_bad_sampler_setting_is_a_start_up_error_naming_the_variable(monkeypatch, name, arg, message):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", str(arg))
    with pytest.raises(ValidationError, match=message):
        ServiceSettings()


def test_ratio_sampling_keeps_the_sdk_decision_for_every_new_trace():
    """parentbased_traceidratio 0.3 over 400 requests that start a trace: a request is traced exactly
    when its trace id is under the SDK's bound (the pipeline's own draw agrees with the SDK's rule), the
    share is about 0.3, every access line carries its trace id, only sampled requests leave exemplars."""
    ctx, app, spans, lines = make("parentbased_traceidratio", 0.3)
    ctx.access_log.logger.setLevel(logging.INFO)
    try:
        asyncio.run(drive(app, [("POST", f"/fast/r{i}", {}) for i in range(400)]))
    finally:
        ctx.access_log.logger.setLevel(logging.NOTSET)
    ctx.access_log.flush()
    bound = round(0.3 * (LIMIT + 1))
    traced = {format(s.context.trace_id, "032x") for s in spans.get_finished_spans()}
    logged = [ln["trace_id"] for ln in lines]
    assert len(logged) == 400 and all(len(t) == 32 for t in logged) and len(set(logged)) == 400
    assert traced == {t for t in logged if int(t, 16) & LIMIT < bound}
    assert 0.2 < len(traced) / 400 < 0.4
    assert set(exemplars(ctx)) <= traced and exemplars(ctx)


def test_an_incoming_traceparent_decides_whatever_the_ratio():
    """Parent-based: a caller's sampled flag is followed (traced under ratio 0), an unsampled caller is
    not traced (under ratio 1); both keep the caller's trace id in the log."""
    sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    unsampled = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    ctx, app, spans, lines = make("parentbased_traceidratio", 0.0)
    asyncio.run(drive(app, [("POST", "/fast/a", {"traceparent": sampled}), ("POST", "/fast/b", {})]))
    (span,) = spans.get_finished_spans()
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert exemplars(ctx) == ["4bf92f3577b34da6a3ce929d0e0e4736"]
    ctx, app, spans, lines = make("parentbased_traceidratio", 1.0)
    ctx.access_log.logger.setLevel(logging.INFO)
    try:
        asyncio.run(drive(app, [("POST", "/fast/c", {"traceparent": unsampled}), ("POST", "/fast/d", {})]))
    finally:
        ctx.access_log.logger.setLevel(logging.NOTSET)
    ctx.access_log.flush()
    assert len(spans.get_finished_spans()) == 1  # /fast/d only
    assert lines[0]["trace_id"] == "5bf92f3577b34da6a3ce929d0e0e4736"
    assert exemplars(ctx) == [format(spans.get_finished_spans()[0].context.trace_id, "032x")]


def test_above_info_the_access_log_keeps_errors_and_slow_requests_only():
    ctx, app, _, lines = make(slow_request_ms=50)
    ctx.access_log.logger.setLevel(logging.WARNING)
    try:
        asyncio.run(
            drive(
                app,
                [
                    ("POST", "/fast/ok", {}),
                    ("POST", "/fast/teapot", {}),
                    ("POST", "/fast/boom", {"x-request-id": "rid-boom"}),
                    ("GET", "/slow/5", {}),
                    ("GET", "/slow/80", {"x-request-id": "rid-slow"}),
                ],
            )
        )
    finally:
        ctx.access_log.logger.setLevel(logging.NOTSET)
    # error and slow lines are written at once, without waiting for the buffer
    assert [(ln["level"], ln["request_id"], ln["status"], ln["route"]) for ln in lines] == [
        ("error", "rid-boom", 500, "/fast/{kind}"),
        ("warning", "rid-slow", 200, "/slow/{ms}"),
    ]
    assert lines[1]["msg"] == "slow request: GET /slow/80 200" and lines[1]["duration_ms"] >= 50
    for key in ("ts", "service", "logger", "trace_id", "span_id", "method"):
        assert key in lines[0]
    assert "color_message" not in lines[0]


def test_info_lines_are_buffered_then_written_in_blocks():
    """At INFO the lines of a burst are written together: 64 at a time, the rest after 100 ms."""
    ctx, app, _, _ = make()
    writes: list[bytes] = []
    ctx.access_log.write = writes.append
    ctx.access_log.logger.setLevel(logging.INFO)

    async def burst_then_wait() -> int:
        await drive(app, [("POST", f"/fast/n{i}", {}) for i in range(70)])
        before = len(writes)
        await asyncio.sleep(0.3)
        return before

    try:
        before = asyncio.run(burst_then_wait())
    finally:
        ctx.access_log.logger.setLevel(logging.NOTSET)
    assert before == 1 and len(writes) == 2
    assert [len(w.splitlines()) for w in writes] == [64, 6]
    assert all(w.endswith(b"\n") for w in writes)
