"""The infer hot path served by ``PlatformApp`` fast routes (ahead of FastAPI's middleware stack).

With no OTLP exporter configured, ``POST /v2/models/.../infer`` is dispatched by ``_serve_fast``, which
must do everything the core request middleware does: request id, body limit, in-flight gauge, request
metrics by route template, access log, the caller's W3C trace context (exemplars, payload records),
``{"error": ...}`` bodies (401 with ``www-authenticate``) and a generic 500 without a stack trace. With a
tracer provider configured the request takes the middleware path instead and gets a server span.

Real serving app against the real SQLite MLflow registry of ``registry_models``; spans go to the
OpenTelemetry SDK's in-memory exporter; the generic ``FastRoute`` checks use a tiny ``PlatformApp``.
"""

from __future__ import annotations

import logging
import re

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mlplatform.core.app import FastRoute, build_app, build_context
from mlplatform.core.auth import hash_key
from mlplatform.core.logging import request_id_var
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.core.settings import ServiceSettings
from mlplatform.core.tracing import current_trace_id
from mlplatform.serving.app import create_app
from tests.helpers import in_process, v2_body, wait_until
from tests.unit.core.fast_kinds import match_fast_kind, raise_for_kind
from tests.unit.serving.registry_models import FOREST, TYPES
from tests.unit.serving.support import ListSink, RunningApp, make_settings

INFER_ROUTE = "/v2/models/{model_name}/infer"
VERSION_ROUTE = "/v2/models/{model_name}/versions/{model_version}/infer"
SERVICE = "model-serving"
MAX_BODY = 4096
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
KEYS = f"{hash_key('infer-key')}:infer,{hash_key('explain-key')}:explain"


def traceparent(trace_id: str, span_id: str = "b7ad6b7169203331") -> str:
    return f"00-{trace_id}-{span_id}-01"


@pytest.fixture(scope="module")
async def fast(serving_registry, tmp_path_factory):
    """The serving app (FOREST only, 4 KiB body limit, payload sink), no tracer: fast dispatch."""
    sink = ListSink()
    settings = make_settings(
        serving_registry, tmp_path_factory.mktemp("fast-route"), models=FOREST, max_body_bytes=MAX_BODY
    )
    app = create_app(settings, secrets=EnvSecretsBackend({}), payload_sink=sink)
    assert app.state.ctx.tracing_active is False  # else the fast dispatch steps aside
    async with in_process(app, "http://t") as client:
        served = RunningApp(app, client)
        await wait_until(served.repository.ready)
        served.sink = sink  # type: ignore[attr-defined]
        yield served


def sample(app, name: str, **labels: str) -> float:  # noqa: ANN001
    value = app.state.ctx.registry.get_sample_value(name, {"service": SERVICE, **labels})
    return value or 0.0


def requests_total(app, route: str, code: int, method: str = "POST") -> float:  # noqa: ANN001
    return sample(app, "mlplatform_http_requests_total", route=route, method=method, code=str(code))


# ---------------------------------------------------------------------------------------------
# serving app, fast dispatch
# ---------------------------------------------------------------------------------------------


async def test_request_id_echoed_or_generated(fast, serving_registry):
    c, url = fast.client, f"/v2/models/{FOREST}/infer"
    body = v2_body(serving_registry.frame.iloc[:2], TYPES)
    r = await c.post(url, json=body, headers={"x-request-id": "client-rid-7"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "client-rid-7"
    assert r.json()["id"] == "client-rid-7"  # no "id" in the body: the response carries the request id
    r1 = await c.post(url, json=body)
    r2 = await c.post(f"/v2/models/{FOREST}/versions/1/infer", json=body)
    ids = [r1.headers["x-request-id"], r2.headers["x-request-id"]]
    assert all(HEX32.match(i) for i in ids) and ids[0] != ids[1], ids
    assert r1.json()["id"] == ids[0]
    # error responses carry it too
    missing = await c.post("/v2/models/nope/infer", json=body, headers={"x-request-id": "rid-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "rid-404"
    bad = await c.post(url, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and HEX32.match(bad.headers["x-request-id"])
    assert "malformed JSON" in bad.json()["error"]


async def test_body_limit_by_content_length_and_by_streamed_size(fast, serving_registry):
    app, c, url = fast.app, fast.client, f"/v2/models/{FOREST}/infer"
    unmatched_before = requests_total(app, "unmatched", 413)
    routed_before = requests_total(app, INFER_ROUTE, 413)
    r = await c.post(url, content=b" " * 10_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": f"request body of 10000 bytes exceeds the {MAX_BODY}-byte limit"}
    assert requests_total(app, "unmatched", 413) == unmatched_before + 1

    async def chunks(total: int, size: int = 1000):
        for _ in range(total // size):
            yield b" " * size

    r = await c.post(url, content=chunks(10_000), headers={"content-type": "application/json"})
    assert r.request.headers.get("content-length") is None  # chunked: only the streamed size can tell
    assert r.status_code == 413
    assert r.json() == {"error": f"request body exceeds the {MAX_BODY}-byte limit"}
    assert requests_total(app, INFER_ROUTE, 413) == routed_before + 1

    # a streamed body within the limit, in several chunks, is joined and served
    payload = orjson.dumps(v2_body(serving_registry.frame.iloc[:3], TYPES))

    async def split():
        for i in range(0, len(payload), 100):
            yield payload[i : i + 100]

    r = await c.post(url, content=split(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [3]
    assert sample(app, "mlplatform_http_requests_in_flight") == 0.0


async def test_request_metrics_by_route_template_and_status(fast, serving_registry, caplog):
    app, c = fast.app, fast.client
    body = v2_body(serving_registry.frame.iloc[:1], TYPES)
    before = {
        (INFER_ROUTE, 200): requests_total(app, INFER_ROUTE, 200),
        (VERSION_ROUTE, 200): requests_total(app, VERSION_ROUTE, 200),
        (INFER_ROUTE, 404): requests_total(app, INFER_ROUTE, 404),
        (VERSION_ROUTE, 404): requests_total(app, VERSION_ROUTE, 404),
        (INFER_ROUTE, 422): requests_total(app, INFER_ROUTE, 422),
    }
    count_before = sample(
        app, "mlplatform_http_request_duration_seconds_count", route=INFER_ROUTE, method="POST"
    )
    caplog.set_level(logging.INFO, logger="mlplatform.access")
    written: list[bytes] = []
    access = app.state.ctx.access_log
    access.flush()
    access.write = written.append
    for _ in range(2):
        assert (await c.post(f"/v2/models/{FOREST}/infer", json=body)).status_code == 200
    assert (await c.post(f"/v2/models/{FOREST}/versions/1/infer", json=body)).status_code == 200
    assert (await c.post("/v2/models/nope/infer", json=body)).status_code == 404
    assert (await c.post(f"/v2/models/{FOREST}/versions/9/infer", json=body)).status_code == 404
    bad = v2_body(serving_registry.frame.iloc[:1], TYPES)
    bad["inputs"].pop(0)
    r = await c.post(f"/v2/models/{FOREST}/infer", json=bad)
    assert r.status_code == 422 and "input 'amount': missing" in r.json()["error"]
    after = {key: requests_total(app, *key) for key in before}
    assert {k: after[k] - before[k] for k in before} == {
        (INFER_ROUTE, 200): 2,
        (VERSION_ROUTE, 200): 1,
        (INFER_ROUTE, 404): 1,
        (VERSION_ROUTE, 404): 1,
        (INFER_ROUTE, 422): 1,
    }
    count = sample(app, "mlplatform_http_request_duration_seconds_count", route=INFER_ROUTE, method="POST")
    assert count == count_before + 4  # two 200s, the 404 and the 422 on the unversioned template
    assert sample(app, "mlplatform_http_requests_in_flight") == 0.0
    # the exposition names the templates, never the concrete model path
    text = (await c.get("/metrics")).text
    assert f'route="{INFER_ROUTE}"' in text and f'route="{VERSION_ROUTE}"' in text
    assert f'route="/v2/models/{FOREST}/infer"' not in text
    # one access log line per request, with the template and status
    access.flush()
    lines = [orjson.loads(line) for chunk in written for line in chunk.splitlines()]
    assert [(ln["route"], ln["status"]) for ln in lines] == [
        (INFER_ROUTE, 200),
        (INFER_ROUTE, 200),
        (VERSION_ROUTE, 200),
        (INFER_ROUTE, 404),
        (VERSION_ROUTE, 404),
        (INFER_ROUTE, 422),
    ]
    assert lines[0]["msg"] == f"POST /v2/models/{FOREST}/infer 200" and lines[0]["duration_ms"] > 0
    assert lines[0]["logger"] == "mlplatform.access" and lines[0]["level"] == "info"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("datatype", ["FP64"], "input 'amount': datatype ['FP64'] is not one of"),  # was a 500 (unhashable)
        ("name", ["amount"], "inputs[0].name: must be a non-empty string"),
        ("shape", [], "input 'amount': shape must be a non-empty list"),
    ],
)
async def test_unhashable_or_empty_fields_are_422_not_500(fast, serving_registry, field, value, fragment):
    body = v2_body(serving_registry.frame.iloc[:1], TYPES)
    body["inputs"][0][field] = value
    r = await fast.client.post(f"/v2/models/{FOREST}/infer", json=body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]


async def test_caller_trace_id_is_the_exemplar_and_is_on_payload_records(fast, serving_registry):
    c, sink = fast.client, fast.sink
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    df = serving_registry.frame.iloc[:2]
    sink.records.clear()
    r = await c.post(
        f"/v2/models/{FOREST}/infer", json=v2_body(df, TYPES), headers={"traceparent": traceparent(trace_id)}
    )
    assert r.status_code == 200, r.text
    om = await c.get("/metrics", headers={"accept": OPENMETRICS})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    buckets = [
        line
        for line in om.text.splitlines()
        if line.startswith("mlplatform_http_request_duration_seconds_bucket")
        and f'route="{INFER_ROUTE}"' in line
    ]
    assert any(f'# {{trace_id="{trace_id}"}}' in line for line in buckets), buckets
    assert [rec.trace_id for rec in sink.records] == [trace_id, trace_id]
    # the caller's context is detached afterwards: the next untraced request carries no trace id
    sink.records.clear()
    assert (await c.post(f"/v2/models/{FOREST}/infer", json=v2_body(df.iloc[:1], TYPES))).status_code == 200
    assert [rec.trace_id for rec in sink.records] == [""]


async def test_auth_401_with_challenge_and_403_on_the_fast_path(app_factory, serving_registry):
    served = await app_factory(models=FOREST, auth_enabled=True, secrets_env={"MLPLATFORM_API_KEYS": KEYS})
    assert served.app.state.ctx.tracing_active is False
    c, url = served.client, f"/v2/models/{FOREST}/infer"
    body = v2_body(serving_registry.frame.iloc[:1], TYPES)
    for headers in (
        {},
        {"x-api-key": "wrong"},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic x"},
    ):
        r = await c.post(url, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["error"]
    r = await c.post(url, json=body, headers={"x-api-key": "explain-key"})
    assert r.status_code == 403 and "www-authenticate" not in r.headers and "infer" in r.json()["error"]
    assert (await c.post(url, json=body, headers={"x-api-key": "infer-key"})).status_code == 200
    assert (await c.post(url, json=body, headers={"authorization": "Bearer infer-key"})).status_code == 200
    assert requests_total(served.app, INFER_ROUTE, 401) == 4
    assert requests_total(served.app, INFER_ROUTE, 403) == 1


# ---------------------------------------------------------------------------------------------
# serving app with a tracer provider: middleware path, server span
# ---------------------------------------------------------------------------------------------


async def test_with_a_tracer_provider_infer_is_served_inside_a_server_span(serving_registry, tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(
        serving_registry, tmp_path, models=FOREST, auth_enabled=True, max_body_bytes=MAX_BODY
    )
    secrets = EnvSecretsBackend({"MLPLATFORM_API_KEYS": KEYS})
    app = create_app(settings, secrets=secrets, tracer_provider=provider)
    assert app.state.ctx.tracing_active is True
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    body = v2_body(serving_registry.frame.iloc[:2], TYPES)
    async with in_process(app, "http://t") as c:
        await wait_until(app.state.repository.ready)
        headers = {"x-api-key": "infer-key", "traceparent": traceparent(trace_id, parent)}
        r = await c.post(f"/v2/models/{FOREST}/versions/1/infer", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [2]
        rid = r.headers["x-request-id"]
        assert HEX32.match(rid)
        denied = await c.post(f"/v2/models/{FOREST}/infer", json=body)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"

        async def chunks():
            for _ in range(10):
                yield b" " * 1000

        big = await c.post(f"/v2/models/{FOREST}/infer", content=chunks(), headers={"x-api-key": "infer-key"})
        assert big.status_code == 413 and "limit" in big.json()["error"]
        om = await c.get("/metrics", headers={"accept": OPENMETRICS})
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    by_route = {(s.attributes["http.route"], s.attributes["http.response.status_code"]): s for s in servers}
    span = by_route[(VERSION_ROUTE, 200)]
    assert span.name == f"POST {VERSION_ROUTE}"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent
    assert span.attributes["mlplatform.request_id"] == rid
    assert (INFER_ROUTE, 401) in by_route and (INFER_ROUTE, 413) in by_route
    assert f'route="{VERSION_ROUTE}"' in om.text and f'# {{trace_id="{trace_id}"}}' in om.text
    assert requests_total(app, VERSION_ROUTE, 200) == 1


# ---------------------------------------------------------------------------------------------
# a tiny PlatformApp with a FastRoute: the generic dispatch
# ---------------------------------------------------------------------------------------------


def tiny_app():  # noqa: ANN201
    ctx = build_context("fast-test", ServiceSettings(auth_enabled=False, max_body_bytes=2048))
    app = build_app(ctx, title="fast-test")

    async def handler(params: tuple[str, ...], headers: dict[bytes, bytes], body: bytes) -> bytes:
        kind = params[0]
        raise_for_kind(kind, secret="secret detail: /srv/keys/api.key")
        in_flight = ctx.registry.get_sample_value(
            "mlplatform_http_requests_in_flight", {"service": "fast-test"}
        )
        return orjson.dumps(
            {
                "kind": kind,
                "body": len(body),
                "request_id": request_id_var.get(),
                "trace_id": current_trace_id(),
                "in_flight": in_flight,
                "content_type": headers.get(b"content-type", b"").decode(),
            }
        )

    app.fast_routes = (FastRoute("POST", match_fast_kind, handler),)
    return ctx, app


def tiny_total(ctx, code: int) -> float:  # noqa: ANN001
    labels = {"service": "fast-test", "route": "/fast/{kind}", "method": "POST", "code": str(code)}
    return ctx.registry.get_sample_value("mlplatform_http_requests_total", labels) or 0.0


async def test_fast_route_errors_never_leak_a_stack_trace(caplog):
    ctx, app = tiny_app()
    assert ctx.tracing_active is False
    caplog.set_level(logging.ERROR, logger="mlplatform.errors")
    async with in_process(app, "http://t") as c:
        r = await c.post("/fast/boom", content=b"{}", headers={"x-request-id": "rid-500"})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json" and r.headers["x-request-id"] == "rid-500"
        assert r.json() == {"error": "internal error; see the service logs with this request's trace id"}
        assert "Traceback" not in r.text and "secret detail" not in r.text and "RuntimeError" not in r.text
        r = await c.post("/fast/auth")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"error": "missing API key"}
        r = await c.post("/fast/teapot")
        assert r.status_code == 418 and r.json() == {"error": "short and stout"}
        assert "www-authenticate" not in r.headers
    # the stack trace goes to the service log, not to the client
    logged = [rec for rec in caplog.records if rec.name == "mlplatform.errors" and rec.exc_info]
    assert logged and "secret detail" in str(logged[0].exc_info[1])
    assert (tiny_total(ctx, 500), tiny_total(ctx, 401), tiny_total(ctx, 418)) == (1, 1, 1)


async def test_fast_route_context_during_the_handler_and_fall_through():
    ctx, app = tiny_app()
    trace_id = "5b8efff798038103d269b633813fc60c"
    async with in_process(app, "http://t") as c:
        headers = {"x-request-id": "rid-1", "traceparent": traceparent(trace_id), "content-type": "text/x"}
        r = await c.post("/fast/ok", content=b"12345", headers=headers)
        assert r.status_code == 200 and r.headers["x-request-id"] == "rid-1"
        assert r.json() == {
            "kind": "ok",
            "body": 5,
            "request_id": "rid-1",
            "trace_id": trace_id,
            "in_flight": 1.0,
            "content_type": "text/x",
        }
        generated = await c.post("/fast/ok")
        doc = generated.json()
        assert HEX32.match(doc["request_id"]) and generated.headers["x-request-id"] == doc["request_id"]
        assert doc["trace_id"] == "" and doc["body"] == 0
        assert request_id_var.get() == ""  # reset after the request
        # other methods and paths go through FastAPI as before
        assert (await c.get("/fast/ok")).status_code in (404, 405)
        assert (await c.post("/slow/ok")).json()["error"]
        assert (await c.get("/v2/health/live")).json()["live"] is True
        big = await c.post("/fast/ok", content=b"x" * 3000)
        assert big.status_code == 413 and "2048-byte limit" in big.json()["error"]
    assert (
        ctx.registry.get_sample_value("mlplatform_http_requests_in_flight", {"service": "fast-test"}) == 0.0
    )
    assert tiny_total(ctx, 200) == 2


async def test_fast_route_client_disconnect_is_counted_and_released():
    """A client gone before its body arrived: nothing is sent, the request is counted (499), the
    in-flight gauge is released. Driven over raw ASGI (httpx cannot disconnect mid-request)."""
    ctx, app = tiny_app()
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/fast/ok",
        "raw_path": b"/fast/ok",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    await app(scope, receive, send)
    assert sent == []
    assert tiny_total(ctx, 499) == 1
    assert (
        ctx.registry.get_sample_value("mlplatform_http_requests_in_flight", {"service": "fast-test"}) == 0.0
    )
