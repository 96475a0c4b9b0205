"""Open, apply and fill the Feast repository under the data directory.

Layout (``FeatureRepoPaths``)::

    <data_dir>/features/sources/{user,merchant}_snapshots.parquet   batch sources (written by training)
    <data_dir>/feature_repo/feature_store.yaml                       rendered per environment
    <data_dir>/feature_repo/data/registry.db                         Feast file registry
    <data_dir>/feature_repo/data/online_store.db                     SQLite online store (embedded)

``feature_store.yaml`` is rendered from the jinja2 template in ``repo/``. With Redis the file on
disk holds ``${FEAST_REDIS_PASSWORD}`` (Feast expands environment variables) while the in-memory
config carries the password read from the secrets backend, so the secret never lands on disk.

With a database (:class:`~mlplatform.features.database.DatabaseURL`) the registry is Feast's SQL
registry and the offline store PostgreSQL (batch sources = tables, written by :func:`write_sources`),
both shared by every replica and the materialisation job; the file registry and the parquet sources
are not used. The database password is ``${FEAST_DATABASE_PASSWORD}`` on disk, likewise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import yaml

from mlplatform.features import contract as feat
from mlplatform.features.database import DatabaseURL, write_source_tables
from mlplatform.features.repo import FEATURE_SERVICE
from mlplatform.features.repo.definitions import (
    MERCHANT_SOURCE_FILE,
    PROJECT,
    USER_SOURCE_FILE,
    build_definitions,
)

PASSWORD_PLACEHOLDER = "${FEAST_REDIS_PASSWORD}"
#: offline_store.type with a database (mlplatform.features.offline, Feast's PostgreSQL store + writes)
OFFLINE_STORE_TYPE = "mlplatform.features.offline.PlatformPostgreSQLOfflineStore"
DATABASE_PASSWORD_PLACEHOLDER = "${FEAST_DATABASE_PASSWORD}"


@dataclass(frozen=True)
class FeatureRepoPaths:
    """Where the feature repository's files live under a data directory."""

    data_dir: Path

    @property
    def source_dir(self) -> Path:
        return self.data_dir / "features" / "sources"

    @property
    def repo_dir(self) -> Path:
        return self.data_dir / "feature_repo"

    @property
    def registry(self) -> Path:
        return self.repo_dir / "data" / "registry.db"

    @property
    def sqlite(self) -> Path:
        return self.repo_dir / "data" / "online_store.db"

    @property
    def yaml(self) -> Path:
        return self.repo_dir / "feature_store.yaml"


@dataclass(frozen=True)
class OnlineStoreSpec:
    """Which online store to render: ``sqlite`` (embedded) or ``redis`` (staging/prod)."""

    kind: str = "sqlite"
    redis_address: str = "localhost:6379"
    redis_password: str | None = None
    redis_db: int = 0
    redis_ssl: bool = False


def redis_connection_string(spec: OnlineStoreSpec, password: str | None) -> str:
    """Feast's Redis connection string: ``host:port,db=N[,ssl=true][,password=...]``."""
    parts = [spec.redis_address, f"db={spec.redis_db}"]
    if spec.redis_ssl:
        parts.append("ssl=true")
    if password:
        parts.append(f"password={password}")
    return ",".join(parts)


def render_feature_store_yaml(
    paths: FeatureRepoPaths,
    spec: OnlineStoreSpec,
    *,
    environment: str = "local",
    reveal_password: bool = False,
    registry_cache_ttl_seconds: int = 60,
    database: DatabaseURL | None = None,
) -> str:
    """Render ``feature_store.yaml`` for an environment (passwords as placeholders unless revealed).

    ``database``: SQL registry and PostgreSQL offline store in that database instead of the file
    registry and parquet."""
    template = resources.files("mlplatform.features.repo").joinpath("feature_store.yaml.j2").read_text()
    password = (
        spec.redis_password if reveal_password else (PASSWORD_PLACEHOLDER if spec.redis_password else None)
    )
    registry_url, offline = "", None
    if database is not None:
        if reveal_password or not database.password:
            registry_url, offline = database.sqlalchemy_url(), database.offline_store_config()
        else:
            marker = "MLPLATFORMPASSWORDPLACEHOLDER"
            masked = replace(database, password=marker)
            registry_url = masked.sqlalchemy_url().replace(marker, DATABASE_PASSWORD_PLACEHOLDER)
            offline = database.offline_store_config(password=DATABASE_PASSWORD_PLACEHOLDER)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    return env.from_string(template).render(
        environment=environment,
        project=PROJECT,
        registry_path=str(paths.registry.resolve()),
        registry_cache_ttl_seconds=registry_cache_ttl_seconds,
        online_store=spec.kind,
        sqlite_path=str(paths.sqlite.resolve()),
        redis_connection_string=redis_connection_string(spec, password),
        database=offline,
        registry_url=registry_url,
        offline_store_type=OFFLINE_STORE_TYPE,
    )


def open_store(
    paths: FeatureRepoPaths,
    spec: OnlineStoreSpec | None = None,
    *,
    environment: str = "local",
    registry_cache_ttl_seconds: int = 60,
    database: DatabaseURL | None = None,
) -> Any:
    """Write the rendered ``feature_store.yaml`` and return a ``FeatureStore`` for the repository.

    With ``database`` the registry (SQL) and the offline store are in PostgreSQL; opening the store
    creates the registry's tables if they are missing (Feast's ``schema_mode: auto``)."""
    from feast import FeatureStore, RepoConfig

    spec = spec or OnlineStoreSpec()
    paths.repo_dir.mkdir(parents=True, exist_ok=True)
    paths.registry.parent.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {
        "environment": environment,
        "registry_cache_ttl_seconds": registry_cache_ttl_seconds,
        "database": database,
    }
    paths.yaml.write_text(render_feature_store_yaml(paths, spec, **kw))
    raw = yaml.safe_load(render_feature_store_yaml(paths, spec, reveal_password=True, **kw))
    config = RepoConfig(repo_path=paths.repo_dir.resolve(), **raw)
    return FeatureStore(config=config)


def write_sources(
    snapshots: dict[str, pd.DataFrame], paths: FeatureRepoPaths, database: DatabaseURL | None = None
) -> None:
    """Write the entity snapshot tables as the feature views' batch sources: parquet under the data
    directory, or tables in ``database`` (PostgreSQL offline store)."""
    if database is not None:
        write_source_tables(database, snapshots, feat.TIMESTAMP_COLUMN)
        return
    paths.source_dir.mkdir(parents=True, exist_ok=True)
    snapshots["user_id"].to_parquet(paths.source_dir / USER_SOURCE_FILE, index=False)
    snapshots["merchant_id"].to_parquet(paths.source_dir / MERCHANT_SOURCE_FILE, index=False)


def offline_kind(store: Any) -> str:
    """``postgres`` when the store's offline store is PostgreSQL, else ``file``."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
        PostgreSQLOfflineStoreConfig,
    )

    return "postgres" if isinstance(store.config.offline_store, PostgreSQLOfflineStoreConfig) else "file"


def apply_definitions(store: Any, paths: FeatureRepoPaths) -> None:
    """Register (or update) every Feast object of the repository (batch sources matching the store's
    offline store: parquet files or PostgreSQL tables)."""
    store.apply(build_definitions(paths.source_dir, offline_kind(store)).all())


def historical_training_frame(store: Any, transactions: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time training rows via Feast for the feature service: history as of ``t - 1 s``.

    The feature service's feature views are retrieved one view at a time: Feast's file (dask)
    offline store drops an entity row from the whole result when one view has candidates but none
    inside its TTL, so per-view retrieval is what keeps "no value within TTL" as a null (then the
    default) without losing the row's other features. The on-demand view's own transformation,
    taken from the registry, then computes the request-time ratio.

    Returns ``transactions`` (same rows, same order) plus every model feature.
    """
    service = store.get_feature_service(FEATURE_SERVICE)
    odfv_names = {v.name for v in store.list_on_demand_feature_views()}
    lookup_ts = transactions[feat.TIMESTAMP_COLUMN] - pd.Timedelta(feat.LOOKUP_OFFSET)
    out = transactions.reset_index(drop=True).copy()
    ids = out["transaction_id"]
    odfvs = []
    for projection in service.feature_view_projections:
        name = projection.name_to_use()
        if name in odfv_names:
            odfvs.append(store.get_on_demand_feature_view(name))
            continue
        view = store.get_feature_view(name)
        keys = [c.name for c in view.entity_columns]
        entity_df = pd.DataFrame(
            {"transaction_id": ids.to_numpy(), feat.TIMESTAMP_COLUMN: lookup_ts.to_numpy()}
        )
        for key in keys:
            entity_df[key] = transactions[key].to_numpy()
        refs = [f"{name}:{f.name}" for f in projection.features]
        got = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        got = got.drop_duplicates("transaction_id").set_index("transaction_id")
        for f in projection.features:
            values = pd.Series(got[f.name].reindex(ids).to_numpy())
            out[f.name] = (
                values.fillna(feat.FEATURE_DEFAULTS[f.name]).astype(feat.feature_dtype(f.name)).to_numpy()
            )
    for name in feat.REQUEST_FEATURES:
        out[name] = out[name].astype(feat.feature_dtype(name))
    for odfv in odfvs:
        inputs = {name: out[name].tolist() for name in odfv_inputs(odfv)}
        computed = odfv.feature_transformation.transform(inputs)
        for f in odfv.features:
            out[f.name] = pd.Series(computed[f.name]).astype(feat.feature_dtype(f.name)).to_numpy()
    return out


def odfv_inputs(odfv: Any) -> list[str]:
    """Input column names of an on-demand view: its request fields and source view features."""
    names = [f.name for src in odfv.source_request_sources.values() for f in src.schema]
    names += [f.name for p in odfv.source_feature_view_projections.values() for f in p.features]
    return names


def materialize_range(store: Any, start: datetime, end: datetime) -> None:
    """Load every feature view's latest values in ``[start, end]`` into the online store."""
    store.materialize(start_date=start, end_date=end)


# -- Feast adapter: provider internals the data plane reads through -------------------------------


def online_provider(store: Any) -> Any:  # noqa: ANN401 - a feast Provider
    """Feast's provider of ``store``: ``online_read`` per feature view (one query for every entity of a
    request) and its ``online_store``; what the data plane reads with instead of
    ``FeatureStore.get_online_features``."""
    return store._get_provider()  # noqa: SLF001 - Feast's provider API (online_read)


def count_online_writes(online_store: Any, on_write: Callable[[str, int], None]) -> None:  # noqa: ANN401
    """Call ``on_write(feature view, rows)`` after every batch Feast writes to ``online_store``
    (materialisation goes through ``online_write_batch``)."""
    original_write = online_store.online_write_batch

    def counting_write(config: Any, table: Any, data: list[Any], progress: Any) -> None:  # noqa: ANN401
        original_write(config, table, data, progress)
        on_write(table.name, len(data))

    online_store.online_write_batch = counting_write


def install_fail_fast_redis_client(online_store: Any, spec: OnlineStoreSpec, timeout_s: float) -> None:  # noqa: ANN401
    """Give Feast's Redis online store a client with short timeouts and one immediate retry.

    Feast builds ``redis.Redis`` from its connection string, which cannot express a retry policy;
    redis-py's default retries with exponential back-off, so a read during a Redis restart blocked
    for seconds. The client below answers within about two timeouts; the connection pool
    reconnects by itself once Redis is back. Run again when the Redis password secret rotates: the
    new client (new password) replaces the old one for every later read and write.
    """
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    host, _, port = spec.redis_address.rpartition(":")
    online_store._client = Redis(  # noqa: SLF001 - Feast reads self._client in _get_client
        host=host or "localhost",
        port=int(port or 6379),
        db=spec.redis_db,
        password=spec.redis_password,
        ssl=spec.redis_ssl,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )
