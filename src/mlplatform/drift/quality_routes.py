"""HTTP routes of model quality in drift detection (they only speak HTTP; :class:`QualityService` works)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from mlplatform.core.errors import error_docs
from mlplatform.drift.quality import QualityService
from mlplatform.drift.quality_schemas import LabelsRequest, LabelsResponse, QualityHistory, SegmentsOut
from mlplatform.drift.routes import ERRORS, LIMIT, MODEL, READ, WRITE, json_body_doc, parse_body

LABELS_BODY_DOC = json_body_doc(LabelsRequest)


def quality_router(service: QualityService) -> APIRouter:
    """Labels (``drift:write``), performance history and segments (``drift:read``) over ``service``."""
    router = APIRouter(tags=["quality"], responses=ERRORS)

    @router.post(
        "/v1/models/{model}/labels",
        response_model=LabelsResponse,
        dependencies=WRITE,
        responses=error_docs({413: "too many labels in one request"}),
        openapi_extra=LABELS_BODY_DOC,
    )
    async def labels(request: Request, model: str = MODEL) -> LabelsResponse:
        body = parse_body(LabelsRequest, await request.body())
        return await service.add_labels(model, body.labels)

    @router.get(
        "/v1/models/{model}/quality",
        response_model=QualityHistory,
        dependencies=READ,
    )
    async def quality(
        model: str = MODEL,
        limit: int = LIMIT,
        version: str | None = Query(None, max_length=64, description="Only this model version."),
    ) -> QualityHistory:
        return await service.history(model, limit, version)

    @router.get(
        "/v1/models/{model}/segments",
        response_model=SegmentsOut,
        dependencies=READ,
    )
    async def segments(
        model: str = MODEL,
        window_id: int | None = Query(None, ge=1, description="Window to show (default: the newest)."),
    ) -> SegmentsOut:
        return await service.segments(model, window_id)

    return router
