"""The inference record serving hands to the payload logger (and drift detection ingests)."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field


class InferenceRecord(BaseModel):
    """One row as the model saw it: inputs (including fetched features), outputs and identity."""

    request_id: str = Field(
        description="Unique id of the inference request; with row_index, the idempotency key."
    )
    row_index: int = Field(
        0, ge=0, description="Row of the request this record is (a request may carry many rows)."
    )
    model: str = Field(description="Registered model name.")
    version: str = Field(description="Registered model version that produced the output.")
    timestamp: float = Field(description="Unix time (seconds) when the prediction was made.")
    inputs: dict[str, Any] = Field(description="Feature name -> value, exactly as passed to the model.")
    outputs: dict[str, Any] = Field(description="Output name -> value (e.g. fraud probability).")
    trace_id: str = Field("", description="W3C trace id of the inference request, if traced.")
    span_id: str = Field(
        "", description="Span id of the inference span; drift detection continues the trace from it."
    )


class PayloadSink(Protocol):
    """Where serving hands records. ``submit`` must never block or raise on the request path."""

    def submit(self, record: InferenceRecord) -> None: ...
