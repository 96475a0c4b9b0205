"""Core building blocks: error body, validation reshaping, body limit, auth, metrics, logs."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from mlplatform.core.app import build_app, build_context
from mlplatform.core.auth import hash_key, parse_keyring, require_scope
from mlplatform.core.errors import NotFound
from mlplatform.core.registry import parse_model_list, parse_model_ref
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.core.settings import ServiceSettings
from tests.helpers import json_log


class Item(BaseModel):
    amount: float
    count: int


def make_app(tmp_path, keys: str | None = None, auth: bool = True):
    settings = ServiceSettings(data_dir=tmp_path, auth_enabled=auth, max_body_bytes=2048)
    env = {"MLPLATFORM_API_KEYS": keys} if keys else {}
    ctx = build_context("test", settings, secrets=EnvSecretsBackend(env))
    router = APIRouter()

    @router.post("/items/{name}", response_model=Item, dependencies=[Depends(require_scope("infer"))])
    async def create(name: str, item: Item) -> Item:
        if name == "missing":
            raise NotFound("model 'missing' is not in the registry")
        return item

    @router.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internals")

    return build_app(ctx, title="t", routers=[router]), ctx


@pytest.fixture
def client_factory(tmp_path):
    def _make(**kw):
        app, ctx = make_app(tmp_path, **kw)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
        ), ctx

    return _make


async def test_validation_error_names_field(client_factory):
    client, _ = client_factory(auth=False)
    r = await client.post("/items/a", json={"amount": "abc", "count": 1})
    assert r.status_code == 422
    assert "amount" in r.json()["error"]
    r = await client.post("/items/a", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]


async def test_platform_error_and_500_bodies(client_factory):
    client, _ = client_factory(auth=False)
    r = await client.post("/items/missing", json={"amount": 1, "count": 1})
    assert r.status_code == 404 and r.json() == {"error": "model 'missing' is not in the registry"}
    r = await client.get("/boom")
    assert r.status_code == 500
    assert "RuntimeError" not in r.text and "secret internals" not in r.text
    r = await client.get("/nope")
    assert r.status_code == 404 and "error" in r.json()


async def test_body_limit(client_factory):
    client, _ = client_factory(auth=False)
    r = await client.post("/items/a", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "limit" in r.json()["error"]


async def test_api_key_scopes(client_factory):
    keys = f"{hash_key('good')}:infer,{hash_key('other')}:explain"
    client, _ = client_factory(keys=keys)
    body = {"amount": 1.0, "count": 2}
    assert (await client.post("/items/a", json=body)).status_code == 401
    assert (await client.post("/items/a", json=body, headers={"X-API-Key": "wrong"})).status_code == 401
    r = await client.post("/items/a", json=body, headers={"Authorization": "Bearer other"})
    assert r.status_code == 403 and "infer" in r.json()["error"]
    assert (
        await client.post("/items/a", json=body, headers={"Authorization": "Bearer good"})
    ).status_code == 200


def test_keyring_rejects_plaintext():
    with pytest.raises(ValueError):
        parse_keyring("plaintext-key:infer")


async def test_metrics_and_probes(client_factory):
    client, _ = client_factory(auth=False)
    await client.post("/items/a", json={"amount": 1, "count": 1})
    await client.get("/v2/health/ready")
    text = (await client.get("/metrics")).text
    assert (
        'mlplatform_http_requests_total{code="200",method="POST",route="/items/{name}",service="test"} 1.0'
        in text
    )
    assert "/v2/health/ready" not in text


async def test_request_id_echoed(client_factory):
    client, _ = client_factory(auth=False)
    r = await client.post("/items/a", json={"amount": 1, "count": 1}, headers={"X-Request-ID": "abc123"})
    assert r.headers["x-request-id"] == "abc123"


def test_json_log_fields():
    with json_log("svc", "test.jsonlog") as (logger, stream):
        logger.warning("hello %s", "world", extra={"model": "m"})
    doc = json.loads(stream.getvalue())
    assert doc["msg"] == "hello world" and doc["service"] == "svc" and doc["level"] == "warning"
    for key in ("ts", "trace_id", "span_id", "request_id"):
        assert key in doc
    assert doc["model"] == "m"


def test_model_refs():
    assert str(parse_model_ref("fraud-detector")) == "fraud-detector@champion"
    assert parse_model_ref("m/3").version == "3"
    assert parse_model_ref("m@staging").alias == "staging"
    with pytest.raises(ValueError):
        parse_model_ref("m/abc")
    with pytest.raises(ValueError):
        parse_model_list("a,a@x")


async def test_start_up_freezes_the_heap(tmp_path):
    """After start-up every live object leaves the collector's generations (no full-GC stalls later)."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    app, _ = make_app(tmp_path, auth=False)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 1000
    gc.unfreeze()
