"""SQLite persistence for ingested records, closed windows and retraining state.

Records are keyed by ``(request_id, row_index)`` so a re-sent batch is stored once. Everything
lives in one database file under ``<data_dir>/drift/`` (WAL mode), so a restart loses nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    inputs BLOB NOT NULL,
    prediction REAL,
    window_id INTEGER,
    PRIMARY KEY (request_id, row_index)
);
CREATE INDEX IF NOT EXISTS records_open ON records (model, version, window_id, received);
CREATE TABLE IF NOT EXISTS windows (
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
CREATE INDEX IF NOT EXISTS windows_model ON windows (model, id);
CREATE TABLE IF NOT EXISTS retrain_state (
    model TEXT PRIMARY KEY,
    consecutive INTEGER NOT NULL,
    episode_active INTEGER NOT NULL,
    last_trigger REAL
);
CREATE TABLE IF NOT EXISTS retrain_events (
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


@dataclass
class StoredRecord:
    request_id: str
    row_index: int
    model: str
    version: str
    ts: float
    inputs: dict[str, Any]
    prediction: float | None


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


class DriftStore:
    """A small synchronous store; one connection shared behind a lock (calls are short)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- records -------------------------------------------------------------------------------
    def insert_records(self, rows: Iterable[StoredRecord]) -> int:
        """Insert records, ignoring ones already stored; returns how many were new."""
        now = time.time()
        params = [
            (
                r.request_id,
                r.row_index,
                r.model,
                r.version,
                r.ts,
                now,
                orjson.dumps(r.inputs, option=orjson.OPT_SERIALIZE_NUMPY),
                r.prediction,
            )
            for r in rows
        ]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO records (request_id, row_index, model, version, ts, received,"
                    " inputs, prediction) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    params,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before

    def open_count(self, model: str, version: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM records WHERE model=? AND version=? AND window_id IS NULL",
                (model, version),
            ).fetchone()
        return int(row[0])

    def open_versions(self) -> list[tuple[str, str, int, float]]:
        """(model, version, open record count, oldest receive time) for every version with open records."""
        with self._lock:
            rows = self._db.execute(
                "SELECT model, version, COUNT(*), MIN(received) FROM records WHERE window_id IS NULL"
                " GROUP BY model, version"
            ).fetchall()
        return [(m, v, int(n), float(t)) for m, v, n, t in rows]

    def oldest_open(self, model: str, version: str, limit: int | None) -> list[tuple[int, StoredRecord]]:
        sql = (
            "SELECT rowid, request_id, row_index, model, version, ts, inputs, prediction FROM records"
            " WHERE model=? AND version=? AND window_id IS NULL ORDER BY received, rowid"
        )
        args: tuple[Any, ...] = (model, version)
        if limit is not None:
            sql += " LIMIT ?"
            args = (*args, limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [(rowid, _record(rest)) for rowid, *rest in rows]

    def window_records(self, window_id: int) -> list[StoredRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, row_index, model, version, ts, inputs, prediction FROM records"
                " WHERE window_id=? ORDER BY received, rowid",
                (window_id,),
            ).fetchall()
        return [_record(r) for r in rows]

    def count_records(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                row = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM records WHERE model=?", (model,)).fetchone()
        return int(row[0])

    def record_keys(self) -> list[tuple[str, int]]:
        with self._lock:
            return [
                (r, int(i))
                for r, i in self._db.execute("SELECT request_id, row_index FROM records").fetchall()
            ]

    def known_models(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT model FROM records ORDER BY model").fetchall()
        return [r[0] for r in rows]

    # -- windows -------------------------------------------------------------------------------
    def close_window(
        self,
        model: str,
        version: str,
        rowids: list[int],
        opened: float,
        drift_share: float,
        dataset_drift: bool,
        result: dict[str, Any],
    ) -> int:
        """Store a window result and assign its records to it, atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO windows (model, version, opened, closed, n_records, drift_share,"
                    " dataset_drift, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        model,
                        version,
                        opened,
                        time.time(),
                        len(rowids),
                        drift_share,
                        int(dataset_drift),
                        orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY),
                    ),
                )
                window_id = int(cur.lastrowid or 0)
                self._db.executemany(
                    "UPDATE records SET window_id=? WHERE rowid=?", [(window_id, r) for r in rowids]
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return window_id

    def windows(self, model: str, limit: int = 50) -> list[WindowRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, model, version, opened, closed, n_records, drift_share, dataset_drift, result"
                " FROM windows WHERE model=? ORDER BY id DESC LIMIT ?",
                (model, limit),
            ).fetchall()
        return [
            WindowRow(i, m, v, o, c, n, s, bool(d), orjson.loads(res)) for i, m, v, o, c, n, s, d, res in rows
        ]

    def latest_windows(self) -> list[WindowRow]:
        """The most recent window of every model version (to restore gauges after a restart)."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute("SELECT MAX(id) FROM windows GROUP BY model, version").fetchall()
            ]
        out: list[WindowRow] = []
        for wid in ids:
            with self._lock:
                i, m, v, o, c, n, s, d, res = self._db.execute(
                    "SELECT id, model, version, opened, closed, n_records, drift_share, dataset_drift, result"
                    " FROM windows WHERE id=?",
                    (wid,),
                ).fetchone()
            out.append(WindowRow(i, m, v, o, c, n, s, bool(d), orjson.loads(res)))
        return out

    # -- retraining ----------------------------------------------------------------------------
    def retrain_state(self, model: str) -> RetrainState:
        with self._lock:
            row = self._db.execute(
                "SELECT consecutive, episode_active, last_trigger FROM retrain_state WHERE model=?", (model,)
            ).fetchone()
        if row is None:
            return RetrainState(model, 0, False, None)
        return RetrainState(model, int(row[0]), bool(row[1]), row[2])

    def save_retrain_state(self, state: RetrainState) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO retrain_state (model, consecutive, episode_active, last_trigger) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(model) DO UPDATE SET consecutive=excluded.consecutive,"
                " episode_active=excluded.episode_active, last_trigger=excluded.last_trigger",
                (state.model, state.consecutive, int(state.episode_active), state.last_trigger),
            )

    def add_retrain_event(
        self, model: str, version: str, reason: str, mode: str, outcome: str, detail: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO retrain_events (model, version, ts, reason, mode, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (model, version, time.time(), reason, mode, outcome, detail),
            )

    def retrain_events(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT version, ts, reason, mode, outcome, detail FROM retrain_events WHERE model=? ORDER BY id",
                (model,),
            ).fetchall()
        return [
            {"version": v, "timestamp": t, "reason": r, "mode": m, "outcome": o, "detail": d}
            for v, t, r, m, o, d in rows
        ]


def _record(row: tuple[Any, ...]) -> StoredRecord:
    request_id, row_index, model, version, ts, inputs, prediction = row
    return StoredRecord(
        request_id, int(row_index), model, version, float(ts), orjson.loads(inputs), prediction
    )
