"""What serving hands the payload logger per request, and what drift detection ingests.

Serving logs each inference request as one :class:`PayloadBatch`: the request's rows by column (the
input matrix or columns exactly as the model saw them, and the output arrays), built without a dict or
an object per row. It travels to drift detection in that columnar shape (``{"batches": [...]}``, read
as :class:`InferenceBatch`), and drift detection expands it into one :class:`InferenceRecord` per row.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from pydantic import BaseModel, Field, model_validator


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
    source: Literal["online", "batch"] = Field(
        "online",
        description="Where the prediction was made: 'online' (model-serving; the default, also for senders "
        "that predate the field) or 'batch' (mlplatform batch-score). Drift detection windows each apart.",
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


class InferenceBatch(BaseModel):
    """The rows of one inference request by column (what serving sends; row ``i`` of every column is
    row ``i`` of the request)."""

    request_id: str = Field(description="The client's id of the inference request; may repeat.")
    prediction_id: str = Field(
        max_length=128, description="Id model-serving assigned to the request (the idempotency key's root)."
    )
    model: str = Field(description="Registered model name.")
    version: str = Field(description="Registered model version that produced the outputs.")
    timestamp: float = Field(description="Unix time (seconds) when the prediction was made.")
    inputs: dict[str, list[Any]] = Field(
        default_factory=dict, description="Feature name -> one value per row, as the model saw it."
    )
    input_names: list[str] = Field(
        default_factory=list,
        description="With input_rows: the names of the row-major input matrix's columns (numeric models).",
    )
    input_rows: list[list[Any]] = Field(
        default_factory=list, description="Row-major input values, one list of len(input_names) per row."
    )
    outputs: dict[str, list[Any]] = Field(description="Output name -> one value per row.")
    trace_id: str = Field("", description="W3C trace id of the inference request, if traced.")
    span_id: str = Field("", description="Span id of the inference span.")
    source: Literal["online", "batch"] = Field(
        "online", description="Where the predictions were made: 'online' (model-serving) or 'batch'."
    )

    @model_validator(mode="after")
    def _same_length(self) -> InferenceBatch:
        sizes = {k: len(v) for k, v in (*self.inputs.items(), *self.outputs.items())}
        if self.input_names or self.input_rows:
            sizes["input_rows"] = len(self.input_rows)
            width = len(self.input_names)
            for i, row in enumerate(self.input_rows):
                if len(row) != width:
                    raise ValueError(f"input_rows[{i}] has {len(row)} values for {width} input_names")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every input and output column needs one value per row; got {sizes}")
        return self

    @property
    def n_rows(self) -> int:
        if self.input_rows:
            return len(self.input_rows)
        for column in (*self.inputs.values(), *self.outputs.values()):
            return len(column)
        return 0

    def records(self) -> list[InferenceRecord]:
        """One :class:`InferenceRecord` per row."""
        names, columns = list(self.inputs), list(self.inputs.values())
        out_names, out_columns = list(self.outputs), list(self.outputs.values())
        matrix_names, rows = self.input_names, self.input_rows

        def inputs(i: int) -> dict[str, Any]:
            row = dict(zip(matrix_names, rows[i], strict=True)) if rows else {}
            for name, column in zip(names, columns, strict=True):
                row.setdefault(name, column[i])
            return row

        return [
            InferenceRecord.model_construct(
                request_id=self.request_id,
                prediction_id=self.prediction_id,
                row_index=i,
                model=self.model,
                version=self.version,
                timestamp=self.timestamp,
                inputs=inputs(i),
                outputs=dict(zip(out_names, [c[i] for c in out_columns], strict=True)),
                trace_id=self.trace_id,
                span_id=self.span_id,
                source=self.source,
            )
            for i in range(self.n_rows)
        ]


class PayloadBatch:
    """One request's rows as serving logs them: numpy columns, no per-row objects.

    ``matrix`` (rows x ``names``) or ``columns`` holds the inputs exactly as the model saw them;
    ``extra`` adds request columns the model did not take (entity keys). :meth:`encode` writes the
    :class:`InferenceBatch` document.
    """

    __slots__ = (
        "request_id",
        "prediction_id",
        "model",
        "version",
        "timestamp",
        "names",
        "matrix",
        "columns",
        "extra",
        "outputs",
        "trace_id",
        "span_id",
        "n_rows",
        "encoded",
        "segment",
    )

    def __init__(
        self,
        *,
        request_id: str,
        prediction_id: str,
        model: str,
        version: str,
        timestamp: float,
        names: tuple[str, ...] | list[str],
        outputs: dict[str, Any],
        n_rows: int,
        matrix: Any = None,
        columns: dict[str, Any] | None = None,
        extra: dict[str, list[Any]] | None = None,
        trace_id: str = "",
        span_id: str = "",
    ) -> None:
        self.request_id = request_id
        self.prediction_id = prediction_id
        self.model = model
        self.version = version
        self.timestamp = timestamp
        self.names = names
        self.matrix = matrix
        self.columns = columns
        self.extra = extra
        self.outputs = outputs
        self.trace_id = trace_id
        self.span_id = span_id
        self.n_rows = n_rows
        self.encoded: bytes | None = None
        self.segment: Any = None  # the payload logger's write-ahead log segment holding it

    def encode(self) -> bytes:
        """The :class:`InferenceBatch` JSON document (computed once)."""
        if self.encoded is None:
            doc: dict[str, Any] = {
                "request_id": self.request_id,
                "prediction_id": self.prediction_id,
                "model": self.model,
                "version": self.version,
                "timestamp": self.timestamp,
                "outputs": {k: _column(v) for k, v in self.outputs.items()},
                "trace_id": self.trace_id,
                "span_id": self.span_id,
            }
            matrix = self.matrix
            if matrix is not None:  # row-major as the model saw it: orjson writes the array natively
                doc["input_names"] = self.names
                doc["input_rows"] = matrix if matrix.flags.c_contiguous else np.ascontiguousarray(matrix)
                doc["inputs"] = self.extra or {}
            else:
                inputs = {k: _column(v) for k, v in (self.columns or {}).items()}
                for key, values in (self.extra or {}).items():
                    inputs.setdefault(key, values)
                doc["inputs"] = inputs
            self.encoded = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        return self.encoded

    @classmethod
    def from_records(cls, records: list[InferenceRecord]) -> PayloadBatch:
        """The rows of one request given as records (same request, model and version; in row order)."""
        first = records[0]
        names = list(first.inputs)
        return cls(
            request_id=first.request_id,
            prediction_id=first.prediction_id or first.request_id,
            model=first.model,
            version=first.version,
            timestamp=first.timestamp,
            names=names,
            columns={k: [r.inputs.get(k) for r in records] for k in names},
            outputs={k: [r.outputs.get(k) for r in records] for k in first.outputs},
            n_rows=len(records),
            trace_id=first.trace_id,
            span_id=first.span_id,
        )


def _column(values: Any) -> Any:  # noqa: ANN401 - a numpy array or a list
    """A column as orjson writes it fastest: small arrays as lists, large numeric ones as numpy."""
    if isinstance(values, np.ndarray):
        if len(values) <= 64 or values.dtype.kind in "OUS" or not values.flags.c_contiguous:
            return values.tolist()
    return values


def encode_batches(batches: list[PayloadBatch]) -> bytes:
    """``{"batches": [...]}`` as drift detection's ``POST /v1/records`` takes it."""
    return b'{"batches":[' + b",".join(b.encode() for b in batches) + b"]}"


class PayloadSink(Protocol):
    """Where serving hands the rows of one request, before the response is written. ``submit`` must
    never block or raise on the request path."""

    def submit(self, batch: PayloadBatch) -> None: ...
