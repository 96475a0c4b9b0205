"""HTTP routes of the feature-store service (they only speak HTTP; the data plane does the work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ValidationError

from mlplatform.core.app import FastHandler, FastRoute
from mlplatform.core.auth import ApiKeyAuth, auth_error_docs, require_scope
from mlplatform.core.errors import PlatformError, describe_validation_error, error_docs
from mlplatform.core.responses import JSONResponse, render_json
from mlplatform.features.dataplane import FeatureDataPlane
from mlplatform.features.schemas import (
    FeatureServiceList,
    FeatureViewList,
    MaterializeRequest,
    MaterializeResponse,
    OnlineFeaturesRequest,
    OnlineFeaturesResponse,
    PushRequest,
    PushResponse,
)
from mlplatform.v2.codec import load_json

BodyT = TypeVar("BodyT", bound=BaseModel)

ERRORS = error_docs(
    {
        400: "malformed JSON body",
        **auth_error_docs("the required scope"),
        404: "unknown feature service, feature view, feature or push source",
        422: "invalid input: malformed entity keys, missing request fields",
        503: "feature store not loaded yet",
    }
)


def read_router(plane: FeatureDataPlane) -> APIRouter:
    """Online reads and listings (scope ``features:read``)."""
    router = APIRouter(
        tags=["features"], dependencies=[Depends(require_scope("features:read"))], responses=ERRORS
    )

    @router.post("/v1/features/online", response_model=OnlineFeaturesResponse)
    async def online(body: OnlineFeaturesRequest) -> JSONResponse:
        result = await plane.get_online_features(body.rows, body.feature_service, body.features)
        return JSONResponse(result)

    @router.get("/v1/features/views", response_model=FeatureViewList)
    async def views() -> JSONResponse:
        return JSONResponse(FeatureViewList(**plane.list_feature_views()).model_dump(mode="json"))

    @router.get("/v1/features/services", response_model=FeatureServiceList)
    async def services() -> JSONResponse:
        return JSONResponse(plane.list_feature_services())

    return router


def admin_router(plane: FeatureDataPlane) -> APIRouter:
    """Push and materialisation (scope ``admin``)."""
    router = APIRouter(
        tags=["features-admin"], dependencies=[Depends(require_scope("admin"))], responses=ERRORS
    )

    @router.post("/v1/features/push", response_model=PushResponse)
    async def push(body: PushRequest) -> JSONResponse:
        return JSONResponse(await plane.push(body.push_source, body.rows, body.to))

    @router.post("/v1/features/materialize", response_model=MaterializeResponse)
    async def materialize(body: MaterializeRequest) -> JSONResponse:
        result = await plane.materialize(body.end, body.feature_views)
        return JSONResponse(MaterializeResponse(**result).model_dump(mode="json"))

    return router


def build_router(plane: FeatureDataPlane) -> APIRouter:
    """Every documented route of the feature store over ``plane``: the ``/v1`` API (reads, push,
    materialise) and Feast's feature-server API, each with its scope."""
    from mlplatform.features.feast_routes import feast_admin_router, feast_read_router

    router = APIRouter()
    for part in (
        read_router(plane),
        admin_router(plane),
        feast_read_router(plane),
        feast_admin_router(plane),
    ):
        router.include_router(part)
    return router


ONLINE_PATH = "/v1/features/online"


def json_fast_route(
    path: str,
    auth: ApiKeyAuth,
    scope: str,
    body_model: type[BodyT],
    answer: Callable[[BodyT], Awaitable[Any]],
) -> FastRoute:
    """``POST path`` without FastAPI routing: the ``scope`` check, the JSON body validated against
    ``body_model`` as FastAPI does (same messages), and ``answer(request)`` rendered as JSON."""

    async def handle(_: tuple[str, ...], headers: dict[bytes, bytes], body: bytes) -> bytes:
        auth.check_raw_headers(headers, scope)
        doc = load_json(body)
        try:  # python-mode validation of the decoded body, as FastAPI does (same messages)
            req = body_model.model_validate(doc)
        except ValidationError as exc:
            status, message = describe_validation_error(exc)
            raise PlatformError(message, status) from None
        return render_json(await answer(req))

    def match(request_path: str) -> tuple[str, tuple[str, ...]] | None:
        return (path, ()) if request_path == path else None

    handler: FastHandler = handle
    return FastRoute("POST", match, handler)


def online_fast_route(plane: FeatureDataPlane, auth: ApiKeyAuth) -> FastRoute:
    """``POST /v1/features/online`` without FastAPI routing: same scope check, body model and answer."""
    return json_fast_route(
        ONLINE_PATH,
        auth,
        "features:read",
        OnlineFeaturesRequest,
        lambda req: plane.get_online_features(req.rows, req.feature_service, req.features),
    )
