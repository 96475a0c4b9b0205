"""HashiCorp Vault secrets backend (Kubernetes auth + KV version 2), built on hvac.

The backend logs in with the pod's service-account token (``POST /v1/auth/<auth_path>/login``),
reads one or more KV v2 secrets (``GET /v1/<kv_mount>/data/<path>``) and serves their keys as
secret names: a KV secret ``mlplatform/model-serving`` holding ``{"REDIS_PASSWORD": "..."}`` makes
``get("REDIS_PASSWORD")`` return that value.

A background thread (or a caller driving :meth:`VaultSecretsBackend.tick` with an injected clock)

* renews the Vault token before its lease runs out (``POST /v1/auth/token/renew-self``) and logs in
  again when it cannot be renewed (not renewable, max TTL reached, revoked);
* re-reads the secrets on a schedule; when a value changed (a rotated Redis password, API keys,
  MLflow credentials) the new value is served at once and every registered listener is told the
  *names* that changed, so :class:`mlplatform.core.auth.ApiKeyAuth` reloads its keyring without a
  restart. A failed re-read keeps the last good values.

Start-up is fail-fast: an unreachable or sealed Vault, a wrong role or a missing secret raises
:class:`VaultStartupError` with a message naming the address, role and path involved. Secret values
are never logged, nor put in exception messages.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("mlplatform.vault")

DEFAULT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"

Listener = Callable[[frozenset[str]], None]


def default_secret_path(env: Mapping[str, str]) -> str | None:
    """``mlplatform/<MLPLATFORM_ENV>/<OTEL_SERVICE_NAME>`` (the layout scripts/vault-bootstrap.sh
    writes) when both are set, as the charts set them; else None."""
    environment, service = env.get("MLPLATFORM_ENV"), env.get("OTEL_SERVICE_NAME")
    if environment and service:
        return f"mlplatform/{environment}/{service}"
    return None


class VaultStartupError(RuntimeError):
    """Vault could not be used at start-up (unreachable, sealed, wrong role, missing secret)."""


@dataclass(frozen=True)
class VaultConfig:
    """Where Vault is and how this service authenticates to it (see :meth:`from_env`)."""

    addr: str
    role: str
    secret_paths: tuple[str, ...]
    auth_path: str = "kubernetes"
    kv_mount: str = "secret"
    token_path: Path = Path(DEFAULT_TOKEN_PATH)
    refresh_interval_s: float = 60.0
    renew_fraction: float = 2 / 3
    renew_increment_s: int | None = None
    timeout_s: float = 5.0
    verify: bool | str = True
    namespace: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VaultConfig:
        """Read ``VAULT_*`` variables; raise :class:`VaultStartupError` naming a missing one."""
        env = environ if environ is not None else os.environ
        secret_path = env.get("VAULT_SECRET_PATH") or default_secret_path(env)
        missing = [name for name in ("VAULT_ADDR", "VAULT_ROLE") if not env.get(name)]
        if not secret_path:
            missing.append("VAULT_SECRET_PATH")
        if missing:
            raise VaultStartupError(
                f"secrets_backend is 'vault' but {', '.join(missing)} is not set; set VAULT_ADDR "
                "(e.g. https://vault.vault:8200), VAULT_ROLE (the Kubernetes auth role of this service) "
                "and VAULT_SECRET_PATH (e.g. mlplatform/prod/model-serving)"
            )
        paths = tuple(p.strip().strip("/") for p in secret_path.split(",") if p.strip())
        verify: bool | str = True
        if env.get("VAULT_CACERT"):
            verify = env["VAULT_CACERT"]
        elif env.get("VAULT_SKIP_VERIFY", "").lower() in ("1", "true", "yes"):
            verify = False
        try:
            refresh = float(env.get("VAULT_REFRESH_INTERVAL_S", "60"))
            timeout = float(env.get("VAULT_TIMEOUT_S", "5"))
        except ValueError as exc:
            raise VaultStartupError(
                f"VAULT_REFRESH_INTERVAL_S / VAULT_TIMEOUT_S must be numbers: {exc}"
            ) from None
        if refresh <= 0 or timeout <= 0:
            raise VaultStartupError("VAULT_REFRESH_INTERVAL_S and VAULT_TIMEOUT_S must be positive")
        return cls(
            addr=env["VAULT_ADDR"].rstrip("/"),
            role=env["VAULT_ROLE"],
            secret_paths=paths,
            auth_path=env.get("VAULT_AUTH_PATH", "kubernetes").strip("/") or "kubernetes",
            kv_mount=env.get("VAULT_KV_MOUNT", "secret").strip("/") or "secret",
            token_path=Path(env.get("VAULT_SA_TOKEN_PATH", DEFAULT_TOKEN_PATH)),
            refresh_interval_s=refresh,
            timeout_s=timeout,
            verify=verify,
            namespace=env.get("VAULT_NAMESPACE") or None,
        )


@dataclass
class _Token:
    obtained_at: float
    lease_s: float
    renewable: bool

    def expires_at(self) -> float:
        return self.obtained_at + self.lease_s

    def renew_at(self, fraction: float) -> float:
        return self.obtained_at + self.lease_s * fraction


@dataclass
class VaultStats:
    """Counters for observability and tests (no secret values)."""

    logins: int = 0
    renewals: int = 0
    reads: int = 0
    read_failures: int = 0
    login_failures: int = 0
    rotations: int = 0
    #: secret name -> how many rotated values its consumer refused (malformed), keeping the old one
    rejected: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    #: Unix time of the last successful read of every secret path (0 before the first).
    last_success_unix: float = 0.0


def _vault_reason(exc: BaseException) -> str:
    """A client-safe description of a Vault/transport failure (Vault's own ``errors`` list)."""
    if isinstance(exc, VaultStartupError):
        return str(exc)
    if isinstance(exc, hvac.exceptions.VaultError):
        errors = getattr(exc, "errors", None) or []
        text = "; ".join(str(e) for e in errors) if errors else str(exc).split(", on ")[0]
        return f"{type(exc).__name__}: {text}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection refused or host unreachable"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    return type(exc).__name__


class VaultSecretsBackend:
    """``SecretsBackend`` reading KV v2 secrets from Vault with Kubernetes auth, renewal and rotation.

    ``clock`` is a monotonic-seconds function (injectable for tests); ``start_thread=False`` leaves
    scheduling to the caller, who calls :meth:`tick`.
    """

    def __init__(
        self,
        config: VaultConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        start_thread: bool = True,
        tick_interval_s: float = 1.0,
    ) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.RLock()
        self._values: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._token: _Token | None = None
        self._login_lease = 0.0
        self._next_refresh = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = VaultStats()
        self._client = hvac.Client(
            url=config.addr, timeout=config.timeout_s, verify=config.verify, namespace=config.namespace
        )
        self._startup()
        if start_thread:
            self._thread = threading.Thread(
                target=self._run, args=(tick_interval_s,), name="vault-refresh", daemon=True
            )
            self._thread.start()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> VaultSecretsBackend:
        """Build from ``VAULT_ADDR``, ``VAULT_ROLE``, ``VAULT_SECRET_PATH``, ``VAULT_AUTH_PATH``,
        ``VAULT_KV_MOUNT`` and the service-account token file; fail fast with a clear message."""
        return cls(VaultConfig.from_env(environ), **kwargs)

    # -- SecretsBackend -------------------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """The secret's current value (from the last successful read), or None."""
        with self._lock:
            value = self._values.get(name)
        return value if value not in (None, "") else None

    def close(self) -> None:
        """Stop the refresh thread (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.config.timeout_s + 2)
        self._thread = None
        try:
            self._client.adapter.close()
        except Exception:  # pragma: no cover - closing a requests session does not fail in practice
            pass

    # -- rotation hooks -------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(changed_names)`` after a re-read changed any value (names only)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- scheduling -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Renew or re-acquire the token when due, and re-read the secrets when due.

        Failures are logged (without values) and retried on a later tick; the last good values
        stay in place.
        """
        now = self._clock()
        try:
            self._ensure_token(now)
        except Exception as exc:
            with self._lock:
                self.stats.login_failures += 1
            log.warning("vault token renewal/login failed, keeping last values: %s", _vault_reason(exc))
            return
        if now >= self._next_refresh:
            try:
                self.refresh()
            except Exception as exc:
                with self._lock:
                    self.stats.read_failures += 1
                    self._next_refresh = now + min(self.config.refresh_interval_s, 10.0)
                    if isinstance(exc, hvac.exceptions.Forbidden):
                        # the token may have been revoked (or Vault's token store lost): log in again
                        self._token = None
                log.warning("vault secret re-read failed, keeping last values: %s", _vault_reason(exc))

    def refresh(self) -> frozenset[str]:
        """Re-read every secret path now; returns the names whose value changed."""
        values: dict[str, str] = {}
        versions: dict[str, int] = {}
        for path in self.config.secret_paths:
            data, version = self._read(path)
            values.update(data)
            versions[path] = version
        with self._lock:
            old = self._values
            changed = frozenset(name for name in set(old) | set(values) if old.get(name) != values.get(name))
            self._values = values
            self.stats.reads += 1
            self.stats.versions = versions
            self.stats.last_success_unix = time.time()
            self._next_refresh = self._clock() + self.config.refresh_interval_s
            rotated = bool(changed and old)
            listeners = list(self._listeners) if rotated else []
            if rotated:
                self.stats.rotations += 1
        if rotated:
            log.info(
                "vault secrets rotated: %s (versions %s)",
                ", ".join(sorted(changed)),
                ", ".join(f"{p}=v{v}" for p, v in versions.items()),
            )
        for listener in listeners:
            try:
                listener(changed)
            except Exception:
                log.exception("secret rotation listener failed")
        return changed

    def report_rejected(self, name: str) -> None:
        """A consumer refused the current value of ``name`` (malformed) and kept the previous one."""
        with self._lock:
            self.stats.rejected[name] = self.stats.rejected.get(name, 0) + 1

    def metrics_collector(self) -> VaultMetrics:
        """A Prometheus collector of this backend's counters (register it on the app's registry)."""
        return VaultMetrics(self)

    def token_expires_in(self) -> float | None:
        """Seconds until the current token's lease ends (None before login)."""
        token = self._token
        return None if token is None else token.expires_at() - self._clock()

    # -- internals ------------------------------------------------------------------------------

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.tick()

    def _startup(self) -> None:
        cfg = self.config
        where = f"Vault at {cfg.addr} (auth path {cfg.auth_path!r}, role {cfg.role!r})"
        try:
            self._login()
        except VaultStartupError:
            raise
        except hvac.exceptions.VaultDown as exc:
            raise VaultStartupError(f"{where} is sealed or unavailable: {_vault_reason(exc)}") from None
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
            raise VaultStartupError(
                f"{where} rejected the login: {_vault_reason(exc)}; check that the role exists and is "
                "bound to this pod's service account and namespace"
            ) from None
        except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as exc:
            raise VaultStartupError(f"{where} is unreachable: {_vault_reason(exc)}") from None
        for path in cfg.secret_paths:
            if not path:
                raise VaultStartupError("VAULT_SECRET_PATH holds an empty path")
        try:
            self.refresh()
        except hvac.exceptions.Forbidden as exc:
            raise VaultStartupError(
                f"role {cfg.role!r} may not read {cfg.kv_mount}/data/{{{','.join(cfg.secret_paths)}}} "
                f"at {cfg.addr}: {_vault_reason(exc)}; check the role's policies"
            ) from None
        except hvac.exceptions.InvalidPath:
            raise VaultStartupError(
                f"no KV v2 secret at {cfg.kv_mount}/data/{{{','.join(cfg.secret_paths)}}} in {cfg.addr}; "
                "write it first (scripts/vault-bootstrap.sh) or fix VAULT_SECRET_PATH / VAULT_KV_MOUNT"
            ) from None
        except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as exc:
            raise VaultStartupError(f"reading secrets from {cfg.addr} failed: {_vault_reason(exc)}") from None
        log.info(
            "vault secrets loaded: %d names from %s (role %s)",
            len(self._values),
            ", ".join(f"{cfg.kv_mount}/{p}" for p in cfg.secret_paths),
            cfg.role,
        )

    def _read_jwt(self) -> str:
        path = self.config.token_path
        try:
            jwt = path.read_text().strip()
        except OSError as exc:
            raise VaultStartupError(
                f"cannot read the Kubernetes service-account token at {path}: {exc.strerror}; "
                "is automountServiceAccountToken enabled (or a projected token mounted there)?"
            ) from None
        if not jwt:
            raise VaultStartupError(f"the service-account token file {path} is empty")
        return jwt

    def _login(self) -> None:
        cfg = self.config
        jwt = self._read_jwt()
        started = self._clock()
        resp = self._client.auth.kubernetes.login(role=cfg.role, jwt=jwt, mount_point=cfg.auth_path)
        auth = resp["auth"]
        lease = float(auth.get("lease_duration") or 0)
        renewable = bool(auth.get("renewable"))
        # lookup-self is authoritative for the TTL actually granted (it also proves the token works).
        info = self._client.auth.token.lookup_self()["data"]
        ttl = info.get("ttl")
        if ttl is not None:
            lease = float(ttl)
            renewable = bool(info.get("renewable", renewable))
        with self._lock:
            self._token = _Token(started, lease, renewable)
            self._login_lease = lease
            self.stats.logins += 1
        log.info("vault login ok (role %s, lease %.0fs, renewable %s)", cfg.role, lease, renewable)

    def _ensure_token(self, now: float) -> None:
        token = self._token
        if token is None:
            self._login()
            return
        if token.lease_s <= 0:  # a non-expiring token (root/periodic with ttl 0): nothing to renew
            return
        if now < token.renew_at(self.config.renew_fraction):
            return
        if token.renewable and now < token.expires_at():
            try:
                increment = self.config.renew_increment_s
                resp = self._client.auth.token.renew_self(increment=f"{increment}s" if increment else None)
                auth = resp["auth"]
                new_lease = float(auth.get("lease_duration") or 0)
                # A renewal capped by the max TTL to less than half a login's lease: log in again now,
                # rather than renew ever shorter leases up to the cap (Vault rounds them up to whole
                # seconds, so the last one can end between two ticks).
                if new_lease >= self._login_lease / 2:
                    with self._lock:
                        self._token = _Token(now, new_lease, bool(auth.get("renewable")))
                        self.stats.renewals += 1
                    log.info("vault token renewed (lease %.0fs)", new_lease)
                    return
                log.info("vault token near its max TTL (%.0fs left); logging in again", new_lease)
            except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as exc:
                log.warning("vault token renewal failed (%s); logging in again", _vault_reason(exc))
        self._login()

    def _read(self, path: str) -> tuple[dict[str, str], int]:
        resp = self._client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=self.config.kv_mount, raise_on_deleted_version=True
        )
        body = resp["data"]
        data = body.get("data") or {}
        version = int((body.get("metadata") or {}).get("version") or 0)
        return {str(k): "" if v is None else str(v) for k, v in data.items()}, version


class VaultMetrics(Collector):
    """The Vault backend's state at scrape time: when the secrets were last read successfully (the
    staleness the VaultSecretsStale alert watches), failures, rotations, logins and renewals."""

    def __init__(self, backend: VaultSecretsBackend) -> None:
        self._backend = backend

    def collect(self) -> Iterator[Metric]:
        backend = self._backend
        with backend._lock:
            s = dataclasses.replace(backend.stats, rejected=dict(backend.stats.rejected))
        yield GaugeMetricFamily(
            "mlplatform_secrets_last_refresh_timestamp_seconds",
            "Unix time of the last successful read of this service's secrets from Vault.",
            value=s.last_success_unix,
        )
        yield GaugeMetricFamily(
            "mlplatform_secrets_refresh_interval_seconds",
            "How often the secrets are re-read from Vault (VAULT_REFRESH_INTERVAL_S).",
            value=backend.config.refresh_interval_s,
        )
        failures = CounterMetricFamily(
            "mlplatform_secrets_refresh_failures",
            "Failed Vault operations; the last good secrets stay in use (stage: read or login).",
            labels=["stage"],
        )
        failures.add_metric(["read"], s.read_failures)
        failures.add_metric(["login"], s.login_failures)
        yield failures
        yield CounterMetricFamily(
            "mlplatform_secrets_rotations", "Re-reads that found a changed secret value.", value=s.rotations
        )
        rejected = CounterMetricFamily(
            "mlplatform_secrets_rejected",
            "Rotated secret values their consumer refused (malformed); the previous value stays in use.",
            labels=["secret"],
        )
        for name, count in sorted(s.rejected.items()):
            rejected.add_metric([name], count)
        yield rejected
        yield CounterMetricFamily(
            "mlplatform_vault_logins", "Kubernetes-auth logins to Vault.", value=s.logins
        )
        yield CounterMetricFamily(
            "mlplatform_vault_token_renewals", "Vault token renewals (renew-self).", value=s.renewals
        )
