"""Serving metrics (prefix ``mlplatform_serving_``) on the app's private registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import MetricSet
from mlplatform.serving.text.metrics import GenerationMetrics

OUTCOME_OK = "success"
OUTCOME_CLIENT_ERROR = "client_error"
OUTCOME_UNAVAILABLE = "unavailable"
OUTCOME_ERROR = "error"


class ServingMetrics(MetricSet):
    """Inference, batching, model-loading and feature-store metrics (families in
    ``core/metrics_catalogue.yaml`` under ``ServingMetrics``), and the text models' generation metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
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
