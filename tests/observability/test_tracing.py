"""Tracing across real service processes, exported over OTLP/HTTP.

The services run as real processes with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at
:class:`tests.observability.otlp.OtlpReceiver`, an in-process test double for Tempo / the
OpenTelemetry Collector that speaks the OTLP/HTTP wire format (``POST /v1/traces``, protobuf
``ExportTraceServiceRequest``, decoded with opentelemetry-proto). Tempo cannot run here.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.helpers import v2_body
from tests.observability.otlp import OtlpReceiver, ReceivedSpan
from tests.observability.traffic import MODEL, entity_rows

# The shared stack's start-up (training, four services) counts against the first test's timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SERVER = Span.SpanKind.SPAN_KIND_SERVER


def _infer_once(stack) -> tuple[str, str]:  # noqa: ANN001
    """One inference that needs store features (entity keys only); returns (request id, trace id)."""
    rid = uuid.uuid4().hex
    body = v2_body(entity_rows(stack.data_dir, 1), request_id=rid)
    r = httpx.post(
        f"{stack.url('model-serving')}/v2/models/{MODEL}/infer",
        json=body,
        headers={"x-request-id": rid},
        timeout=60.0,
    )
    assert r.status_code == 200, r.text[:500]
    spans = stack.otlp.wait_for(lambda spans: any(_is_request_span(s, rid) for s in spans), deadline_s=30)
    (root,) = [s for s in spans if _is_request_span(s, rid)]
    return rid, root.trace_id


def _is_request_span(s: ReceivedSpan, rid: str) -> bool:
    return (
        s.service == "model-serving" and s.kind == SERVER and s.attributes.get("mlplatform.request_id") == rid
    )


def _log_lines_with(stack, service: str, trace_id: str, deadline_s: float = 15) -> list[dict]:  # noqa: ANN001
    end = time.monotonic() + deadline_s
    while True:
        lines = []
        for raw in stack.services[service].logs().splitlines():
            if trace_id in raw:
                lines.append(json.loads(raw))
        if lines or time.monotonic() > end:
            return lines
        time.sleep(0.2)


@pytest.fixture(scope="module")
def inference(stack) -> tuple[str, str]:  # noqa: ANN001
    stack.need("model-serving", "feature-store")
    return _infer_once(stack)


def test_inference_and_feature_lookup_share_one_trace(stack, inference) -> None:  # noqa: ANN001
    rid, trace_id = inference
    spans = stack.otlp.wait_for(
        lambda spans: any(s.service == "feature-store" and s.trace_id == trace_id for s in spans),
        deadline_s=30,
    )
    in_trace = [s for s in spans if s.trace_id == trace_id]
    store_server = [s for s in in_trace if s.service == "feature-store" and s.kind == SERVER]
    assert store_server, f"no feature-store server span in trace {trace_id}: {in_trace}"
    serving_ids = {s.span_id for s in in_trace if s.service == "model-serving"}
    # the feature-store span's parent is a span of model-serving: context went over the wire (W3C)
    assert any(s.parent_span_id in serving_ids for s in store_server)
    assert any(s.attributes.get("http.route") == "/v1/features/online" for s in store_server)


def test_trace_ids_appear_in_the_json_logs(stack, inference) -> None:  # noqa: ANN001
    rid, trace_id = inference
    serving = _log_lines_with(stack, "model-serving", trace_id)
    assert serving, "model-serving logged nothing with the request's trace_id"
    assert all(line["trace_id"] == trace_id and line["service"] == "model-serving" for line in serving)
    assert any(line.get("request_id") == rid for line in serving)
    store = _log_lines_with(stack, "feature-store", trace_id)
    assert store, "feature-store logged nothing with the request's trace_id"
    assert all(line["trace_id"] == trace_id and len(line["span_id"]) == 16 for line in store)


def test_payload_logging_continues_the_inference_trace_in_drift_detection(stack, inference) -> None:  # noqa: ANN001
    stack.need("drift-detection")
    _, trace_id = inference
    stack.otlp.wait_for(
        lambda spans: any(s.service == "drift-detection" and s.trace_id == trace_id for s in spans),
        deadline_s=20,
    )
    assert _log_lines_with(stack, "drift-detection", trace_id)


def test_otlp_receiver_decodes_real_exporter_output() -> None:
    """The test double decodes what the SDK's OTLP/HTTP exporter sends (and rejects non-protobuf)."""
    from opentelemetry.sdk.trace import TracerProvider

    from mlplatform.core.tracing import build_tracer_provider

    with OtlpReceiver() as rx:
        provider: TracerProvider = build_tracer_provider("obs-test", rx.endpoint)
        with provider.get_tracer("t").start_as_current_span("outer") as outer:
            with provider.get_tracer("t").start_as_current_span("inner"):
                pass
        provider.force_flush()
        spans = rx.wait_for(lambda s: len(s) >= 2, deadline_s=10)
        provider.shutdown()
        trace_id = format(outer.get_span_context().trace_id, "032x")
        assert {s.name for s in spans} == {"outer", "inner"}
        assert {s.trace_id for s in spans} == {trace_id}
        assert {s.service for s in spans} == {"obs-test"}
        inner = next(s for s in spans if s.name == "inner")
        assert inner.parent_span_id == format(outer.get_span_context().span_id, "016x")
        r = httpx.post(
            f"{rx.endpoint}/v1/traces", content=b"{}", headers={"content-type": "application/json"}
        )
        assert r.status_code == 415
