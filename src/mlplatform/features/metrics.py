"""Prometheus metrics of the feature-store service (private registry per app)."""

from __future__ import annotations

from mlplatform.core.metrics import MetricSet, bucket_set

#: ``feature_service`` label value for requests that name feature references instead of a service.
REFS_LABEL = "_feature_refs"

#: the catalogue's ``fast`` bucket set (also the feature client's request latency in model serving)
FAST_BUCKETS = bucket_set("fast")


class FeatureMetrics(MetricSet):
    """Request latency by feature service, online store reads, freshness, materialisation and pushes
    (families in ``core/metrics_catalogue.yaml`` under ``FeatureMetrics``)."""
