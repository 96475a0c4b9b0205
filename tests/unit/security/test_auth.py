"""API-key authentication: header forms, 401/403 bodies, scopes, constant-time lookup, rotation."""

from __future__ import annotations

import hmac
import logging

import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from mlplatform.core import auth as auth_module
from mlplatform.core.app import build_app, build_context
from mlplatform.core.auth import ApiKeyAuth, hash_key, parse_keyring, require_scope
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.core.settings import ServiceSettings
from mlplatform.core.vault import VaultSecretsBackend
from tests.clock import FakeClock
from tests.unit.security.conftest import SECRET_PATH

INFER_KEY = "infer-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
DRIFT_KEY = "drift-key-0123456789"


def keyring(**keys: str) -> str:
    return ",".join(f"{hash_key(k)}:{scopes}" for k, scopes in keys.items())


KEYRING = ",".join(
    [
        f"{hash_key(INFER_KEY)}:infer|explain",
        f"{hash_key(ADMIN_KEY)}:admin",
        f"{hash_key(DRIFT_KEY)}:drift:write",
    ]
)


class Echo(BaseModel):
    ok: bool


def build(tmp_path, secrets, auth_enabled: bool = True):
    settings = ServiceSettings(data_dir=tmp_path, auth_enabled=auth_enabled)
    ctx = build_context("authtest", settings, secrets=secrets)
    router = APIRouter()

    @router.post("/v2/models/m/infer", response_model=Echo, dependencies=[Depends(require_scope("infer"))])
    async def infer() -> Echo:
        return Echo(ok=True)

    @router.post("/v1/records", response_model=Echo, dependencies=[Depends(require_scope("drift:write"))])
    async def records() -> Echo:
        return Echo(ok=True)

    app = build_app(ctx, title="auth", routers=[router])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t"), ctx


@pytest.fixture
def client(tmp_path):
    c, _ = build(tmp_path, EnvSecretsBackend({"MLPLATFORM_API_KEYS": KEYRING}))
    return c


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {INFER_KEY}"},
        {"Authorization": f"bearer   {INFER_KEY}  "},
        {"X-API-Key": INFER_KEY},
        {"X-API-Key": f" {INFER_KEY} "},
    ],
)
async def test_key_accepted_in_either_header(client, headers):
    r = await client.post("/v2/models/m/infer", headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer "}, "missing API key"),
        ({"Authorization": f"Basic {INFER_KEY}"}, "missing API key"),
        ({"Authorization": INFER_KEY}, "missing API key"),
        ({"X-API-Key": "wrong"}, "unknown API key"),
        ({"Authorization": f"Bearer {INFER_KEY}x"}, "unknown API key"),
        ({"X-API-Key": "k" * 10_000}, "unknown API key"),
    ],
)
async def test_missing_or_unknown_key_is_401_with_error_body(client, headers, message):
    r = await client.post("/v2/models/m/infer", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert set(r.json()) == {"error"} and message in r.json()["error"]
    assert INFER_KEY not in r.text


async def test_key_without_scope_is_403_naming_the_scope(client):
    r = await client.post("/v1/records", headers={"X-API-Key": INFER_KEY})
    assert r.status_code == 403
    assert r.json() == {"error": "API key lacks the 'drift:write' scope"}
    r = await client.post("/v2/models/m/infer", headers={"X-API-Key": DRIFT_KEY})
    assert r.status_code == 403


async def test_admin_scope_grants_everything(client):
    for path in ("/v2/models/m/infer", "/v1/records"):
        r = await client.post(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200


async def test_probes_and_metrics_need_no_key(client):
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert (await client.get(path)).status_code == 200


async def test_x_api_key_wins_over_authorization(client):
    r = await client.post(
        "/v1/records", headers={"X-API-Key": DRIFT_KEY, "Authorization": f"Bearer {INFER_KEY}"}
    )
    assert r.status_code == 200


async def test_disabled_auth_warns_at_startup_and_lets_requests_through(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mlplatform.auth"):
        c, _ = build(tmp_path, EnvSecretsBackend({}), auth_enabled=False)
    assert "DISABLED" in caplog.text
    assert (await c.post("/v2/models/m/infer")).status_code == 200


async def test_enabled_without_keys_warns_and_denies(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mlplatform.auth"):
        c, _ = build(tmp_path, EnvSecretsBackend({}))
    assert "holds no keys" in caplog.text
    assert (await c.post("/v2/models/m/infer", headers={"X-API-Key": INFER_KEY})).status_code == 401


def test_no_warning_when_enabled_with_keys(caplog):
    with caplog.at_level(logging.WARNING, logger="mlplatform.auth"):
        ApiKeyAuth(EnvSecretsBackend({"MLPLATFORM_API_KEYS": KEYRING}))
    assert caplog.text == ""


def test_parse_keyring_forms_and_errors():
    digest = hash_key("k")
    parsed = parse_keyring(f" {digest.upper()} : infer | explain , ,{hash_key('j')}:")
    assert parsed == {digest: frozenset({"infer", "explain"}), hash_key("j"): frozenset()}
    for bad in ("abc:infer", "z" * 64 + ":infer", f"{digest}0:infer"):
        with pytest.raises(ValueError, match="64-character SHA-256"):
            parse_keyring(bad)
    assert hash_key("k") == "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"


def test_lookup_compares_every_entry(monkeypatch):
    """Constant-time: the first key matching must not stop the scan (no early exit)."""
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    auth = ApiKeyAuth(EnvSecretsBackend({"MLPLATFORM_API_KEYS": KEYRING}))
    assert auth.scopes_for(INFER_KEY) == frozenset({"infer", "explain"})
    assert len(calls) == 3
    assert auth.scopes_for("nope") is None and len(calls) == 6


# -- rotation ----------------------------------------------------------------------------------


class NotifyingBackend:
    """An in-memory SecretsBackend with the rotation hook the Vault backend provides."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = dict(values)
        self.listeners: list = []

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def close(self) -> None:
        return None

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)

    def rotate(self, name: str, value: str) -> None:
        self.values[name] = value
        for listener in self.listeners:
            listener(frozenset({name}))


async def test_rotation_hook_reloads_keyring(tmp_path):
    backend = NotifyingBackend({"MLPLATFORM_API_KEYS": keyring(old="infer")})
    c, ctx = build(tmp_path, backend)
    assert (await c.post("/v2/models/m/infer", headers={"X-API-Key": "old"})).status_code == 200
    backend.rotate("OTHER_SECRET", "x")
    assert ctx.auth.key_count == 1
    backend.rotate("MLPLATFORM_API_KEYS", keyring(new="infer"))
    assert (await c.post("/v2/models/m/infer", headers={"X-API-Key": "old"})).status_code == 401
    assert (await c.post("/v2/models/m/infer", headers={"X-API-Key": "new"})).status_code == 200


async def test_malformed_rotated_keyring_keeps_previous_keys(tmp_path, caplog):
    backend = NotifyingBackend({"MLPLATFORM_API_KEYS": keyring(old="infer")})
    c, _ = build(tmp_path, backend)
    with caplog.at_level(logging.ERROR, logger="mlplatform.auth"):
        backend.rotate("MLPLATFORM_API_KEYS", "not-a-digest:infer")
    assert "rejected" in caplog.text and "not-a-digest" not in caplog.text
    assert (await c.post("/v2/models/m/infer", headers={"X-API-Key": "old"})).status_code == 200


def test_periodic_refresh_for_backends_without_notifications():
    env = {"MLPLATFORM_API_KEYS": keyring(old="infer")}
    clock = FakeClock()
    auth = ApiKeyAuth(EnvSecretsBackend(env), refresh_interval_s=30, clock=clock)
    env["MLPLATFORM_API_KEYS"] = keyring(new="infer")
    auth._maybe_refresh()
    assert auth.scopes_for("old") is not None  # not due yet
    clock.advance(31)
    auth._maybe_refresh()
    assert auth.scopes_for("old") is None and auth.scopes_for("new") == frozenset({"infer"})


async def test_vault_rotation_reaches_auth_without_restart(tmp_path, vault, config, clock):
    """End to end: key rotated in OpenBao -> backend re-read -> ApiKeyAuth reloads."""
    vault.put(
        SECRET_PATH,
        {"MLPLATFORM_API_KEYS": keyring(old="infer"), "REDIS_PASSWORD": "p"},
    )
    backend = VaultSecretsBackend(config, clock=clock, start_thread=False)
    c, _ = build(tmp_path, backend)
    h_old, h_new = {"X-API-Key": "old"}, {"X-API-Key": "new"}
    assert (await c.post("/v2/models/m/infer", headers=h_old)).status_code == 200
    vault.put(
        SECRET_PATH,
        {"MLPLATFORM_API_KEYS": keyring(new="infer"), "REDIS_PASSWORD": "p"},
    )
    assert (await c.post("/v2/models/m/infer", headers=h_new)).status_code == 401
    clock.advance(61)
    backend.tick()
    assert (await c.post("/v2/models/m/infer", headers=h_old)).status_code == 401
    assert (await c.post("/v2/models/m/infer", headers=h_new)).status_code == 200
    backend.close()
