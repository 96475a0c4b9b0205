"""``FastPathProtocol``: fast routes served straight from the HTTP protocol, everything else by uvicorn.

A real uvicorn server (uvloop, httptools) runs a small ``PlatformApp`` in a thread; the tests talk raw
HTTP/1.1 over sockets so that pipelining, chunked bodies, ``Expect: 100-continue``, ``Connection: close``,
HTTP/1.0, disconnects and graceful shutdown are exactly what the server sees. ``app.__call__`` is
counted, which tells a direct dispatch (no ASGI call at all) from uvicorn's path.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest
import uvicorn
from fastapi import APIRouter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mlplatform.core.app import FastRoute, PlatformApp, build_app, build_context
from mlplatform.core.logging import request_id_var
from mlplatform.core.server import FastPathProtocol
from mlplatform.core.settings import ServiceSettings
from tests.unit.core.fast_kinds import match_fast_kind, raise_for_kind

SERVICE = "proto-test"
MAX_BODY = 2048


class CountingApp(PlatformApp):
    asgi_calls = 0

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            type(self).asgi_calls += 1
        await super().__call__(scope, receive, send)


def make_app(spans: InMemorySpanExporter | None = None) -> tuple[object, CountingApp]:
    """The test app; with ``spans``, tracing is on (every request sampled) and spans land there."""
    provider = None
    if spans is not None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
    settings = ServiceSettings(auth_enabled=False, max_body_bytes=MAX_BODY)
    ctx = build_context(SERVICE, settings, tracer_provider=provider)
    slow = APIRouter()

    @slow.post("/slow/{n}")
    async def slow_route(n: int) -> dict[str, int]:
        await asyncio.sleep(0.05)
        return {"slow": n}

    app = build_app(ctx, title=SERVICE, routers=[slow])
    app.__class__ = CountingApp
    CountingApp.asgi_calls = 0

    async def handler(params: tuple[str, ...], headers: dict[bytes, bytes], body: bytes) -> bytes:
        kind = params[0]
        delay = float(headers.get(b"x-delay", b"0"))
        if delay:
            await asyncio.sleep(delay)
        raise_for_kind(kind)
        if kind == "big":
            return b'"' + b"x" * int(headers.get(b"x-size", b"0")) + b'"'
        return orjson.dumps({"kind": kind, "body": body.decode(), "request_id": request_id_var.get()})

    app.fast_routes = (FastRoute("POST", match_fast_kind, handler),)
    return ctx, app


class Running:
    def __init__(self, app: CountingApp) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="uvloop",
            http=FastPathProtocol,
            log_config=None,
            access_log=False,
            lifespan="on",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextmanager
def serving() -> Iterator[tuple[object, Running]]:
    ctx, app = make_app()
    running = Running(app)
    try:
        yield ctx, running
    finally:
        running.stop()


def request(path: str, body: bytes = b"{}", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: test", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Reader:
    """Reads HTTP/1.1 responses (``Content-Length`` or chunked) off a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed mid-response: {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        for line in lines:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    assert self._fill()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(self.buf) < size + 2:
                    assert self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    return status, headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            assert self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self) -> bool:
        try:
            return not self.buf and not self._fill()
        except ConnectionResetError:
            return True


def requests_total(ctx, route: str, code: int) -> float:  # noqa: ANN001
    labels = {"service": SERVICE, "route": route, "method": "POST", "code": str(code)}
    return ctx.registry.get_sample_value("mlplatform_http_requests_total", labels) or 0.0


def in_flight(ctx) -> float:  # noqa: ANN001
    return ctx.registry.get_sample_value("mlplatform_http_requests_in_flight", {"service": SERVICE})


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize("tracing", [False, True], ids=["untraced", "traced"])
def test_direct_dispatch_answers_like_the_asgi_dispatch(tracing: bool):
    """The route contract on both paths a fast route takes (the ASGI dispatch, and the direct dispatch
    that does not call the app), with and without tracing: same status, body and headers, metrics by
    route template, one access line per request with its trace id, and (traced) one server span per
    request that continues the caller's trace."""
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    cases = [
        ("/fast/ok", b'{"a": 1}', {"x-request-id": "rid-ok", "traceparent": traceparent}),
        ("/fast/boom", b"{}", {"x-request-id": "rid-500"}),
        ("/fast/auth", b"", {"x-request-id": "rid-401"}),
        ("/fast/teapot", b"x", {"x-request-id": "rid-418"}),
        ("/fast/q?x=1", b"q", {"x-request-id": "rid-q"}),
    ]
    spans = InMemorySpanExporter() if tracing else None
    ctx, app = make_app(spans)
    lines: list[dict] = []
    ctx.access_log.write = lambda data: lines.extend(orjson.loads(x) for x in data.splitlines())
    ctx.access_log.logger.setLevel("INFO")

    async def via_asgi() -> list[tuple[int, dict[str, str], bytes]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            out = []
            for path, body, headers in cases:
                r = await c.post(path, content=body, headers=headers)
                out.append((r.status_code, dict(r.headers), r.content))
            return out

    try:
        expected = asyncio.run(via_asgi())
        ctx.access_log.flush()
        assert CountingApp.asgi_calls == len(cases)
        running = Running(app)
        try:
            CountingApp.asgi_calls = 0
            with running.connect() as sock:
                reader = Reader(sock)
                for (path, body, headers), (status, want_headers, want_body) in zip(
                    cases, expected, strict=True
                ):
                    sock.sendall(request(path, body, headers))
                    got_status, got_headers, got_body = reader.response()
                    assert (got_status, got_body) == (status, want_body), path
                    assert "date" in got_headers and "server" not in got_headers
                    got_headers.pop("date")
                    assert got_headers == want_headers, path
            assert CountingApp.asgi_calls == 0
            assert requests_total(ctx, "/fast/{kind}", 200) == 4  # 2 per dispatch
            assert requests_total(ctx, "/fast/{kind}", 500) == 2
            assert in_flight(ctx) == 0.0
        finally:
            running.stop()
    finally:
        ctx.access_log.logger.setLevel("NOTSET")
    ctx.access_log.flush()
    # one access line per request, the same on both paths
    shape = [(ln["msg"], ln["status"], ln["route"], ln["request_id"], ln["level"]) for ln in lines]
    assert shape[:5] == shape[5:] and len(shape) == 10
    assert shape[1] == ("POST /fast/boom 500", 500, "/fast/{kind}", "rid-500", "error")
    assert lines[0]["trace_id"] == lines[5]["trace_id"] == CALLER_TRACE  # the caller's trace, both paths
    if not tracing:
        assert [ln["trace_id"] for ln in lines if ln["request_id"] != "rid-ok"] == [""] * 8
        return
    finished = spans.get_finished_spans()
    assert len(finished) == 10 and {s.kind for s in finished} == {SpanKind.SERVER}
    assert [s.name for s in finished] == ["POST /fast/{kind}"] * 10
    for i in (0, 5):  # the request that carried a traceparent continues the caller's trace
        span = finished[i]
        assert format(span.context.trace_id, "032x") == CALLER_TRACE
        assert format(span.parent.span_id, "016x") == CALLER_SPAN
        assert lines[i]["span_id"] == format(span.context.span_id, "016x")
    codes = [s.attributes["http.response.status_code"] for s in finished]
    assert codes[:5] == codes[5:] == [200, 500, 401, 418, 200]
    assert finished[1].status.is_ok is False and finished[0].status.is_ok is True
    assert all(s.attributes["http.route"] == "/fast/{kind}" for s in finished)


def test_many_requests_on_one_connection_each_get_their_own_answer():
    with serving() as (ctx, running), running.connect() as sock:
        reader = Reader(sock)
        for i in range(300):
            sock.sendall(request(f"/fast/n{i}", f"body-{i}".encode()))
            status, headers, body = reader.response()
            doc = orjson.loads(body)
            assert (status, doc["kind"], doc["body"]) == (200, f"n{i}", f"body-{i}")
            assert headers["x-request-id"] == doc["request_id"] and len(doc["request_id"]) == 32
        assert CountingApp.asgi_calls == 0
        assert requests_total(ctx, "/fast/{kind}", 200) == 300


def test_pipelined_requests_are_answered_in_order():
    """A slow direct request, then a FastAPI request and a quick direct one, sent in one segment."""
    with serving() as (_, running), running.connect() as sock:
        sock.sendall(
            request("/fast/first", b"1", {"x-delay": "0.3"})
            + request("/slow/2", b"")
            + request("/fast/third", b"3")
            + request("/fast/fourth", b"4", {"x-delay": "0.1"})
        )
        reader = Reader(sock)
        answers = [orjson.loads(reader.response()[2]) for _ in range(4)]
        assert [a.get("kind", a.get("slow")) for a in answers] == ["first", 2, "third", "fourth"]
        # the first went direct; the rest were queued behind it by uvicorn and served by the app
        assert CountingApp.asgi_calls == 3
        sock.sendall(request("/fast/after", b"5"))
        assert orjson.loads(reader.response()[2])["kind"] == "after"
        assert CountingApp.asgi_calls == 3  # direct again once the connection is idle


@pytest.mark.parametrize(
    ("raw", "expected_status", "expected_kind"),
    [
        # chunked request body
        (
            b"POST /fast/chunked HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            200,
            "chunked",
        ),
        # percent-encoded path
        (request("/fast/a%20b", b"x"), 200, "a b"),
        # a body over the limit: the middleware's 413
        (request("/fast/big", b"x" * (MAX_BODY + 1)), 413, None),
        # Expect: 100-continue
        (request("/fast/expect", b"x", {"expect": "100-continue"}), 200, "expect"),
    ],
)
def test_unusual_requests_take_uvicorns_path(raw, expected_status, expected_kind):
    with serving() as (_, running), running.connect() as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        status, _, body = reader.response()
        if status == 100:
            status, _, body = reader.response()
        assert status == expected_status, body
        if expected_kind:
            assert orjson.loads(body)["kind"] == expected_kind
        else:
            assert f"{MAX_BODY}-byte limit" in orjson.loads(body)["error"]
        assert CountingApp.asgi_calls == 1


@pytest.mark.parametrize(
    "raw",
    [
        request("/fast/close", b"x", {"connection": "close"}),
        b"POST /fast/close HTTP/1.0\r\ncontent-length: 1\r\n\r\nx",
    ],
)
def test_connection_close_and_http10_are_answered_then_closed(raw):
    with serving() as (_, running), running.connect() as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        status, _, body = reader.response()
        assert (status, orjson.loads(body)["kind"]) == (200, "close")
        assert reader.closed()


def test_client_disconnect_mid_request_releases_the_request():
    with serving() as (ctx, running):
        with running.connect() as sock:
            sock.sendall(request("/fast/gone", b"x", {"x-delay": "0.2"}))
            time.sleep(0.05)
            assert in_flight(ctx) == 1.0
        deadline = time.monotonic() + 5
        while in_flight(ctx) != 0.0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # the server is still fine
        with running.connect() as sock:
            sock.sendall(request("/fast/next", b"x"))
            assert Reader(sock).response()[0] == 200


def test_graceful_shutdown_finishes_a_direct_request_in_flight():
    with serving() as (_, running), running.connect() as sock:
        sock.sendall(request("/fast/drain", b"x", {"x-delay": "0.5"}))
        time.sleep(0.1)
        running.server.should_exit = True
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert (status, orjson.loads(body)["kind"]) == (200, "drain")
        assert headers.get("connection") == "close"
        sock.settimeout(2)  # closed right after the response, not at the graceful-shutdown timeout (5 s)
        assert reader.closed()
        running.thread.join(10)
        assert not running.thread.is_alive()


def test_graceful_shutdown_waits_for_a_body_still_arriving():
    """Shutdown between the headers and the end of the body: the request is still answered."""
    with serving() as (_, running), running.connect() as sock:
        raw = request("/fast/partial", b"0123456789" * 10)
        head_end = raw.index(b"\r\n\r\n") + 4
        sock.sendall(raw[: head_end + 50])
        time.sleep(0.1)
        running.server.should_exit = True
        time.sleep(0.3)  # uvicorn has asked every connection to shut down by now
        sock.sendall(raw[head_end + 50 :])
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert (status, orjson.loads(body)["kind"], headers.get("connection")) == (200, "partial", "close")
        assert CountingApp.asgi_calls == 0


def test_a_client_that_does_not_read_cannot_grow_the_write_buffer():
    """Requests for 64 KiB answers, one every 3 ms (each after the previous was answered), none read:
    once the transport's buffer is over its high-water mark, requests take uvicorn's path, which
    waits for the client to read (as for any route), so the server's buffer stays bounded."""
    with serving() as (_, running):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", running.port))
        sock.settimeout(0.2)
        sent = 0
        deadline = time.monotonic() + 2.0
        try:
            while time.monotonic() < deadline:  # ~600 requests: ~40 MiB if every answer were buffered
                sock.sendall(request("/fast/big", b"{}", {"x-size": str(64 * 1024)}))
                sent += 1
                time.sleep(0.003)
        except TimeoutError:
            pass  # the server stopped reading: back-pressure reached the client
        time.sleep(0.3)
        buffered = [
            c.transport.get_write_buffer_size() for c in list(running.server.server_state.connections)
        ]
        sock.close()
        assert sent > 2, sent
        assert buffered and max(buffered) < 1024 * 1024, (sent, buffered)


def test_a_failure_outside_the_handler_closes_the_connection(monkeypatch, caplog):
    """Should anything escape the pipeline, the client sees the connection close, not a hang."""
    from mlplatform.core.pipeline import RequestPipeline

    async def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("bug in the dispatch")

    monkeypatch.setattr(RequestPipeline, "run", broken)
    with serving() as (_, running), running.connect() as sock:
        sock.settimeout(5)
        sock.sendall(request("/fast/x", b"{}"))
        assert Reader(sock).closed()
        with running.connect() as other:  # the server itself is fine
            other.sendall(request("/slow/1", b""))
            assert Reader(other).response()[0] == 200
    assert any("failed without a response" in r.getMessage() for r in caplog.records)
