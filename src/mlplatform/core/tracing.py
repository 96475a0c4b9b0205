"""OpenTelemetry tracing: an OTLP/HTTP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Each app gets its own :class:`TracerProvider` (tests build several apps in one process), and W3C
trace context is injected into every outbound HTTP call with :func:`inject_trace_headers`.
"""

from __future__ import annotations

import random
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_W3C = TraceContextTextMapPropagator()


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def build_sampler(name: str = "parentbased_always_on", arg: float | None = None) -> Sampler:
    """The sampler OpenTelemetry's ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` name.

    ``parentbased_*`` samplers follow an incoming ``traceparent``'s sampled flag and apply the named
    rule only to requests that start a trace; ``*traceidratio`` keeps ``arg`` (0..1, default 1) of them.
    """
    if name not in SAMPLERS:
        raise ValueError(f"OTEL_TRACES_SAMPLER: {name!r} is not one of {', '.join(SAMPLERS)}")
    ratio = 1.0 if arg is None else arg
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: {ratio} is not a ratio between 0 and 1")
    root = name.removeprefix("parentbased_")
    rule: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(root) or TraceIdRatioBased(ratio)
    return ParentBased(rule) if name.startswith("parentbased_") else rule


class DrawnIdGenerator(RandomIdGenerator):
    """The SDK's random ids, except that a trace id drawn (and judged) beforehand by the request
    pipeline is used for the next span this thread starts: see :func:`root_sampling_bound`."""

    def __init__(self) -> None:
        self._next = threading.local()

    def use_next(self, trace_id: int) -> None:
        self._next.trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id = getattr(self._next, "trace_id", 0)
        if trace_id:
            self._next.trace_id = 0
            return trace_id
        return super().generate_trace_id()


def root_sampling_bound(name: str, arg: float | None) -> int | None:
    """For samplers that judge a new trace by its id alone (``*traceidratio``, ``*always_off``): the
    bound under which ``trace_id & (2**64 - 1)`` is sampled, as the SDK's ``TraceIdRatioBased`` computes
    it. The request pipeline draws the trace id of a request that starts a trace itself and only asks
    the SDK for a span when it will be sampled (same decision, a fraction of the cost); ``None`` for the
    other samplers."""
    if name.endswith("traceidratio"):
        return TraceIdRatioBased.get_bound_for_rate(1.0 if arg is None else arg)
    if name.endswith("always_off"):
        return 0
    return None


def draw_trace_id() -> int:
    """A random non-zero 128-bit trace id (as the SDK's ``RandomIdGenerator`` draws them)."""
    trace_id = random.getrandbits(128)
    while not trace_id:
        trace_id = random.getrandbits(128)
    return trace_id


def build_tracer_provider(
    service: str,
    otlp_endpoint: str | None,
    extra_processors: list[SpanProcessor] | None = None,
    sampler: Sampler | None = None,
) -> TracerProvider:
    """A tracer provider for one service; exports over OTLP/HTTP only when an endpoint is given."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=sampler or build_sampler(),
        id_generator=DrawnIdGenerator(),
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
