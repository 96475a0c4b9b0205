"""Prometheus metrics of model quality in drift detection (labels, realized and estimated
performance, segments, fairness); prefix ``mlplatform_drift_``, on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from mlplatform.core.metrics import LABEL_MODEL, LABEL_VERSION

LABEL_METRIC = "metric"
LABEL_SEGMENT = "segment"
LABEL_VALUE = "value"
LABEL_RESULT = "result"


class QualityMetrics:
    """Gauges hold the newest window of each model version that has the value."""

    def __init__(self, registry: CollectorRegistry) -> None:
        mv = [LABEL_MODEL, LABEL_VERSION]
        self.labels = Counter(
            "mlplatform_drift_labels_total",
            "Ground-truth labels received, by result: accepted (first label of a row), updated (a "
            "different label replaced it), duplicate (the same label again), unknown (no such prediction).",
            [LABEL_MODEL, LABEL_RESULT],
            registry=registry,
        )
        self.realized = Gauge(
            "mlplatform_drift_realized_performance",
            "Realized performance (from ground-truth labels) of the newest window with enough labels.",
            [*mv, LABEL_METRIC],
            registry=registry,
        )
        self.estimated = Gauge(
            "mlplatform_drift_estimated_performance",
            "Performance estimated without labels (CBPE) for the newest closed window.",
            [*mv, LABEL_METRIC],
            registry=registry,
        )
        self.reference = Gauge(
            "mlplatform_drift_reference_performance",
            "Performance of the version on its labelled reference (held-out rows at training): the "
            "baseline realized and estimated performance are compared with.",
            [*mv, LABEL_METRIC],
            registry=registry,
        )
        self.estimation_error = Gauge(
            "mlplatform_drift_estimation_error",
            "Estimated minus realized performance of the newest window with enough labels.",
            [*mv, LABEL_METRIC],
            registry=registry,
        )
        self.labeled_ratio = Gauge(
            "mlplatform_drift_labeled_ratio",
            "Share of the newest window's records that have a label.",
            mv,
            registry=registry,
        )
        self.performance_drop = Gauge(
            "mlplatform_drift_performance_dropped",
            "1 when the newest window with enough labels is below the reference performance by more than "
            "the configured drop, else 0.",
            mv,
            registry=registry,
        )
        seg = [*mv, LABEL_SEGMENT, LABEL_VALUE]
        self.segment_records = Gauge(
            "mlplatform_drift_segment_records",
            "Records of a segment value in the newest closed window.",
            seg,
            registry=registry,
        )
        self.segment_prediction_rate = Gauge(
            "mlplatform_drift_segment_prediction_rate_ratio",
            "Share of positive predictions of a segment value in the newest closed window.",
            seg,
            registry=registry,
        )
        self.segment_drift_share = Gauge(
            "mlplatform_drift_segment_drift_share_ratio",
            "Share of features that drifted within a segment value (against the reference rows of the "
            "same value) in the newest closed window.",
            seg,
            registry=registry,
        )
        self.segment_realized = Gauge(
            "mlplatform_drift_segment_realized_performance",
            "Realized performance of a segment value in the newest window with labels for it.",
            [*seg, LABEL_METRIC],
            registry=registry,
        )
        self.disparate_impact = Gauge(
            "mlplatform_drift_disparate_impact_ratio",
            "Lowest over highest positive-prediction rate among a segment column's values (1 = equal).",
            [*mv, LABEL_SEGMENT],
            registry=registry,
        )
        self.equal_opportunity = Gauge(
            "mlplatform_drift_equal_opportunity_difference",
            "Highest minus lowest recall among a segment column's values (0 = equal).",
            [*mv, LABEL_SEGMENT],
            registry=registry,
        )
        self.quality_seconds = Gauge(
            "mlplatform_drift_quality_compute_seconds",
            "Seconds the last window's quality computation (CBPE, realized, segments) took.",
            mv,
            registry=registry,
        )
