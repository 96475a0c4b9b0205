"""One error type with an HTTP status, one handler, one body: ``{"error": "..."}``."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlplatform.core.responses import JSONResponse

log = logging.getLogger("mlplatform.errors")


class PlatformError(Exception):
    """Base error: carries the HTTP status and a client-safe message naming the field or model."""

    status_code: int = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


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


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The single error body every service returns."""
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


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


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into ``{"error": ...}``."""

    @app.exception_handler(PlatformError)
    async def _platform_error(_: Request, exc: PlatformError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error_response(exc.status_code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = describe_validation_error(exc)
        return error_response(status, message)

    @app.exception_handler(json.JSONDecodeError)
    async def _json_error(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return error_response(400, f"malformed JSON body: {exc.msg} at position {exc.pos}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route"
        if exc.status_code == 405:
            message = "method not allowed on this route"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; see the service logs with this request's trace id")
