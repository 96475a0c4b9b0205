"""Turn a V2 request into the model's feature matrix, validating exactly like serving.

Parsing and validation are the V2 codec's (:mod:`mlplatform.v2.codec`), as in serving: the same checks, the
same 400/422 messages. A request carries either every model input (one tensor per column, or one
2-D tensor in column order), or the entity keys ``user_id`` and ``merchant_id`` plus request-time
fields, in which case the other features come from the feature store's online read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from mlplatform.core.errors import InvalidInput, PlatformError, Unavailable
from mlplatform.v2.codec import ParsedRequest, assemble_frame, entity_rows, frame_from_rows, is_entity_request
from mlplatform.v2.schema import InputSchema


async def feature_matrix(
    req: ParsedRequest,
    schema: InputSchema,
    *,
    label: str,
    feature_service: str | None,
    feature_client: Any | None,
    timeout_s: float,
) -> np.ndarray:
    """The (rows, features) float64 matrix of a parsed request, fetching features for entity requests."""
    if is_entity_request(req, schema):
        rows = entity_rows(req)
        fetched = await _fetch(rows, label, feature_service, feature_client, timeout_s, schema)
        merged = [{**(feats or {}), **row} for row, feats in zip(rows, fetched, strict=True)]
        frame = frame_from_rows(merged, schema)
    else:
        frame = assemble_frame(req, schema)
    if frame.matrix is None:  # string columns: rejected when the explainer is built
        raise InvalidInput(f"model {label} has non-numeric inputs, which cannot be explained")
    return np.ascontiguousarray(frame.matrix, dtype=np.float64)


async def _fetch(
    rows: list[dict[str, Any]],
    label: str,
    feature_service: str | None,
    client: Any | None,
    timeout_s: float,
    schema: InputSchema,
) -> list[dict[str, Any]]:
    if client is None:
        raise InvalidInput(
            "inputs 'user_id'/'merchant_id': entity-based explanation needs EXPLAIN_FEATURE_STORE_URL; "
            f"send the model inputs instead ({', '.join(schema.names)})"
        )
    if not feature_service:
        raise InvalidInput(
            f"inputs 'user_id'/'merchant_id': model {label} has no feature service tag, so it cannot be "
            "fed from the feature store; send its inputs"
        )
    try:
        fetched = await asyncio.wait_for(client.get_online_features(feature_service, rows), timeout_s)
    except TimeoutError:
        raise Unavailable(
            f"feature store unavailable (timeout): cannot fetch features for model {label}"
        ) from None
    except PlatformError as exc:
        if exc.status_code < 500:
            raise
        raise Unavailable(
            f"feature store unavailable ({exc.message}): cannot fetch features for model {label}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - transport errors of the client
        raise Unavailable(
            f"feature store unavailable ({type(exc).__name__}): cannot fetch features for model {label}"
        ) from None
    if len(fetched) != len(rows):
        raise Unavailable(
            f"feature store returned {len(fetched)} rows for {len(rows)}: cannot explain model {label}"
        )
    return fetched
