"""OpenTelemetry tracing: an OTLP/HTTP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Each app gets its own :class:`TracerProvider` (tests build several apps in one process), and W3C
trace context is injected into every outbound HTTP call with :func:`inject_trace_headers`.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_W3C = TraceContextTextMapPropagator()


def build_tracer_provider(
    service: str,
    otlp_endpoint: str | None,
    extra_processors: list[SpanProcessor] | None = None,
    sample_ratio: float = 1.0,
) -> TracerProvider:
    """A tracer provider for one service; exports over OTLP/HTTP only when an endpoint is given."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    for proc in extra_processors or []:
        provider.add_span_processor(proc)
    return provider


def inject_trace_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Add ``traceparent``/``tracestate`` for the current span to ``headers`` (W3C trace context)."""
    carrier: dict[str, str] = dict(headers or {})
    _W3C.inject(carrier)
    return carrier


def extract_context(headers: dict[str, str]) -> object:
    """The OpenTelemetry context carried by incoming W3C headers."""
    return _W3C.extract(headers)


def current_trace_id() -> str:
    """Hex trace id of the active span, or an empty string."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
