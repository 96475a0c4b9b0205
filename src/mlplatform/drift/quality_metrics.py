"""Prometheus metrics of model quality in drift detection (labels, realized and estimated
performance, segments, fairness); prefix ``mlplatform_drift_``, on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import LABEL_MODEL, LABEL_VERSION, MetricFactory

LABEL_METRIC = "metric"
LABEL_SEGMENT = "segment"
LABEL_VALUE = "value"
LABEL_RESULT = "result"


class QualityMetrics:
    """Gauges hold the newest window of each model version that has the value."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry)
        mv = [LABEL_MODEL, LABEL_VERSION]
        self.labels = m.counter(
            "mlplatform_drift_labels_total",
            "Ground-truth labels received, by result: accepted (first label of a row), updated (a "
            "different label replaced it), duplicate (the same label again), unknown (no such prediction).",
            [LABEL_MODEL, LABEL_RESULT],
        )
        self.realized = m.gauge(
            "mlplatform_drift_realized_performance",
            "Realized performance (from ground-truth labels) of the newest window with enough labels.",
            [*mv, LABEL_METRIC],
        )
        self.estimated = m.gauge(
            "mlplatform_drift_estimated_performance",
            "Performance estimated without labels (CBPE) for the newest closed window.",
            [*mv, LABEL_METRIC],
        )
        self.reference = m.gauge(
            "mlplatform_drift_reference_performance",
            "Performance of the version on its labelled reference (held-out rows at training): the "
            "baseline realized and estimated performance are compared with.",
            [*mv, LABEL_METRIC],
        )
        self.estimation_error = m.gauge(
            "mlplatform_drift_estimation_error",
            "Estimated minus realized performance of the newest window with enough labels.",
            [*mv, LABEL_METRIC],
        )
        self.labeled_ratio = m.gauge(
            "mlplatform_drift_labeled_ratio",
            "Share of the newest window's records that have a label.",
            mv,
        )
        self.performance_drop = m.gauge(
            "mlplatform_drift_performance_dropped",
            "1 when the newest window with enough labels is below the reference performance by more than "
            "the configured drop, else 0.",
            mv,
        )
        seg = [*mv, LABEL_SEGMENT, LABEL_VALUE]
        self.segment_records = m.gauge(
            "mlplatform_drift_segment_records",
            "Records of a segment value in the newest closed window.",
            seg,
        )
        self.segment_prediction_rate = m.gauge(
            "mlplatform_drift_segment_prediction_rate_ratio",
            "Share of positive predictions of a segment value in the newest closed window.",
            seg,
        )
        self.segment_drift_share = m.gauge(
            "mlplatform_drift_segment_drift_share_ratio",
            "Share of features that drifted within a segment value (against the reference rows of the "
            "same value) in the newest closed window.",
            seg,
        )
        self.segment_realized = m.gauge(
            "mlplatform_drift_segment_realized_performance",
            "Realized performance of a segment value in the newest window with labels for it.",
            [*seg, LABEL_METRIC],
        )
        self.disparate_impact = m.gauge(
            "mlplatform_drift_disparate_impact_ratio",
            "Lowest over highest positive-prediction rate among a segment column's values (1 = equal).",
            [*mv, LABEL_SEGMENT],
        )
        self.equal_opportunity = m.gauge(
            "mlplatform_drift_equal_opportunity_difference",
            "Highest minus lowest recall among a segment column's values (0 = equal).",
            [*mv, LABEL_SEGMENT],
        )
        self.quality_seconds = m.gauge(
            "mlplatform_drift_quality_compute_seconds",
            "Seconds the last window's quality computation (CBPE, realized, segments) took.",
            mv,
        )
