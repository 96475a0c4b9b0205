"""Request and response bodies of drift detection's model-quality API (labels, performance, segments)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        min_length=1,
        max_length=128,
        description="The id model-serving returned for the inference request (parameters.prediction_id).",
    )
    row_index: int = Field(0, ge=0, description="Row of that request the label is for.")
    label: StrictBool | Annotated[StrictInt, Field(ge=0, le=1)] = Field(
        description="Ground truth: 1 or true for the positive class (fraud), 0 or false otherwise."
    )


class LabelsRequest(BaseModel):
    labels: list[LabelIn] = Field(description="Labels to store (idempotent per prediction id and row).")


class LabelsResponse(BaseModel):
    accepted: int = Field(description="Labels of rows that had none yet.")
    updated: int = Field(description="Labels that replaced a different label given earlier.")
    duplicates: int = Field(description="Labels equal to the one already stored (a re-sent batch).")
    unknown: int = Field(description="Labels whose prediction id and row match no stored prediction.")
    unknown_ids: list[str] = Field(
        description="The first (at most 20) unknown keys as 'prediction_id/row_index', to look into."
    )
    windows_updated: int = Field(description="Closed windows whose realized performance was recomputed.")


class WindowQualityOut(BaseModel):
    window_id: int = Field(description="Drift window id (the same ids as the drift history).")
    version: str = Field(description="Model version of the window's records.")
    updated: float = Field(description="Unix time the result was last computed.")
    n_records: int = Field(description="Records in the window (with a prediction).")
    n_labeled: int = Field(description="Records of the window with a ground-truth label so far.")
    estimated: dict[str, float | None] | None = Field(
        None, description="CBPE estimate per metric (null without a labelled reference for the version)."
    )
    realized: dict[str, float | None] | None = Field(
        None, description="Realized performance per metric from the labelled records (null without labels)."
    )
    estimation_error: dict[str, float] = Field(
        default_factory=dict, description="Estimated minus realized, per metric both have."
    )
    performance_dropped: bool | None = Field(
        None,
        description="Realized performance below the reference by more than the configured drop (null "
        "when the window has too few labels or the version no labelled reference).",
    )
    detail: dict[str, Any] = Field(
        default_factory=dict, description="CBPE calibration, reference performance, thresholds."
    )


class QualityHistory(BaseModel):
    model: str = Field(description="Registered model name.")
    metric: str = Field(description="Metric the retraining trigger watches.")
    windows: list[WindowQualityOut] = Field(description="Per-window quality, newest first.")


class SegmentValueOut(BaseModel):
    volume: int = Field(description="Records of this segment value in the window.")
    prediction_rate: float = Field(description="Share of positive predictions (score >= threshold).")
    mean_score: float = Field(description="Mean predicted probability.")
    labeled: int = Field(description="Labelled records.")
    positives: int = Field(description="Labelled positives.")
    realized: dict[str, float | None] | None = Field(
        None, description="Realized performance (labelled rows)."
    )
    drift_share: float | None = Field(
        None, description="Share of features that drifted against the reference rows of this value."
    )
    reference_volume_share: float | None = Field(
        None, description="Share of the reference rows with this value (to compare with this window's)."
    )


class SegmentOut(BaseModel):
    column: str = Field(description="Input column the segment is cut from.")
    values: dict[str, SegmentValueOut] = Field(description="Per segment value.")
    disparate_impact_ratio: float | None = Field(
        None, description="Lowest over highest prediction rate among the values (1 = equal)."
    )
    equal_opportunity_difference: float | None = Field(
        None, description="Highest minus lowest recall among the values with labelled positives (0 = equal)."
    )


class SegmentsOut(BaseModel):
    model: str = Field(description="Registered model name.")
    window_id: int = Field(description="Window the segments are of.")
    version: str = Field(description="Model version of that window.")
    segments: dict[str, SegmentOut] = Field(description="Per configured segment.")
