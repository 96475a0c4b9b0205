"""The inference record serving hands to the payload logger (and drift detection ingests)."""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, Field


class InferenceRecord(BaseModel):
    """One row as the model saw it: inputs (including fetched features), outputs and identity."""

    request_id: str = Field(
        description="The client's id of the inference request (V2 ``id`` or ``x-request-id``); may repeat."
    )
    prediction_id: str = Field(
        "",
        max_length=128,
        description="Id model-serving assigned to the inference request (unique, never taken from the "
        "client); with model, version and row_index the idempotency key. Empty only from senders that "
        "predate it: request_id stands in.",
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


RECORD_FIELDS = tuple(InferenceRecord.model_fields)


def record_document(record: InferenceRecord) -> dict[str, Any]:
    """One record as a JSON-ready dict (the element of ``records`` in ``POST /v1/records``)."""
    return {f: getattr(record, f) for f in RECORD_FIELDS}


class PredictionIds:
    """Server-assigned inference ids: 64 random bits drawn at process start, then a counter.

    Unique across replicas and restarts (a rescheduled pod draws a new prefix) without coordination,
    and cheap enough for every request (no uuid per call). Serving returns the id in each response
    (``parameters.prediction_id``) and logs it with every row for drift detection's idempotency key.
    """

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self._counter):x}"


def encode_records(records: list[InferenceRecord]) -> bytes:
    """``{"records": [...]}`` as drift detection's ``POST /v1/records`` takes it.

    The same document as ``model_dump(mode="json")`` per record for the values serving produces
    (Python or numpy numbers, strings, booleans; NaN becomes ``null`` either way), at a fraction of the
    cost: this runs in the serving process for every logged row.
    """
    return orjson.dumps(
        {"records": [record_document(r) for r in records]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


class PayloadSink(Protocol):
    """Where serving hands records: all rows of one request in one call, before the response is
    written. ``submit_many`` must never block or raise on the request path."""

    def submit_many(self, records: list[InferenceRecord]) -> None: ...
