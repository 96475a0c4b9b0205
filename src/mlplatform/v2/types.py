"""The Open Inference Protocol (V2) documents: datatypes, and the request/response bodies as pydantic
models for the OpenAPI schema and clients (the hot path does not validate through them: see
:mod:`mlplatform.v2.codec`). A leaf module: serving and explainability import it, it imports neither."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
DATATYPE_SET = frozenset(DATATYPES)
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
INT_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
SIGNED_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64"})


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    name: str = Field(description="Input name: a signature column, or any name for one 2-D input.")
    shape: list[int] = Field(description="Tensor shape, e.g. [N] or [N, 1] per column, [N, C] for 2-D.")
    datatype: str = Field(description="One of " + ", ".join(DATATYPES) + ".")
    parameters: dict[str, Any] | None = Field(None, description="Optional per-input parameters.")
    data: list[Any] = Field(description="Tensor contents, flat (row-major) or nested to match shape.")


class RequestOutput(BaseModel):
    """An output the client asks for (all outputs when the list is omitted)."""

    name: str = Field(description="Output name: 'probability' or 'label'.")
    parameters: dict[str, Any] | None = Field(None, description="Optional per-output parameters.")


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}/infer`` body."""

    id: str | None = Field(None, description="Request id echoed in the response (generated when absent).")
    parameters: dict[str, Any] | None = Field(None, description="Optional request parameters.")
    inputs: list[RequestInput] = Field(description="Input tensors.")
    outputs: list[RequestOutput] | None = Field(None, description="Requested outputs (default: all).")


class ResponseOutput(BaseModel):
    """One output tensor of an inference response."""

    name: str = Field(description="Output name.")
    shape: list[int] = Field(description="Tensor shape.")
    datatype: str = Field(description="Tensor datatype.")
    parameters: dict[str, Any] | None = Field(None, description="Optional per-output parameters.")
    data: list[Any] = Field(description="Tensor contents (flat).")


class InferenceResponse(BaseModel):
    """Inference response."""

    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version that answered.")
    id: str = Field(description="Request id.")
    parameters: dict[str, Any] | None = Field(None, description="Optional response parameters.")
    outputs: list[ResponseOutput] = Field(description="Output tensors.")


class MetadataTensor(BaseModel):
    """Name, datatype and shape of a model input or output (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}``."""

    name: str = Field(description="Registered model name.")
    versions: list[str] = Field(description="Loaded version(s).")
    platform: str = Field(description="Framework of the model: 'sklearn' or 'pytorch'.")
    inputs: list[MetadataTensor] = Field(description="Inputs, one per signature column.")
    outputs: list[MetadataTensor] = Field(description="Outputs.")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Serving details: runtime in use (onnxruntime or native), reason, alias, device.",
    )


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str] = Field(default_factory=list)


class ModelReady(BaseModel):
    """``GET /v2/models/{name}/ready``."""

    name: str
    ready: bool


REQUEST_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": InferenceRequest.model_json_schema()}},
    }
}
