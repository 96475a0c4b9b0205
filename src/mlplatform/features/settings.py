"""Settings of the feature-store service (env prefix ``FEATURES_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlplatform.core.settings import ServiceSettings
from mlplatform.features.repo import FEATURE_SERVICE


class FeatureSettings(ServiceSettings):
    """Feature-store service settings. The Feast repository lives under ``data_dir/feature_repo``."""

    model_config = SettingsConfigDict(env_prefix="FEATURES_", extra="ignore", populate_by_name=True)

    port: int = Field(8081, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    online_store: Literal["sqlite", "redis"] = Field(
        "sqlite",
        description="Online store: 'sqlite' (embedded file under data_dir) or 'redis' (staging/prod).",
    )
    redis_address: str = Field("localhost:6379", description="Redis 'host:port' when online_store=redis.")
    redis_password_secret: str = Field(
        "FEATURES_REDIS_PASSWORD",
        description="Name of the secret (core secrets backend) holding the Redis password; unset = no password.",
    )
    redis_db: int = Field(0, ge=0, description="Redis database number.")
    redis_ssl: bool = Field(False, description="Connect to Redis over TLS.")
    redis_timeout_s: float = Field(
        0.5,
        gt=0,
        le=30,
        description="Connect and read timeout of each Redis call. Reads fail fast (503) while Redis is "
        "down instead of waiting out redis-py's default retries with back-off.",
    )
    database_url_secret: str = Field(
        "FEATURES_DATABASE_URL",
        description="Name of the secret (core secrets backend: the env var, or the key of the service's "
        "Vault KV secret) holding the PostgreSQL URL 'postgresql://user:password@host:port/database' "
        "(CloudNativePG's '<cluster>-app' Secret key 'uri'). Set: the Feast registry (SQL) and the offline "
        "store (PostgreSQL tables) live there, shared by every replica and the materialisation job. "
        "Unset: the embedded file registry and parquet under data_dir.",
    )
    database_required: bool = Field(
        False,
        description="Fail start-up when the database URL secret is not set, so a replica never falls back "
        "to a registry of its own (the chart sets it with database.enabled).",
    )
    database_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Connect timeout of the start-up check of the database."
    )
    registry_cache_ttl_seconds: int = Field(
        60, ge=0, description="How long Feast caches the registry before re-reading it (0 = never expires)."
    )
    apply_on_start: bool = Field(
        True, description="Apply the repository's feature definitions to the registry at start-up."
    )
    materialize_interval_s: float = Field(
        0.0,
        ge=0.0,
        description="Run incremental materialisation (up to now) every this many seconds; 0 turns the schedule off.",
    )
    default_feature_service: str = Field(
        FEATURE_SERVICE, description="Feature service listed first and used by the benchmark and examples."
    )
    max_rows: int = Field(1000, ge=1, description="Most entity rows one online request may ask for.")
    max_push_rows: int = Field(10_000, ge=1, description="Most rows one push request may carry.")
