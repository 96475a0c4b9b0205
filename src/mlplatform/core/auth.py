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
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from mlplatform.core.errors import Forbidden, Unauthorized
from mlplatform.core.secrets import SecretsBackend

log = logging.getLogger("mlplatform.auth")

SCOPES = ("infer", "explain", "features:read", "features:write", "drift:write", "admin")


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


@dataclass
class ApiKeyAuth:
    """Checks keys against the keyring held in the secrets backend (re-read on every refresh)."""

    secrets: SecretsBackend
    secret_name: str = "MLPLATFORM_API_KEYS"
    enabled: bool = True
    _keys: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.enabled:
            log.warning(
                "API key authentication is DISABLED by setting; do not run like this outside local mode"
            )
        self.refresh()

    def refresh(self) -> None:
        """Reload the keyring (called on a schedule so rotated keys take effect without a restart)."""
        raw = self.secrets.get(self.secret_name) if self.enabled else None
        self._keys = parse_keyring(raw) if raw else {}

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
        key = request.headers.get("x-api-key")
        if not key:
            authz = request.headers.get("authorization", "")
            scheme, _, token = authz.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key = token.strip()
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        scopes = self.scopes_for(key)
        if scopes is None:
            raise Unauthorized("unknown API key")
        if scope not in scopes and "admin" not in scopes:
            raise Forbidden(f"API key lacks the {scope!r} scope")


def require_scope(scope: str) -> Callable[[Request], None]:
    """FastAPI dependency: the app's ``state.auth`` must grant ``scope``."""

    def _dependency(request: Request) -> None:
        auth: ApiKeyAuth | None = getattr(request.app.state, "auth", None)
        if auth is not None:
            auth.check(request, scope)

    return _dependency
