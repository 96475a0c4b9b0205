"""Per-feature decisions, method names and statistics equal Evidently 0.7.23's DataDriftPreset.

Evidently runs on the same raw frames (its own column-type inference); our service's statistics
module must pick the same method for every column and agree on the statistic and the decision.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.drift.stats import METHODS, PreparedReference, dataset_drift

DISPLAY_TO_NAME = {display: name for name, (display, _, _) in METHODS.items()}


def _frame(n: int, rng: np.random.Generator, shift: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "num_mean": rng.normal(0.4 * shift, 1.0, n),
            "num_var": rng.normal(0.0, 1.0 + 0.8 * shift, n),
            "num_stable": rng.gamma(2.0, 3.0, n),
            "int_many": rng.integers(0, 50, n),
            "int_low": rng.choice(4, n, p=[0.25, 0.25, 0.25, 0.25] if not shift else [0.1, 0.2, 0.3, 0.4]),
            "binary": (rng.random(n) < 0.2 + 0.15 * shift).astype(np.int64),
            "float_few": rng.choice([0.0, 1.0, 2.5], n),
            "float_binary": rng.choice([0.0, 1.0], n),
            "cat": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2] if not shift else [0.35, 0.3, 0.35]),
            "flag": rng.random(n) < 0.3,
        }
    )


def _evidently(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict[str, tuple[str, float]], int]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current, reference).dict()
    per_column: dict[str, tuple[str, float]] = {}
    count = -1
    for metric in snapshot["metrics"]:
        cfg = metric["config"]
        if "column" in cfg:
            per_column[cfg["column"]] = (DISPLAY_TO_NAME[cfg["method"]], float(metric["value"]))
        elif cfg["type"].endswith("DriftedColumnsCount"):
            count = int(metric["value"]["count"])
    return per_column, count


def _evidently_decision(method: str, value: float, threshold: float) -> bool:
    # the comparison each Evidently stattest makes (ks_stattest.py uses <=, chisquare/z use <)
    if method == "ks":
        return value <= threshold
    if METHODS[method][2] == "p":
        return value < threshold
    return value >= threshold


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift"),
    [
        (300, 250, 1.0),
        (1000, 800, 1.0),
        (1000, 1000, 0.0),
        (1001, 600, 1.0),
        (20_000, 5_000, 1.0),
        (5_000, 5_000, 0.0),
    ],
)
def test_decisions_methods_and_statistics_match_evidently(n_ref, n_cur, shift):
    rng = np.random.default_rng(n_ref + n_cur)
    reference = _frame(n_ref, rng, 0.0)
    current = _frame(n_cur, rng, shift)
    theirs, their_count = _evidently(reference, current)
    ours = dataset_drift(PreparedReference(reference), current, list(reference.columns))
    assert set(theirs) == set(ours.columns)
    for column, (method, value) in theirs.items():
        mine = ours.columns[column]
        assert mine.method == method, column
        assert mine.statistic == pytest.approx(value, rel=1e-6, abs=1e-12), column
        assert mine.drifted == _evidently_decision(method, value, mine.threshold), column
    assert ours.drifted_count == their_count
    if shift:
        assert ours.drifted_count >= 5  # the shifted columns are detected
    methods = {c.method for c in ours.columns.values()}
    expected = {"ks", "chisquare", "z"} if n_ref <= 1000 else {"wasserstein", "jensenshannon"}
    assert methods == expected


def test_missing_values_are_dropped_like_evidently():
    """NaN/inf are dropped per column as Evidently's ValueDrift does.

    (Evidently's own DriftedColumnsCount, computed by its legacy DatasetDriftMetric, counts one
    drifted column fewer than its per-column ValueDrift results here; we follow the per-column
    decisions, so the count is not compared in this case.)
    """
    rng = np.random.default_rng(3)
    reference = _frame(1500, rng, 0.0)
    current = _frame(900, rng, 1.0)
    reference.loc[::7, "num_mean"] = np.nan
    current.loc[::5, "num_var"] = np.inf
    theirs, _ = _evidently(reference, current)
    ours = dataset_drift(PreparedReference(reference), current, list(reference.columns))
    for column, (method, value) in theirs.items():
        mine = ours.columns[column]
        assert mine.method == method
        assert mine.statistic == pytest.approx(value, rel=1e-6, abs=1e-12)
        assert mine.drifted == _evidently_decision(method, value, mine.threshold)


def test_dataset_drift_share_threshold():
    rng = np.random.default_rng(4)
    reference = _frame(2000, rng, 0.0)
    current = _frame(2000, rng, 1.0)
    result = dataset_drift(PreparedReference(reference), current, list(reference.columns))
    share = result.drift_share
    assert result.dataset_drift == (share >= 0.5)
    strict = dataset_drift(
        PreparedReference(reference), current, list(reference.columns), drift_share=share + 0.01
    )
    assert strict.dataset_drift is False
    loose = dataset_drift(PreparedReference(reference), current, list(reference.columns), drift_share=share)
    assert loose.dataset_drift is True
