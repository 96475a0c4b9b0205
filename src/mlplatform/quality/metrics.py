"""Realized performance of a binary classifier from labels and predicted probabilities.

Every metric comes from scikit-learn (``precision_score``, ``recall_score``, ``f1_score``,
``roc_auc_score``, ``average_precision_score``, ``calibration_curve``). A metric that is undefined
for the data (one class only for ROC AUC, no positive label for recall and PR AUC, no positive
prediction for precision) is ``None``, never a made-up 0.
"""

from __future__ import annotations

import warnings

import numpy as np

#: Metrics of a binary classifier, in the order the API and the gauges list them.
REALIZED_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "roc_auc", "pr_auc", "calibration_error")
#: Bins of the expected calibration error (uniform on [0, 1], as ``calibration_curve`` bins).
CALIBRATION_BINS = 10


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: the count-weighted mean of ``|fraction of positives - mean
    probability|`` over ``n_bins`` uniform probability bins (``sklearn.calibration.calibration_curve``
    gives the per-bin values; empty bins carry no weight)."""
    from sklearn.calibration import calibration_curve

    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    # the same bin assignment as calibration_curve: edges linspace(0, 1, n_bins + 1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / len(p) * np.abs(prob_true - prob_pred)))


def realized_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """Precision, recall and F1 of ``p >= threshold``, ROC AUC, PR AUC (average precision) and the
    expected calibration error of ``p``, for labels ``y`` (0/1). ``None`` where undefined."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    out: dict[str, float | None] = dict.fromkeys(REALIZED_METRICS)
    if len(y) == 0:
        return out
    y_pred = (p >= threshold).astype(np.int64)
    has_pos, has_neg, pred_pos = bool(y.any()), bool((y == 0).any()), bool(y_pred.any())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pred_pos:
            out["precision"] = float(precision_score(y, y_pred, zero_division=0))
        if has_pos:
            out["recall"] = float(recall_score(y, y_pred, zero_division=0))
            out["pr_auc"] = float(average_precision_score(y, p))
        if has_pos or pred_pos:
            out["f1"] = float(f1_score(y, y_pred, zero_division=0))
        if has_pos and has_neg:
            out["roc_auc"] = float(roc_auc_score(y, p))
    out["calibration_error"] = expected_calibration_error(y, p)
    return out
