"""Realized metrics, calibration error, CBPE's confusion matrix, segments and fairness against direct
computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from mlplatform.quality.cbpe import CBPE
from mlplatform.quality.metrics import expected_calibration_error, realized_metrics
from mlplatform.quality.segments import (
    SegmentSpec,
    disparate_impact,
    equal_opportunity_difference,
    missing_columns,
    parse_specs,
    segment_table,
    worse_segments,
)


def _data(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (rng.random(n) < p**1.5).astype(np.int64)
    return p, y


def test_expected_calibration_error_is_the_weighted_bin_gap():
    p, y = _data(1)
    edges = np.linspace(0, 1, 11)
    direct = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if m.any():
            direct += m.mean() * abs(y[m].mean() - p[m].mean())
    assert expected_calibration_error(y, p) == pytest.approx(direct)
    # a calibrated score has a small error, a squashed one a large error
    y_cal = (np.random.default_rng(2).random(len(p)) < p).astype(int)
    assert expected_calibration_error(y_cal, p) < 0.05 < expected_calibration_error(y_cal, p / 3)


def test_realized_metrics_are_sklearns_and_undefined_ones_are_none():
    p, y = _data(3)
    got = realized_metrics(y, p, 0.4)
    pred = (p >= 0.4).astype(int)
    assert got["precision"] == pytest.approx(precision_score(y, pred))
    assert got["recall"] == pytest.approx(recall_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    only_neg = realized_metrics(np.zeros(10, int), np.linspace(0, 0.3, 10))
    assert only_neg["roc_auc"] is None and only_neg["recall"] is None and only_neg["precision"] is None
    assert realized_metrics(np.array([], int), np.array([]))["f1"] is None


def test_cbpe_on_calibrated_scores_is_the_expected_confusion_matrix():
    rng = np.random.default_rng(5)
    p = rng.random(3000)
    y = (rng.random(3000) < p).astype(int)
    cbpe = CBPE().fit(p, y)
    window = rng.random(500) ** 2
    q = cbpe.calibrate(window)
    pos = window >= 0.5
    est = cbpe.estimate(window)
    assert est["precision"] == pytest.approx(q[pos].sum() / pos.sum())
    assert est["recall"] == pytest.approx(q[pos].sum() / q.sum())
    assert est["accuracy"] == pytest.approx((q[pos].sum() + (1 - q[~pos]).sum()) / len(window))
    # the estimate tracks the truth when labels follow the scores
    truth = (rng.random(len(window)) < window).astype(int)
    assert est["roc_auc"] == pytest.approx(roc_auc_score(truth, window), abs=0.05)


def test_segments_bins_fairness_and_the_gate_rule():
    spec = SegmentSpec("hour", (0, 6, 12, 18, 24))
    assert spec.name == "hour_bucket"
    assert spec.values(pd.Series([0, 5, 6, 23, 30])).tolist() == [
        "[0,6)",
        "[0,6)",
        "[6,12)",
        "[18,24)",
        "other",
    ]
    assert SegmentSpec("cat").values(pd.Series([3, None])).tolist() == ["3", "missing"]
    with pytest.raises(ValueError, match="hour"):
        parse_specs(["hour"], {"hour": [6, 0]})
    assert missing_columns(parse_specs(["hour", "merchant_category"], {}), ["hour", "amount"]) == [
        "merchant_category"
    ]

    seg = np.array(["a"] * 100 + ["b"] * 100, dtype=object)
    p = np.r_[np.full(100, 0.9), np.r_[np.full(50, 0.9), np.full(50, 0.1)]]
    y = np.r_[np.r_[np.ones(50), np.zeros(50)], np.r_[np.ones(25), np.zeros(25), np.ones(25), np.zeros(25)]]
    table = segment_table(seg, p, y)
    assert table["a"]["prediction_rate"] == 1.0 and table["b"]["prediction_rate"] == 0.5
    assert disparate_impact(table) == pytest.approx(0.5)
    assert table["a"]["realized"]["recall"] == 1.0 and table["b"]["realized"]["recall"] == 0.5
    assert equal_opportunity_difference(table) == pytest.approx(0.5)

    worse = segment_table(seg, np.where(seg == "b", 0.1, p), y)
    assert worse_segments(table, worse, "recall", 0.05) == [("b", 0.5, 0.0)]
    assert worse_segments(table, table, "recall", 0.05) == []
