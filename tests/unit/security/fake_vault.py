"""A small HTTP test double of the HashiCorp Vault API paths the platform uses.

No Vault server can run on the test machine, so this speaks Vault's documented wire format over
real HTTP (``http.server`` on a free port), with the JSON shapes of the API documentation:

* ``POST /v1/auth/<path>/login`` (Kubernetes auth, https://developer.hashicorp.com/vault/api-docs/auth/kubernetes#login):
  body ``{"role", "jwt"}``; answers ``{"request_id", "lease_id", "renewable", "lease_duration",
  "data", "wrap_info", "warnings", "auth": {"client_token", "accessor", "policies",
  "token_policies", "metadata": {"role", "service_account_name", ...}, "lease_duration",
  "renewable", "entity_id", "token_type", "orphan"}}``; unknown role: 400
  ``{"errors": ["invalid role name \\"x\\""]}``; service account not bound: 403.
* ``GET /v1/<mount>/data/<path>`` (KV v2 read, https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#read-secret-version):
  ``{"data": {"data": {...}, "metadata": {"created_time", "custom_metadata", "deletion_time",
  "destroyed", "version"}}, ...}``; missing path: 404 ``{"errors": []}``.
* ``GET /v1/auth/token/lookup-self`` and ``POST /v1/auth/token/renew-self``
  (https://developer.hashicorp.com/vault/api-docs/auth/token): lookup ``data`` with ``ttl``,
  ``renewable``, ``policies``, ``expire_time`` ...; renew answers an ``auth`` block like login.
* Errors: 403 ``{"errors": ["1 error occurred:\\n\\t* permission denied\\n\\n"]}`` for a bad or
  expired token or a path outside the token's policies; 503 ``{"errors": ["Vault is sealed"]}``.

Time comes from an injected clock so token expiry can be driven by the test.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PERMISSION_DENIED = "1 error occurred:\n\t* permission denied\n\n"


class FakeClock:
    """A controllable monotonic clock shared by the backend under test and the fake server."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Role:
    sa_names: set[str]
    namespaces: set[str]
    policies: list[str]
    ttl: int = 3600
    max_ttl: int = 14400


@dataclass
class Token:
    role: str
    policies: list[str]
    issued: float
    ttl: int
    max_ttl: int
    renewable: bool = True
    first_issued: float = 0.0
    accessor: str = field(default_factory=lambda: uuid.uuid4().hex[:24])

    def remaining(self, now: float) -> float:
        return self.issued + self.ttl - now


@dataclass
class FakeVaultState:
    clock: Callable[[], float]
    roles: dict[str, Role] = field(default_factory=dict)
    jwts: dict[str, tuple[str, str]] = field(default_factory=dict)  # jwt -> (sa name, namespace)
    policies: dict[str, set[str]] = field(default_factory=dict)  # policy -> readable "mount/data/path"
    secrets: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # "mount/path" -> versions
    tokens: dict[str, Token] = field(default_factory=dict)
    sealed: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)

    def put_secret(self, mount: str, path: str, data: dict[str, str]) -> int:
        versions = self.secrets.setdefault(f"{mount}/{path}", [])
        versions.append(dict(data))
        return len(versions)

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))


def _envelope(**kw: Any) -> dict[str, Any]:
    body = {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": None,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }
    body.update(kw)
    return body


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Handler(BaseHTTPRequestHandler):
    state: FakeVaultState  # set on the subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        return

    def _send(self, status: int, body: dict[str, Any] | None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, *errors: str) -> None:
        self._send(status, {"errors": list(errors)})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.state.bodies.append(raw.decode(errors="replace"))
        return json.loads(raw) if raw else {}

    def _token(self) -> Token | None:
        token = self.state.tokens.get(self.headers.get("X-Vault-Token", ""))
        if token is None or token.remaining(self.state.clock()) <= 0:
            return None
        return token

    def _auth_block(self, client_token: str, token: Token) -> dict[str, Any]:
        return {
            "client_token": client_token,
            "accessor": token.accessor,
            "policies": ["default", *token.policies],
            "token_policies": ["default", *token.policies],
            "metadata": {
                "role": token.role,
                "service_account_name": "",
                "service_account_namespace": "",
                "service_account_secret_name": "",
                "service_account_uid": "",
            },
            "lease_duration": int(token.remaining(self.state.clock())),
            "renewable": token.renewable,
            "entity_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, token.role)),
            "token_type": "service",
            "orphan": True,
        }

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        st = self.state
        st.requests.append(("POST", self.path))
        body = self._body()
        if st.sealed:
            return self._error(503, "Vault is sealed")
        if self.path.startswith("/v1/auth/") and self.path.endswith("/login"):
            role = st.roles.get(body.get("role", ""))
            if role is None:
                return self._error(400, f'invalid role name "{body.get("role", "")}"')
            who = st.jwts.get(body.get("jwt", ""))
            if who is None:
                return self._error(403, PERMISSION_DENIED)
            if who[0] not in role.sa_names:
                return self._error(403, "service account name not authorized")
            if who[1] not in role.namespaces:
                return self._error(403, "namespace not authorized")
            client_token = "hvs." + uuid.uuid4().hex
            now = st.clock()
            token = Token(body["role"], role.policies, now, role.ttl, role.max_ttl, first_issued=now)
            st.tokens[client_token] = token
            auth = self._auth_block(client_token, token)
            auth["metadata"]["service_account_name"] = who[0]
            auth["metadata"]["service_account_namespace"] = who[1]
            return self._send(200, _envelope(auth=auth))
        if self.path == "/v1/auth/token/renew-self":
            token = self._token()
            if token is None:
                return self._error(403, PERMISSION_DENIED)
            if not token.renewable:
                return self._error(400, "lease is not renewable")
            now = st.clock()
            increment = body.get("increment")
            wanted = int(str(increment).rstrip("s")) if increment else st.roles[token.role].ttl
            cap = token.first_issued + token.max_ttl - now
            new_ttl = int(max(0, min(wanted, cap)))
            token.issued, token.ttl = now, new_ttl
            warnings = None
            if new_ttl < wanted:
                warnings = [
                    f'TTL of "{wanted}s" exceeded the effective max_ttl of "{new_ttl}s"; '
                    "TTL value is capped accordingly"
                ]
            client_token = self.headers.get("X-Vault-Token", "")
            return self._send(200, _envelope(auth=self._auth_block(client_token, token), warnings=warnings))
        return self._error(404)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        st = self.state
        st.requests.append(("GET", self.path))
        if st.sealed:
            return self._error(503, "Vault is sealed")
        token = self._token()
        if token is None:
            return self._error(403, PERMISSION_DENIED)
        now = st.clock()
        if self.path == "/v1/auth/token/lookup-self":
            data = {
                "accessor": token.accessor,
                "creation_time": int(token.issued),
                "creation_ttl": token.ttl,
                "display_name": f"kubernetes-{token.role}",
                "entity_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, token.role)),
                "expire_time": _iso(token.issued + token.ttl),
                "explicit_max_ttl": 0,
                "id": self.headers.get("X-Vault-Token"),
                "identity_policies": [],
                "issue_time": _iso(token.issued),
                "meta": {"role": token.role},
                "num_uses": 0,
                "orphan": True,
                "path": "auth/kubernetes/login",
                "policies": ["default", *token.policies],
                "renewable": token.renewable,
                "ttl": int(token.remaining(now)),
                "type": "service",
            }
            return self._send(200, _envelope(data=data))
        path = self.path.split("?", 1)[0].removeprefix("/v1/")
        mount, _, rest = path.partition("/data/")
        if not rest:
            return self._error(404)
        allowed = set().union(*(st.policies.get(p, set()) for p in token.policies))
        if f"{mount}/data/{rest}" not in allowed:
            return self._error(403, PERMISSION_DENIED)
        versions = st.secrets.get(f"{mount}/{rest}")
        if not versions:
            return self._error(404)
        data = {
            "data": dict(versions[-1]),
            "metadata": {
                "created_time": _iso(now),
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": len(versions),
            },
        }
        return self._send(200, _envelope(data=data))


class FakeVault:
    """Runs the double on 127.0.0.1:<free port> in a thread; use as a context manager."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.state = FakeVaultState(clock=clock)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeVault:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
