"""Feature enrichment: an entity-keyed V2 request becomes model rows with features from the store.

Serving and explainability both use :class:`FeatureEnricher`: a request that sends a model's entity
keys (and its request-time fields) instead of every model input gets the remaining inputs from the
feature store's online read of the model's feature service; request fields win over stored values.

The entity keys are the model's feature service's, not a protocol constant: a model version records
them in the tag ``mlplatform.entity_keys`` (comma-separated); a version without that tag takes the keys
the feature contract (:mod:`mlplatform.features.contract`) gives its feature service. A model with no
feature service is not fed from the store: a request naming the contract's entity keys gets a 422
saying so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlplatform.core.errors import InvalidInput, PlatformError, Unavailable
from mlplatform.core.registry import TAG_FEATURE_SERVICE
from mlplatform.features.repo import FEATURE_SERVICE
from mlplatform.v2.codec import ParsedRequest, entity_rows
from mlplatform.v2.schema import InputSchema

log = logging.getLogger("mlplatform.features.enrich")

#: Model version tag naming the entity keys of its feature service (comma-separated).
TAG_ENTITY_KEYS = "mlplatform.entity_keys"


@functools.cache
def contract_entity_keys() -> dict[str, tuple[str, ...]]:
    """Entity keys of each feature service the feature contract defines (imported on first use: the
    contract's pandas code stays out of a serving process that never needs it)."""
    from mlplatform.features import contract

    return {FEATURE_SERVICE: contract.ENTITY_KEYS}


def entity_keys_from_tags(tags: Mapping[str, str]) -> tuple[str, ...]:
    """The entity keys of a model version from its registry tags (see the module docstring)."""
    raw = tags.get(TAG_ENTITY_KEYS)
    if raw:
        return tuple(k.strip() for k in raw.split(",") if k.strip())
    service = tags.get(TAG_FEATURE_SERVICE)
    return contract_entity_keys().get(service, ()) if service else ()


def request_keys(feature_service: str | None, entity_keys: Sequence[str]) -> tuple[str, ...]:
    """The input names that make a request entity-keyed for a model: its feature service's keys, or
    (no feature service) the contract's, so such a request gets a clear 422 instead of "not an input"."""
    if feature_service:
        return tuple(entity_keys)
    return tuple(dict.fromkeys(k for keys in contract_entity_keys().values() for k in keys))


class FeatureEnricher:
    """Entity rows -> model rows via a feature-store client, with a deadline and one error mapping.

    ``url_setting`` names the setting that configures the store (quoted when it is unset);
    ``action`` is what the service does with the rows ("inference", "explanation"). With
    ``fallback_defaults`` a store failure predicts with the model's default values instead of 503.
    ``on_failure(model_name, reason)`` counts failures (reason: timeout, unavailable, error,
    bad_response).
    """

    def __init__(
        self,
        client: Any | None,
        *,
        deadline_s: float,
        url_setting: str,
        action: str,
        fallback_defaults: bool = False,
        on_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        self.client = client
        self.deadline_s = deadline_s
        self.url_setting = url_setting
        self.action = action
        self.fallback_defaults = fallback_defaults
        self.on_failure = on_failure

    async def rows(
        self,
        req: ParsedRequest,
        schema: InputSchema,
        *,
        name: str,
        label: str,
        feature_service: str | None,
        keys: Sequence[str],
        defaults: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The request's rows with the model's stored features merged in (request fields win). ``keys``:
        the model's :func:`request_keys`, computed once per loaded model version."""
        named = "/".join(f"'{k}'" for k in keys)
        if self.client is None:
            raise InvalidInput(
                f"inputs {named}: entity-based {self.action} needs {self.url_setting}; "
                f"send the model inputs instead ({', '.join(schema.names)})"
            )
        if not feature_service:
            raise InvalidInput(
                f"inputs {named}: model {label} has no feature service tag, so it cannot be fed from the "
                "feature store; send its inputs"
            )
        rows = entity_rows(req, keys)
        try:
            fetched = await asyncio.wait_for(
                self.client.get_online_features(feature_service, rows), self.deadline_s
            )
        except TimeoutError as exc:
            return self._failed(name, label, rows, "timeout", exc, defaults)
        except PlatformError as exc:
            if exc.status_code < 500:
                raise
            return self._failed(name, label, rows, "unavailable", exc, defaults)
        except Exception as exc:  # noqa: BLE001 - transport errors of the client
            return self._failed(name, label, rows, "error", exc, defaults)
        if len(fetched) != len(rows):
            error = RuntimeError(f"{len(fetched)} rows for {len(rows)}")
            return self._failed(name, label, rows, "bad_response", error, defaults)
        return [{**(feats or {}), **row} for row, feats in zip(rows, fetched, strict=True)]

    def _failed(
        self,
        name: str,
        label: str,
        rows: list[dict[str, Any]],
        reason: str,
        exc: BaseException,
        defaults: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        if self.on_failure is not None:
            self.on_failure(name, reason)
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if not self.fallback_defaults or defaults is None:
            log.warning("feature store %s for %s: %s", reason, name, detail)
            raise Unavailable(
                f"feature store unavailable ({reason}): cannot fetch features for model {label}"
            )
        log.warning(
            "feature store %s for %s: %s; predicting with default feature values", reason, name, detail
        )
        return [{**defaults, **row} for row in rows]
