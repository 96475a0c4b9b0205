"""Open Inference Protocol (V2) REST routes: HTTP only, everything else is the data plane's."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from mlplatform.core.auth import ApiKeyAuth, auth_error_docs, require_scope
from mlplatform.core.errors import error_docs
from mlplatform.core.logging import request_id_var
from mlplatform.core.pipeline import FastHandler
from mlplatform.core.responses import JSONResponse
from mlplatform.serving.dataplane import ServingDataPlane
from mlplatform.serving.schemas import ReloadResult
from mlplatform.v2.types import REQUEST_BODY_DOC, InferenceResponse, ModelMetadata, ModelReady, ServerMetadata

INFER_ERRORS = error_docs(
    {
        400: "malformed JSON",
        **auth_error_docs("the 'infer' scope"),
        404: "unknown model or version",
        413: "body over the size limit",
        422: "bad input (shape, datatype, missing/extra input, NaN)",
        503: "model not loaded yet or feature store unavailable",
    }
)
_JSON = "application/json"
log = logging.getLogger("mlplatform.serving.routes")


def scope_dependency(scope: str) -> Callable[[Request], Awaitable[None]]:
    """``core.auth.require_scope`` (an async dependency: no thread-pool hop on the infer path)."""
    return require_scope(scope)


def build_router(plane: ServingDataPlane, infer: FastHandler) -> APIRouter:
    """The V2 routes bound to one data plane. ``infer`` is :func:`infer_handler`: the app serves it as a
    fast route ahead of FastAPI; the two infer routes here call the same handler (same auth check,
    same errors) and give the OpenAPI document its infer operations."""
    router = APIRouter(tags=["inference"])
    infer_scope = [Depends(scope_dependency("infer"))]

    @router.get("/v2", response_model=ServerMetadata)
    async def server_metadata() -> ServerMetadata:
        return plane.server_metadata()

    @router.get(
        "/v2/models/{model_name}",
        response_model=ModelMetadata,
        responses=INFER_ERRORS,
        dependencies=infer_scope,
    )
    async def model_metadata(model_name: str) -> ModelMetadata:
        return plane.model_metadata(model_name)

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}",
        response_model=ModelMetadata,
        responses=INFER_ERRORS,
        dependencies=infer_scope,
    )
    async def model_version_metadata(model_name: str, model_version: str) -> ModelMetadata:
        return plane.model_metadata(model_name, model_version)

    @router.get(
        "/v2/models/{model_name}/ready",
        response_model=ModelReady,
        responses=error_docs({404: "model not served here", 422: "invalid request (the field is named)"}),
    )
    async def model_ready(model_name: str) -> JSONResponse:
        ok = plane.model_ready(model_name)
        return JSONResponse({"name": model_name, "ready": ok}, status_code=200 if ok else 503)

    @router.post(
        "/v2/models/{model_name}/infer",
        response_model=InferenceResponse,
        responses=INFER_ERRORS,
        openapi_extra=REQUEST_BODY_DOC,
    )
    async def infer_route(model_name: str, request: Request) -> Response:
        out = await infer((model_name, ""), dict(request.scope["headers"]), await request.body())
        return _response(out)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/infer",
        response_model=InferenceResponse,
        responses=INFER_ERRORS,
        openapi_extra=REQUEST_BODY_DOC,
    )
    async def infer_version(model_name: str, model_version: str, request: Request) -> Response:
        headers = dict(request.scope["headers"])
        out = await infer((model_name, model_version), headers, await request.body())
        return _response(out)

    @router.post(
        "/v2/repository/models/{model_name}/load",
        response_model=ReloadResult,
        responses=INFER_ERRORS,
        dependencies=[Depends(scope_dependency("admin"))],
        tags=["admin"],
    )
    async def reload_model(model_name: str) -> ReloadResult:
        await plane.repository.reload(model_name, force=True)
        m = plane.repository.get(model_name).model
        return ReloadResult(name=m.name, version=m.version, runtime=m.runtime.name)

    return router


def _response(out: bytes | tuple[bytes, list[tuple[bytes, bytes]]]) -> Response:
    if type(out) is tuple:
        body, headers = out
        return Response(body, headers={k.decode(): v.decode() for k, v in headers})
    return Response(out, media_type=_JSON)


INFER_TEMPLATE = "/v2/models/{model_name}/infer"
INFER_VERSION_TEMPLATE = "/v2/models/{model_name}/versions/{model_version}/infer"
_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


def match_infer(path: str) -> tuple[str, tuple[str, ...]] | None:
    """``(route template, (model, version or ""))`` for the two V2 infer paths, else ``None``."""
    m = _INFER_PATH.match(path)
    if m is None:
        return None
    name, version = m.group(1), m.group(2)
    if version:
        return INFER_VERSION_TEMPLATE, (name, version)
    return INFER_TEMPLATE, (name, "")


def infer_handler(plane: ServingDataPlane, auth: ApiKeyAuth) -> FastHandler:
    """The infer routes' work on raw headers and body: the ``infer`` scope check, then the data plane."""

    async def handle(params: tuple[str, ...], headers: dict[bytes, bytes], body: bytes) -> bytes:
        auth.check_raw_headers(headers, "infer")
        name, version = params
        return await plane.infer(
            name,
            body,
            version=version or None,
            request_id=request_id_var.get(),
            header_length=headers.get(b"inference-header-content-length"),
        )

    return handle
