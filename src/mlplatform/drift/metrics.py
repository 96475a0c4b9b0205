"""Prometheus metrics of the drift-detection service (prefix ``mlplatform_drift_``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import LABEL_MODEL, LABEL_OUTCOME, LABEL_VERSION, MetricFactory

LABEL_FEATURE = "feature"
LABEL_METHOD = "method"
LABEL_REASON = "reason"
LABEL_MODE = "mode"
LABEL_DESCRIPTOR = "descriptor"
LABEL_WINDOW = "window"


class DriftMetrics:
    """Per model, version and feature drift gauges plus ingestion and retraining counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry)
        self.score = m.gauge(
            "mlplatform_drift_feature_score",
            "Drift statistic of a feature in the last closed window (p-value or distance, see method).",
            [LABEL_MODEL, LABEL_VERSION, LABEL_FEATURE, LABEL_METHOD],
        )
        self.psi = m.gauge(
            "mlplatform_drift_feature_psi",
            "Population stability index of a feature in the last closed window.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_FEATURE],
        )
        self.drifted = m.gauge(
            "mlplatform_drift_feature_drifted",
            "1 when the feature drifted in the last closed window, else 0.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_FEATURE],
        )
        self.share = m.gauge(
            "mlplatform_drift_dataset_drift_share_ratio",
            "Share of features that drifted in the last closed window.",
            [LABEL_MODEL, LABEL_VERSION],
        )
        self.dataset = m.gauge(
            "mlplatform_drift_dataset_drifted",
            "1 when the last closed window shows dataset drift, else 0.",
            [LABEL_MODEL, LABEL_VERSION],
        )
        self.window_size = m.gauge(
            "mlplatform_drift_window_size_records",
            "Records in the last closed window.",
            [LABEL_MODEL, LABEL_VERSION],
        )
        self.open_records = m.gauge(
            "mlplatform_drift_open_window_records",
            "Records collected for the next window so far.",
            [LABEL_MODEL, LABEL_VERSION],
        )
        self.windows = m.counter(
            "mlplatform_drift_windows_total",
            "Windows closed and evaluated.",
            [LABEL_MODEL, LABEL_VERSION],
        )
        self.ingested = m.counter(
            "mlplatform_drift_records_ingested_total",
            "Records stored (duplicates of already stored records are not counted).",
            [LABEL_MODEL, LABEL_VERSION],
        )
        self.duplicates = m.counter(
            "mlplatform_drift_records_duplicate_total",
            "Records received again (same request_id and row_index) and ignored.",
            [LABEL_MODEL, LABEL_VERSION],
        )
        self.rejected = m.counter(
            "mlplatform_drift_records_rejected_total",
            "Records rejected: unknown model, schema mismatch or bad values.",
            [LABEL_MODEL, LABEL_REASON],
        )
        self.retrains = m.counter(
            "mlplatform_drift_retraining_triggers_total",
            "Retraining triggers, by how they were started and whether starting worked.",
            [LABEL_MODEL, LABEL_MODE, LABEL_OUTCOME],
        )
        self.compute_seconds = m.gauge(
            "mlplatform_drift_last_compute_seconds",
            "Seconds the last window's drift computation took.",
            [LABEL_MODEL, LABEL_VERSION],
        )
        # text columns (drift/text.py): descriptor means of the reference and of the last closed window
        self.text_descriptor = m.gauge(
            "mlplatform_drift_text_descriptor",
            "Mean text descriptor of a text column: length (characters), oov_share (share of words not in "
            "the reference vocabulary) or non_letter_share (share of characters neither letters nor "
            "spaces), for the reference and for the last closed window (window=current).",
            [LABEL_MODEL, LABEL_FEATURE, LABEL_DESCRIPTOR, LABEL_WINDOW],
        )
        # multivariate drift (drift/multivariate.py): one series per model, version and test
        self.mv_score = m.gauge(
            "mlplatform_drift_multivariate_score",
            "Multivariate drift statistic of the last closed window: MMD^2 (method mmd) or the domain "
            "classifier's ROC AUC (method domain_classifier).",
            [LABEL_MODEL, LABEL_VERSION, LABEL_METHOD],
        )
        self.mv_threshold = m.gauge(
            "mlplatform_drift_multivariate_threshold",
            "Value of the score above which the last closed window counts as drifted (permutation or "
            "bootstrap threshold).",
            [LABEL_MODEL, LABEL_VERSION, LABEL_METHOD],
        )
        self.mv_p_value = m.gauge(
            "mlplatform_drift_multivariate_p_value",
            "Permutation (mmd) or random-scorer (domain_classifier) p-value of the last closed window.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_METHOD],
        )
        self.mv_drifted = m.gauge(
            "mlplatform_drift_multivariate_drifted",
            "1 when the multivariate test found drift in the last closed window, else 0.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_METHOD],
        )
        self.mv_seconds = m.gauge(
            "mlplatform_drift_multivariate_compute_seconds",
            "Seconds the multivariate test took on the last closed window.",
            [LABEL_MODEL, LABEL_VERSION, LABEL_METHOD],
        )
