"""MLflow credentials through the secrets interface, rotated without a restart.

MLflow's client and :class:`mlplatform.core.registry.RestRegistryClient` authenticate to a tracking
server with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic) or
``MLFLOW_TRACKING_TOKEN`` (bearer), read from the process environment at every request. With the
env secrets backend those variables are the secrets themselves. With a backend that rotates (Vault:
the keys of the service's own KV secret ``mlplatform/<env>/<service>``),
:func:`follow_mlflow_credentials` copies the ones the backend holds into the process environment at
start-up and again whenever a re-read changes them, so the next registry call (an alias poll, a
model reload, a reference download) and every child process started from then on use the new
value. A credential removed from Vault is refused (one log line, the rejected-secret metric) and the
current one stays in use. Values are never logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

from mlplatform.core.secrets import SecretsBackend, report_rejected

log = logging.getLogger("mlplatform.secrets")

#: The secret names, the same as MLflow's environment variables.
MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def follow_mlflow_credentials(
    backend: SecretsBackend, environ: MutableMapping[str, str] | None = None
) -> tuple[str, ...]:
    """Serve the backend's MLflow credentials through ``environ`` (default: the process environment)
    and follow their rotation. Returns the names taken from the backend now (empty for a backend
    without rotation notifications, such as the env backend, whose values already are the variables).
    """
    add_listener = getattr(backend, "add_listener", None)
    if not callable(add_listener):
        return ()
    env = os.environ if environ is None else environ
    taken = _apply(backend, env, MLFLOW_CREDENTIALS, startup=True)
    if taken:
        log.info("MLflow credentials from the secrets backend: %s", ", ".join(taken))

    def on_change(changed: frozenset[str]) -> None:
        names = tuple(n for n in MLFLOW_CREDENTIALS if n in changed)
        if names and _apply(backend, env, names, startup=False):
            log.info("rotated secret %s applied", ", ".join(names))

    add_listener(on_change)
    return taken


def _apply(
    backend: SecretsBackend, env: MutableMapping[str, str], names: tuple[str, ...], *, startup: bool
) -> tuple[str, ...]:
    """Copy ``names`` from the backend into ``env`` as one update; returns the names set."""
    values = {name: backend.get(name) for name in names}
    if not startup:
        removed = [name for name, value in values.items() if value is None and env.get(name)]
        for name in removed:
            log.error(
                "rotated secret %s refused, keeping the current value: it was removed from the secrets "
                "backend (write the new credential instead)",
                name,
            )
            report_rejected(backend, name)
    present = {name: value for name, value in values.items() if value is not None}
    env.update(present)  # username and password in one update
    return tuple(present)
