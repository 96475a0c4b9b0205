"""Request and response bodies of the drift-detection API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlplatform.core.payloads import InferenceBatch, InferenceRecord


class IngestRequest(BaseModel):
    records: list[InferenceRecord] = Field(
        default_factory=list, description="Inference records to store, one per row (idempotent per key)."
    )
    batches: list[InferenceBatch] = Field(
        default_factory=list,
        description="Inference requests by column, as model-serving sends them; each is stored as one record "
        "per row (row_index = position in the batch).",
    )

    def all_records(self) -> list[InferenceRecord]:
        """``records`` plus the rows of every batch."""
        if not self.batches:
            return self.records
        return [*self.records, *(r for b in self.batches for r in b.records())]


class IngestResponse(BaseModel):
    accepted: int = Field(description="Records stored by this request.")
    duplicates: int = Field(description="Records already stored earlier (same request_id and row_index).")
    windows_closed: int = Field(description="Windows that closed and were evaluated because of this batch.")


class ColumnDriftOut(BaseModel):
    column_type: str = Field(description="'numerical', 'categorical' or 'text' (Evidently's inference).")
    method: str = Field(
        description="Evidently stattest name: ks, chisquare, z, wasserstein, jensenshannon, "
        "abs_text_content_drift or perc_text_content_drift."
    )
    method_display_name: str = Field(description="Evidently's display name of the method.")
    statistic: float = Field(
        description="p-value (ks, chisquare, z), distance (wasserstein, jensenshannon) or the text domain "
        "classifier's ROC AUC (*_text_content_drift)."
    )
    threshold: float = Field(description="Threshold the statistic is compared with.")
    drifted: bool = Field(description="Whether this column drifted.")
    psi: float | None = Field(None, description="Population stability index (informational).")
    cutoff: float | None = Field(
        None,
        description="Text columns: the ROC AUC the statistic had to exceed (the threshold, or with "
        "perc_text_content_drift the random scorers' percentile).",
    )
    descriptors: dict[str, dict[str, float]] | None = Field(
        None,
        description="Text columns: mean length, oov_share and non_letter_share, each "
        "{'reference': ..., 'current': ...}.",
    )


class MultivariateMethodOut(BaseModel):
    method: str = Field(description="'mmd' or 'domain_classifier'.")
    statistic: float = Field(description="MMD^2 (unbiased, RBF kernel) or the domain classifier's ROC AUC.")
    threshold: float = Field(description="Score above which the window counts as drifted.")
    p_value: float | None = Field(
        None,
        description="Permutation p-value (mmd) or share of random scorers at least as good (classifier).",
    )
    drifted: bool = Field(description="Whether this test found drift.")
    seconds: float = Field(description="Seconds the test took.")
    details: dict[str, Any] = Field(description="Bandwidth, permutations, classifier and threshold kind.")


class MultivariateOut(BaseModel):
    drifted: bool = Field(description="Whether any multivariate test found drift.")
    reference_rows: int = Field(description="Reference rows the tests used (a seeded sample).")
    current_rows: int = Field(description="Window rows the tests used (a seeded sample).")
    columns: list[str] = Field(description="Feature columns the tests saw.")
    methods: dict[str, MultivariateMethodOut] = Field(description="Result per test.")


class WindowOut(BaseModel):
    id: int = Field(description="Window id (increasing).")
    version: str = Field(description="Model version the window's records came from.")
    opened: float = Field(description="Unix time the first record of the window was received.")
    closed: float = Field(description="Unix time the window was evaluated.")
    n_records: int = Field(description="Records in the window.")
    dataset_drift: bool = Field(description="Whether the share of drifted features reached the threshold.")
    drift_share: float = Field(description="Share of features that drifted.")
    drift_share_threshold: float = Field(description="Share of drifted features that means dataset drift.")
    drifted_features: int = Field(description="Number of features that drifted.")
    features: dict[str, ColumnDriftOut] = Field(description="Per-feature drift.")
    prediction: ColumnDriftOut | None = Field(None, description="Drift of the model's prediction.")
    multivariate: MultivariateOut | None = Field(
        None, description="Multivariate drift (MMD, domain classifier); null when off for the model."
    )


class RetrainStateOut(BaseModel):
    consecutive_drift_windows: int = Field(description="Consecutive windows with dataset drift.")
    episode_active: bool = Field(description="Retraining already fired for the current drift episode.")
    last_trigger: float | None = Field(None, description="Unix time of the last retraining trigger.")


class DriftStatus(BaseModel):
    model: str = Field(description="Registered model name.")
    window: WindowOut | None = Field(None, description="The last closed window (null until one closes).")
    open_records: dict[str, int] = Field(description="Records collected for the next window, per version.")
    retraining: RetrainStateOut = Field(description="Retraining trigger state of this model.")


class DriftHistory(BaseModel):
    model: str = Field(description="Registered model name.")
    windows: list[WindowOut] = Field(description="Past windows, newest first.")


class RetrainRequest(BaseModel):
    reason: str = Field("manual", max_length=200, description="Why retraining is started (logged).")
    version: str | None = Field(None, description="Model version that prompted it (default: last seen).")


class RetrainResponse(BaseModel):
    model: str = Field(description="Model retraining was started for.")
    mode: str = Field(description="kubernetes, subprocess or off.")
    outcome: str = Field(description="started, failed or skipped.")
    detail: str = Field(description="Job name, process id or the failure.")


class ModelsOut(BaseModel):
    models: list[str] = Field(description="Models with stored records.")


def window_out(row: Any) -> WindowOut:  # noqa: ANN401 - a store.WindowRow
    res = row.result
    return WindowOut(
        id=row.id,
        version=row.version,
        opened=row.opened,
        closed=row.closed,
        n_records=row.n_records,
        dataset_drift=res["dataset_drift"],
        drift_share=res["drift_share"],
        drift_share_threshold=res["drift_share_threshold"],
        drifted_features=res["drifted_features"],
        features=res["features"],
        prediction=res.get("prediction"),
        multivariate=res.get("multivariate"),
    )
