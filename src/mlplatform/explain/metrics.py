"""Prometheus metrics of the explainability service (prefix ``mlplatform_explain_``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import LABEL_MODEL, LABEL_VERSION, LATENCY_BUCKETS, MetricFactory

LABEL_EXPLAINER = "explainer"
LABEL_CACHE = "cache"

BUILD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ExplainMetrics:
    """Explanation latency, rows explained, explainer build time and cache hits/misses."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry)
        self.latency = m.histogram(
            "mlplatform_explain_duration_seconds",
            "Time to explain one request (feature lookup excluded), by model and explainer kind.",
            [LABEL_MODEL, LABEL_EXPLAINER],
            buckets=LATENCY_BUCKETS,
        )
        self.rows = m.counter(
            "mlplatform_explain_rows_total",
            "Rows explained, by model and explainer kind.",
            [LABEL_MODEL, LABEL_EXPLAINER],
        )
        self.build = m.histogram(
            "mlplatform_explain_explainer_build_seconds",
            "Time to load a model version and build its explainer, by model, version and explainer kind.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_EXPLAINER],
            buckets=BUILD_BUCKETS,
        )
        self.cache_hits = m.counter(
            "mlplatform_explain_cache_hits_total",
            "Lookups answered from cache, by model and cache (explainer or importance).",
            [LABEL_MODEL, LABEL_CACHE],
        )
        self.cache_misses = m.counter(
            "mlplatform_explain_cache_misses_total",
            "Lookups that had to build, by model and cache (explainer or importance).",
            [LABEL_MODEL, LABEL_CACHE],
        )

    def cache(self, model: str, cache: str, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).labels(model, cache).inc()
