"""Feast's PostgreSQL offline store plus offline writes, so push ``to: offline`` works on PostgreSQL too.

Feast 0.67's ``PostgreSQLOfflineStore`` reads (point-in-time joins, materialisation pulls) but has
no ``offline_write_batch``; the file offline store appends to its parquet. This subclass appends
the pushed rows to the feature view's source table (``INSERT`` of the same columns, one
transaction). ``feature_store.yaml`` names it by its import path
(``offline_store.type: mlplatform.features.offline.PlatformPostgreSQLOfflineStore``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pyarrow
from feast.feature_view import FeatureView
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    PostgreSQLOfflineStore,
    PostgreSQLOfflineStoreConfig,
)
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.repo_config import RepoConfig

STORE_TYPE = "mlplatform.features.offline.PlatformPostgreSQLOfflineStore"


class PlatformPostgreSQLOfflineStoreConfig(PostgreSQLOfflineStoreConfig):
    """Same fields as Feast's ``postgres`` offline store config."""

    type: Literal["mlplatform.features.offline.PlatformPostgreSQLOfflineStore"] = STORE_TYPE  # type: ignore[assignment]


class PlatformPostgreSQLOfflineStore(PostgreSQLOfflineStore):
    """Feast's PostgreSQL offline store with ``offline_write_batch`` (append to the source table)."""

    @staticmethod
    def offline_write_batch(
        config: RepoConfig,
        feature_view: FeatureView,
        table: pyarrow.Table,
        progress: Callable[[int], Any] | None,
    ) -> None:
        from psycopg import sql

        source = feature_view.batch_source
        if not isinstance(source, PostgreSQLSource) or not source._postgres_options._table:  # noqa: SLF001
            raise ValueError(f"feature view {feature_view.name}: offline writes need a table source")
        target = source._postgres_options._table  # noqa: SLF001 - PostgreSQLSource keeps it private
        names = table.column_names
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(target),
            sql.SQL(", ").join(sql.Identifier(n) for n in names),
            sql.SQL(", ").join(sql.Placeholder() for _ in names),
        )
        rows = list(zip(*(table.column(n).to_pylist() for n in names), strict=True))
        with _get_conn(config.offline_store) as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(statement, rows)
        if progress is not None:
            progress(len(rows))
