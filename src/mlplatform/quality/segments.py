"""Segments and fairness: per-segment volume, prediction rate and realized performance, disparate
impact and equal opportunity between the values of a segment column.

A segment column is an input column (``merchant_category``) or an input column cut into buckets
(``hour`` with edges ``[0, 6, 12, 18, 24]`` gives ``hour:[0,6)`` ... ``hour:[18,24)``); see
:class:`SegmentSpec`. Definitions (for one segment column with values ``g``):

* prediction rate ``r_g``: share of rows with ``p >= threshold``;
* disparate impact ratio: ``min_g r_g / max_g r_g`` (1 = equal rates; the "four-fifths rule" flags
  below 0.8), over values with at least ``min_rows`` rows;
* equal-opportunity difference: ``max_g TPR_g - min_g TPR_g`` with ``TPR_g`` the recall among
  labelled positives of ``g`` (0 = equal), over values with at least ``min_positives`` positives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings

from mlplatform.quality.metrics import realized_metrics


class SegmentBinsSettings(BaseSettings):
    """How numeric segment columns are cut: drift detection's segments (``DRIFT_SEGMENT_BINS``) and the
    retraining gate's (``MLPLATFORM_RETRAIN_SEGMENT_BINS``) share the default, so both cut alike."""

    segment_bins: dict[str, list[float]] = Field(
        default_factory=lambda: {"hour": [0, 6, 12, 18, 24]},
        description="Bucket edges of numeric segment columns, as JSON (left-closed buckets): the default cuts "
        "hour into night, morning, afternoon and evening. Columns without edges segment by value.",
    )


@dataclass(frozen=True)
class SegmentSpec:
    """One segment column: an input column, optionally cut into buckets at ``bins`` (ascending edges,
    left-closed: ``[e0, e1)``, ... ; values outside every bucket form the segment ``other``)."""

    column: str
    bins: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.column}_bucket" if self.bins else self.column

    def values(self, column: pd.Series | np.ndarray) -> np.ndarray:
        """The segment value (a string) of each row."""
        col = pd.Series(column)
        if not self.bins:
            return np.array(
                ["missing" if pd.isna(v) else _text(v) for v in col.tolist()],
                dtype=object,
            )
        edges = list(self.bins)
        labels = [f"[{_text(lo)},{_text(hi)})" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        cut = pd.cut(pd.to_numeric(col, errors="coerce"), edges, right=False, labels=labels)
        return np.asarray(cut.astype(object).where(cut.notna(), "other"), dtype=object)


def _text(v: Any) -> str:  # noqa: ANN401
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def parse_specs(columns: Sequence[str], bins: Mapping[str, Sequence[float]]) -> list[SegmentSpec]:
    """Specs for ``columns`` with the bucket edges of ``bins`` (a ValueError naming a bad bins entry)."""
    specs = []
    for c in columns:
        edges = tuple(float(x) for x in bins.get(c, ()))
        if edges and (len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True))):
            raise ValueError(f"segment bins of {c!r} must be at least two ascending edges, got {list(edges)}")
        specs.append(SegmentSpec(c, edges))
    return specs


def missing_columns(specs: Sequence[SegmentSpec], available: Sequence[str]) -> list[str]:
    """Segment columns of ``specs`` that are not among ``available`` columns."""
    have = set(available)
    return [s.column for s in specs if s.column not in have]


def segment_table(
    seg: np.ndarray,
    p: np.ndarray,
    y: np.ndarray | None,
    threshold: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Per segment value: ``volume`` (rows), ``prediction_rate``, ``mean_score``, ``labeled`` rows,
    ``positives`` and the realized metrics of its labelled rows (``y`` is NaN where unlabelled)."""
    p = np.asarray(p, dtype=np.float64)
    yy = np.full(len(p), np.nan) if y is None else np.asarray(y, dtype=np.float64)
    out: dict[str, dict[str, Any]] = {}
    for value in sorted(set(seg.tolist())):
        m = seg == value
        pv, yv = p[m], yy[m]
        lab = ~np.isnan(yv)
        row: dict[str, Any] = {
            "volume": int(m.sum()),
            "prediction_rate": float(np.mean(pv >= threshold)),
            "mean_score": float(np.mean(pv)),
            "labeled": int(lab.sum()),
            "positives": int(np.nansum(yv)),
            "realized": realized_metrics(yv[lab].astype(np.int64), pv[lab], threshold) if lab.any() else None,
        }
        out[str(value)] = row
    return out


def disparate_impact(table: Mapping[str, Mapping[str, Any]], min_rows: int = 30) -> float | None:
    """``min / max`` of the prediction rates of segment values with at least ``min_rows`` rows."""
    rates = [r["prediction_rate"] for r in table.values() if r["volume"] >= min_rows]
    if len(rates) < 2 or max(rates) <= 0:
        return None
    return float(min(rates) / max(rates))


def equal_opportunity_difference(
    table: Mapping[str, Mapping[str, Any]], min_positives: int = 5
) -> float | None:
    """``max - min`` of the recall (true positive rate) of segment values with enough positives."""
    tprs = [
        r["realized"]["recall"]
        for r in table.values()
        if r["realized"] is not None
        and r["positives"] >= min_positives
        and r["realized"]["recall"] is not None
    ]
    if len(tprs) < 2:
        return None
    return float(max(tprs) - min(tprs))


def worse_segments(
    champion: Mapping[str, Mapping[str, Any]],
    challenger: Mapping[str, Mapping[str, Any]],
    metric: str,
    margin: float,
    min_positives: int = 5,
) -> list[tuple[str, float, float]]:
    """Segment values where the challenger's ``metric`` is below the champion's by more than ``margin``:
    ``(value, champion, challenger)``, for values where both have the metric and enough positives."""
    out = []
    for value, champ in champion.items():
        chal = challenger.get(value)
        if chal is None or champ["realized"] is None or chal["realized"] is None:
            continue
        if champ["positives"] < min_positives:
            continue
        a, b = champ["realized"].get(metric), chal["realized"].get(metric)
        if a is None or b is None:
            continue
        if b < a - margin:
            out.append((value, float(a), float(b)))
    return out
