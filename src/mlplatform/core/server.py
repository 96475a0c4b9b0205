"""The HTTP server protocol: uvicorn's httptools protocol, plus direct dispatch of fast routes.

uvicorn turns every request into an ASGI scope, a request/response cycle object, an ASGI task and
four ASGI messages; for a hot route that returns a small JSON body, that machinery costs more CPU than
the inference it wraps (about 50 µs of the ~200 µs a single-row V2 infer costs on one core here).
:class:`FastPathProtocol` recognises a request for one of the app's :class:`~mlplatform.core.app.FastRoute`
as soon as its headers are parsed, collects the body, runs the route with
:meth:`~mlplatform.core.pipeline.RequestPipeline.run` (what the ASGI dispatch uses too: request id,
trace context and server span, metrics, access log, error answers) and writes the response with one
``transport.write``. Everything else goes through uvicorn unchanged: other routes, and any request
that is not plain HTTP/1.1 keep-alive with a ``Content-Length`` body within the limit (chunked bodies,
``Expect: 100-continue``, ``Connection: close``, HTTP/1.0, percent-encoded paths, upgrades).

Ordering on a connection is kept: while a direct request is in flight, the connection's current cycle
is a :class:`_DirectCycle` that is not complete, so uvicorn queues any pipelined request behind it
(and pauses reading) exactly as it does behind one of its own cycles; the direct request's completion
calls uvicorn's ``on_response_complete``, which starts the queued one. Graceful shutdown waits for
direct requests too (they are tasks in the server's task set), and a connection asked to shut down
mid-request is closed after its response.

Used whenever the app is a :class:`~mlplatform.core.app.PlatformApp` with fast routes (tracing on or
off: the pipeline opens the server span) and uvicorn runs without ``limit_concurrency``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from mlplatform.core.app import PlatformApp
from mlplatform.core.pipeline import FastRoute, RequestPipeline

log = logging.getLogger("mlplatform.server")


class _DirectCycle:
    """The per-request state uvicorn's protocol looks at on ``self.cycle`` (shutdown, disconnect)."""

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete")

    def __init__(self) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True
        self.message_event = self  # connection_lost calls ``cycle.message_event.set()``

    def set(self) -> None:
        self.disconnected = self.disconnected or not self.response_complete


class FastPathProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with :class:`FastRoute` requests served directly."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        app = self.app
        ctx = getattr(app, "platform_ctx", None)
        self._pipeline: RequestPipeline | None = None
        self._routes: tuple[FastRoute, ...] = ()
        if (
            isinstance(app, PlatformApp)
            and ctx is not None
            and app.fast_routes
            and self.limit_concurrency is None
        ):
            self._pipeline = ctx.pipeline
            self._routes = app.fast_routes
            self._max_body = ctx.settings.max_body_bytes
        self._direct: tuple[FastRoute, tuple[str, tuple[str, ...]], str, str] | None = None
        self._body: list[bytes] = []

    # parser callbacks (httptools calls them from ``feed_data``)
    def on_headers_complete(self) -> None:
        if (
            self._routes
            and (self.cycle is None or self.cycle.response_complete)
            # a client that does not read its answers: let uvicorn's path wait for the buffer to drain
            and not self.flow.write_paused
        ):
            self._direct = self._match_direct()
            if self._direct is not None:
                # The request owns the connection from here (also while its body arrives): shutdown()
                # lets it finish, and uvicorn queues pipelined requests behind it.
                self.cycle = _DirectCycle()  # type: ignore[assignment]
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._direct is not None:
            self._body.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        direct = self._direct
        if direct is None:
            super().on_message_complete()
            return
        self._direct = None
        chunks = self._body
        self._body = []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        cycle: _DirectCycle = self.cycle  # type: ignore[assignment]  # set in on_headers_complete
        task = self.loop.create_task(self._serve_direct(cycle, direct, dict(self.headers), body))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _match_direct(self) -> tuple[FastRoute, tuple[str, tuple[str, ...]], str, str] | None:
        """The fast route for the request whose headers were just parsed, or ``None`` (uvicorn's path)."""
        parser = self.parser
        if self.expect_100_continue or parser.get_http_version() != "1.1" or not parser.should_keep_alive():
            return None
        if parser.should_upgrade():
            return None
        method = parser.get_method().decode("ascii")
        path_bytes = httptools.parse_url(self.url).path
        if b"%" in path_bytes:
            return None
        path = path_bytes.decode("ascii")
        for route in self._routes:
            if route.method == method:
                hit = route.match(path)
                if hit is not None:
                    break
        else:
            return None
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"transfer-encoding":
                return None
        if length is None or length > self._max_body:
            return None  # over the limit: uvicorn's path answers 413 with the usual message
        return route, hit, method, path

    async def _serve_direct(
        self,
        cycle: _DirectCycle,
        direct: tuple[FastRoute, tuple[str, tuple[str, ...]], str, str],
        headers: dict[bytes, bytes],
        body: bytes,
    ) -> None:
        route, hit, method, path = direct
        try:
            pipeline: RequestPipeline = self._pipeline  # type: ignore[assignment]  # set whenever routes are
            status, response_headers, out = await pipeline.run(route, hit, method, path, headers, body)
            transport = self.transport
            if not transport.is_closing():
                head = [STATUS_LINE[status]]
                for name, value in (*self.server_state.default_headers, *response_headers):
                    head += (name, b": ", value, b"\r\n")
                if not cycle.keep_alive:
                    head.append(b"connection: close\r\n")
                head += (b"\r\n", out)
                transport.write(b"".join(head))
        except asyncio.CancelledError:  # a forced shutdown: close, do not leave the client waiting
            cycle.keep_alive = False
            raise
        except Exception:  # noqa: BLE001 - never leave the client waiting for an answer
            # the pipeline answers every handler error itself; anything escaping it is a bug: close
            # the connection, as uvicorn does when an app fails without sending a response
            log.exception("direct request %s %s failed without a response", method, path)
            cycle.keep_alive = False
        finally:
            cycle.response_complete = True
            if not cycle.keep_alive and not self.transport.is_closing():
                self.transport.close()
            self.on_response_complete()
