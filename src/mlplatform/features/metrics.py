"""Prometheus metrics of the feature-store service (private registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import LABEL_OUTCOME, LATENCY_BUCKETS, MetricFactory

LABEL_FEATURE_SERVICE = "feature_service"
LABEL_FEATURE_VIEW = "feature_view"
LABEL_STORE = "store"
LABEL_PUSH_SOURCE = "push_source"
#: ``feature_service`` label value for requests that name feature references instead of a service.
REFS_LABEL = "_feature_refs"

FAST_BUCKETS = (0.0001, 0.00025, *LATENCY_BUCKETS)


class FeatureMetrics:
    """Request latency by feature service, online store reads, freshness, materialisation and pushes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry)
        self.request_latency = m.histogram(
            "mlplatform_features_online_request_duration_seconds",
            "Online feature request latency in seconds (data plane, without HTTP), by feature service.",
            [LABEL_FEATURE_SERVICE],
            buckets=FAST_BUCKETS,
        )
        self.store_read_latency = m.histogram(
            "mlplatform_features_online_store_read_duration_seconds",
            "Latency of one online store read (one feature view, all requested entities), in seconds.",
            [LABEL_STORE, LABEL_FEATURE_VIEW],
            buckets=FAST_BUCKETS,
        )
        self.freshness = m.gauge(
            "mlplatform_features_freshness_seconds",
            "Age in seconds of the newest value returned by the last online read, per feature view.",
            [LABEL_FEATURE_VIEW],
        )
        self.missing_entities = m.counter(
            "mlplatform_features_missing_entities_total",
            "Entity rows with no stored value in a feature view.",
            [LABEL_FEATURE_VIEW],
        )
        self.materialization_runs = m.counter(
            "mlplatform_features_materialization_runs_total",
            "Incremental materialisation runs, by outcome (success, error).",
            [LABEL_OUTCOME],
        )
        self.materialized_rows = m.counter(
            "mlplatform_features_materialized_rows_total",
            "Rows written to the online store by materialisation, by feature view.",
            [LABEL_FEATURE_VIEW],
        )
        self.materialization_duration = m.histogram(
            "mlplatform_features_materialization_duration_seconds",
            "Duration of incremental materialisation runs in seconds.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.pushed_rows = m.counter(
            "mlplatform_features_pushed_rows_total",
            "Rows accepted through a push source.",
            [LABEL_PUSH_SOURCE],
        )
