"""The Open Inference Protocol generate extension (as KServe and Triton serve it), HTTP only.

``POST /v2/models/{m}[/versions/{v}]/generate`` answers ``{"model_name", "model_version",
"text_output"}``; ``.../generate_stream`` answers server-sent events, one ``data: {...}`` event per
text chunk (same fields; the last event also carries ``finish_reason``). The body is
``{"text_input": str, "parameters": {"max_tokens", "temperature", "top_p", "stop", "seed"}}``;
Triton's form with the parameters beside ``text_input`` is accepted too. Bad input is a 422 naming
the field, before any event is sent; a client that disconnects mid-stream is dropped from its batch
at the next decoder step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from opentelemetry import trace
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from mlplatform.core.auth import auth_error_docs, require_scope
from mlplatform.core.errors import BadRequest, InvalidInput, PlatformError, error_docs
from mlplatform.core.logging import request_id_var
from mlplatform.core.payloads import PayloadBatch
from mlplatform.serving.batching import BatcherClosed
from mlplatform.serving.metrics import OUTCOME_CLIENT_ERROR, OUTCOME_ERROR, OUTCOME_OK
from mlplatform.serving.text.metrics import KIND_INVALID
from mlplatform.serving.text.runtime import TEXT_INPUT, TEXT_OUTPUT, TextGenerationRuntime
from mlplatform.serving.text.scheduler import (
    FINISH_LENGTH,
    FINISH_STOP,
    GenerationFailed,
    GenParams,
    SchedulerClosed,
)
from mlplatform.v2.codec import Frame, load_json

log = logging.getLogger("mlplatform.serving.text")

PARAMETERS = ("max_tokens", "temperature", "top_p", "stop", "seed")
MAX_STOP_STRINGS = 16


class GenerateRequest(BaseModel):
    """Generate extension request body."""

    text_input: str = Field(description="The text to generate from (not empty, within the model's context).")
    parameters: dict[str, Any] | None = Field(
        None,
        description="max_tokens (1..SERVING_TEXT_MAX_TOKENS_LIMIT), temperature (0: greedy, up to 100), "
        "top_p (0 < p <= 1), stop (a string or up to 16 strings), seed (integer).",
    )


class GenerateResponse(BaseModel):
    """Generate extension response (also the shape of each generate_stream event)."""

    model_name: str
    model_version: str
    text_output: str
    finish_reason: str | None = None


ERRORS = error_docs(
    {
        400: "malformed JSON or the model does not generate text",
        **auth_error_docs("the 'infer' scope"),
        404: "unknown model or version",
        422: "bad text_input or parameters (named in the error)",
        503: "model not loaded yet",
    }
)
_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}}}}  # fmt: skip


def parse_params(doc: dict[str, Any], limit: int, default_max_tokens: int) -> GenParams:
    """Validated generation parameters from a request document (``parameters``, or top level)."""
    raw = doc.get("parameters")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("parameters: must be an object")
    merged = {k: doc[k] for k in PARAMETERS if k in doc} | raw
    max_tokens = merged.get("max_tokens", default_max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidInput("parameters.max_tokens: must be an integer")
    if not 1 <= max_tokens <= limit:
        raise InvalidInput(f"parameters.max_tokens: {max_tokens} is out of range 1..{limit}")
    temperature = _number(merged.get("temperature", 0.0), "temperature", 0.0, 100.0)
    top_p = _number(merged.get("top_p", 1.0), "top_p", 0.0, 1.0)
    if top_p == 0.0:
        raise InvalidInput("parameters.top_p: must be greater than 0")
    stop = merged.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS:
        raise InvalidInput(f"parameters.stop: must be a string or a list of up to {MAX_STOP_STRINGS} strings")
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s:
            raise InvalidInput(f"parameters.stop[{i}]: must be a non-empty string")
    seed = merged.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise InvalidInput("parameters.seed: must be a non-negative integer")
    return GenParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=tuple(stop), seed=seed)


def _number(value: Any, name: str, lo: float, hi: float) -> float:  # noqa: ANN401
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"parameters.{name}: must be a number")
    if not lo <= value <= hi:
        raise InvalidInput(f"parameters.{name}: {value} is out of range {lo:g}..{hi:g}")
    return float(value)


class Generation:
    """One validated generate request bound to the model version that serves it."""

    def __init__(self, plane: Any, name: str, version: str | None, body: bytes) -> None:  # noqa: ANN401
        self.plane = plane
        self.start = time.perf_counter()
        self.name = name
        self.finish_reason = FINISH_LENGTH  # until the scheduler says otherwise
        self.version = version
        doc = load_json(body)
        if not isinstance(doc, dict):
            raise InvalidInput("body: must be a JSON object with 'text_input'")
        if TEXT_INPUT not in doc:
            raise InvalidInput(f"{TEXT_INPUT}: missing; give the text to generate from")
        self.doc = doc
        self.text = doc[TEXT_INPUT]
        self._bind()

    def _bind(self) -> None:
        """Bind to the version served now: validate and tokenize for it."""
        name, doc = self.name, self.doc
        handle = self.plane._handle(name, self.version)
        self.handle = handle
        self.model = handle.model
        rt = self.model.runtime
        self.runtime = rt
        if isinstance(rt, TextGenerationRuntime):
            self.params = parse_params(doc, rt.settings.max_tokens_limit, rt.default_max_tokens)
            self.ids = rt.encode(self.text, TEXT_INPUT, self.params.max_tokens)
        elif getattr(rt, "check_frame", None) is not None and len(self.model.schema.columns) == 1:
            self.params = parse_params(doc, 1 << 30, 1)
            self.frame = Frame(matrix=None, columns={self.model.schema.names[0]: np.array([self.text], dtype=object)}, n_rows=1)  # fmt: skip
            rt.check_frame(self.frame)
        else:
            raise BadRequest(f"model '{name}' does not generate text; use /v2/models/{name}/infer")

    async def chunks(self) -> AsyncIterator[str]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except (SchedulerClosed, BatcherClosed):
            # swapped out between validation and submission (nothing was generated): the version now served
            self._bind()
            async for chunk in self._chunks():
                yield chunk

    async def _chunks(self) -> AsyncIterator[str]:
        rt = self.runtime
        if isinstance(rt, TextGenerationRuntime):
            async for chunk in rt.scheduler.stream(self.ids, self.params, self._finished):
                yield chunk
            return
        pred = await self.handle.batcher.submit(self.frame)
        self.finish_reason = FINISH_STOP  # a pyfunc model answers its whole text at once
        yield str(pred.outputs[TEXT_OUTPUT][0])

    def _finished(self, reason: str) -> None:
        self.finish_reason = reason

    def event(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "model_name": self.model.name,
            "model_version": self.model.version,
            TEXT_OUTPUT: text,
        }
        if finish_reason is not None:
            doc["finish_reason"] = finish_reason
        return doc

    def done(self, outcome: str, text: str | None) -> None:
        m = self.model
        self.plane.metrics.observe_request(m.name, m.version, outcome, time.perf_counter() - self.start)
        if text is None or self.plane.payload_sink is None:
            return
        try:
            span = trace.get_current_span().get_span_context()
            self.plane.payload_sink.submit(
                PayloadBatch(
                    request_id=request_id_var.get(),
                    prediction_id=self.plane.prediction_ids.next(),
                    model=m.name,
                    version=m.version,
                    timestamp=time.time(),
                    names=[TEXT_INPUT],
                    matrix=None,
                    columns={TEXT_INPUT: np.array([self.text], dtype=object)},
                    extra=None,
                    outputs={TEXT_OUTPUT: np.array([text], dtype=object)},
                    n_rows=1,
                    trace_id=format(span.trace_id, "032x") if span.is_valid else "",
                    span_id=format(span.span_id, "016x") if span.is_valid else "",
                )
            )
        except Exception:  # noqa: BLE001 - payload logging must never fail a generation
            log.exception("could not hand generation payloads to the payload logger")


def _begin(plane: Any, name: str, version: str | None, body: bytes) -> Generation:  # noqa: ANN401
    try:
        return Generation(plane, name, version, body)
    except PlatformError as exc:
        if exc.status_code < 500 and name in plane.repository.slots:
            plane.metrics.generation.errors.labels(name, KIND_INVALID).inc()
            plane.metrics.observe_request(name, version or "unknown", OUTCOME_CLIENT_ERROR, 0.0)
        raise


def build_text_router(plane: Any) -> APIRouter:  # noqa: ANN401 - the ServingDataPlane
    """The generate and generate_stream routes (both with and without a version) over ``plane``."""
    router = APIRouter(tags=["generate"])
    deps = [Depends(require_scope("infer"))]

    async def generate(name: str, version: str | None, request: Request) -> Response:
        gen = _begin(plane, name, version, await request.body())
        parts: list[str] = []
        try:
            async for chunk in gen.chunks():
                parts.append(chunk)
        except GenerationFailed:
            gen.done(OUTCOME_ERROR, None)
            raise
        text = "".join(parts)
        gen.done(OUTCOME_OK, text)
        return Response(orjson.dumps(gen.event(text)), media_type="application/json")

    async def generate_stream(name: str, version: str | None, request: Request) -> Response:
        gen = _begin(plane, name, version, await request.body())

        async def events() -> AsyncIterator[bytes]:
            parts: list[str] = []
            finished = False
            try:
                async for chunk in gen.chunks():
                    parts.append(chunk)
                    yield b"data: " + orjson.dumps(gen.event(chunk)) + b"\n\n"
                finished = True
                yield b"data: " + orjson.dumps(gen.event("", gen.finish_reason)) + b"\n\n"
            except GenerationFailed as exc:
                gen.done(OUTCOME_ERROR, None)
                yield b"data: " + orjson.dumps({"error": str(exc)}) + b"\n\n"
                return
            finally:
                if finished:
                    gen.done(OUTCOME_OK, "".join(parts))

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    def route(path: str, fn: Any, response: type[BaseModel], stream: bool) -> None:  # noqa: ANN401
        extra = dict(_BODY_DOC)
        responses: dict[int | str, Any] = dict(ERRORS)
        if stream:
            responses[200] = {"content": {"text/event-stream": {}}, "description": "server-sent events"}
        router.add_api_route(
            path,
            fn,
            methods=["POST"],
            response_model=None if stream else response,
            responses=responses,
            dependencies=deps,
            openapi_extra=extra,
        )

    async def gen_latest(model_name: str, request: Request) -> Response:
        return await generate(model_name, None, request)

    async def gen_version(model_name: str, model_version: str, request: Request) -> Response:
        return await generate(model_name, model_version, request)

    async def stream_latest(model_name: str, request: Request) -> Response:
        return await generate_stream(model_name, None, request)

    async def stream_version(model_name: str, model_version: str, request: Request) -> Response:
        return await generate_stream(model_name, model_version, request)

    route("/v2/models/{model_name}/generate", gen_latest, GenerateResponse, False)
    route("/v2/models/{model_name}/versions/{model_version}/generate", gen_version, GenerateResponse, False)
    route("/v2/models/{model_name}/generate_stream", stream_latest, GenerateResponse, True)
    route(
        "/v2/models/{model_name}/versions/{model_version}/generate_stream",
        stream_version,
        GenerateResponse,
        True,
    )
    return router
