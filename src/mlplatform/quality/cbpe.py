"""Confidence-based performance estimation (CBPE) for binary classifiers, as NannyML implements it.

Fitted once per model version on a *labelled reference* (held-out predictions with their labels):

1. Calibration (NannyML's ``needs_calibration``): an isotonic regression (``out_of_bounds="clip"``)
   is fitted in ten stratified 90/10 shuffle splits (``random_state=42``); if the expected calibration
   error of the held-out tenths (ten equal-count bins over the sorted scores) is lower after
   calibration than before, the calibrator, refitted on the whole reference, is applied to every
   score; otherwise scores are used as they are. A reference with one class, or ROC AUC above
   0.999, needs no calibration.
2. Per window, without labels: with ``q`` the calibrated probability of the positive class and
   ``y_pred = p >= threshold`` the model's decision, the expected confusion matrix is
   ``TP = sum(q | y_pred=1)``, ``FP = sum(1 - q | y_pred=1)``, ``FN = sum(q | y_pred=0)``,
   ``TN = sum(1 - q | y_pred=0)``; precision, recall, F1 and accuracy follow from it. ROC AUC and
   PR AUC (average precision) are estimated by ranking rows by the raw score and accumulating
   ``q`` as expected true positives and ``1 - q`` as expected false positives (cumulative counts
   rounded to 5 decimals, as NannyML does), then integrating like scikit-learn.

The estimate is right when the model's scores stay calibrated on the new data, i.e. under covariate
shift (P(y | x) unchanged). A concept shift (same inputs, different labels) leaves every estimate
where it was: only realized performance (labels) sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Metrics CBPE estimates, in the order the API and the gauges list them.
ESTIMATED_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "roc_auc", "pr_auc", "accuracy")

_SPLITS = 10
_BINS = 10


def _equal_count_edges(n: int, bins: int) -> list[tuple[int, int]]:
    """Index ranges of ``bins`` equal-count bins over ``n`` sorted values (the last takes the rest)."""
    if n <= 2 * bins:
        bins = n // 2
    if bins < 2:
        raise ValueError(f"a labelled reference of {n} rows is too small to check calibration")
    width = n // bins
    edges = np.arange(0, n + 1, width)
    edges[-1] = n
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _ece_equal_count(y: np.ndarray, p: np.ndarray, edges: list[tuple[int, int]]) -> float:
    order = np.argsort(p)
    p, y = p[order], y[order]
    return float(sum((hi - lo) / len(p) * abs(p[lo:hi].mean() - y[lo:hi].mean()) for lo, hi in edges))


def needs_calibration(y: np.ndarray, p: np.ndarray) -> bool:
    """Whether isotonic calibration lowers the expected calibration error of held-out reference rows."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit

    if len(np.unique(y)) == 1 or roc_auc_score(y, p) > 0.999:
        return False
    ys, raw, cal = [], [], []
    for train, test in StratifiedShuffleSplit(n_splits=_SPLITS, test_size=0.1, random_state=42).split(p, y):
        iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(p[train], y[train])
        ys.append(y[test])
        raw.append(p[test])
        cal.append(iso.predict(p[test]))
    y_all, raw_all, cal_all = np.concatenate(ys), np.concatenate(raw), np.concatenate(cal)
    edges = _equal_count_edges(len(raw_all), _BINS)
    return _ece_equal_count(y_all, raw_all, edges) > _ece_equal_count(y_all, cal_all, edges)


def _ranked_counts(q: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected cumulative true and false positives with rows ranked by raw score, highest first."""
    order = np.argsort(p)[::-1]
    q = q[order]
    tps = np.cumsum(q)
    fps = 1 + np.arange(len(q)) - tps
    return np.round(tps, 5), np.round(fps, 5)


def estimate_roc_auc(q: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import auc

    tps, fps = _ranked_counts(q, p)
    if len(tps) == 0 or tps[-1] <= 0 or fps[-1] <= 0:
        return None
    tpr = np.r_[0.0, tps] / tps[-1]
    fpr = np.r_[0.0, fps] / fps[-1]
    return float(auc(fpr, tpr))


def estimate_pr_auc(q: np.ndarray, p: np.ndarray) -> float | None:
    tps, _ = _ranked_counts(q, p)
    if len(tps) == 0 or tps[-1] <= 0:
        return None
    precision = np.r_[1.0, tps / np.arange(1, len(tps) + 1)][::-1]
    recall = (np.r_[0.0, tps] / tps[-1])[::-1]
    return float(-np.sum(np.diff(recall) * precision[:-1]))


@dataclass
class CBPE:
    """CBPE of one model version: :meth:`fit` on the labelled reference, :meth:`estimate` per window."""

    threshold: float = 0.5
    calibrated: bool = False
    reference_rows: int = 0
    _iso: object | None = field(default=None, repr=False)

    def fit(self, p: np.ndarray, y: np.ndarray) -> CBPE:
        from sklearn.isotonic import IsotonicRegression

        p = np.asarray(p, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if len(p) != len(y) or len(p) == 0:
            raise ValueError("the labelled reference needs as many labels as predictions, and some rows")
        self.reference_rows = len(p)
        self.calibrated = needs_calibration(y, p)
        self._iso = (
            IsotonicRegression(out_of_bounds="clip", increasing=True).fit(p, y) if self.calibrated else None
        )
        return self

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        return self._iso.predict(p) if self._iso is not None else p  # type: ignore[attr-defined]

    def confusion(self, p: np.ndarray) -> dict[str, float]:
        """The expected confusion matrix (``tp``, ``fp``, ``fn``, ``tn``) of a window of scores."""
        p = np.asarray(p, dtype=np.float64)
        q = self.calibrate(p)
        pos = p >= self.threshold
        return {
            "tp": float(q[pos].sum()),
            "fp": float((1 - q[pos]).sum()),
            "fn": float(q[~pos].sum()),
            "tn": float((1 - q[~pos]).sum()),
        }

    def estimate(self, p: np.ndarray) -> dict[str, float | None]:
        """Estimated metrics of a window of raw scores ``p`` (``None`` where undefined)."""
        p = np.asarray(p, dtype=np.float64)
        out: dict[str, float | None] = dict.fromkeys(ESTIMATED_METRICS)
        if len(p) == 0:
            return out
        q = self.calibrate(p)
        c = self.confusion(p)
        tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
        out["precision"] = tp / (tp + fp) if tp + fp > 0 else None
        out["recall"] = tp / (tp + fn) if tp + fn > 0 else None
        out["f1"] = tp / (tp + 0.5 * (fp + fn)) if tp + 0.5 * (fp + fn) > 0 else None
        out["accuracy"] = (tp + tn) / len(p)
        out["roc_auc"] = estimate_roc_auc(q, p)
        out["pr_auc"] = estimate_pr_auc(q, p)
        return out
