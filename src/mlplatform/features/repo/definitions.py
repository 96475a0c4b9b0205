"""Feast objects behind the demo models' features (names and columns from ``mlplatform.features.contract``).

* entities ``user`` (``user_id``) and ``merchant`` (``merchant_id``), int64 join keys;
* one feature view per :class:`~mlplatform.features.contract.FeatureGroup` (TTL = the group's),
  sourced from a push source whose batch source is the snapshot table written by training: a parquet
  file (file offline store) or a PostgreSQL table (PostgreSQL offline store), same source names;
* on-demand feature view ``transaction_ratios`` computing ``amount_over_user_mean_7d`` from the
  request field ``amount`` and ``user_mean_amount_7d``;
* feature service ``fraud_detection_v1`` = every model history feature plus the ratio.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
from feast.on_demand_feature_view import OnDemandFeatureView, on_demand_feature_view
from feast.types import Float64, Int64

from mlplatform.features import contract as feat
from mlplatform.features.repo import FEATURE_SERVICE, FEATURE_SERVICE_VERSION

PROJECT = "mlplatform"
ODFV_NAME = "transaction_ratios"
REQUEST_SOURCE = "transaction_request"
USER_SOURCE_FILE = "user_snapshots.parquet"
MERCHANT_SOURCE_FILE = "merchant_snapshots.parquet"
ENTITY_NAMES = {"user_id": "user", "merchant_id": "merchant"}
PUSH_SOURCES = {"user_id": "user_activity_push", "merchant_id": "merchant_activity_push"}


def _dtype(name: str) -> Any:
    return Int64 if name in feat.INT_FEATURES else Float64


def transaction_ratios(inputs: dict[str, Any]) -> dict[str, Any]:
    """ODFV ``transaction_ratios`` (python mode, columns as lists): amount over the user's 7-day mean
    amount, 1.0 when there is no mean (null, NaN or 0)."""
    out = []
    for amount, mean in zip(inputs["amount"], inputs["user_mean_amount_7d"], strict=True):
        out.append(float(amount) / mean if mean is not None and mean == mean and mean > 0 else 1.0)
    return {"amount_over_user_mean_7d": out}


def _fresh_copy(fn: Any) -> Any:
    """A new function object with ``fn``'s code: Feast's ODFV decorator rewrites ``__module__`` of the
    function it is given (to pickle it by value), which would break the next build in this process."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    copy.__qualname__ = fn.__qualname__
    return copy


@dataclass(frozen=True)
class Definitions:
    """Every Feast object of the repository, ready for ``FeatureStore.apply``."""

    entities: list[Entity]
    sources: list[Any]
    feature_views: list[FeatureView]
    on_demand_views: list[OnDemandFeatureView]
    feature_services: list[FeatureService]

    def all(self) -> list[Any]:
        return [
            *self.entities,
            *self.sources,
            *self.feature_views,
            *self.on_demand_views,
            *self.feature_services,
        ]


def _batch_sources(source_dir: Path, offline: str) -> dict[str, Any]:
    """The snapshot batch sources, one per entity key: parquet files or PostgreSQL tables."""
    if offline == "postgres":
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
            PostgreSQLSource,
        )

        from mlplatform.features.database import SOURCE_TABLES

        return {
            key: PostgreSQLSource(name=table, table=table, timestamp_field=feat.TIMESTAMP_COLUMN)
            for key, table in SOURCE_TABLES.items()
        }
    if offline != "file":
        raise ValueError(f"unknown offline store {offline!r}; expected 'file' or 'postgres'")
    source_dir = Path(source_dir).resolve()
    files = {"user_id": USER_SOURCE_FILE, "merchant_id": MERCHANT_SOURCE_FILE}
    return {
        key: FileSource(
            name=Path(name).stem, path=str(source_dir / name), timestamp_field=feat.TIMESTAMP_COLUMN
        )
        for key, name in files.items()
    }


def build_definitions(source_dir: Path, offline: str = "file") -> Definitions:
    """Build the Feast objects. ``offline``: ``file`` (batch sources = parquet under ``source_dir``,
    absolute paths) or ``postgres`` (batch sources = the tables of :mod:`mlplatform.features.database`)."""
    entities = {
        key: Entity(name=name, join_keys=[key], value_type=ValueType.INT64, description=f"{name} ({key})")
        for key, name in ENTITY_NAMES.items()
    }
    batch = _batch_sources(Path(source_dir), offline)
    push = {key: PushSource(name=PUSH_SOURCES[key], batch_source=batch[key]) for key in batch}
    views = [
        FeatureView(
            name=group.name,
            entities=[entities[group.entity]],
            ttl=group.ttl,
            schema=[Field(name=f, dtype=_dtype(f)) for f in group.features],
            source=push[group.entity],
            online=True,
            tags={"mlplatform.entity": group.entity},
        )
        for group in feat.FEATURE_GROUPS
    ]
    by_name = {v.name: v for v in views}
    request = RequestSource(name=REQUEST_SOURCE, schema=[Field(name="amount", dtype=Float64)])
    odfv = on_demand_feature_view(
        sources=[by_name["user_activity_7d"], request],
        schema=[Field(name=feat.ON_DEMAND_FEATURE, dtype=Float64)],
        mode="python",
    )(_fresh_copy(transaction_ratios))
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[*views, odfv],
        tags={"version": FEATURE_SERVICE_VERSION, "model_features": ",".join(feat.MODEL_FEATURES)},
        description="Features of the fraud-detector demo models.",
    )
    return Definitions(
        entities=list(entities.values()),
        sources=[*batch.values(), *push.values(), request],
        feature_views=views,
        on_demand_views=[odfv],
        feature_services=[service],
    )
