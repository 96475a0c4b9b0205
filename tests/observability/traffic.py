"""Requests the live observability tests send: good, bad and drifted V2 inference/explain traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from mlplatform.features.contract import ENTITY_KEYS, INT_FEATURES, MODEL_FEATURES, REQUEST_FEATURES

MODEL = "fraud-detector"
FEATURE_SERVICE = "fraud_detection_v1"


def reference_rows(data_dir: Path, n: int = 200) -> pd.DataFrame:
    """Model-input rows from the demo model's logged reference sample (training distribution)."""
    paths = sorted(data_dir.rglob("reference.parquet"))
    assert paths, f"no reference.parquet under {data_dir}"
    frame = pd.read_parquet(paths[0])
    return frame[list(MODEL_FEATURES)].head(n).reset_index(drop=True)


def entity_rows(data_dir: Path, n: int = 20) -> pd.DataFrame:
    """Entity keys plus request-time fields from the raw demo transactions (features come from the store)."""
    paths = sorted((data_dir / "raw").rglob("*.parquet"))
    assert paths, f"no raw transactions under {data_dir / 'raw'}"
    frame = pd.read_parquet(paths[0])
    return frame[[*ENTITY_KEYS, *REQUEST_FEATURES]].tail(n).reset_index(drop=True)


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows with every feature moved far from its training distribution (a drift episode)."""
    out = frame.copy()
    for col in out.columns:
        if col in INT_FEATURES:
            out[col] = out[col] * 3 + 7
        else:
            out[col] = out[col] * 5.0 + out[col].abs().max() + 10.0
    if "hour" in out.columns:
        out["hour"] = 3  # everything at 3 am
    return out


def v2_body(frame: pd.DataFrame, request_id: str | None = None) -> dict[str, Any]:
    """An Open Inference Protocol request with one [N] tensor per column."""
    inputs = []
    for col in frame.columns:
        is_int = col in INT_FEATURES or col in ENTITY_KEYS
        values = frame[col].astype("int64" if is_int else "float64").tolist()
        inputs.append(
            {"name": col, "shape": [len(values)], "datatype": "INT64" if is_int else "FP64", "data": values}
        )
    body: dict[str, Any] = {"inputs": inputs}
    if request_id:
        body["id"] = request_id
    return body


def post(client: httpx.Client, url: str, body: Any, expect: set[int] | None = None) -> httpx.Response:
    r = client.post(url, json=body)
    if expect is not None:
        assert r.status_code in expect, f"POST {url} -> {r.status_code} {r.text[:300]}"
    return r
