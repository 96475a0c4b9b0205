"""One model version's drift detector: its reference sample, its schema, its drift computation.

Lifecycle: :meth:`DriftDetector.load` (download the reference sample logged with the version in
MLflow, cached under ``<data_dir>/drift/reference/<model>/<version>/``), :meth:`detect`,
:meth:`unload`. The expected input columns are the model's training features: the reference
sample's columns without ``prediction`` (training logs the sample from the same frame as the
model signature). A reference column the model *returns* (a text model's generated ``text_output``) is
taken from each record's outputs (:meth:`DriftDetector.columns_of`) and tested like an input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.core.errors import InvalidInput
from mlplatform.core.registry import ModelRef, download_reference, resolve_version
from mlplatform.drift import stats

log = logging.getLogger("mlplatform.drift.detector")

PREDICTION_COLUMN = "prediction"


class DriftDetector:
    """Drift detection for one registered model version against its training reference."""

    def __init__(self, model: str, version: str, cache_dir: Path) -> None:
        self.model = model
        self.version = version
        self.cache_dir = cache_dir / model / version
        self.reference: stats.PreparedReference | None = None
        self.features: list[str] = []
        self.kinds: dict[str, str] = {}
        self._feature_set: frozenset[str] = frozenset()
        self._string_columns: tuple[str, ...] = ()

    @property
    def loaded(self) -> bool:
        return self.reference is not None

    def load(self, client: Any) -> None:  # noqa: ANN401 - an MlflowClient (imported lazily)
        """Fetch the reference sample (from the local cache or MLflow); 404 for unknown model/version."""
        cached = self.cache_dir / "reference.parquet"
        if not cached.exists():
            resolved = resolve_version(client, ModelRef(self.model, alias=None, version=self.version))
            tmp = self.cache_dir / "download"
            path = download_reference(client, resolved, tmp)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            path.replace(cached)
        self.load_frame(pd.read_parquet(cached))

    def load_frame(self, frame: pd.DataFrame) -> None:
        """Use ``frame`` (training features plus optional ``prediction``) as the reference."""
        self.reference = stats.PreparedReference(frame.reset_index(drop=True))
        self.features = [c for c in frame.columns if c != PREDICTION_COLUMN]
        self.kinds = {c: frame[c].dtype.kind for c in frame.columns}
        self._feature_set = frozenset(self.features)
        self._string_columns = tuple(c for c in self.features if self.kinds[c] in "OSU")
        log.info("loaded reference for %s/%s: %d rows", self.model, self.version, len(frame))

    def unload(self) -> None:
        self.reference = None

    # -- input checks ----------------------------------------------------------------------------
    def columns_of(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        """A record's drift-tested columns: its inputs, plus reference columns found only among its
        outputs (a text model's ``text_output``); a string column's one-element list (a ``[N, 1]``
        BYTES tensor's row) becomes its string."""
        if not self._string_columns and self._feature_set <= inputs.keys():
            return inputs  # the tabular fast path: nothing to add or unwrap
        row = dict(inputs)
        for col in self.features:
            if col not in row and col in outputs:
                row[col] = outputs[col]
        for col in self._string_columns:
            value = row.get(col)
            if isinstance(value, list) and len(value) == 1:
                row[col] = value[0]
        return row

    def validate(self, inputs: Sequence[dict[str, Any]], ignored: frozenset[str] = frozenset()) -> None:
        """422 naming the columns when records do not match the model's input schema."""
        expected = set(self.features)
        missing: set[str] = set()
        unexpected: set[str] = set()
        bad_type: set[str] = set()
        for row in inputs:
            keys = row.keys()
            if keys != expected:
                missing |= expected - keys
                unexpected |= keys - expected - ignored
            for col in self.features:
                value = row.get(col)
                if value is None or _fits(self.kinds[col], value):
                    continue
                bad_type.add(col)
        problems = []
        if missing:
            problems.append(f"missing columns {sorted(missing)}")
        if unexpected:
            problems.append(f"unexpected columns {sorted(unexpected)}")
        if bad_type:
            want = {c: _kind_name(self.kinds[c]) for c in sorted(bad_type)}
            problems.append(f"wrong value types in columns {want}")
        if problems:
            raise InvalidInput(
                f"records for model {self.model}/{self.version} do not match its signature: "
                + "; ".join(problems)
            )

    # -- detection -------------------------------------------------------------------------------
    def frame(self, inputs: Sequence[dict[str, Any]], predictions: Sequence[float | None]) -> pd.DataFrame:
        """Current data as a frame with the reference's dtypes (so column types are inferred alike)."""
        assert self.reference is not None
        df = pd.DataFrame.from_records(list(inputs), columns=self.features)
        if PREDICTION_COLUMN in self.reference.frame.columns:
            df[PREDICTION_COLUMN] = np.array([np.nan if p is None else p for p in predictions], dtype=float)
        for col in df.columns:
            ref_dtype = self.reference.frame[col].dtype
            if df[col].dtype == ref_dtype:
                continue
            try:
                df[col] = df[col].astype(ref_dtype)
            except (TypeError, ValueError):
                if ref_dtype.kind in "iu":
                    df[col] = df[col].astype(float)  # missing values in an integer column
        return df

    def detect(self, current: pd.DataFrame, drift_share: float) -> stats.DatasetDrift:
        assert self.reference is not None, "detector not loaded"
        pred = PREDICTION_COLUMN if PREDICTION_COLUMN in current.columns else None
        return stats.dataset_drift(
            self.reference, current, self.features, prediction_column=pred, drift_share=drift_share
        )

    def report_html(self, current: pd.DataFrame, result: stats.DatasetDrift, max_rows: int) -> str:
        """Evidently's own HTML report (Report with DataDriftPreset) for ``current`` vs the reference."""
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        assert self.reference is not None
        columns = [c for c in result.columns if c in current.columns]
        num = [c for c in columns if result.columns[c].column_type == stats.NUMERICAL]
        text = [c for c in columns if result.columns[c].column_type == stats.TEXT]
        cat = [c for c in columns if c not in num and c not in text]
        definition = DataDefinition(numerical_columns=num, categorical_columns=cat, text_columns=text)
        ref = self.reference.frame[columns]
        cur = current[columns]
        if len(ref) > max_rows:
            ref = ref.sample(max_rows, random_state=0)
        if len(cur) > max_rows:
            cur = cur.sample(max_rows, random_state=0)
        snapshot = Report([DataDriftPreset(columns=columns, drift_share=result.drift_share_threshold)]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        return snapshot.get_html_str(as_iframe=False)


def _fits(kind: str, value: Any) -> bool:  # noqa: ANN401
    if kind == "b":
        return isinstance(value, bool) or value in (0, 1)
    if kind in "iuf":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return kind == "f" or not isinstance(value, float) or math.isnan(value) or value.is_integer()
    if kind in "OSU":
        return isinstance(value, str)
    return True


def _kind_name(kind: str) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "number", "O": "string"}.get(kind, kind)


def prediction_of(outputs: dict[str, Any], name: str | None) -> float | None:
    """The model's prediction in a record's outputs: the named output, else the first numeric one."""
    items = [(name, outputs.get(name))] if name else list(outputs.items())
    for _, value in items:
        if isinstance(value, list | tuple) and len(value) in (1, 2):
            value = value[-1]  # [p] or a binary classifier's [p(0), p(1)]: the positive class
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float):
            return float(value)
    return None
