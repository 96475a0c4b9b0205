"""Request and response bodies of Feast's feature-server API (``feast serve``), as the pinned Feast
(``feast/feature_server.py``) declares them.

Field names, defaults and types follow Feast's own pydantic models, and unknown fields are ignored as
Feast ignores them, so a body written for ``feast serve`` (or sent by the Feast SDK's remote online
store) validates here unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FeastGetOnlineFeaturesRequest(BaseModel):
    """``POST /get-online-features``: columnar entity rows plus a feature service or feature list."""

    model_config = ConfigDict(extra="ignore")

    entities: dict[str, list[Any]] = Field(
        ...,
        description="Columns of entity rows: join key (user_id, merchant_id) or request-time field "
        "(amount) -> one value per row; every column the same length.",
    )
    feature_service: str | None = Field(
        None, description="Feature service to read (wins over `features` when both are given, as in Feast)."
    )
    features: list[str] = Field(
        default_factory=list, description="Feature references 'feature_view:feature'."
    )
    full_feature_names: bool = Field(False, description="Name features 'feature_view__feature'.")
    include_feature_view_version_metadata: bool = Field(
        False, description="Add metadata.feature_view_metadata (the feature views read)."
    )


class FeastFeatureViewMetadata(BaseModel):
    name: str = ""
    version: int = 0


class FeastResponseMetadata(BaseModel):
    feature_names: list[str] = Field(
        ..., description="Name of each entry of `results`: the request's join keys, then the features."
    )
    feature_view_metadata: list[FeastFeatureViewMetadata] | None = None


class FeastFeatureVector(BaseModel):
    """One requested name: its value for every entity row, with Feast's field status and event time."""

    values: list[Any]
    statuses: list[str] = Field(..., description="PRESENT, NOT_FOUND or NULL_VALUE per row.")
    event_timestamps: list[str] = Field(..., description="RFC 3339 event time per row (epoch 0 if none).")


class FeastGetOnlineFeaturesResponse(BaseModel):
    """Feast's ``GetOnlineFeaturesResponse`` in JSON (``results`` are columns, one per name)."""

    metadata: FeastResponseMetadata
    results: list[FeastFeatureVector]


class FeastPushRequest(BaseModel):
    """``POST /push``: columnar rows for a push source (join key, event_timestamp, features)."""

    model_config = ConfigDict(extra="ignore")

    push_source_name: str = Field(..., description="Push source, e.g. user_activity_push.")
    df: dict[str, list[Any]] = Field(..., description="Columns of the rows to write: column -> values.")
    allow_registry_cache: bool = Field(True, description="Accepted for compatibility (registry is cached).")
    to: str = Field("online", description="online, offline or online_and_offline.")
    transform_on_write: bool = Field(True, description="Accepted for compatibility (no write transforms).")


class FeastMaterializeRequest(BaseModel):
    """``POST /materialize``: load ``[start_ts, end_ts]`` from the offline into the online store."""

    model_config = ConfigDict(extra="ignore")

    start_ts: str | None = Field(None, description="Start of the range (ISO 8601 or any dateutil format).")
    end_ts: str | None = Field(None, description="End of the range.")
    feature_views: list[str] | None = Field(None, description="Only these feature views (default: all).")
    disable_event_timestamp: bool = Field(False, description="Not supported (422 when true).")
    full_feature_names: bool = Field(False, description="Accepted for compatibility.")
    version: str | None = Field(None, description="Feature view versions are not supported (422 when set).")


class FeastMaterializeIncrementalRequest(BaseModel):
    """``POST /materialize-incremental``: from each view's last materialised end up to ``end_ts``."""

    model_config = ConfigDict(extra="ignore")

    end_ts: str = Field(..., description="Materialise values up to this time.")
    feature_views: list[str] | None = Field(None, description="Only these feature views (default: all).")
    full_feature_names: bool = Field(False, description="Accepted for compatibility.")
    version: str | None = Field(None, description="Feature view versions are not supported (422 when set).")


class FeastWriteToOnlineStoreRequest(BaseModel):
    """``POST /write-to-online-store``: columnar rows for one feature view (what the Feast SDK's remote
    online store sends for ``FeatureStore.push``/``write_to_online_store``/``materialize``)."""

    model_config = ConfigDict(extra="ignore")

    feature_view_name: str = Field(..., description="Feature view to write, e.g. user_activity_7d.")
    df: dict[str, list[Any]] = Field(
        ..., description="Columns: join key, features, event_timestamp (and optionally created)."
    )
    allow_registry_cache: bool = Field(True, description="Accepted for compatibility (registry is cached).")
    transform_on_write: bool = Field(True, description="Accepted for compatibility (no write transforms).")
