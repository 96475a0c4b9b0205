"""Every documented error answer of the four services is the one error body, ``core.errors.ErrorBody``.

Each app is built by its own factory (as ``mlplatform serve`` builds it) and its ``/openapi.json``
document walked: every non-2xx response of every operation must name ErrorBody (or a subclass of it)
as its ``application/json`` body (also on a route whose success answer is an HTML page),
the body :func:`~mlplatform.core.errors.error_response` answers, never a copy or FastAPI's own
``HTTPValidationError`` (our handler reshapes validation errors into ``{"error": ...}``).
"""

from __future__ import annotations

from typing import Any

import pytest

from mlplatform.core.errors import ErrorBody, error_docs
from mlplatform.services import SERVICES

# the readiness probe's 503 answers the probe body ({"ready": false}), not an error
NOT_ERRORS = {("get", "/v2/health/ready", "503")}
REF = "#/components/schemas/"


def _error_body_names() -> set[str]:
    names, todo = set(), [ErrorBody]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def _openapi(name: str, tmp_path) -> dict[str, Any]:  # noqa: ANN001
    spec = SERVICES[name]
    settings = spec.load_settings_class()(data_dir=tmp_path, auth_enabled=False)
    return spec.load_factory()(settings).openapi()


def _error_responses(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (method, path, status, response)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        for status, response in op.get("responses", {}).items()
        if not status.startswith("2") and (method, path, status) not in NOT_ERRORS
    ]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_error_response_documents_error_body(name, tmp_path):
    doc = _openapi(name, tmp_path)
    allowed = {REF + n for n in _error_body_names()}
    errors = _error_responses(doc)
    assert len(errors) >= 5, f"{name}: only {len(errors)} documented error responses"
    wrong = []
    for method, path, status, response in errors:
        content = response.get("content", {})
        schemas = [c.get("schema", {}).get("$ref") for c in content.values()]
        if set(content) != {"application/json"} or any(ref not in allowed for ref in schemas):
            wrong.append(f"{method.upper()} {path} {status}: {content or 'no body documented'}")
    assert not wrong, f"{name}: error responses not documenting ErrorBody:\n" + "\n".join(wrong)
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorBody"] == ErrorBody.model_json_schema()
    copies = [
        n for n, s in schemas.items() if s.get("properties", {}).keys() == {"error"} and n != "ErrorBody"
    ]
    assert not copies, f"{name}: copies of ErrorBody in the OpenAPI document: {copies}"


def test_error_docs_in_status_order():
    docs = error_docs({503: "not loaded", 400: "malformed JSON"})
    assert list(docs) == [400, 503]
    assert docs[400] == {"model": ErrorBody, "description": "malformed JSON"}
