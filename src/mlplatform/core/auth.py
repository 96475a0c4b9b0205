"""API-key authentication with scopes for the client-facing endpoints.

Keys are held as SHA-256 hex digests loaded through the secrets interface, in one secret whose
value is a comma-separated list of ``<sha256hex>:<scope>|<scope>`` entries. A request sends its key
as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Missing or unknown key: 401; key
without the needed scope: 403. Digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from mlplatform.core.errors import Forbidden, Unauthorized
from mlplatform.core.secrets import SecretsBackend, report_rejected

log = logging.getLogger("mlplatform.auth")

SCOPES = ("infer", "explain", "features:read", "features:write", "drift:read", "drift:write", "admin")


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key (what the secret stores)."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keyring(value: str) -> dict[str, frozenset[str]]:
    """Parse ``digest:scope|scope,digest:scope`` into {digest: scopes}."""
    keys: dict[str, frozenset[str]] = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        digest, _, scopes = entry.partition(":")
        digest = digest.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("API key entries must start with a 64-character SHA-256 hex digest")
        keys[digest] = frozenset(s.strip() for s in scopes.split("|") if s.strip())
    return keys


MAX_KEY_LENGTH = 4096


@dataclass
class ApiKeyAuth:
    """Checks keys against the keyring held in the secrets backend (re-read on every refresh).

    Rotation: when the backend offers ``add_listener(callback)`` (the Vault backend does), the
    keyring is reloaded as soon as the backend reports that ``secret_name`` changed. With
    ``refresh_interval_s`` set, the keyring is also re-read from the backend at most that often,
    on the request path (for backends without change notifications). A rotated keyring that does
    not parse is rejected and the previous keys stay in force.
    """

    secrets: SecretsBackend
    secret_name: str = "MLPLATFORM_API_KEYS"
    enabled: bool = True
    _keys: dict[str, frozenset[str]] = field(default_factory=dict)
    refresh_interval_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _last_refresh: float = 0.0
    _refresh_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.enabled:
            log.warning(
                "API key authentication is DISABLED by setting; do not run like this outside local mode"
            )
        self.refresh()
        if self.enabled and not self._keys:
            log.warning(
                "API key authentication is enabled but secret %r holds no keys: every client request "
                "will get 401",
                self.secret_name,
            )
        add_listener = getattr(self.secrets, "add_listener", None)
        if self.enabled and callable(add_listener):
            add_listener(self._on_secrets_changed)

    def refresh(self) -> None:
        """Reload the keyring (called on a schedule so rotated keys take effect without a restart)."""
        raw = self.secrets.get(self.secret_name) if self.enabled else None
        self._keys = parse_keyring(raw) if raw else {}
        self._last_refresh = self.clock()

    @property
    def key_count(self) -> int:
        """How many keys the current keyring holds."""
        return len(self._keys)

    def _on_secrets_changed(self, names: frozenset[str]) -> None:
        """Rotation hook the secrets backend calls with the names whose value changed."""
        if self.secret_name in names:
            self._safe_refresh()

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except ValueError as exc:
            self._last_refresh = self.clock()
            log.error(
                "rotated API keyring in %r rejected, keeping the previous keys: %s", self.secret_name, exc
            )
            report_rejected(self.secrets, self.secret_name)
        else:
            log.info("API keyring reloaded from %r (%d keys)", self.secret_name, len(self._keys))

    def _maybe_refresh(self) -> None:
        if self.refresh_interval_s is None:
            return
        if self.clock() - self._last_refresh < self.refresh_interval_s:
            return
        if self._refresh_lock.acquire(blocking=False):
            try:
                self._safe_refresh()
            finally:
                self._refresh_lock.release()

    def scopes_for(self, key: str) -> frozenset[str] | None:
        digest = hash_key(key)
        found: frozenset[str] | None = None
        for known, scopes in self._keys.items():  # compare against every entry: no early exit
            if hmac.compare_digest(known, digest):
                found = scopes
        return found

    def check(self, request: Request, scope: str) -> None:
        """Raise 401/403 unless the request carries a key with ``scope`` (or ``admin``)."""
        if not self.enabled:
            return
        headers = request.headers
        self.check_headers(headers.get("x-api-key"), headers.get("authorization"), scope)

    def check_raw_headers(self, headers: dict[bytes, bytes], scope: str) -> None:
        """:meth:`check` on an ASGI scope's raw headers (``dict(scope["headers"])``), for fast routes."""
        if not self.enabled:
            return
        key = headers.get(b"x-api-key")
        authz = headers.get(b"authorization")
        self.check_headers(
            key.decode("latin-1") if key is not None else None,
            authz.decode("latin-1") if authz is not None else None,
            scope,
        )

    def check_headers(self, x_api_key: str | None, authorization: str | None, scope: str) -> None:
        """:meth:`check` on the two header values (for handlers that never build a ``Request``)."""
        if not self.enabled:
            return
        self._maybe_refresh()
        key = (x_api_key or "").strip()
        if not key:
            authz = authorization or ""
            scheme, _, token = authz.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key = token.strip()
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        if len(key) > MAX_KEY_LENGTH:
            raise Unauthorized("unknown API key")
        scopes = self.scopes_for(key)
        if scopes is None:
            raise Unauthorized("unknown API key")
        if scope not in scopes and "admin" not in scopes:
            raise Forbidden(f"API key lacks the {scope!r} scope")


def check_scope(request: Request, scope: str) -> None:
    """Raise 401/403 unless the app's ``state.auth`` grants ``scope`` to this request (sync, in-memory)."""
    auth: ApiKeyAuth | None = getattr(request.app.state, "auth", None)
    if auth is not None:
        auth.check(request, scope)


def require_scope(scope: str) -> Callable[[Request], Awaitable[None]]:
    """FastAPI dependency: the app's ``state.auth`` must grant ``scope``.

    Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a hop that costs more
    than an ONNX prediction; the check itself is an in-memory digest comparison.
    """

    async def _dependency(request: Request) -> None:
        check_scope(request, scope)

    return _dependency


def auth_error_docs(scope: str) -> dict[int, str]:
    """What :func:`require_scope` answers, for :func:`~mlplatform.core.errors.error_docs`: 401 (no or
    unknown key) and 403 (``API key lacks <scope>``, e.g. ``"the 'infer' scope"``)."""
    return {401: "missing or unknown API key", 403: f"API key lacks {scope}"}
