"""Score a file of entity rows with a registered model version, features read point-in-time from Feast.

``mlplatform batch-score --model NAME [--version N | --alias A] --entities FILE --out FILE``:

1. the entity rows (parquet or CSV): ``user_id``, ``merchant_id``, ``event_timestamp`` and the
   request-time features (``amount``, ``hour``, ``merchant_category``, ``distance_from_home``);
2. history features from the Feast offline store as of each row's ``event_timestamp`` minus one
   second, the same point-in-time retrieval training uses
   (:func:`mlplatform.features.store.historical_training_frame`: per feature view, TTL respected,
   defaults for entities without history, the on-demand ratio computed by its registered
   transformation); so a batch score equals the online score the row would have had at that time;
3. the version resolved in MLflow (alias or number) and loaded as pyfunc; its input columns from
   the version's ``mlplatform.model_features`` tag;
4. parquet out (``{run}`` in the path becomes the run's UTC start): the entity rows, the model features, ``fraud_probability``, ``model``,
   ``model_version``, ``scored_at`` (the run's start, UTC) and ``prediction_id`` (one per run);
5. with ``BATCH_DRIFT_URL`` set, every row posted to drift detection as an inference record with
   ``source: "batch"``, which windows batch rows apart from online traffic (drift/sources.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.core.payloads import InferenceRecord, encode_records
from mlplatform.core.registry import ModelRef, ResolvedVersion, mlflow_client, resolve_version
from mlplatform.features import contract as feat

log = logging.getLogger("mlplatform.batch")

ENTITY_COLUMNS: tuple[str, ...] = (*feat.ENTITY_KEYS, feat.TIMESTAMP_COLUMN)
REQUIRED_COLUMNS: tuple[str, ...] = (*ENTITY_COLUMNS, *feat.REQUEST_FEATURES)
OUTPUT_NAME = "fraud_probability"
ROW_ID = "transaction_id"


class BatchError(ValueError):
    """Bad input or configuration of a batch run (the CLI prints it and exits 2)."""


class BatchSettings(BaseSettings):
    """Where batch scoring logs its rows (env prefix ``BATCH_``). The registry, data directory and
    feature store come from the training settings (``MLFLOW_TRACKING_URI``, ``MLPLATFORM_DATA_DIR``,
    ``FEATURES_DATABASE_URL``), so a batch run reads exactly what training and serving read."""

    model_config = SettingsConfigDict(env_prefix="BATCH_", extra="ignore", populate_by_name=True)

    drift_url: str | None = Field(
        None, description="Drift-detection base URL; when set, scored rows are logged with source 'batch'."
    )
    drift_api_key: SecretStr | None = Field(
        None, description="API key (drift:write scope) sent to drift detection as a bearer token."
    )
    drift_batch_size: int = Field(
        5000,
        ge=1,
        le=10_000,
        description="Records per POST /v1/records (at most drift detection's DRIFT_MAX_RECORDS_PER_REQUEST).",
    )
    drift_timeout_s: float = Field(30.0, gt=0, description="Timeout of one POST to drift detection.")


@dataclass
class BatchResult:
    model: str
    version: str
    rows: int
    out: Path
    scored_at: datetime
    seconds_features: float
    seconds_predict: float
    drift_records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "rows": self.rows,
            "out": str(self.out),
            "scored_at": self.scored_at.isoformat(),
            "seconds_features": round(self.seconds_features, 3),
            "seconds_predict": round(self.seconds_predict, 3),
            "drift_records": self.drift_records,
        }


def read_entities(path: Path) -> pd.DataFrame:
    """The entity rows of ``path`` (parquet or CSV), checked: a :class:`BatchError` naming what is wrong."""
    if not path.is_file():
        raise BatchError(f"--entities {path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        else:
            raise BatchError(f"--entities {path}: expected a .parquet or .csv file")
    except BatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file: one line
        raise BatchError(f"--entities {path}: cannot be read ({str(exc).splitlines()[0][:200]})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise BatchError(f"--entities {path}: missing columns {missing}")
    if frame.empty:
        raise BatchError(f"--entities {path}: no rows")
    out = frame.reset_index(drop=True).copy()
    try:
        ts = pd.to_datetime(out[feat.TIMESTAMP_COLUMN], utc=True)
    except (ValueError, TypeError):
        raise BatchError(f"--entities {path}: column {feat.TIMESTAMP_COLUMN} is not a timestamp") from None
    if ts.isna().any():
        raise BatchError(f"--entities {path}: column {feat.TIMESTAMP_COLUMN} has empty values")
    out[feat.TIMESTAMP_COLUMN] = ts
    for col in (*feat.ENTITY_KEYS, *feat.REQUEST_FEATURES):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna()  # not a number, or empty
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BatchError(
                f"--entities {path}: column {col} row {row}: not a number ({out[col].iloc[row]!r})"
            )
        dtype = "int64" if col in feat.ENTITY_KEYS else feat.feature_dtype(col)
        if dtype == "int64" and not np.all(np.mod(values.to_numpy(dtype=float), 1) == 0):
            row = int(np.flatnonzero(np.mod(values.to_numpy(dtype=float), 1) != 0)[0])
            raise BatchError(f"--entities {path}: column {col} row {row}: not an integer")
        out[col] = values.astype(dtype)
    return out


def feature_rows(entities: pd.DataFrame, data_dir: Path, database_url: str | None) -> pd.DataFrame:
    """``entities`` plus every model feature, point-in-time from the Feast offline store."""
    from mlplatform.features.database import DatabaseURL
    from mlplatform.features.store import FeatureRepoPaths, historical_training_frame, open_store

    paths = FeatureRepoPaths(data_dir)
    database = DatabaseURL.parse(database_url) if database_url else None
    store = open_store(paths, database=database)
    rows = entities.copy()
    added_id = ROW_ID not in rows.columns
    if added_id:
        rows[ROW_ID] = np.arange(len(rows), dtype=np.int64)
    elif rows[ROW_ID].duplicated().any():
        raise BatchError(f"column {ROW_ID} has duplicate values (it identifies a row)")
    out = historical_training_frame(store, rows)
    return out.drop(columns=[ROW_ID]) if added_id else out


def model_columns(resolved: ResolvedVersion) -> list[str]:
    from mlplatform.training.pipeline import TAG_MODEL_FEATURES

    return [c for c in resolved.tags.get(TAG_MODEL_FEATURES, "").split(",") if c] or list(feat.MODEL_FEATURES)


def predict(resolved: ResolvedVersion, tracking_uri: str, frame: pd.DataFrame) -> np.ndarray:
    """P(fraud) of every row of ``frame`` from the pyfunc model of ``resolved``."""
    import mlflow.pyfunc

    from mlplatform.training.pipeline import mlflow_uri
    from mlplatform.training.retrain import fraud_probability

    columns = model_columns(resolved)
    x = pd.DataFrame({c: frame[c].astype(feat.feature_dtype(c)) for c in columns})
    with mlflow_uri(tracking_uri):
        model = mlflow.pyfunc.load_model(resolved.uri)
    return fraud_probability(model.predict(x))


def drift_records(
    scored: pd.DataFrame, resolved: ResolvedVersion, prediction_id: str
) -> list[InferenceRecord]:
    """One ``source: "batch"`` inference record per scored row (inputs: the model features and the entity
    keys, which drift detection ignores; timestamp: the row's event time)."""
    columns = model_columns(resolved)
    keep = [*columns, *[k for k in feat.ENTITY_KEYS if k not in columns]]
    inputs = scored[keep].to_dict("records")
    ts = scored[feat.TIMESTAMP_COLUMN].map(lambda t: t.timestamp()).to_numpy()
    probs = scored[OUTPUT_NAME].to_numpy()
    return [
        InferenceRecord.model_construct(
            request_id=prediction_id,
            prediction_id=prediction_id,
            row_index=i,
            model=resolved.name,
            version=resolved.version,
            timestamp=float(ts[i]),
            inputs=inputs[i],
            outputs={OUTPUT_NAME: float(probs[i])},
            trace_id="",
            span_id="",
            source="batch",
        )
        for i in range(len(scored))
    ]


async def post_records(records: list[InferenceRecord], settings: BatchSettings) -> int:
    """POST the records to drift detection in chunks; returns how many it stored (re-runs store none:
    the key is the run's prediction id and the row). Raises RuntimeError naming the failed chunk."""
    import httpx

    assert settings.drift_url is not None
    headers = {"content-type": "application/json"}
    if settings.drift_api_key is not None:
        headers["Authorization"] = f"Bearer {settings.drift_api_key.get_secret_value()}"
    accepted = 0
    async with httpx.AsyncClient(base_url=settings.drift_url, timeout=settings.drift_timeout_s) as client:
        for start in range(0, len(records), settings.drift_batch_size):
            chunk = records[start : start + settings.drift_batch_size]
            resp = await client.post("/v1/records", content=encode_records(chunk), headers=headers)
            if resp.status_code != 200:
                raise RuntimeError(
                    f"drift detection refused rows {start}..{start + len(chunk) - 1}: "
                    f"HTTP {resp.status_code} {resp.text[:300]}"
                )
            accepted += int(resp.json()["accepted"])
    return accepted


def run_batch(
    ref: ModelRef,
    entities_path: Path,
    out_path: Path,
    *,
    data_dir: Path,
    tracking_uri: str,
    feature_database_url: str | None = None,
    settings: BatchSettings | None = None,
) -> BatchResult:
    """Score ``entities_path`` with ``ref`` and write ``out_path`` (parquet); log to drift if configured."""
    settings = settings or BatchSettings()
    scored_at = datetime.now(UTC)
    # "{run}" in the output path: the run's UTC start, so a schedule writes one file per run
    out_path = Path(str(out_path).replace("{run}", scored_at.strftime("%Y%m%dT%H%M%SZ")))
    entities = read_entities(entities_path)
    resolved = resolve_version(mlflow_client(tracking_uri), ref)
    start = time.perf_counter()
    frame = feature_rows(entities, data_dir, feature_database_url)
    t_features = time.perf_counter() - start
    start = time.perf_counter()
    probs = predict(resolved, tracking_uri, frame)
    t_predict = time.perf_counter() - start
    prediction_id = f"batch-{scored_at.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
    frame[OUTPUT_NAME] = probs
    frame["model"] = resolved.name
    frame["model_version"] = resolved.version
    frame["scored_at"] = pd.Timestamp(scored_at)
    frame["prediction_id"] = prediction_id
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(out_path)  # readers never see half a file
    result = BatchResult(
        resolved.name, resolved.version, len(frame), out_path, scored_at, t_features, t_predict
    )
    if settings.drift_url:
        result.drift_records = asyncio.run(
            post_records(drift_records(frame, resolved, prediction_id), settings)
        )
    log.info("batch scored %d rows with %s/%s into %s", len(frame), resolved.name, resolved.version, out_path)
    return result
