"""One error type with an HTTP status, one handler, one body: ``{"error": "..."}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("mlplatform.errors")


class PlatformError(Exception):
    """Base error: carries the HTTP status and a client-safe message naming the field or model."""

    status_code: int = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class ErrorBody(BaseModel):
    """The one error body every service answers (``{"error": "..."}``), for ``responses=`` in OpenAPI."""

    error: str = Field(description="What was wrong, naming the input, field or model.")


def error_docs(
    descriptions: Mapping[int, str], route_media_type: str = "application/json"
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries, in status order, for the error statuses a route answers: each
    documents :class:`ErrorBody` with its description (``{404: "unknown model"}``).

    FastAPI documents a response ``model`` under the route's own media type; errors are JSON whatever
    the route answers on success, so for a route of another ``route_media_type`` (an HTML page) the
    entries name ErrorBody's schema under ``application/json`` themselves (the app must use ErrorBody
    as a ``model`` elsewhere, which puts it in ``components``)."""
    ordered = sorted(descriptions.items())
    if route_media_type == "application/json":
        return {status: {"model": ErrorBody, "description": text} for status, text in ordered}
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {status: {"description": text, "content": body} for status, text in ordered}


class BadRequest(PlatformError):
    status_code = 400


class Unauthorized(PlatformError):
    status_code = 401


class Forbidden(PlatformError):
    status_code = 403


class NotFound(PlatformError):
    status_code = 404


class PayloadTooLarge(PlatformError):
    status_code = 413


class InvalidInput(PlatformError):
    status_code = 422


class Unavailable(PlatformError):
    status_code = 503


class GatewayTimeout(PlatformError):
    status_code = 504


def _loc_to_field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) if parts else "body"


def describe_validation_error(exc: RequestValidationError | ValidationError) -> tuple[int, str]:
    """Reshape FastAPI's (or pydantic's) validation error into (status, message). Malformed JSON is a 400."""
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return 400, f"malformed JSON body: {ctx.get('error', 'could not parse')}"
    msgs = []
    for err in errors[:5]:
        field = _loc_to_field(err.get("loc", ()))
        msgs.append(f"{field}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid request: " + "; ".join(msgs) + more


INTERNAL_ERROR = "internal error; see the service logs with this request's trace id"


class ErrorReply(NamedTuple):
    """An error answer, ready for any transport: status, body (``{"error": ...}``) and extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]


_BEARER = ((b"www-authenticate", b"Bearer"),)


def error_response(exc: BaseException, where: str = "") -> ErrorReply:
    """The one mapping from a failure to what the client sees, used by every request path.

    :class:`PlatformError` answers its own status and message (401 with ``WWW-Authenticate: Bearer``);
    validation errors are a 422 naming the fields (malformed JSON a 400); Starlette's routing errors keep
    their status with a plain message; anything else is a bug: logged with its stack trace (``where``
    names the request), answered with a generic 500 that never shows the exception.
    """
    if isinstance(exc, PlatformError):
        status, message = exc.status_code, exc.message
    elif isinstance(exc, RequestValidationError | ValidationError):
        status, message = describe_validation_error(exc)
    elif isinstance(exc, json.JSONDecodeError):
        status, message = 400, f"malformed JSON body: {exc.msg} at position {exc.pos}"
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if status == 404 and message == "Not Found":
            message = "no such route"
        if status == 405:
            message = "method not allowed on this route"
    else:
        log.error("unhandled error on %s", where or "a request", exc_info=exc)
        status, message = 500, INTERNAL_ERROR
    headers: tuple[tuple[bytes, bytes], ...] = _BEARER if status == 401 else ()
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers += tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
    return ErrorReply(status, orjson.dumps({"error": message}), headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure FastAPI sees through :func:`error_response`."""

    async def _handle(request: Request, exc: Exception) -> Response:
        reply = error_response(exc, f"{request.method} {request.url.path}")
        response = Response(reply.body, status_code=reply.status, media_type="application/json")
        for name, value in reply.headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response

    for kind in (
        PlatformError,
        RequestValidationError,
        json.JSONDecodeError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(kind, _handle)
