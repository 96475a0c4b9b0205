"""HTTP routes of the feature-store service (they only speak HTTP; the data plane does the work)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from mlplatform.core.auth import require_scope
from mlplatform.core.responses import JSONResponse
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

ERRORS = {
    400: {"description": "malformed JSON body"},
    401: {"description": "missing or unknown API key"},
    403: {"description": "API key lacks the required scope"},
    404: {"description": "unknown feature service, feature view, feature or push source"},
    422: {"description": "invalid input: malformed entity keys, missing request fields"},
    503: {"description": "feature store not loaded yet"},
}


def _plane(request: Request) -> FeatureDataPlane:
    return request.app.state.dataplane


def read_router() -> APIRouter:
    """Online reads and listings (scope ``features:read``)."""
    router = APIRouter(
        tags=["features"], dependencies=[Depends(require_scope("features:read"))], responses=ERRORS
    )

    @router.post("/v1/features/online", response_model=OnlineFeaturesResponse)
    async def online(body: OnlineFeaturesRequest, request: Request) -> JSONResponse:
        result = await _plane(request).get_online_features(body.rows, body.feature_service, body.features)
        return JSONResponse(result)

    @router.get("/v1/features/views", response_model=FeatureViewList)
    async def views(request: Request) -> JSONResponse:
        return JSONResponse(FeatureViewList(**_plane(request).list_feature_views()).model_dump(mode="json"))

    @router.get("/v1/features/services", response_model=FeatureServiceList)
    async def services(request: Request) -> JSONResponse:
        return JSONResponse(_plane(request).list_feature_services())

    return router


def admin_router() -> APIRouter:
    """Push and materialisation (scope ``admin``)."""
    router = APIRouter(
        tags=["features-admin"], dependencies=[Depends(require_scope("admin"))], responses=ERRORS
    )

    @router.post("/v1/features/push", response_model=PushResponse)
    async def push(body: PushRequest, request: Request) -> JSONResponse:
        return JSONResponse(await _plane(request).push(body.push_source, body.rows, body.to))

    @router.post("/v1/features/materialize", response_model=MaterializeResponse)
    async def materialize(body: MaterializeRequest, request: Request) -> JSONResponse:
        result = await _plane(request).materialize(body.end, body.feature_views)
        return JSONResponse(MaterializeResponse(**result).model_dump(mode="json"))

    return router
