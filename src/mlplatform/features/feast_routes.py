"""Feast's feature-server HTTP API (what ``feast serve`` speaks) beside the ``/v1`` routes.

``POST /get-online-features``, ``/push``, ``/write-to-online-store``, ``/materialize`` and
``/materialize-incremental`` take the bodies of the pinned Feast's ``feature_server.py`` and answer as
it does (``/get-online-features``: ``metadata.feature_names`` and ``results`` of
``values``/``statuses``/``event_timestamps``; the writes: an empty 200 for ``/push`` and
``/write-to-online-store``, ``null`` for the materialisations), so the Feast SDK with
``online_store: {type: remote, path: <this service>}`` and any client of ``feast serve`` work unchanged.

Differences from ``feast serve`` (deliberate): errors are ``{"error": "..."}`` 4xx naming the field
(``feast serve`` answers 500 with the exception text for most bad input); API keys are required
(``Authorization: Bearer <key>``: Feast's client sends exactly that with ``auth: {type: oidc,
token_env_var: ...}``); ``?async=true`` materialisation, feature-view versions and
``disable_event_timestamp`` are refused with a 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from mlplatform.core.app import FastRoute
from mlplatform.core.auth import ApiKeyAuth, require_scope
from mlplatform.core.errors import InvalidInput
from mlplatform.core.responses import JSONResponse
from mlplatform.features.dataplane import FeatureDataPlane
from mlplatform.features.feast_schemas import (
    FeastGetOnlineFeaturesRequest,
    FeastGetOnlineFeaturesResponse,
    FeastMaterializeIncrementalRequest,
    FeastMaterializeRequest,
    FeastPushRequest,
    FeastWriteToOnlineStoreRequest,
)
from mlplatform.features.routes import ERRORS, json_fast_route

GET_ONLINE_FEATURES_PATH = "/get-online-features"
PUSH_TARGETS = ("online", "offline", "online_and_offline")
#: ``?async=`` of the materialisation routes (accepted as in ``feast serve``, refused when true)
ASYNC_MODE = Query(False, alias="async", description="Not supported (422 when true).")


async def _read(plane: FeatureDataPlane, req: FeastGetOnlineFeaturesRequest) -> dict[str, Any]:
    return await plane.get_online_features_feast(
        req.entities,
        req.feature_service,
        req.features,
        req.full_feature_names,
        view_metadata=req.include_feature_view_version_metadata,
    )


def _timestamp(raw: str | None, field: str) -> datetime:
    """A Feast timestamp string (anything ``dateutil`` parses, as ``feast serve`` accepts)."""
    from dateutil import parser

    if raw is None or not raw.strip():
        raise InvalidInput(f"{field}: required")
    try:
        return parser.parse(raw)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"{field}: {raw!r} is not a timestamp") from exc


def _columns_to_rows(df: dict[str, list[Any]], field: str = "df") -> list[dict[str, Any]]:
    lengths = {name: len(column) for name, column in df.items()}
    n = next(iter(lengths.values()), 0)
    for name, length in lengths.items():
        if length != n:
            raise InvalidInput(f"{field}.{name}: every column must have the same length ({n} vs {length})")
    names = list(df)
    return [{name: df[name][i] for name in names} for i in range(n)]


def _refuse_unsupported(async_mode: bool, version: str | None) -> None:
    if async_mode:
        raise InvalidInput("async: asynchronous materialisation is not supported; call without ?async=true")
    if version is not None:
        raise InvalidInput("version: feature view versions are not supported by this feature store")


def feast_read_router(plane: FeatureDataPlane) -> APIRouter:
    """``POST /get-online-features`` (scope ``features:read``; served by :func:`feast_fast_route`)."""
    router = APIRouter(
        tags=["feast"], dependencies=[Depends(require_scope("features:read"))], responses=ERRORS
    )

    @router.post(GET_ONLINE_FEATURES_PATH, response_model=FeastGetOnlineFeaturesResponse)
    async def get_online_features(body: FeastGetOnlineFeaturesRequest) -> JSONResponse:
        return JSONResponse(await _read(plane, body))

    return router


def feast_admin_router(plane: FeatureDataPlane) -> APIRouter:
    """Feast's writes and materialisation (scope ``admin``, as the ``/v1`` push and materialise)."""
    router = APIRouter(tags=["feast"], dependencies=[Depends(require_scope("admin"))], responses=ERRORS)
    empty = {200: {"description": "written (empty body, as feast serve answers)", "content": None}}

    @router.post("/push", response_class=Response, responses=empty)  # type: ignore[arg-type]
    async def push(body: FeastPushRequest) -> Response:
        if body.to not in PUSH_TARGETS:
            raise InvalidInput(f"to: {body.to!r} is not one of {', '.join(PUSH_TARGETS)}")
        rows = _columns_to_rows(body.df)
        await plane.push(body.push_source_name, rows, body.to, field="df")
        return Response(status_code=200)

    @router.post("/write-to-online-store", response_class=Response, responses=empty)  # type: ignore[arg-type]
    async def write_to_online_store(body: FeastWriteToOnlineStoreRequest) -> Response:
        rows = _columns_to_rows(body.df)
        await plane.write_to_online_store(body.feature_view_name, rows)
        return Response(status_code=200)

    @router.post("/materialize", response_model=None)
    async def materialize(
        body: FeastMaterializeRequest,
        async_mode: bool = ASYNC_MODE,
    ) -> JSONResponse:
        _refuse_unsupported(async_mode, body.version)
        if body.disable_event_timestamp:
            raise InvalidInput("disable_event_timestamp: not supported; give start_ts and end_ts")
        start, end = _timestamp(body.start_ts, "start_ts"), _timestamp(body.end_ts, "end_ts")
        if _aware(start) >= _aware(end):
            raise InvalidInput(f"start_ts: {body.start_ts!r} must be before end_ts {body.end_ts!r}")
        await plane.materialize(end, body.feature_views, start=start)
        return JSONResponse(None)

    @router.post("/materialize-incremental", response_model=None)
    async def materialize_incremental(
        body: FeastMaterializeIncrementalRequest,
        async_mode: bool = ASYNC_MODE,
    ) -> JSONResponse:
        _refuse_unsupported(async_mode, body.version)
        await plane.materialize(_timestamp(body.end_ts, "end_ts"), body.feature_views)
        return JSONResponse(None)

    return router


def _aware(ts: datetime) -> datetime:
    from datetime import UTC

    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def feast_fast_route(plane: FeatureDataPlane, auth: ApiKeyAuth) -> FastRoute:
    """``POST /get-online-features`` without FastAPI routing: same scope check, body model and answer."""
    return json_fast_route(
        GET_ONLINE_FEATURES_PATH,
        auth,
        "features:read",
        FeastGetOnlineFeaturesRequest,
        lambda req: _read(plane, req),
    )
