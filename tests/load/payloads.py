"""Realistic request payloads from the generated demo data (no locust import: pytest uses this too).

Reads ``<data_dir>/raw/transactions.parquet`` and the feature store's entity snapshots under
``<data_dir>/features/sources/`` and joins them point-in-time exactly as training does, so a sample
row holds the entity keys, the request-time fields and every model feature with the values the
model saw for that transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mlplatform.features.contract import (
    ENTITY_KEYS,
    INT_FEATURES,
    MODEL_FEATURES,
    REQUEST_FEATURES,
    point_in_time_join,
)

USER_SOURCE = Path("features") / "sources" / "user_snapshots.parquet"
MERCHANT_SOURCE = Path("features") / "sources" / "merchant_snapshots.parquet"
TRANSACTIONS = Path("raw") / "transactions.parquet"


def load_samples(data_dir: Path | str, n: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` transactions (sampled with ``seed``) with entity keys, request fields and model features."""
    data_dir = Path(data_dir)
    path = data_dir / TRANSACTIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train first (`mlplatform train` or `make run`)")
    tx = pd.read_parquet(path)
    tx = tx.sample(n=min(n, len(tx)), random_state=seed).sort_values("event_timestamp")
    snapshots = {
        "user_id": pd.read_parquet(data_dir / USER_SOURCE),
        "merchant_id": pd.read_parquet(data_dir / MERCHANT_SOURCE),
    }
    frame = point_in_time_join(tx, snapshots)
    rows = []
    for rec in frame.to_dict(orient="records"):
        row: dict[str, Any] = {k: int(rec[k]) for k in ENTITY_KEYS}
        for f in MODEL_FEATURES:
            row[f] = int(rec[f]) if f in INT_FEATURES else float(rec[f])
        rows.append(row)
    return rows


def _column(name: str, values: list[Any]) -> dict[str, Any]:
    datatype = "INT64" if name in INT_FEATURES or name in ENTITY_KEYS else "FP64"
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values}


def tensor_request(rows: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
    """A V2 inference body with one input per model feature (what a client with all features sends)."""
    body: dict[str, Any] = {"inputs": [_column(f, [r[f] for r in rows]) for f in MODEL_FEATURES]}
    if request_id is not None:
        body["id"] = request_id
    return body


def entity_request(rows: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
    """A V2 inference body with entity keys and request-time fields; serving fetches the history."""
    names = (*ENTITY_KEYS, *REQUEST_FEATURES)
    body: dict[str, Any] = {"inputs": [_column(f, [r[f] for r in rows]) for f in names]}
    if request_id is not None:
        body["id"] = request_id
    return body


def feature_read_request(rows: list[dict[str, Any]], feature_service: str) -> dict[str, Any]:
    """A feature-store ``POST /v1/features/online`` body for these rows' entities."""
    return {
        "feature_service": feature_service,
        "rows": [
            {"user_id": r["user_id"], "merchant_id": r["merchant_id"], "amount": r["amount"]} for r in rows
        ],
    }
