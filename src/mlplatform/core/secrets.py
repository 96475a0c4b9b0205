"""Secrets interface. The environment backend is the local default; Vault plugs in behind the same API."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry

from mlplatform.core.errors import PlatformError


class SecretNotFound(PlatformError):
    status_code = 500


@runtime_checkable
class SecretsBackend(Protocol):
    """Reads named secrets. Implementations must never log secret values."""

    def get(self, name: str) -> str | None:
        """The secret's current value, or None when it is not set."""
        ...

    def close(self) -> None:
        """Release resources (timers, HTTP sessions)."""
        ...


class EnvSecretsBackend:
    """Secrets from environment variables (local mode and plain Kubernetes Secrets mounted as env)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else os.environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value if value not in (None, "") else None

    def close(self) -> None:
        return None


def require_secret(backend: SecretsBackend, name: str) -> str:
    """The secret's value, or an error naming the missing secret (never its value)."""
    value = backend.get(name)
    if value is None:
        raise SecretNotFound(f"secret {name!r} is not set in the {type(backend).__name__}")
    return value


def report_rejected(backend: SecretsBackend, name: str) -> None:
    """Tell a backend that counts them (Vault: ``mlplatform_secrets_rejected_total``) that the
    current value of ``name`` was refused by its consumer."""
    report = getattr(backend, "report_rejected", None)
    if callable(report):
        report(name)


def follow_secret(backend: SecretsBackend, name: str, apply: Callable[[str | None], None]) -> bool:
    """Call ``apply(new value)`` whenever the backend reports that secret ``name`` changed (a rotation
    in Vault), so a client holding an outbound credential uses the new one without a restart.

    Returns False for a backend without rotation notifications (the env backend: a restart applies a
    new value). ``apply`` runs on the backend's refresh thread; a failing ``apply`` is logged (name
    only) and the old value stays in use. ``apply`` raises ValueError for a malformed value, with a
    message that names the secret and never carries the value: one error line, no traceback.
    """
    add_listener = getattr(backend, "add_listener", None)
    if not callable(add_listener):
        return False

    def on_change(changed: frozenset[str]) -> None:
        if name in changed:
            try:
                apply(backend.get(name))
            except ValueError as exc:
                # the consumer refused the value as malformed: one line, its message names the secret
                # (never the value); no traceback
                logging.getLogger("mlplatform.secrets").error(
                    "rotated secret %s refused, keeping the current value: %s", name, exc
                )
                report_rejected(backend, name)
                return
            except Exception:
                logging.getLogger("mlplatform.secrets").exception(
                    "applying the rotated secret %s failed", name
                )
                report_rejected(backend, name)
                return
            logging.getLogger("mlplatform.secrets").info("rotated secret %s applied", name)

    add_listener(on_change)
    return True


def register_secrets_metrics(registry: CollectorRegistry, backend: SecretsBackend) -> None:
    """Expose the backend's own metrics (the Vault backend's staleness and failures) on ``registry``."""
    collector = getattr(backend, "metrics_collector", None)
    if callable(collector):
        registry.register(collector())


def build_secrets_backend(kind: str) -> SecretsBackend:
    """The backend named by settings (``env`` or ``vault``)."""
    if kind == "env":
        return EnvSecretsBackend()
    if kind == "vault":
        from mlplatform.core.vault import VaultSecretsBackend, VaultStartupError

        try:
            return VaultSecretsBackend.from_env()
        except VaultStartupError as exc:
            # one clear log line (JSON logs) before the start-up aborts; never carries a secret value
            logging.getLogger("mlplatform.secrets").critical("cannot start with secrets from Vault: %s", exc)
            raise
    raise ValueError(f"unknown secrets backend {kind!r}; expected 'env' or 'vault'")
