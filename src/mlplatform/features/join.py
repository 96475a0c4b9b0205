"""Build model input rows from entity rows, request fields and fetched online features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlplatform.features.contract import (
    FEATURE_DEFAULTS,
    INT_FEATURES,
    ON_DEMAND_FEATURE,
    amount_over_user_mean,
)


def model_rows(
    rows: Sequence[Mapping[str, Any]],
    fetched: Sequence[Mapping[str, Any]],
    feature_names: Sequence[str],
    defaults: Mapping[str, Any] = FEATURE_DEFAULTS,
) -> list[dict[str, Any]]:
    """One dict per row holding every model feature, in ``feature_names`` order.

    A value comes from the request row first (request-time fields), then from the fetched online
    features; a history feature with no stored value (null) takes its training default, so the
    model sees what it saw in training. A missing on-demand ratio is recomputed from ``amount`` and
    ``user_mean_amount_7d``. Raises ``KeyError`` naming a feature found nowhere.
    """
    if len(rows) != len(fetched):
        raise ValueError(f"{len(rows)} request rows but {len(fetched)} fetched rows")
    out = []
    for row, got in zip(rows, fetched, strict=True):
        values: dict[str, Any] = {}
        for name in feature_names:
            if name in row and row[name] is not None:
                value = row[name]
            elif got.get(name) is not None:
                value = got[name]
            elif name in defaults:
                value = defaults[name]
            elif name == ON_DEMAND_FEATURE:
                value = None
            else:
                raise KeyError(f"feature {name!r}: not in the request and not served by the feature store")
            values[name] = int(value) if name in INT_FEATURES and value is not None else value
        if ON_DEMAND_FEATURE in values and values[ON_DEMAND_FEATURE] is None:
            mean = values.get("user_mean_amount_7d", got.get("user_mean_amount_7d"))
            values[ON_DEMAND_FEATURE] = float(
                amount_over_user_mean([float(values["amount"])], [mean or 0.0])[0]
            )
        out.append(values)
    return out
