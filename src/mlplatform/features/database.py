"""The feature store's PostgreSQL database: Feast SQL registry, offline store tables and the URL they come from.

One libpq URL (``postgresql://user:password@host:port/database[?sslmode=...]``, what CloudNativePG's
``<cluster>-app`` Secret holds under ``uri``) configures both shared parts of the feature store:

* the Feast SQL registry (``registry_type: sql``), which needs a SQLAlchemy URL with the psycopg 3
  driver (``postgresql+psycopg://...``): :meth:`DatabaseURL.sqlalchemy_url`;
* the PostgreSQL offline store, configured field by field (host, port, database, user, password,
  sslmode): :meth:`DatabaseURL.offline_store_config`.

The URL is a secret (it carries the password): it is read through the secrets backend, never
logged, and never put in an error message (:meth:`DatabaseURL.redacted` is what messages show).
The batch sources of the feature views are the tables :data:`SOURCE_TABLES` in that database,
written by training (:func:`write_source_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pandas as pd

from mlplatform.core.dsn import scrub as core_scrub

#: The batch source tables, one per entity (same names as the file sources' parquet stems).
SOURCE_TABLES = {"user_id": "user_snapshots", "merchant_id": "merchant_snapshots"}

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_SSL_KEYS = {
    "sslmode": "sslmode",
    "sslrootcert": "sslrootcert_path",
    "sslcert": "sslcert_path",
    "sslkey": "sslkey_path",
}


class DatabaseConfigError(ValueError):
    """The database URL is malformed or the database cannot be used; the message names the setting."""


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed libpq URL. ``setting`` is the name shown in errors (the secret's name)."""

    host: str
    port: int
    database: str
    user: str
    password: str = field(default="", repr=False)
    query: tuple[tuple[str, str], ...] = ()
    setting: str = "FEATURES_DATABASE_URL"

    @classmethod
    def parse(cls, url: str, setting: str = "FEATURES_DATABASE_URL") -> DatabaseURL:
        """Parse ``postgresql://user:password@host:port/database?...`` (``postgres://`` and
        ``postgresql+psycopg://`` too); raise :class:`DatabaseConfigError` naming ``setting``."""
        expected = "expected postgresql://user:password@host:port/database"
        url = url.strip()
        scheme, sep, _ = url.partition("://")
        if not sep or scheme not in _SCHEMES:
            raise DatabaseConfigError(f"{setting}: not a PostgreSQL URL ({expected})")
        try:
            parts = urlsplit(url)
            port = parts.port or 5432
        except ValueError:  # urlsplit's message may quote a piece of the password (e.g. a "/" in it)
            raise DatabaseConfigError(
                f"{setting}: the port is not a number; percent-encode / # ? @ % in the password ({expected})"
            ) from None
        if "," in (parts.netloc.rpartition("@")[2]):
            raise DatabaseConfigError(f"{setting}: several hosts are not supported ({expected})")
        # libpq also takes user, password and dbname as query parameters: move them to their fields,
        # so the password never travels in a query string (feature_store.yaml, logs)
        query = parse_qsl(parts.query)
        params = {k: v for k, v in query if k in ("user", "password", "dbname")}
        query = [(k, v) for k, v in query if k not in params]
        host = parts.hostname or ""
        database = unquote(parts.path.lstrip("/")) or params.get("dbname", "")
        user = unquote(parts.username or "") or params.get("user", "")
        missing = [
            name for name, value in (("host", host), ("database", database), ("user", user)) if not value
        ]
        if missing:
            raise DatabaseConfigError(f"{setting}: the URL has no {', '.join(missing)} ({expected})")
        return cls(
            host=host,
            port=port,
            database=database,
            user=user,
            password=unquote(parts.password or "") or params.get("password", ""),
            query=tuple(query),
            setting=setting,
        )

    @property
    def sslmode(self) -> str:
        """The URL's ``sslmode``, else libpq's default ``prefer``."""
        return dict(self.query).get("sslmode", "prefer")

    def redacted(self) -> str:
        """``user@host:port/database``: what logs and errors show (no password)."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def sqlalchemy_url(self) -> str:
        """The SQLAlchemy URL of the Feast SQL registry (psycopg 3 driver, everything escaped)."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password or None,
            host=self.host,
            port=self.port,
            database=self.database,
            query=dict(self.query),
        ).render_as_string(hide_password=False)

    def conninfo(self) -> str:
        """A libpq connection string for psycopg."""
        from psycopg.conninfo import make_conninfo

        extra = {k: v for k, v in self.query if k in _SSL_KEYS}
        return make_conninfo(
            "",
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password or None,
            **extra,
        )

    def offline_store_config(self, *, password: str | None = None) -> dict[str, Any]:
        """Fields of Feast's PostgreSQL store config (``password`` overrides, e.g. a placeholder)."""
        config: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "password": self.password if password is None else password,
            "sslmode": self.sslmode,
        }
        for key, value in self.query:
            if key in _SSL_KEYS and key != "sslmode":
                config[_SSL_KEYS[key]] = value
        return config

    def scrub(self, text: str) -> str:
        """``text`` with the password (raw and URL-escaped) replaced by ``***``."""
        from urllib.parse import quote

        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                text = text.replace(form, "***")
                text = core_scrub(text, f"postgresql://x:{form}@h")
        return text


def check_database(db: DatabaseURL, timeout_s: float = 10.0) -> None:
    """Connect once and run ``SELECT 1``; raise :class:`DatabaseConfigError` with one clear line
    (the setting, where it points, PostgreSQL's own first line of the error) when that fails."""
    import psycopg

    try:
        with psycopg.connect(db.conninfo(), connect_timeout=max(1, round(timeout_s))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        detail = db.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise DatabaseConfigError(
            f"{db.setting}: cannot use PostgreSQL at {db.redacted()}: {detail}"
        ) from None


def _pg_type(dtype: Any) -> str:
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "TIMESTAMPTZ"
    if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return "BIGINT"
    if pd.api.types.is_float_dtype(dtype):
        return "DOUBLE PRECISION"
    return "TEXT"


def write_table(db: DatabaseURL, table: str, frame: pd.DataFrame, *, index: list[str] | None = None) -> None:
    """Replace ``table`` with ``frame`` in one transaction (drop, create, COPY, index): readers see
    the old rows or the new ones, never a half-written table."""
    import psycopg
    from psycopg import sql

    columns = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_pg_type(frame[c].dtype))) for c in frame]
    names = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
    with psycopg.connect(db.conninfo()) as conn, conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        conn.execute(
            sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(", ").join(columns))
        )
        with conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), names)
        ) as copy:
            for row in rows:
                copy.write_row(row)
        if index:
            conn.execute(
                sql.SQL("CREATE INDEX {} ON {} ({})").format(
                    sql.Identifier(f"{table}_{'_'.join(index)}_idx"),
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in index),
                )
            )


def write_source_tables(db: DatabaseURL, snapshots: dict[str, pd.DataFrame], timestamp_column: str) -> None:
    """Write the entity snapshot tables as the feature views' batch sources (:data:`SOURCE_TABLES`)."""
    for key, table in SOURCE_TABLES.items():
        write_table(db, table, snapshots[key], index=[key, timestamp_column])
