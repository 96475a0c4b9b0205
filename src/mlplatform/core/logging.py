"""JSON-lines logging on stdout with the fields Loki and Grafana key on.

Every line has ``ts``, ``level``, ``service``, ``msg``, ``logger``, ``trace_id``, ``span_id`` and
``request_id`` (empty strings when there is no active span or request).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# color_message: uvicorn's copy of its message with terminal colour codes, noise in a JSON line
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        span_ctx = trace.get_current_span().get_span_context()
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "msg": record.getMessage(),
            "logger": record.name,
            "trace_id": format(span_ctx.trace_id, "032x") if span_ctx.is_valid else "",
            "span_id": format(span_ctx.span_id, "016x") if span_ctx.is_valid else "",
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's output to stdout as JSON lines tagged with ``service``."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "alembic", "mlflow", "feast", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # uvicorn's loggers should go through the JSON handler too
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True


ACCESS_LOGGER = "mlplatform.access"
_PIPE_BUF = 4096  # os.write of at most this many bytes to a pipe is atomic: lines never interleave


def _stdout_write(data: bytes) -> None:
    """Write whole lines to fd 1 in chunks of at most PIPE_BUF bytes (atomic on a pipe)."""
    start, n = 0, len(data)
    view = memoryview(data)
    while start < n:
        end = n if n - start <= _PIPE_BUF else data.rfind(b"\n", start, start + _PIPE_BUF) + 1
        if end <= start:  # one line longer than PIPE_BUF: written whole
            end = data.find(b"\n", start) + 1 or n
        chunk = view[start:end]
        try:
            while chunk:
                chunk = chunk[os.write(1, chunk) :]
        except OSError:
            return  # stdout gone (a closed pipe): nothing to log to
        start = end


class AccessLog:
    """The access log: one JSON line per request, cheap enough for every request of a hot route.

    Same fields as :class:`JsonFormatter`'s lines (``ts``, ``level``, ``service``, ``msg``, ``logger``,
    ``trace_id``, ``span_id``, ``request_id``) plus ``status``, ``duration_ms``, ``route`` and
    ``method``. What is written depends on the ``mlplatform.access`` logger's level (the service's
    ``LOG_LEVEL``): at INFO or below every request; above it only failed requests (status 5xx, level
    ``error``) and slow ones (``duration_ms`` over ``slow_ms``, level ``warning``), which are always
    written. Lines are built with one ``orjson.dumps`` (no ``LogRecord``, no formatter) and written in
    blocks: when 64 lines are waiting, 100 ms after the first of them, at once for an error or slow
    line, and on :meth:`flush` (shutdown).
    """

    FLUSH_LINES = 64
    FLUSH_DELAY_S = 0.1

    def __init__(self, service: str, slow_ms: float, write: Callable[[bytes], None] | None = None) -> None:
        self.service = service
        self.slow_s = slow_ms / 1000.0
        self.write = write or _stdout_write
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._ts_prefix = ""

    def record(
        self,
        method: str,
        path: str,
        status: int,
        elapsed_s: float,
        route: str,
        request_id: str,
        trace_id: str = "",
        span_id: str = "",
    ) -> None:
        """One finished request."""
        if status >= 500:
            level = "error"
        elif elapsed_s >= self.slow_s:
            level = "warning"
        elif self.logger.isEnabledFor(logging.INFO):
            level = "info"
        else:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._ts_prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        line = orjson.dumps(
            {
                "ts": f"{self._ts_prefix}.{int((now - second) * 1000):03d}+00:00",
                "level": level,
                "service": self.service,
                "msg": f"{method} {path} {status}"
                if level != "warning"
                else f"slow request: {method} {path} {status}",
                "logger": ACCESS_LOGGER,
                "trace_id": trace_id,
                "span_id": span_id,
                "request_id": request_id,
                "method": method,
                "status": status,
                "duration_ms": round(elapsed_s * 1000, 3),
                "route": route,
            }
        )
        lines = self._lines
        lines.append(line)
        if level != "info" or len(lines) >= self.FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.FLUSH_DELAY_S, self.flush)

    def flush(self) -> None:
        """Write the waiting lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = b"\n".join(self._lines) + b"\n"
        self._lines = []
        self.write(data)
