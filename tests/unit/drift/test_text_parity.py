"""Text columns: column types, methods, scores and decisions equal Evidently 0.7.23's DataDriftPreset on
real English text (stdlib docstrings and the licence texts in /usr/share/common-licenses).

Each case runs Evidently's own Report on the same frames as ``stats.dataset_drift``: one undrifted text
column (random halves of the docstrings), one drifted text column (docstrings, then licence paragraphs)
and a low-cardinality string column (categorical for both), once with a small reference (<= 1000 rows:
``perc_text_content_drift``, the domain classifier against 1000 seeded random scorers) and once with a
large one (``abs_text_content_drift``, AUC > 0.55).

Tolerance on the score: 1e-9. The domain classifier is randomised, but every random choice is seeded as
Evidently seeds it (the split and the SGD classifier with ``random_state=42``; the random scorers with
numpy seeds drawn from 42), and both sides run the same scikit-learn code on the same texts in the same
order, so the ROC AUC is the same float; the bound only leaves room for summation order. The random
scorers' percentile (the perc cutoff) is compared with Evidently's own function's value, 1e-12.

Evidently's report evaluates each column several times (its count metric, each column's metric, the
preset's legacy summary), each time calling ``roc_auc_random_classifier_percentile`` again: 1000
``roc_auc_score`` calls on the same labels. The test memoises that pure function (it depends on its
arguments only, and seeds numpy itself) so each distinct call runs once; Evidently still computes it.
"""

from __future__ import annotations

import random

import pandas as pd
import pytest

from mlplatform.drift import text
from mlplatform.drift.stats import METHODS, TEXT, PreparedReference, dataset_drift
from tests.unit.drift.text_corpora import docstrings, halves, licenses, sample

DISPLAY_TO_NAME = {display: name for name, (display, _, _) in METHODS.items()}
TOLERANCE = 1e-9


def _frames(n_ref: int, n_cur: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref_docs, cur_docs = halves(docstrings(), n_ref, n_cur, seed)
    rng = random.Random(seed)
    kinds = ["module", "class", "function"]
    reference = pd.DataFrame(
        {"same_source": ref_docs, "other_source": ref_docs, "kind": [rng.choice(kinds) for _ in range(n_ref)]}
    )
    current = pd.DataFrame(
        {
            "same_source": cur_docs,
            "other_source": sample(licenses(), n_cur, seed),
            "kind": [rng.choice(kinds) for _ in range(n_cur)],
        }
    )
    return reference, current


@pytest.fixture
def percentiles(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[int, int, float], float]:
    """Evidently's random-scorer percentiles by (test rows, current rows among them, p-value),
    each computed once by Evidently's own function."""
    from evidently.legacy.utils import data_drift_utils

    real = data_drift_utils.roc_auc_random_classifier_percentile
    seen: dict[tuple[int, int, float], float] = {}
    labels: dict[tuple[int, int, float], tuple] = {}

    def once(y_test, p_value=0.05, iter_num=1000, seed=42):  # noqa: ANN001, ANN202 - Evidently's signature
        key = (len(y_test), int(sum(y_test)), p_value)
        if key not in seen:
            seen[key] = float(real(y_test, p_value=p_value, iter_num=iter_num, seed=seed))
            labels[key] = tuple(y_test)
        assert labels[key] == tuple(y_test), "same sizes, different labels: the memo would be wrong"
        return seen[key]

    monkeypatch.setattr(data_drift_utils, "roc_auc_random_classifier_percentile", once)
    return seen


def _evidently(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict, dict, int]:
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = Dataset.from_pandas(current).data_definition
    types = {c: "text" for c in definition.text_columns or []}
    types |= {c: "categorical" for c in definition.categorical_columns or []}
    snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference).dict()
    per_column: dict[str, dict] = {}
    count = -1
    for metric in snapshot["metrics"]:
        cfg = metric["config"]
        if "column" in cfg:
            per_column[cfg["column"]] = {
                "method": DISPLAY_TO_NAME[cfg["method"]],
                "threshold": cfg["threshold"],
                "statistic": float(metric["value"]),
            }
        elif cfg["type"].endswith("DriftedColumnsCount"):
            count = int(metric["value"]["count"])
    for test in snapshot["tests"]:
        column = test["metric_config"]["params"].get("column")
        if column is not None:
            per_column[column]["drifted"] = test["status"] == "FAIL"
    return types, per_column, count


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "method"),
    [(400, 200, "perc_text_content_drift"), (1100, 300, "abs_text_content_drift")],
)
def test_text_columns_match_evidently_on_real_text(
    n_ref: int, n_cur: int, method: str, percentiles: dict[tuple[int, int, float], float]
) -> None:
    reference, current = _frames(n_ref, n_cur, seed=n_ref)
    ev_types, ev, ev_count = _evidently(reference, current)
    ours = dataset_drift(PreparedReference(reference), current, list(current.columns))

    assert ev_types == {"same_source": "text", "other_source": "text", "kind": "categorical"}
    for column, expected in ev.items():
        got = ours.columns[column]
        assert {"text": TEXT}.get(ev_types[column], "cat") == got.column_type, column
        assert got.method == expected["method"], column
        assert got.threshold == pytest.approx(expected["threshold"]), column
        assert abs(got.statistic - expected["statistic"]) <= TOLERANCE, (column, got.statistic, expected)
        assert got.drifted == expected["drifted"], (column, got.statistic, got.cutoff)
    assert ours.drifted_count == ev_count
    # the decisions themselves: docstrings vs licences drift, halves of the docstrings do not
    assert ours.columns["same_source"].method == method
    assert not ours.columns["same_source"].drifted
    assert ours.columns["other_source"].drifted
    assert ours.columns["other_source"].statistic > 0.9
    if method == text.PERC:  # the cutoff: Evidently's random scorers' percentile
        ((n_test, _, p_value), expected) = next(iter(percentiles.items()))
        assert n_test == n_ref + n_cur - (n_ref + n_cur) // 2
        cutoff = text.random_auc_percentile(n_ref, n_cur, p_value)
        assert abs(cutoff - expected) <= 1e-12
        assert ours.columns["same_source"].cutoff == cutoff
    else:
        assert not percentiles  # no bootstrap with a large reference
        assert ours.columns["other_source"].cutoff == 0.55
