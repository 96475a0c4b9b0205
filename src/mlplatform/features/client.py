"""Client of the feature-store service (serving and explainability use it).

A service that reads online features mixes :class:`FeatureStoreClientSettings` into its settings and
builds its one client with :func:`build_feature_client`.

``FeatureStoreClient(base_url, *, timeout_s, retries, registry, api_key=None)`` posts to
``POST /v1/features/online`` over a pooled ``httpx`` client (``core.http``) with bounded retries.
When the store cannot be reached, times out, or answers 5xx, it raises
:class:`FeatureStoreUnavailable` (HTTP 503 naming the feature store); a 4xx answer is passed
on with the feature store's status and message.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from mlplatform.core.errors import PlatformError
from mlplatform.core.http import backoff_bound_s, build_async_client, request_with_retries
from mlplatform.core.metrics import LABEL_OUTCOME
from mlplatform.core.secrets import SecretsBackend, follow_secret
from mlplatform.features.metrics import FAST_BUCKETS

ONLINE_PATH = "/v1/features/online"


class FeatureStoreUnavailable(PlatformError):
    """The feature store could not be reached or failed (503)."""

    status_code = 503


def _collector(registry: CollectorRegistry, name: str, factory: Any) -> Any:
    """Reuse a collector already on ``registry`` (several clients may share one app registry)."""
    existing = getattr(registry, "_names_to_collectors", {}).get(name)
    return existing if existing is not None else factory()


class FeatureStoreClient:
    """Async client for online features, pooled, with a timeout and bounded retries."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 0.5,
        retries: int = 1,
        registry: CollectorRegistry | None = None,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._client = build_async_client(self.base_url, timeout_s=timeout_s, headers=headers)
        registry = registry or CollectorRegistry()
        self._latency = _collector(
            registry,
            "mlplatform_feature_client_request_duration_seconds",
            lambda: Histogram(
                "mlplatform_feature_client_request_duration_seconds",
                "Latency of online feature requests to the feature store, by outcome.",
                [LABEL_OUTCOME],
                buckets=FAST_BUCKETS,
                registry=registry,
            ),
        )
        self._errors = _collector(
            registry,
            "mlplatform_feature_client_errors",
            lambda: Counter(
                "mlplatform_feature_client_errors_total",
                "Online feature requests that failed (unreachable, timeout, 5xx or rejected).",
                [LABEL_OUTCOME],
                registry=registry,
            ),
        )

    def set_api_key(self, api_key: str | None) -> None:
        """Send ``api_key`` from the next request on (a rotated secret, no restart)."""
        self._client.headers.pop("Authorization", None)
        if api_key:
            self._client.headers["Authorization"] = f"Bearer {api_key}"

    async def get_online_features(
        self, feature_service: str, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Feature name -> value for each row (rows carry ``user_id``, ``merchant_id`` and request fields)."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                response = await request_with_retries(
                    self._client,
                    "POST",
                    ONLINE_PATH,
                    retries=self.retries,
                    json={"feature_service": feature_service, "rows": rows},
                )
            except httpx.HTTPError as exc:
                outcome = "unavailable"
                raise FeatureStoreUnavailable(
                    f"feature store at {self.base_url} is unavailable: {type(exc).__name__}"
                ) from exc
            if response.status_code >= 500:
                outcome = "unavailable"
                raise FeatureStoreUnavailable(
                    f"feature store at {self.base_url} is unavailable: HTTP {response.status_code}"
                )
            if response.status_code in (401, 403):
                outcome = "rejected"
                raise FeatureStoreUnavailable(
                    f"feature store at {self.base_url} rejected this service's API key (HTTP {response.status_code})"
                )
            try:
                body = response.json()
            except ValueError as exc:
                outcome = "unavailable"
                raise FeatureStoreUnavailable(
                    f"feature store at {self.base_url} sent a non-JSON answer"
                ) from exc
            if response.status_code >= 400:
                outcome = "rejected"
                message = body.get("error") if isinstance(body, dict) else None
                raise PlatformError(
                    f"feature store: {message or 'request rejected'}", status_code=response.status_code
                )
            result = body.get("rows") if isinstance(body, dict) else None
            if not isinstance(result, list) or len(result) != len(rows):
                outcome = "unavailable"
                raise FeatureStoreUnavailable(f"feature store at {self.base_url} sent a malformed answer")
            return result
        finally:
            self._latency.labels(outcome).observe(time.perf_counter() - started)
            if outcome != "ok":
                self._errors.labels(outcome).inc()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()


class FeatureStoreClientSettings(BaseSettings):
    """Settings of a service that reads online features (mixed into serving's and explainability's
    settings; every name takes the service's env prefix)."""

    feature_store_url: str | None = Field(
        None,
        description=(
            "Feature-store base URL for entity-based requests (the model's entity keys, e.g. "
            "user_id/merchant_id, plus request-time fields instead of every input). Entity requests get "
            "422 when unset."
        ),
    )
    feature_store_timeout_s: float = Field(
        0.5, gt=0, description="Timeout of one online-feature request attempt, in seconds."
    )
    feature_store_retries: int = Field(
        1, ge=0, le=5, description="Retries of a failed online-feature request."
    )
    feature_deadline_s: float | None = Field(
        None,
        gt=0,
        description=(
            "Total time allowed for the feature lookup of one request, retries included. Default: every "
            "attempt's timeout plus the retry back-off."
        ),
    )
    feature_store_api_key_secret: str = Field(
        "",
        description=(
            "Name of the secret holding the API key (features:read scope) sent to the feature store. "
            "Default: <PREFIX>FEATURE_STORE_API_KEY (SERVING_FEATURE_STORE_API_KEY, ...)."
        ),
    )

    @model_validator(mode="after")
    def _default_secret_name(self) -> FeatureStoreClientSettings:
        if not self.feature_store_api_key_secret:
            prefix = self.model_config.get("env_prefix", "")
            self.feature_store_api_key_secret = f"{prefix}FEATURE_STORE_API_KEY"
        return self

    @property
    def feature_store_url_setting(self) -> str:
        """The environment variable that sets :attr:`feature_store_url` (named in 422 answers)."""
        return f"{self.model_config.get('env_prefix', '')}FEATURE_STORE_URL"

    def resolved_feature_deadline_s(self) -> float:
        """:attr:`feature_deadline_s`, or every attempt's timeout plus the client's retry back-off."""
        if self.feature_deadline_s is not None:
            return self.feature_deadline_s
        retries = self.feature_store_retries
        return self.feature_store_timeout_s * (retries + 1) + backoff_bound_s(retries) + 0.25


def build_feature_client(
    settings: FeatureStoreClientSettings, secrets: SecretsBackend, registry: CollectorRegistry
) -> FeatureStoreClient | None:
    """The service's feature-store client (None when no URL is set); it follows the API key secret."""
    if not settings.feature_store_url:
        return None
    secret = settings.feature_store_api_key_secret
    client = FeatureStoreClient(
        settings.feature_store_url,
        timeout_s=settings.feature_store_timeout_s,
        retries=settings.feature_store_retries,
        registry=registry,
        api_key=secrets.get(secret),
    )
    follow_secret(secrets, secret, client.set_api_key)
    return client
