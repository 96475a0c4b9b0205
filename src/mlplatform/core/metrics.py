"""Prometheus metrics on a private registry per app, served at ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import choose_encoder

from mlplatform.core.tracing import current_trace_id

# Label names shared across services (dashboards and alerts rely on them).
LABEL_SERVICE = "service"
LABEL_ROUTE = "route"
LABEL_METHOD = "method"
LABEL_CODE = "code"
LABEL_MODEL = "model"
LABEL_VERSION = "version"
LABEL_OUTCOME = "outcome"

# Latency buckets from 0.5 ms to 10 s: fine resolution where the serving SLO lives.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class MetricFactory:
    """Declares metrics on one app's private registry, so a declaration is only what differs:
    name, help text, label names (the ``LABEL_*`` constants) and, for a histogram, its buckets."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)


class HttpMetrics:
    """Request metrics every service exports (health probes and /metrics are left out)."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        m = MetricFactory(registry)
        self.service = service
        self.requests = m.counter(
            "mlplatform_http_requests_total",
            "HTTP requests handled, by route template, method and status code.",
            [LABEL_SERVICE, LABEL_ROUTE, LABEL_METHOD, LABEL_CODE],
        )
        self.latency = m.histogram(
            "mlplatform_http_request_duration_seconds",
            "HTTP request latency in seconds, by route template and method.",
            [LABEL_SERVICE, LABEL_ROUTE, LABEL_METHOD],
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = m.gauge(
            "mlplatform_http_requests_in_flight",
            "HTTP requests being handled right now (the HPA's per-pod custom metric).",
            [LABEL_SERVICE],
        )
        self._in_flight = self.in_flight.labels(service)
        # label children by (route, method, code): ``labels()`` costs more than the observation
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def inc_in_flight(self) -> None:
        self._in_flight.inc()

    def dec_in_flight(self) -> None:
        self._in_flight.dec()

    def observe(
        self, route: str, method: str, code: int, seconds: float, trace_id: str | None = None
    ) -> None:
        """Count the request and record its latency, with the trace id as exemplar.

        ``trace_id=None`` reads the active span's trace id; pass ``""`` when the caller knows there is none.
        """
        key = (route, method, code)
        child = self._children.get(key)
        if child is None:
            child = (
                self.requests.labels(self.service, route, method, str(code)),
                self.latency.labels(self.service, route, method),
            )
            self._children[key] = child
        child[0].inc()
        if trace_id is None:
            trace_id = current_trace_id()
        child[1].observe(seconds, exemplar={"trace_id": trace_id} if trace_id else None)


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """``GET /metrics`` for this app's registry.

    Prometheus text format by default; OpenMetrics (which carries the latency histogram's
    ``trace_id`` exemplars for Grafana's jump to Tempo) when the scraper's ``Accept`` asks for it.
    """
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return router
