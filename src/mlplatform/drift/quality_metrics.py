"""Prometheus metrics of model quality in drift detection (labels, realized and estimated
performance, segments, fairness); prefix ``mlplatform_drift_``, on the app's own registry."""

from __future__ import annotations

from mlplatform.core.metrics import MetricSet


class QualityMetrics(MetricSet):
    """Gauges hold the newest window of each model version that has the value. The families are
    declared in ``core/metrics_catalogue.yaml`` under ``QualityMetrics``."""
