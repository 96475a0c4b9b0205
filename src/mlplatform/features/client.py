"""Client of the feature-store service (serving and explainability use it).

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

from mlplatform.core.errors import PlatformError
from mlplatform.core.http import build_async_client, request_with_retries
from mlplatform.core.metrics import LABEL_OUTCOME
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
