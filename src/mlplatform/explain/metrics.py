"""Prometheus metrics of the explainability service (prefix ``mlplatform_explain_``)."""

from __future__ import annotations

from mlplatform.core.metrics import MetricSet


class ExplainMetrics(MetricSet):
    """Explanation latency, rows explained, explainer build time and cache hits/misses (families in
    ``core/metrics_catalogue.yaml`` under ``ExplainMetrics``)."""

    def cache(self, model: str, cache: str, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).labels(model, cache).inc()
