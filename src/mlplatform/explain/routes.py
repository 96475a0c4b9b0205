"""HTTP routes of the explainability service (they only speak HTTP; the data plane does the work)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from mlplatform.core.auth import auth_error_docs, require_scope
from mlplatform.core.errors import error_docs
from mlplatform.core.logging import request_id_var
from mlplatform.core.responses import JSONResponse
from mlplatform.explain.dataplane import ExplainDataPlane
from mlplatform.explain.schemas import ExplainResponse, ImportanceResponse, TextExplainResponse
from mlplatform.v2.types import REQUEST_BODY_DOC

ERRORS = error_docs(
    {
        400: "malformed JSON",
        **auth_error_docs("the 'explain' scope"),
        404: "unknown model, or a version other than the served one",
        413: "body over the size limit",
        422: "bad input, or the model's flavour has no explainer",
        503: "model not loaded yet or feature store unavailable",
    }
)
TOP_K_DOC = "Top features per row by |attribution| (else the body's parameters.top_k, else the default)."
# tabular models answer ExplainResponse, text models (text_input) TextExplainResponse
EXPLAIN_RESPONSE = ExplainResponse | TextExplainResponse


def build_router(plane: ExplainDataPlane) -> APIRouter:
    """``POST .../explain`` and ``GET .../importance`` (scope ``explain``) over ``plane``."""
    router = APIRouter(tags=["explain"], dependencies=[Depends(require_scope("explain"))], responses=ERRORS)

    @router.post(
        "/v2/models/{model_name}/explain", response_model=EXPLAIN_RESPONSE, openapi_extra=REQUEST_BODY_DOC
    )
    async def explain(
        model_name: str, request: Request, top_k: int | None = Query(None, ge=1, description=TOP_K_DOC)
    ) -> JSONResponse:
        body = await request.body()
        doc = await plane.explain(model_name, body, top_k=top_k, request_id=request_id_var.get())
        return JSONResponse(doc)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/explain",
        response_model=EXPLAIN_RESPONSE,
        openapi_extra=REQUEST_BODY_DOC,
    )
    async def explain_version(
        model_name: str,
        model_version: str,
        request: Request,
        top_k: int | None = Query(None, ge=1, description=TOP_K_DOC),
    ) -> JSONResponse:
        body = await request.body()
        doc = await plane.explain(
            model_name, body, version=model_version, top_k=top_k, request_id=request_id_var.get()
        )
        return JSONResponse(doc)

    @router.get("/v2/models/{model_name}/importance", response_model=ImportanceResponse)
    async def importance(model_name: str) -> JSONResponse:
        return JSONResponse(await plane.importance(model_name))

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}/importance", response_model=ImportanceResponse
    )
    async def importance_version(model_name: str, model_version: str) -> JSONResponse:
        return JSONResponse(await plane.importance(model_name, model_version))

    return router
