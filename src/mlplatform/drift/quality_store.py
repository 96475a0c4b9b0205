"""Labels and per-window quality results in the drift store (both backends, the same SQL).

* ``drift_labels``: one ground-truth label per ``(model, prediction_id, row_index)`` (the key serving
  returns as ``parameters.prediction_id`` plus the row of the request). Only labels of stored
  records are kept; a label sent again with the same value changes nothing, a different value
  replaces the old one (the last word on a row wins, so a re-sent batch is idempotent).
* ``drift_quality``: per closed drift window, the CBPE estimate (computed once the window closes),
  the realized performance of its labelled rows (recomputed when labels for it arrive), segments and
  fairness, as one JSON document.

:class:`QualityQueries` is mixed into :class:`~mlplatform.drift.store.SqlDriftStore`, so it runs on
whatever connection handling the backend has (``_all``, ``_one``, ``_execute``). Tables are created
with the backend's schema (:data:`SQLITE_QUALITY_SCHEMA`, :data:`PG_QUALITY_SCHEMA`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

SQLITE_QUALITY_SCHEMA = """
CREATE INDEX IF NOT EXISTS drift_records_prediction ON drift_records (prediction_id, row_index);
CREATE TABLE IF NOT EXISTS drift_labels (
    model TEXT NOT NULL,
    prediction_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    label INTEGER NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (model, prediction_id, row_index)
);
CREATE TABLE IF NOT EXISTS drift_quality (
    window_id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    updated REAL NOT NULL,
    n_records INTEGER NOT NULL,
    n_labeled INTEGER NOT NULL,
    result BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_quality_model ON drift_quality (model, window_id);
"""

PG_QUALITY_SCHEMA = """
CREATE INDEX IF NOT EXISTS drift_records_prediction ON drift_records (prediction_id, row_index);
CREATE TABLE IF NOT EXISTS drift_labels (
    model TEXT COLLATE "C" NOT NULL,
    prediction_id TEXT COLLATE "C" NOT NULL,
    row_index INTEGER NOT NULL,
    label SMALLINT NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (model, prediction_id, row_index)
);
CREATE TABLE IF NOT EXISTS drift_quality (
    window_id BIGINT PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    n_records INTEGER NOT NULL,
    n_labeled INTEGER NOT NULL,
    result BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_quality_model ON drift_quality (model, window_id);
"""

#: Keys per ``IN (...)`` / rows per multi-row ``VALUES``: well under SQLite's parameter limit.
CHUNK = 400


@dataclass
class LabelWrite:
    """What storing a batch of labels did."""

    accepted: int  # labels of rows that had none
    updated: int  # labels that replaced a different label
    duplicates: int  # the same label again
    unknown: list[tuple[str, int]]  # (prediction_id, row_index) with no stored record
    windows: set[int]  # closed windows whose rows got a new or changed label
    versions: set[str]


@dataclass
class QualityRow:
    window_id: int
    model: str
    version: str
    updated: float
    n_records: int
    n_labeled: int
    result: dict[str, Any]


def _json(value: Any) -> Any:  # noqa: ANN401
    return orjson.loads(value if isinstance(value, bytes | str) else bytes(value))


def _chunks(seq: Sequence[Any], n: int = CHUNK) -> list[Sequence[Any]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]


QUALITY_COLUMNS = "window_id, model, version, updated, n_records, n_labeled, result"


def quality_row(row: Sequence[Any]) -> QualityRow:
    w, m, v, u, n, k, res = row
    return QualityRow(int(w), m, v, float(u), int(n), int(k), _json(res))


class QualityQueries:
    """Label and quality queries on the drift store's own connection (see the module docstring)."""

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...  # provided by the store
    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any: ...  # noqa: ANN401
    def _execute(self, sql: str, args: Sequence[Any] = ()) -> None: ...

    # -- labels --------------------------------------------------------------------------------
    def write_labels(self, model: str, labels: Sequence[tuple[str, int, int]]) -> LabelWrite:
        """Store ``(prediction_id, row_index, label)`` of ``model``; rows without a stored record are
        reported as unknown and not stored. The last label given for a row in the batch counts."""
        wanted: dict[tuple[str, int], int] = {(pid, row): label for pid, row, label in labels}
        keys = list(wanted)
        pids = sorted({pid for pid, _ in keys})
        found: dict[tuple[str, int], tuple[str, int | None]] = {}
        old: dict[tuple[str, int], int] = {}
        for chunk in _chunks(pids):
            marks = ",".join("?" * len(chunk))
            for pid, row, version, window in self._all(
                "SELECT prediction_id, row_index, version, window_id FROM drift_records"
                f" WHERE model=? AND prediction_id IN ({marks})",
                (model, *chunk),
            ):
                found[(pid, int(row))] = (version, None if window is None else int(window))
            for pid, row, label in self._all(
                f"SELECT prediction_id, row_index, label FROM drift_labels WHERE model=? AND prediction_id IN ({marks})",
                (model, *chunk),
            ):
                old[(pid, int(row))] = int(label)
        unknown = [k for k in keys if k not in found]
        known = [k for k in keys if k in found]
        changed = [k for k in known if old.get(k) != wanted[k]]
        now = time.time()
        for chunk in _chunks(changed, CHUNK // 5):
            values = ",".join("(?, ?, ?, ?, ?)" for _ in chunk)
            args: list[Any] = []
            for pid, row in chunk:
                args += [model, pid, row, wanted[(pid, row)], now]
            self._execute(
                f"INSERT INTO drift_labels (model, prediction_id, row_index, label, received) VALUES {values}"
                " ON CONFLICT (model, prediction_id, row_index) DO UPDATE SET label=excluded.label,"
                " received=excluded.received",
                args,
            )
        return LabelWrite(
            accepted=sum(1 for k in changed if k not in old),
            updated=sum(1 for k in changed if k in old),
            duplicates=len(known) - len(changed),
            unknown=unknown,
            windows={w for k in changed if (w := found[k][1]) is not None},
            versions={found[k][0] for k in changed},
        )

    def count_labels(self, model: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM drift_labels WHERE model=?", (model,))[0])

    def window_predictions(self, window_id: int) -> list[tuple[float | None, int | None, dict[str, Any]]]:
        """``(prediction, label or None, inputs)`` of every record of a closed window."""
        rows = self._all(
            "SELECT r.prediction, l.label, r.inputs FROM drift_records r LEFT JOIN drift_labels l"
            " ON l.model=r.model AND l.prediction_id=r.prediction_id AND l.row_index=r.row_index"
            " WHERE r.window_id=? ORDER BY r.received, r.id",
            (window_id,),
        )
        return [
            (None if p is None else float(p), None if lab is None else int(lab), _json(inp))
            for p, lab, inp in rows
        ]

    # -- per-window quality --------------------------------------------------------------------
    def windows_without_quality(self, limit: int = 100) -> list[tuple[int, str, str]]:
        """``(window_id, model, version)`` of closed windows with no quality result yet, oldest first."""
        rows = self._all(
            "SELECT w.id, w.model, w.version FROM drift_windows w WHERE NOT EXISTS"
            " (SELECT 1 FROM drift_quality q WHERE q.window_id = w.id) ORDER BY w.id LIMIT ?",
            (limit,),
        )
        return [(int(i), m, v) for i, m, v in rows]

    def window_key(self, window_id: int) -> tuple[str, str] | None:
        """(model, version) of a closed window."""
        row = self._one("SELECT model, version FROM drift_windows WHERE id=?", (window_id,))
        return None if row is None else (row[0], row[1])

    def quality_result(self, window_id: int) -> dict[str, Any] | None:
        row = self._one("SELECT result FROM drift_quality WHERE window_id=?", (window_id,))
        return None if row is None else _json(row[0])

    def save_quality(
        self, window_id: int, model: str, version: str, n_records: int, n_labeled: int, result: dict[str, Any]
    ) -> None:
        self._execute(
            f"INSERT INTO drift_quality ({QUALITY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (window_id) DO UPDATE SET updated=excluded.updated, n_records=excluded.n_records,"
            " n_labeled=excluded.n_labeled, result=excluded.result",
            (
                window_id,
                model,
                version,
                time.time(),
                n_records,
                n_labeled,
                orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY),
            ),
        )

    def quality_rows(self, model: str, limit: int = 50, version: str | None = None) -> list[QualityRow]:
        """Quality results of ``model`` (one version, or all), newest window first."""
        if version is None:
            rows = self._all(
                f"SELECT {QUALITY_COLUMNS} FROM drift_quality WHERE model=? ORDER BY window_id DESC LIMIT ?",
                (model, limit),
            )
        else:
            rows = self._all(
                f"SELECT {QUALITY_COLUMNS} FROM drift_quality WHERE model=? AND version=?"
                " ORDER BY window_id DESC LIMIT ?",
                (model, version, limit),
            )
        return [quality_row(r) for r in rows]

    def quality_versions(self) -> list[tuple[str, str]]:
        """Every (model, version) with quality results."""
        return [
            (m, v) for m, v in self._all("SELECT DISTINCT model, version FROM drift_quality ORDER BY model")
        ]
