"""Per-column drift statistics, chosen and computed exactly as Evidently 0.7.23 does by default.

A vectorised numpy/scipy reimplementation of Evidently's default stattest selection
(``evidently/legacy/calculations/stattests/registry.py:_get_default_stattest``) and of the five
tests it can pick (``legacy/calculations/stattests/*.py``):

=================================  ==========================  ==================  ===========
reference rows / column            distinct values (ref+cur)   method              drifted if
=================================  ==========================  ==================  ===========
<= 1000, numerical                 > 5                         ``ks`` (p-value)    p <= 0.05
<= 1000, numerical or categorical  3..5 (numerical) / > 2      ``chisquare``       p < 0.05
<= 1000, numerical or categorical  <= 2                        ``z`` (p-value)     p < 0.05
> 1000, numerical                  > 5                         ``wasserstein``     d >= 0.1
> 1000, numerical                  <= 5                        ``jensenshannon``   d >= 0.1
> 1000, categorical                any                         ``jensenshannon``   d >= 0.1
=================================  ==========================  ==================  ===========

Column types follow Evidently's inference (``evidently.core.datasets.infer_column_type``) on the
current data: float -> numerical; integer -> categorical with <= 10 distinct values, else
numerical; strings -> text when more than half of them are distinct, else categorical; bool and
category -> categorical. Text columns get Evidently's text-content drift (a domain classifier,
:mod:`mlplatform.drift.text`) and descriptor means instead of the table above. NaN and +-inf are dropped per column first,
as Evidently does. PSI (Evidently's ``psi`` test, 0.1 threshold) is computed for every column too,
as an extra score; it does not decide drift.

The numerical fast path sorts each column once (the sorted reference is cached per model version)
and computes the normed Wasserstein distance for all columns at once when sizes allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from mlplatform.drift import text

NUMERICAL = "num"
CATEGORICAL = "cat"
TEXT = text.TEXT
INTEGER_CARDINALITY_LIMIT = 10
SMALL_REFERENCE_ROWS = 1000

# Evidently's registered name -> (display name, default threshold, "p" for p-values else "d").
METHODS: dict[str, tuple[str, float, str]] = {
    "ks": ("K-S p_value", 0.05, "p"),
    "chisquare": ("chi-square p_value", 0.05, "p"),
    "z": ("Z-test p_value", 0.05, "p"),
    "wasserstein": ("Wasserstein distance (normed)", 0.1, "d"),
    "jensenshannon": ("Jensen-Shannon distance", 0.1, "d"),
    **text.METHODS,  # ROC AUC of a domain classifier: drifted if above the cutoff (drift/text.py)
}
PSI_THRESHOLD = 0.1


@dataclass
class ColumnDrift:
    """Drift of one column between reference and current data."""

    column: str
    column_type: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    psi: float | None = None
    cutoff: float | None = None  # text: the AUC the statistic had to exceed (threshold or percentile)
    descriptors: dict[str, dict[str, float]] | None = None  # text: descriptor means per window

    @property
    def display_name(self) -> str:
        return METHODS[self.method][0]


@dataclass
class DatasetDrift:
    """Per-column results plus the dataset-level decision (share of drifted feature columns)."""

    columns: dict[str, ColumnDrift]
    drift_share_threshold: float
    prediction: ColumnDrift | None = None
    feature_names: list[str] = field(default_factory=list)

    @property
    def drifted_count(self) -> int:
        return sum(1 for n in self.feature_names if self.columns[n].drifted)

    @property
    def drift_share(self) -> float:
        return self.drifted_count / len(self.feature_names) if self.feature_names else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.feature_names) and self.drift_share >= self.drift_share_threshold


def infer_column_type(values: pd.Series) -> str:
    """Evidently's column type inference: numerical, categorical or text."""
    kind = values.dtype.kind
    if kind == "f":
        return NUMERICAL
    if kind in "iu":
        return CATEGORICAL if values.nunique() <= INTEGER_CARDINALITY_LIMIT else NUMERICAL
    return TEXT if text.is_text(values) else CATEGORICAL


def select_method(ref_rows: int, column_type: str, n_values: int) -> str:
    """Evidently's ``_get_default_stattest`` for numerical and categorical columns."""
    if ref_rows <= SMALL_REFERENCE_ROWS:
        if column_type == NUMERICAL and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if column_type == NUMERICAL and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def _decide(method: str, statistic: float, threshold: float) -> bool:
    if method == "ks":
        return bool(statistic <= threshold)
    if METHODS[method][2] == "p":
        return bool(statistic < threshold)
    return bool(statistic >= threshold)


def _clean(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return values[np.isfinite(values)]
    if values.dtype.kind == "O":
        mask = pd.notna(values)
        return values[mask]
    return values


def _counts(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of every distinct value (union of both) in reference and current."""
    keys, inverse = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    inverse = inverse.reshape(-1)
    ref_counts = np.bincount(inverse[: len(ref)], minlength=len(keys)).astype(float)
    cur_counts = np.bincount(inverse[len(ref) :], minlength=len(keys)).astype(float)
    return keys, ref_counts, cur_counts


def _binned(
    ref: np.ndarray, cur: np.ndarray, column_type: str, ref_unique: int, fill_zeroes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's ``get_binned_data``: Sturges bins over both for rich numerics, else value shares."""
    if column_type == NUMERICAL and ref_unique > 20:
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        ref_p = np.histogram(ref, bins)[0] / len(ref)
        cur_p = np.histogram(cur, bins)[0] / len(cur)
    else:
        _, ref_c, cur_c = _counts(ref, cur)
        ref_p = ref_c / len(ref)
        cur_p = cur_c / len(cur)
    if fill_zeroes:
        for arr in (ref_p, cur_p):
            smallest = arr[arr != 0].min()
            arr[arr == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return ref_p, cur_p


def psi(ref: np.ndarray, cur: np.ndarray, column_type: str, ref_unique: int) -> float:
    """Population stability index with Evidently's binning (Sturges bins or value shares)."""
    ref_p, cur_p = _binned(ref, cur, column_type, ref_unique, fill_zeroes=True)
    return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))


def _wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two sorted samples (scipy's CDF formulation)."""
    if len(u) == len(v):
        return float(np.mean(np.abs(u - v)))
    all_values = np.sort(np.concatenate([u, v]))
    deltas = np.diff(all_values)
    u_cdf = np.searchsorted(u, all_values[:-1], "right") / len(u)
    v_cdf = np.searchsorted(v, all_values[:-1], "right") / len(v)
    return float(np.sum(np.abs(u_cdf - v_cdf) * deltas))


def _n_unique_sorted(a: np.ndarray) -> int:
    return 0 if len(a) == 0 else int(1 + np.count_nonzero(a[1:] != a[:-1]))


def _run_test(method: str, ref: np.ndarray, cur: np.ndarray, column_type: str, ref_unique: int) -> float:
    if method == "ks":
        return float(stats.ks_2samp(ref, cur)[1])
    if method == "chisquare":
        _, ref_c, cur_c = _counts(ref, cur)
        return float(stats.chisquare(cur_c, ref_c * (len(cur) / len(ref)))[1])
    if method == "z":
        keys, ref_c, cur_c = _counts(ref, cur)
        if len(keys) == 1:
            return 1.0
        # share of values that are NOT the smallest key, as Evidently encodes them
        p1 = 1.0 - ref_c[0] / len(ref)
        p2 = 1.0 - cur_c[0] / len(cur)
        n1, n2 = len(ref), len(cur)
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
        return float(2 * (1 - stats.norm.cdf(abs(z))))
    if method == "wasserstein":
        norm = max(float(np.std(ref)), 0.001)
        return _wasserstein_sorted(np.sort(ref), np.sort(cur)) / norm
    if method == "jensenshannon":
        ref_p, cur_p = _binned(ref, cur, column_type, ref_unique, fill_zeroes=False)
        return float(distance.jensenshannon(ref_p, cur_p))
    raise ValueError(f"unknown method {method!r}")


class PreparedReference:
    """A reference frame with per-column caches (sorted values, std, distinct counts)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._clean: dict[str, np.ndarray] = {}
        self._sorted: dict[str, np.ndarray] = {}
        self._std: dict[str, float] = {}
        self._unique: dict[str, int] = {}
        self._dense_numeric: np.ndarray | None = None
        self._dense_cols: tuple[str, ...] = ()
        self._text: dict[str, text.ReferenceText] = {}

    def clean(self, column: str) -> np.ndarray:
        if column not in self._clean:
            self._clean[column] = _clean(self.frame[column].to_numpy())
        return self._clean[column]

    def sorted(self, column: str) -> np.ndarray:
        if column not in self._sorted:
            self._sorted[column] = np.sort(self.clean(column))
        return self._sorted[column]

    def std(self, column: str) -> float:
        if column not in self._std:
            self._std[column] = float(np.std(self.clean(column)))
        return self._std[column]

    def n_unique(self, column: str) -> int:
        if column not in self._unique:
            values = self.clean(column)
            if values.dtype.kind in "fiub":
                self._unique[column] = _n_unique_sorted(self.sorted(column))
            else:
                self._unique[column] = int(pd.Series(values).nunique())
        return self._unique[column]

    def text(self, column: str) -> text.ReferenceText:
        """The column's vocabulary and descriptor means (text columns)."""
        if column not in self._text:
            self._text[column] = text.ReferenceText([str(v) for v in self.clean(column)])
        return self._text[column]

    def sorted_matrix(self, columns: tuple[str, ...]) -> np.ndarray:
        if self._dense_cols != columns or self._dense_numeric is None:
            self._dense_numeric = np.column_stack([self.sorted(c) for c in columns])
            self._dense_cols = columns
        return self._dense_numeric


def column_drift(
    reference: PreparedReference,
    current: pd.DataFrame,
    column: str,
    column_type: str | None = None,
    with_psi: bool = True,
) -> ColumnDrift:
    """Drift of one column with Evidently's default method and threshold."""
    ctype = column_type or infer_column_type(current[column])
    ref = reference.clean(column)
    cur = _clean(current[column].to_numpy())
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(
            f"column {column!r} has no finite values in the {'reference' if len(ref) == 0 else 'current'} data"
        )
    if ctype == TEXT:
        return _text_drift(reference, column, ref, cur)
    ref_unique = reference.n_unique(column)
    if ref.dtype.kind in "fiub" and cur.dtype.kind in "fiub":
        cur_sorted = np.sort(cur)
        n_values = _n_unique_sorted(np.sort(np.concatenate([reference.sorted(column), cur_sorted])))
    else:
        n_values = int(pd.concat([pd.Series(ref), pd.Series(cur)]).nunique())
    method = select_method(len(ref), ctype, n_values)
    threshold = METHODS[method][1]
    if method == "wasserstein":
        statistic = _wasserstein_sorted(reference.sorted(column), cur_sorted) / max(
            reference.std(column), 0.001
        )
    else:
        statistic = _run_test(method, ref, cur, ctype, ref_unique)
    score = psi(ref, cur, ctype, ref_unique) if with_psi else None
    return ColumnDrift(
        column, ctype, method, statistic, threshold, _decide(method, statistic, threshold), score
    )


def _text_drift(reference: PreparedReference, column: str, ref: np.ndarray, cur: np.ndarray) -> ColumnDrift:
    current = [str(v) for v in cur]
    try:
        res = text.text_drift([str(v) for v in ref], current)
    except ValueError as exc:  # e.g. nothing but stop words: Evidently cannot test it either
        text.log.warning("text drift of column %r cannot be computed: %s", column, exc)
        raise
    descriptors = reference.text(column).compare(current)
    return ColumnDrift(
        column, TEXT, res.method, res.statistic, res.threshold, res.drifted, None, res.cutoff, descriptors
    )


def _fast_numeric(
    reference: PreparedReference, current: pd.DataFrame, columns: list[str], with_psi: bool
) -> dict[str, ColumnDrift]:
    """All-finite float columns of a large reference: normed Wasserstein for every column at once."""
    cols = tuple(columns)
    ref_sorted = reference.sorted_matrix(cols)
    cur_sorted = np.sort(current[list(cols)].to_numpy(dtype=float), axis=0)
    n_ref, n_cur = ref_sorted.shape[0], cur_sorted.shape[0]
    ref_std = np.maximum(np.array([reference.std(c) for c in cols]), 0.001)
    if n_ref == n_cur:
        dist = np.mean(np.abs(ref_sorted - cur_sorted), axis=0)
    else:
        dist = np.array([_wasserstein_sorted(ref_sorted[:, j], cur_sorted[:, j]) for j in range(len(cols))])
    scores = dist / ref_std
    out: dict[str, ColumnDrift] = {}
    for j, col in enumerate(cols):
        distinct_cur = _n_unique_sorted(cur_sorted[:, j])
        if reference.n_unique(col) <= 5 and distinct_cur <= 5:
            out[col] = column_drift(reference, current, col, NUMERICAL, with_psi)
            continue
        threshold = METHODS["wasserstein"][1]
        score = float(scores[j])
        p = None
        if with_psi:
            p = psi(ref_sorted[:, j], cur_sorted[:, j], NUMERICAL, reference.n_unique(col))
        out[col] = ColumnDrift(col, NUMERICAL, "wasserstein", score, threshold, score >= threshold, p)
    return out


def dataset_drift(
    reference: PreparedReference,
    current: pd.DataFrame,
    features: list[str],
    *,
    prediction_column: str | None = None,
    drift_share: float = 0.5,
    column_types: dict[str, str] | None = None,
    with_psi: bool = True,
) -> DatasetDrift:
    """Drift of every feature (and the prediction) between ``reference`` and ``current``."""
    types = {c: (column_types or {}).get(c) or infer_column_type(current[c]) for c in features}
    results: dict[str, ColumnDrift] = {}
    fast = [
        c
        for c in features
        if types[c] == NUMERICAL
        and current[c].dtype.kind == "f"
        and reference.frame[c].dtype.kind == "f"
        and len(reference.clean(c)) == len(reference.frame)
        and len(reference.frame) > SMALL_REFERENCE_ROWS
    ]
    if fast:
        block = current[fast].to_numpy(dtype=float)
        if np.isfinite(block).all():
            results.update(_fast_numeric(reference, current, fast, with_psi))
    evaluated = []
    for c in features:
        if c not in results:
            try:
                results[c] = column_drift(reference, current, c, types[c], with_psi)
            except ValueError:  # no finite value in this window (Evidently refuses such a column)
                continue
        evaluated.append(c)
    pred = None
    if prediction_column and prediction_column in current and prediction_column in reference.frame:
        try:
            pred = column_drift(reference, current, prediction_column, None, with_psi)
            results[prediction_column] = pred
        except ValueError:  # no usable predictions in this window (e.g. non-numeric outputs)
            pred = None
    return DatasetDrift(results, drift_share, pred, evaluated)


TYPE_NAMES = {NUMERICAL: "numerical", CATEGORICAL: "categorical", TEXT: "text"}


def as_json(result: DatasetDrift) -> dict[str, Any]:
    """A JSON-ready summary of a dataset drift result."""

    def col(c: ColumnDrift) -> dict[str, Any]:
        out = {
            "column_type": TYPE_NAMES[c.column_type],
            "method": c.method,
            "method_display_name": c.display_name,
            "statistic": c.statistic,
            "threshold": c.threshold,
            "drifted": c.drifted,
            "psi": c.psi,
        }
        if c.column_type == TEXT:
            out["cutoff"] = c.cutoff
            out["descriptors"] = c.descriptors
        return out

    return {
        "features": {n: col(result.columns[n]) for n in result.feature_names},
        "prediction": col(result.prediction) if result.prediction else None,
        "drifted_features": result.drifted_count,
        "drift_share": result.drift_share,
        "drift_share_threshold": result.drift_share_threshold,
        "dataset_drift": result.dataset_drift,
    }
