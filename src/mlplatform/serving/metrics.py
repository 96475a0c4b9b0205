"""Serving metrics (prefix ``mlplatform_serving_``) on the app's private registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import LABEL_MODEL, LABEL_OUTCOME, LABEL_VERSION, LATENCY_BUCKETS, MetricFactory
from mlplatform.serving.text.metrics import GenerationMetrics

LABEL_RUNTIME = "runtime"
LABEL_REASON = "reason"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

OUTCOME_OK = "success"
OUTCOME_CLIENT_ERROR = "client_error"
OUTCOME_UNAVAILABLE = "unavailable"
OUTCOME_ERROR = "error"


class ServingMetrics:
    """Inference, batching, model-loading and feature-store metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry)
        self.requests = m.counter(
            "mlplatform_serving_requests_total",
            "Inference requests by model, version and outcome (success, client_error, unavailable, error).",
            [LABEL_MODEL, LABEL_VERSION, LABEL_OUTCOME],
        )
        self.latency = m.histogram(
            "mlplatform_serving_request_duration_seconds",
            "Inference latency inside the service (parse, features, queue, predict), by model, version, outcome.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_OUTCOME],
            buckets=LATENCY_BUCKETS,
        )
        self.batch_requests = m.histogram(
            "mlplatform_serving_batch_size_requests",
            "Requests merged into one model call.",
            [LABEL_MODEL],
            buckets=BATCH_BUCKETS,
        )
        self.batch_rows = m.histogram(
            "mlplatform_serving_batch_size_rows",
            "Rows in one model call.",
            [LABEL_MODEL],
            buckets=BATCH_BUCKETS,
        )
        self.queue_depth = m.gauge(
            "mlplatform_serving_queue_depth_requests",
            "Requests waiting in the batcher queue.",
            [LABEL_MODEL],
        )
        self.load_duration = m.histogram(
            "mlplatform_serving_model_load_duration_seconds",
            "Time to download, load, convert, check and warm a model version.",
            [LABEL_MODEL],
            buckets=LOAD_BUCKETS,
        )
        self.load_failures = m.counter(
            "mlplatform_serving_model_load_failures_total",
            "Failed attempts to resolve or load a model version.",
            [LABEL_MODEL],
        )
        self.model_info = m.gauge(
            "mlplatform_serving_model_info",
            "Loaded model version (value 1) with its runtime.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_RUNTIME],
        )
        self.feature_store_failures = m.counter(
            "mlplatform_serving_feature_store_failures_total",
            "Online-feature lookups that failed (timeout or feature store unavailable).",
            [LABEL_MODEL, LABEL_REASON],
        )
        self.generation = GenerationMetrics(registry)  # text models (serving/text)
        self._children: dict[tuple[str, str, str], tuple[object, object]] = {}

    def observe_request(self, model: str, version: str, outcome: str, seconds: float) -> None:
        key = (model, version, outcome)
        child = self._children.get(key)
        if child is None:
            child = (self.requests.labels(*key), self.latency.labels(*key))
            self._children[key] = child
        child[0].inc()  # type: ignore[attr-defined]
        child[1].observe(seconds)  # type: ignore[attr-defined]

    def set_model_info(self, model: str, version: str, runtime: str, old: tuple[str, str] | None) -> None:
        if old is not None:
            try:
                self.model_info.remove(model, *old)
            except KeyError:
                pass
        self.model_info.labels(model, version, runtime).set(1)
