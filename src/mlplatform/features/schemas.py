"""Request and response bodies of the feature-store API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class OnlineFeaturesRequest(BaseModel):
    """Entity rows plus either a feature service or a list of ``view:feature`` references."""

    model_config = ConfigDict(extra="forbid")

    feature_service: str | None = Field(None, description="Feature service to read, e.g. fraud_detection_v1.")
    features: list[str] | None = Field(
        None, description="Feature references 'feature_view:feature' (instead of a feature service)."
    )
    rows: list[dict[str, Any]] = Field(
        ..., description="One object per row: entity keys (user_id, merchant_id) and request-time fields."
    )


class MissingEntity(BaseModel):
    """An entity key with no stored value in a feature view (its features are null in that row)."""

    row: int = Field(..., description="Index of the row in the request.")
    feature_view: str = Field(..., description="Feature view with no value for this entity.")
    join_key: str = Field(..., description="Entity join key, e.g. user_id.")
    value: Any = Field(..., description="The entity key value.")


class OnlineFeaturesResponse(BaseModel):
    """Feature values per row (null where the entity has no value), in the order of ``features``."""

    feature_service: str | None = Field(None, description="The feature service read, if one was named.")
    features: list[str] = Field(..., description="Feature names in the order they were resolved.")
    rows: list[dict[str, Any]] = Field(..., description="Feature name -> value for each request row.")
    missing: list[MissingEntity] = Field(..., description="Entity keys with no stored values.")


class PushRequest(BaseModel):
    """Fresh feature values for a push source (every row needs the join key and event_timestamp)."""

    model_config = ConfigDict(extra="forbid")

    push_source: str = Field(..., description="Push source name, e.g. user_activity_push.")
    rows: list[dict[str, Any]] = Field(
        ..., description="Rows with join key, event_timestamp and feature values."
    )
    to: Literal["online", "offline", "online_and_offline"] = Field(
        "online", description="Where the rows go: online store, offline store or both."
    )


class PushResponse(BaseModel):
    push_source: str
    rows: int = Field(..., description="Rows written.")
    feature_views: list[str] = Field(..., description="Feature views fed by the push source.")


class MaterializeRequest(BaseModel):
    """Incremental materialisation up to ``end`` (default: now)."""

    model_config = ConfigDict(extra="forbid")

    end: datetime | None = Field(
        None, description="Materialise values up to this time (ISO 8601). Default now."
    )
    feature_views: list[str] | None = Field(None, description="Only these feature views (default: all).")


class MaterializeResponse(BaseModel):
    end: datetime
    feature_views: list[str]
    rows_written: dict[str, int] = Field(
        ..., description="Rows written to the online store per feature view."
    )
    duration_s: float


class FeatureInfo(BaseModel):
    name: str
    dtype: str


class FeatureViewInfo(BaseModel):
    name: str
    kind: Literal["batch", "on_demand"]
    entities: list[str]
    features: list[FeatureInfo]
    ttl_seconds: float | None = None
    request_fields: list[str] = Field(
        default_factory=list, description="Request-time inputs (on-demand views)."
    )
    materialized_until: datetime | None = None


class FeatureViewList(BaseModel):
    feature_views: list[FeatureViewInfo]


class FeatureServiceInfo(BaseModel):
    name: str
    features: list[str] = Field(..., description="Feature references 'view:feature'.")
    tags: dict[str, str] = Field(default_factory=dict)


class FeatureServiceList(BaseModel):
    feature_services: list[FeatureServiceInfo]
