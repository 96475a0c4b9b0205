"""Requests the live observability tests send: good, bad and drifted V2 inference/explain traffic
(rows typed as the models' schema types them; ``tests.helpers.v2_body`` makes the request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from mlplatform.features.contract import ENTITY_KEYS, INT_FEATURES, MODEL_FEATURES, REQUEST_FEATURES

MODEL = "fraud-detector"
FEATURE_SERVICE = "fraud_detection_v1"


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the types the models' schema gives its columns: int64 for the integer features
    and entity keys, float64 for the rest (so ``tests.helpers.v2_body`` sends INT64 and FP64)."""
    return frame.astype(
        {c: "int64" if c in INT_FEATURES or c in ENTITY_KEYS else "float64" for c in frame.columns}
    )


def reference_rows(data_dir: Path, n: int = 200) -> pd.DataFrame:
    """Model-input rows from the demo model's logged reference sample (training distribution)."""
    paths = sorted(data_dir.rglob("reference.parquet"))
    assert paths, f"no reference.parquet under {data_dir}"
    frame = pd.read_parquet(paths[0])
    return _typed(frame[list(MODEL_FEATURES)].head(n).reset_index(drop=True))


def entity_rows(data_dir: Path, n: int = 20) -> pd.DataFrame:
    """Entity keys plus request-time fields from the raw demo transactions (features come from the store)."""
    paths = sorted((data_dir / "raw").rglob("*.parquet"))
    assert paths, f"no raw transactions under {data_dir / 'raw'}"
    frame = pd.read_parquet(paths[0])
    return _typed(frame[[*ENTITY_KEYS, *REQUEST_FEATURES]].tail(n).reset_index(drop=True))


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


def post(client: httpx.Client, url: str, body: Any, expect: set[int] | None = None) -> httpx.Response:
    r = client.post(url, json=body)
    if expect is not None:
        assert r.status_code in expect, f"POST {url} -> {r.status_code} {r.text[:300]}"
    return r
