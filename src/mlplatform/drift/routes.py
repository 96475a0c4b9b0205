"""HTTP routes of drift detection (they only speak HTTP; :class:`DriftDataPlane` does the work)."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from mlplatform.core.auth import auth_error_docs, require_scope
from mlplatform.core.errors import PayloadTooLarge, error_docs
from mlplatform.drift import report_sections
from mlplatform.drift.dataplane import DriftDataPlane
from mlplatform.drift.quality import QualityService
from mlplatform.drift.schemas import (
    DriftHistory,
    DriftStatus,
    IngestRequest,
    IngestResponse,
    ModelsOut,
    RetrainRequest,
    RetrainResponse,
)

ERROR_DESCRIPTIONS = {
    400: "malformed JSON body",
    **auth_error_docs("the needed scope"),
    404: "model or version not in the registry / unknown to drift detection",
    422: "records do not match the model's signature (the columns are named)",
}
ERRORS = error_docs(ERROR_DESCRIPTIONS)

BodyT = TypeVar("BodyT", bound=BaseModel)


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` references replaced by the definitions (self-contained, so it
    can sit in an OpenAPI operation)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:  # noqa: ANN401
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.removeprefix("#/$defs/")]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def json_body_doc(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that reads its JSON body itself (see :func:`parse_body`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_defs(schema.model_json_schema())}},
        }
    }


def parse_body(schema: type[BodyT], raw: bytes) -> BodyT:
    """``raw`` parsed and validated in one pass by pydantic-core (not json.loads, then validation): a
    body can hold thousands of records; errors read as FastAPI's own (RequestValidationError)."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        ) from None


INGEST_BODY_DOC = json_body_doc(IngestRequest)

MODEL = Path(description="Registered model name.", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LIMIT = Query(50, ge=1, le=1000, description="Most windows returned, newest first.")
#: route dependencies: the scope each kind of route needs
READ = [Depends(require_scope("drift:read"))]
WRITE = [Depends(require_scope("drift:write"))]


def build_router(plane: DriftDataPlane, quality: QualityService | None = None) -> APIRouter:
    """Ingest (``drift:write``), status/history/report (read), manual retraining (``admin``) over
    ``plane``; the report adds ``quality``'s sections (labels, CBPE, segments) when given."""
    router = APIRouter(tags=["drift"], responses=ERRORS)

    @router.post(
        "/v1/records",
        response_model=IngestResponse,
        dependencies=WRITE,
        responses=error_docs({413: "too many records in one request"}),
        openapi_extra=INGEST_BODY_DOC,
    )
    async def ingest(request: Request) -> IngestResponse:
        body = parse_body(IngestRequest, await request.body())
        limit = plane.settings.max_records_per_request
        rows = len(body.records) + sum(b.n_rows for b in body.batches)
        if rows > limit:
            raise PayloadTooLarge(f"records: {rows} records exceed the limit of {limit} per request")
        return await plane.ingest(body.all_records())

    @router.get("/v1/models", response_model=ModelsOut, dependencies=READ)
    async def models() -> ModelsOut:
        return ModelsOut(models=await plane.models())

    @router.get(
        "/v1/models/{model}/drift",
        response_model=DriftStatus,
        dependencies=READ,
    )
    async def status(model: str = MODEL) -> DriftStatus:
        return await plane.status(model)

    @router.get(
        "/v1/models/{model}/drift/history",
        response_model=DriftHistory,
        dependencies=READ,
    )
    async def history(
        model: str = MODEL,
        limit: int = LIMIT,
    ) -> DriftHistory:
        return await plane.history(model, limit)

    @router.get(
        "/v1/models/{model}/drift/report",
        response_class=HTMLResponse,
        response_model=None,
        responses={
            200: {"content": {"text/html": {}}, "description": "Evidently HTML report"},
            **error_docs(ERROR_DESCRIPTIONS, HTMLResponse.media_type),
        },
        dependencies=READ,
    )
    async def report(model: str = MODEL) -> HTMLResponse:
        page = await plane.report_html(model)
        if quality is not None:  # labels, CBPE, segments (drift/quality.py)
            page = report_sections.insert_sections(
                page, await report_sections.quality_sections(quality, model)
            )
        return HTMLResponse(page)

    @router.post(
        "/v1/models/{model}/retrain",
        response_model=RetrainResponse,
        dependencies=[Depends(require_scope("admin"))],
    )
    async def retrain(body: RetrainRequest | None = None, model: str = MODEL) -> RetrainResponse:
        body = body or RetrainRequest()
        return await plane.retrain(model, body.version, body.reason)

    return router
