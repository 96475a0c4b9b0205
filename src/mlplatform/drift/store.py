"""Persistence of drift detection: ingested records, closed windows, retraining state and events.

One interface (:class:`DriftStore`), two backends:

* :class:`SqliteDriftStore`: one database file under ``<data_dir>/drift/`` (WAL mode), the embedded
  default for ``make run`` and a single process;
* :class:`~mlplatform.drift.store_pg.PostgresDriftStore`: PostgreSQL, shared by every replica of a
  deployment (``DRIFT_DATABASE_URL``), so any replica answers any read and a rescheduled pod with an
  empty disk loses nothing.

Records are keyed by ``(model, version, prediction_id, row_index)``. ``prediction_id`` is assigned by
model-serving to every inference request (never taken from the client, whose V2 ``id`` may repeat), so a
re-sent batch is stored once and two requests that reuse a client id are both kept.

Window closing and retraining decisions take :meth:`DriftStore.exclusive` for the model: a process lock
for SQLite, a PostgreSQL session advisory lock shared by every replica (released by the server when the
holder dies), so each window is evaluated and each retraining episode fires once across replicas.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from mlplatform.drift.quality_store import SQLITE_QUALITY_SCHEMA, QualityQueries

RECORD_COLUMNS = "prediction_id, row_index, model, version, request_id, ts, inputs, prediction"


@dataclass
class StoredRecord:
    """One ingested row. ``prediction_id`` + ``row_index`` (per model version) identify it."""

    prediction_id: str
    row_index: int
    model: str
    version: str
    ts: float
    inputs: dict[str, Any]
    prediction: float | None
    request_id: str = ""


@dataclass
class WindowRow:
    id: int
    model: str
    version: str
    opened: float
    closed: float
    n_records: int
    drift_share: float
    dataset_drift: bool
    result: dict[str, Any]


@dataclass
class RetrainState:
    model: str
    consecutive: int
    episode_active: bool
    last_trigger: float | None


class WindowAlreadyClosed(RuntimeError):
    """Some of a window's records were assigned to another window meanwhile; nothing was written."""


class DriftStore(Protocol):
    """What the drift service needs from its database. Every method is synchronous and short; the
    service calls them from a worker thread. Implementations raise their driver's errors when the
    database is unreachable (the service answers 503)."""

    def close(self) -> None: ...

    def insert_records(self, rows: Iterable[StoredRecord]) -> dict[tuple[str, str], int]:
        """Insert records in one transaction, ignoring ones already stored; returns how many were new
        per (model, version)."""
        ...

    def open_count(self, model: str, version: str) -> int: ...

    def open_versions(self) -> list[tuple[str, str, int, float]]:
        """(model, version, open record count, oldest receive time) of every version with open records."""
        ...

    def oldest_open(self, model: str, version: str, limit: int | None) -> list[tuple[int, StoredRecord]]:
        """The oldest open records (by receive order) with their row ids."""
        ...

    def window_records(self, window_id: int) -> list[StoredRecord]: ...

    def count_records(self, model: str | None = None) -> int: ...

    def record_keys(self) -> list[tuple[str, str, str, int]]:
        """(model, version, prediction_id, row_index) of every stored record."""
        ...

    def known_models(self) -> list[str]: ...

    def close_window(
        self,
        model: str,
        version: str,
        rowids: Sequence[int],
        opened: float,
        drift_share: float,
        dataset_drift: bool,
        result: dict[str, Any],
    ) -> int:
        """Store a window result and assign its (still open) records to it, atomically; raises
        :class:`WindowAlreadyClosed` and writes nothing if any record is no longer open."""
        ...

    def windows(self, model: str, limit: int = 50) -> list[WindowRow]: ...

    def latest_windows(self) -> list[WindowRow]:
        """The most recent window of every model version (to restore gauges after a restart)."""
        ...

    def retrain_state(self, model: str) -> RetrainState: ...

    def save_retrain_state(self, state: RetrainState) -> None: ...

    def add_retrain_event(
        self, model: str, version: str, reason: str, mode: str, outcome: str, detail: str
    ) -> None: ...

    def retrain_events(self, model: str) -> list[dict[str, Any]]: ...

    def exclusive(self, model: str, *, wait: bool = True) -> Any:  # noqa: ANN401 - async context manager
        """``async with store.exclusive(model) as held:`` one holder per model across every process
        sharing the store; with ``wait=False``, ``held`` is False at once when someone else holds it."""
        ...


def encode_inputs(inputs: dict[str, Any]) -> bytes:
    return orjson.dumps(inputs, option=orjson.OPT_SERIALIZE_NUMPY)


def record_params(record: StoredRecord, received: float) -> tuple[Any, ...]:
    """The values of one new ``drift_records`` row, in the order of :data:`INSERT_COLUMNS`."""
    return (
        record.prediction_id,
        record.row_index,
        record.model,
        record.version,
        record.request_id,
        record.ts,
        received,
        encode_inputs(record.inputs),
        record.prediction,
    )


INSERT_COLUMNS = "prediction_id, row_index, model, version, request_id, ts, received, inputs, prediction"


def _json(value: Any) -> Any:  # noqa: ANN401
    """A JSON column as stored: bytes (SQLite BLOB), memoryview (PostgreSQL BYTEA) or text."""
    return orjson.loads(value if isinstance(value, bytes | str) else bytes(value))


def record_row(row: Sequence[Any]) -> StoredRecord:
    """A :class:`StoredRecord` from a ``SELECT RECORD_COLUMNS`` row."""
    prediction_id, row_index, model, version, request_id, ts, inputs, prediction = row
    return StoredRecord(
        prediction_id,
        int(row_index),
        model,
        version,
        float(ts),
        _json(inputs),
        prediction,
        request_id or "",
    )


def window_row(row: Sequence[Any]) -> WindowRow:
    i, m, v, o, c, n, s, d, res = row
    return WindowRow(int(i), m, v, float(o), float(c), int(n), float(s), bool(d), _json(res))


def event_row(row: Sequence[Any]) -> dict[str, Any]:
    v, t, r, m, o, d = row
    return {"version": v, "timestamp": t, "reason": r, "mode": m, "outcome": o, "detail": d}


WINDOW_COLUMNS = "id, model, version, opened, closed, n_records, drift_share, dataset_drift, result"
INSERT_WINDOW = (
    "INSERT INTO drift_windows (model, version, opened, closed, n_records, drift_share, dataset_drift, result)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqlDriftStore(QualityQueries, ABC):
    """What both backends share: the same tables and queries (written with ``?`` parameters; a backend
    with another parameter style sets :attr:`PARAM`). Subclasses run the statements (``_all``,
    ``_one``, ``_execute``) and implement the writes that need their own transactions and locks."""

    PARAM = "?"

    def _sql(self, sql: str) -> str:
        return sql if self.PARAM == "?" else sql.replace("?", self.PARAM)

    @abstractmethod
    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Every row of ``sql`` (``?`` parameters)."""

    @abstractmethod
    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:  # noqa: ANN401
        """The first row of ``sql``, or None."""

    @abstractmethod
    def _execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run one statement in its own transaction."""

    # -- records -------------------------------------------------------------------------------
    def open_count(self, model: str, version: str) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM drift_records WHERE model=? AND version=? AND window_id IS NULL",
            (model, version),
        )
        return int(row[0])

    def open_versions(self) -> list[tuple[str, str, int, float]]:
        rows = self._all(
            "SELECT model, version, COUNT(*), MIN(received) FROM drift_records WHERE window_id IS NULL"
            " GROUP BY model, version ORDER BY model, MIN(id)"
        )
        return [(m, v, int(n), float(t)) for m, v, n, t in rows]

    def oldest_open(self, model: str, version: str, limit: int | None) -> list[tuple[int, StoredRecord]]:
        sql = (
            f"SELECT id, {RECORD_COLUMNS} FROM drift_records"
            " WHERE model=? AND version=? AND window_id IS NULL ORDER BY received, id"
        )
        args: tuple[Any, ...] = (model, version)
        if limit is not None:
            sql += " LIMIT ?"
            args = (*args, limit)
        return [(int(row[0]), record_row(row[1:])) for row in self._all(sql, args)]

    def window_records(self, window_id: int) -> list[StoredRecord]:
        rows = self._all(
            f"SELECT {RECORD_COLUMNS} FROM drift_records WHERE window_id=? ORDER BY received, id",
            (window_id,),
        )
        return [record_row(r) for r in rows]

    def count_records(self, model: str | None = None) -> int:
        if model is None:
            return int(self._one("SELECT COUNT(*) FROM drift_records")[0])
        return int(self._one("SELECT COUNT(*) FROM drift_records WHERE model=?", (model,))[0])

    def record_keys(self) -> list[tuple[str, str, str, int]]:
        rows = self._all("SELECT model, version, prediction_id, row_index FROM drift_records")
        return [(m, v, p, int(i)) for m, v, p, i in rows]

    def known_models(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT model FROM drift_records ORDER BY model")]

    # -- windows -------------------------------------------------------------------------------
    def close_window(
        self,
        model: str,
        version: str,
        rowids: Sequence[int],
        opened: float,
        drift_share: float,
        dataset_drift: bool,
        result: dict[str, Any],
    ) -> int:
        window = (
            model,
            version,
            opened,
            time.time(),
            len(rowids),
            drift_share,
            dataset_drift,
            orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY),
        )
        return self._close_window(window, rowids)

    @abstractmethod
    def _close_window(self, window: tuple[Any, ...], rowids: Sequence[int]) -> int:
        """In one transaction: insert ``window`` (the values of :data:`INSERT_WINDOW`, model and version
        first), assign the still-open records ``rowids`` to it and return its id; raise
        :class:`WindowAlreadyClosed` and write nothing if any of them is no longer open."""

    def windows(self, model: str, limit: int = 50) -> list[WindowRow]:
        rows = self._all(
            f"SELECT {WINDOW_COLUMNS} FROM drift_windows WHERE model=? ORDER BY id DESC LIMIT ?",
            (model, limit),
        )
        return [window_row(r) for r in rows]

    def latest_windows(self) -> list[WindowRow]:
        rows = self._all(
            f"SELECT {WINDOW_COLUMNS} FROM drift_windows WHERE id IN"
            " (SELECT MAX(id) FROM drift_windows GROUP BY model, version) ORDER BY id"
        )
        return [window_row(r) for r in rows]

    # -- retraining ----------------------------------------------------------------------------
    def retrain_state(self, model: str) -> RetrainState:
        row = self._one(
            "SELECT consecutive, episode_active, last_trigger FROM drift_retrain_state WHERE model=?",
            (model,),
        )
        if row is None:
            return RetrainState(model, 0, False, None)
        return RetrainState(model, int(row[0]), bool(row[1]), row[2])

    def save_retrain_state(self, state: RetrainState) -> None:
        self._execute(
            "INSERT INTO drift_retrain_state (model, consecutive, episode_active, last_trigger)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET consecutive=excluded.consecutive,"
            " episode_active=excluded.episode_active, last_trigger=excluded.last_trigger",
            (state.model, state.consecutive, state.episode_active, state.last_trigger),
        )

    def add_retrain_event(
        self, model: str, version: str, reason: str, mode: str, outcome: str, detail: str
    ) -> None:
        self._execute(
            "INSERT INTO drift_retrain_events (model, version, ts, reason, mode, outcome, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (model, version, time.time(), reason, mode, outcome, detail),
        )

    def retrain_events(self, model: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT version, ts, reason, mode, outcome, detail FROM drift_retrain_events"
            " WHERE model=? ORDER BY id",
            (model,),
        )
        return [event_row(r) for r in rows]


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL,
    received REAL NOT NULL,
    inputs BLOB NOT NULL,
    prediction REAL,
    window_id INTEGER,
    UNIQUE (model, version, prediction_id, row_index)
);
CREATE INDEX IF NOT EXISTS drift_records_open ON drift_records (model, version, window_id, received);
CREATE INDEX IF NOT EXISTS drift_records_window ON drift_records (window_id);
CREATE TABLE IF NOT EXISTS drift_windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    opened REAL NOT NULL,
    closed REAL NOT NULL,
    n_records INTEGER NOT NULL,
    drift_share REAL NOT NULL,
    dataset_drift INTEGER NOT NULL,
    result BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_windows_model ON drift_windows (model, id);
CREATE TABLE IF NOT EXISTS drift_retrain_state (
    model TEXT PRIMARY KEY,
    consecutive INTEGER NOT NULL,
    episode_active INTEGER NOT NULL,
    last_trigger REAL
);
CREATE TABLE IF NOT EXISTS drift_retrain_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    ts REAL NOT NULL,
    reason TEXT NOT NULL,
    mode TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""

# Databases written before records were keyed by serving's prediction id had a ``records`` table keyed
# by (request_id, row_index): their rows move over with request_id as the prediction id. Their other
# tables had no ``drift_`` prefix: renamed before the schema is created (SQLITE_RENAMES).
SQLITE_RENAMES = {
    "windows": "drift_windows",
    "retrain_state": "drift_retrain_state",
    "retrain_events": "drift_retrain_events",
}
SQLITE_MIGRATE_V1 = """
INSERT OR IGNORE INTO drift_records
    (prediction_id, row_index, model, version, request_id, ts, received, inputs, prediction, window_id)
SELECT request_id, row_index, model, version, request_id, ts, received, inputs, prediction, window_id
FROM records ORDER BY received, rowid;
DROP TABLE records;
"""


class SqliteDriftStore(SqlDriftStore):
    """The embedded backend: one SQLite connection shared behind a lock (calls are short)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._model_locks: dict[str, asyncio.Lock] = {}
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for old, new in SQLITE_RENAMES.items():
            if old in tables and new not in tables:
                self._db.execute(f"ALTER TABLE {old} RENAME TO {new}")
        self._db.execute("DROP INDEX IF EXISTS windows_model")
        self._db.executescript(SQLITE_SCHEMA)
        self._db.executescript(SQLITE_QUALITY_SCHEMA)
        old = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'").fetchone()
        if old is not None:
            self._db.executescript("BEGIN IMMEDIATE;" + SQLITE_MIGRATE_V1 + "COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:  # noqa: ANN401
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    @asynccontextmanager
    async def exclusive(self, model: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """One process owns an SQLite file: an asyncio lock per model is enough."""
        lock = self._model_locks.setdefault(model, asyncio.Lock())
        if not wait and lock.locked():
            yield False
            return
        async with lock:
            yield True

    # -- records -------------------------------------------------------------------------------
    def insert_records(self, rows: Iterable[StoredRecord]) -> dict[tuple[str, str], int]:
        now = time.time()
        groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for r in rows:
            groups.setdefault((r.model, r.version), []).append(record_params(r, now))
        new: dict[tuple[str, str], int] = {}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, params in groups.items():
                    before = self._db.total_changes
                    self._db.executemany(
                        f"INSERT OR IGNORE INTO drift_records ({INSERT_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        params,
                    )
                    if self._db.total_changes > before:
                        new[key] = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    # -- windows -------------------------------------------------------------------------------
    def _close_window(self, window: tuple[Any, ...], rowids: Sequence[int]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                window_id = int(self._db.execute(INSERT_WINDOW, window).lastrowid or 0)
                before = self._db.total_changes
                self._db.executemany(
                    "UPDATE drift_records SET window_id=? WHERE id=? AND window_id IS NULL",
                    [(window_id, r) for r in rowids],
                )
                if self._db.total_changes - before != len(rowids):
                    raise WindowAlreadyClosed(
                        f"records of {window[0]}/{window[1]} were closed by another window"
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return window_id


def open_store(database_url: str | None, data_dir: Path) -> DriftStore:
    """PostgreSQL when ``database_url`` is set, else SQLite in ``data_dir/drift.db``.

    Raises :class:`RuntimeError` with one line naming the setting (never the password) when the
    database cannot be reached or the URL is malformed.
    """
    if database_url:
        from mlplatform.drift.store_pg import PostgresDriftStore

        return PostgresDriftStore(database_url)
    return SqliteDriftStore(data_dir / "drift.db")
