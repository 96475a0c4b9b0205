"""Prometheus metrics of the drift-detection service (prefix ``mlplatform_drift_``)."""

from __future__ import annotations

from mlplatform.core.metrics import MetricSet


class DriftMetrics(MetricSet):
    """Per model, version and feature drift gauges plus ingestion and retraining counters; text
    descriptor means (drift/text.py) and multivariate tests (drift/multivariate.py) per model version.
    The families are declared in ``core/metrics_catalogue.yaml`` under ``DriftMetrics``."""


class PayloadMetrics(MetricSet):
    """The payload logger's records (submitted, sampled out, sent, spooled, dropped, undelivered),
    spool bytes and queue length; drift/payload_logger.py runs in model-serving, on its registry."""
