"""PostgreSQL backend of :class:`~mlplatform.drift.store.DriftStore`, shared by every drift replica.

* A small connection pool (psycopg 3). Connections are not pinged before use (a round trip per call);
  a call on a connection the server closed fails, the pool discards it, and the service repeats the
  call once on a fresh one.
* Records go in with one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`` per batch: the
  unique key ``(model, version, prediction_id, row_index)`` makes a re-sent batch, or the same batch
  delivered to two replicas, count once. The same statement adds the new records to a per-version
  open-record counter (``drift_open_counts``), which window closing decrements in its transaction,
  so "is a window due?" is an index lookup rather than a count over the open records.
* :meth:`PostgresDriftStore.exclusive` holds a session-level advisory lock per model on a connection of
  its own. An ingest that finds a window due only *tries* it (the holder re-checks until no full
  window is left); the time-window ticker and the manual retrain route wait for it by polling, so
  waiters never pin pool connections or threads. If the holder dies, PostgreSQL drops the lock with
  its session. ``close_window`` additionally assigns only
  records that are still open and writes nothing otherwise, so no record ever lands in two windows.
  An advisory lock rather than a Kubernetes Lease: the state it protects lives in this database, the
  lock dies with the holder's connection (no lease duration to tune, no clock skew), and it works the
  same outside a cluster.
* Key columns are ``COLLATE "C"`` (byte order: identifiers need no locale, and comparisons in the
  unique index are several times cheaper than with a libc/ICU collation).
* Tables are created at start-up under a transaction advisory lock, so replicas starting together
  do not race on ``CREATE TABLE IF NOT EXISTS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from mlplatform.core.dsn import scrub
from mlplatform.drift.quality_store import PG_QUALITY_SCHEMA
from mlplatform.drift.store import (
    INSERT_COLUMNS,
    INSERT_WINDOW,
    SqlDriftStore,
    StoredRecord,
    WindowAlreadyClosed,
    record_params,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_records (
    id BIGSERIAL PRIMARY KEY,
    prediction_id TEXT COLLATE "C" NOT NULL,
    row_index INTEGER NOT NULL,
    model TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    ts DOUBLE PRECISION NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    inputs BYTEA NOT NULL,
    prediction DOUBLE PRECISION,
    window_id BIGINT,
    UNIQUE (model, version, prediction_id, row_index)
);
CREATE INDEX IF NOT EXISTS drift_records_open ON drift_records (model, version, received, id)
    WHERE window_id IS NULL;
CREATE INDEX IF NOT EXISTS drift_records_window ON drift_records (window_id) WHERE window_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS drift_open_counts (
    model TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS drift_windows (
    id BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    opened DOUBLE PRECISION NOT NULL,
    closed DOUBLE PRECISION NOT NULL,
    n_records INTEGER NOT NULL,
    drift_share DOUBLE PRECISION NOT NULL,
    dataset_drift BOOLEAN NOT NULL,
    result BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_windows_model ON drift_windows (model, id);
CREATE TABLE IF NOT EXISTS drift_retrain_state (
    model TEXT PRIMARY KEY,
    consecutive INTEGER NOT NULL,
    episode_active BOOLEAN NOT NULL,
    last_trigger DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS drift_retrain_events (
    id BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    mode TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


SCHEMA_LOCK = advisory_key("mlplatform.drift.schema")


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a libpq URL or key=value string, scrubbed of anything that may be part
    of the credentials (an unescaped ``/`` or ``@`` in a password moves it into these fields)."""
    try:
        info = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable URL>"
    return scrub(f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}", dsn)


class PostgresDriftStore(SqlDriftStore):
    """Drift state in PostgreSQL (see the module docstring)."""

    PARAM = "%s"

    def __init__(self, dsn: str, *, max_connections: int = 8, timeout_s: float = 2.0) -> None:
        try:
            conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise RuntimeError(
                "DRIFT_DATABASE_URL is not a valid PostgreSQL URL: "
                f"{scrub(str(exc).splitlines()[0], dsn)} (percent-encode / # ? @ % in the password)"
            ) from None
        self.where = describe_dsn(dsn)
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            timeout=timeout_s,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
            name="drift-store",
        )
        try:
            # one direct connection first: its error says what is wrong (the pool's would only time out)
            with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s))) as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(SCHEMA)
                    conn.execute(PG_QUALITY_SCHEMA)
                    # versions with open records but no counter (a database written before the
                    # counter existed) start from the real count
                    conn.execute(
                        "INSERT INTO drift_open_counts (model, version, n) SELECT model, version, count(*)"
                        " FROM drift_records WHERE window_id IS NULL GROUP BY model, version"
                        " ON CONFLICT (model, version) DO NOTHING"
                    )
            self._pool.open(wait=True, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure here is a start-up failure, in one line
            self._pool.close()
            first = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, dsn)
            raise RuntimeError(
                f"DRIFT_DATABASE_URL: cannot use PostgreSQL at {self.where}: {first}"
            ) from None

    def set_dsn(self, dsn: str | None) -> None:
        """Use ``dsn`` (a rotated ``DRIFT_DATABASE_URL``) for every new connection and replace the
        pooled ones; a query in flight finishes on its connection, which is closed when returned.
        Change the password in PostgreSQL first, then in Vault. A missing or malformed URL raises
        ValueError naming the setting (never the URL) and the current one stays in use."""
        if not dsn:
            raise ValueError("DRIFT_DATABASE_URL was removed; keeping the current database URL")
        try:
            conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            raise ValueError(
                "DRIFT_DATABASE_URL is not a valid PostgreSQL URL; keeping the current one"
            ) from None
        self._pool.conninfo = dsn
        self.where = describe_dsn(dsn)
        self._pool.drain()

    def close(self) -> None:
        self._pool.close()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(self._sql(sql), args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:  # noqa: ANN401
        with self._pool.connection() as conn:
            return conn.execute(self._sql(sql), args).fetchone()

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._pool.connection() as conn:
            conn.execute(self._sql(sql), args)

    @asynccontextmanager
    async def exclusive(self, model: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """The model's session advisory lock, taken with ``pg_try_advisory_lock`` and held on a pool
        connection of its own. A waiter polls (connection back in the pool between tries), so waiters
        never pin connections or worker threads the holder needs. ``wait=False`` yields False at once
        when another session holds it."""
        key = advisory_key(f"mlplatform.drift.model:{model}")
        while True:
            conn = await asyncio.to_thread(self._pool.getconn)
            try:
                cur = await asyncio.to_thread(conn.execute, "SELECT pg_try_advisory_lock(%s)", (key,))
                got = bool(cur.fetchone()[0])
            except BaseException:
                self._pool.putconn(conn)
                raise
            if got:
                break
            self._pool.putconn(conn)
            if not wait:
                yield False
                return
            await asyncio.sleep(0.05)
        try:
            yield True
        finally:
            try:
                if not conn.closed:
                    await asyncio.to_thread(conn.execute, "SELECT pg_advisory_unlock(%s)", (key,))
            finally:
                self._pool.putconn(conn)

    # -- records -------------------------------------------------------------------------------
    def insert_records(self, rows: Iterable[StoredRecord]) -> dict[tuple[str, str], int]:
        rows = list(rows)
        if not rows:
            return {}
        now = time.time()
        cols = [list(col) for col in zip(*(record_params(r, now) for r in rows), strict=True)]
        # One statement: the new records, and the open-record counters of their versions moved by as
        # many, in the same transaction. Binary parameters (%b): no hex-encoded bytea, no float text.
        sql = (
            f"WITH ins AS (INSERT INTO drift_records ({INSERT_COLUMNS})"
            " SELECT * FROM unnest(%b::text[], %b::int4[], %b::text[], %b::text[], %b::text[],"
            " %b::float8[], %b::float8[], %b::bytea[], %b::float8[])"
            " ON CONFLICT (model, version, prediction_id, row_index) DO NOTHING RETURNING model, version),"
            " cnt AS (SELECT model, version, count(*) AS k FROM ins GROUP BY model, version),"
            " up AS (INSERT INTO drift_open_counts (model, version, n) SELECT model, version, k FROM cnt"
            " ON CONFLICT (model, version) DO UPDATE SET n = drift_open_counts.n + excluded.n RETURNING 1)"
            " SELECT cnt.model, cnt.version, cnt.k, (SELECT count(*) FROM up) FROM cnt"
        )
        with self._pool.connection() as conn:
            return {(m, v): int(k) for m, v, k, _ in conn.execute(sql, cols).fetchall()}

    def open_count(self, model: str, version: str) -> int:
        """From the counter the inserts and window closes keep in their own transactions (an index
        lookup, not a count over the open records)."""
        row = self._one("SELECT n FROM drift_open_counts WHERE model=? AND version=?", (model, version))
        return int(row[0]) if row else 0

    # -- windows -------------------------------------------------------------------------------
    def _close_window(self, window: tuple[Any, ...], rowids: Sequence[int]) -> int:
        model, version = window[0], window[1]
        with self._pool.connection() as conn, conn.transaction():
            window_id = int(conn.execute(self._sql(INSERT_WINDOW) + " RETURNING id", window).fetchone()[0])
            cur = conn.execute(
                "UPDATE drift_records SET window_id=%s WHERE id = ANY(%s) AND window_id IS NULL",
                (window_id, list(rowids)),
            )
            if cur.rowcount != len(rowids):
                raise WindowAlreadyClosed(f"records of {model}/{version} were closed by another window")
            conn.execute(
                "UPDATE drift_open_counts SET n = n - %s WHERE model=%s AND version=%s",
                (len(rowids), model, version),
            )
        return window_id
