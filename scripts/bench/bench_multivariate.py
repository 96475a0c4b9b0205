"""Benchmark multivariate drift and batch scoring.

1. MMD on 2 x 5,000 rows x 20 features with the permutation test (100 permutations, RBF kernel,
   median-heuristic bandwidth): seconds to prepare the reference (encoding + bandwidth) and to test
   one window; and the same with the service default (max_rows 2,000: seeded samples of each side).
2. Domain classifier on the same rows: logistic SGD (Evidently's) and gradient boosting, each with the
   bootstrap threshold (100 random scorers).
3. Batch scoring: ``mlplatform batch-score``'s run_batch on the demo models (trained here into a
   temporary directory) for 20,000 entity rows: rows per second end to end, and the split between the
   Feast point-in-time retrieval and model prediction. Drift logging off (measured in bench_drift).

Medians of repeated runs on this machine, printed as JSON lines.
Run: .venv/bin/python scripts/bench/bench_multivariate.py   (part of ``make bench``)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.timing import median_time  # noqa: E402

ROWS = 5000
COLS = 20
REPEATS = int(os.environ.get("BENCH_MV_REPEATS", "3"))
BATCH_ROWS = int(os.environ.get("BENCH_BATCH_ROWS", "20000"))
TRAIN_ROWS = int(os.environ.get("BENCH_BATCH_TRAIN_ROWS", "40000"))


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(42)
    cov = np.full((COLS, COLS), 0.3) + 0.7 * np.eye(COLS)
    ref = rng.multivariate_normal(np.zeros(COLS), cov, ROWS)
    cur = rng.multivariate_normal(np.zeros(COLS), np.eye(COLS), ROWS)  # correlations gone, marginals kept
    names = [f"f{i:02d}" for i in range(COLS)]
    return pd.DataFrame(ref, columns=names), pd.DataFrame(cur, columns=names)


def bench_multivariate() -> list[dict[str, object]]:
    from mlplatform.drift.multivariate import MultivariateOptions, PreparedMultivariate

    ref, cur = frames()
    cols = list(ref.columns)
    rows = []
    for label, opts in [
        ("mmd", MultivariateOptions(methods=["mmd"], max_rows=ROWS, permutations=100)),
        ("mmd (service default: max_rows 2000)", MultivariateOptions(methods=["mmd"], permutations=100)),
        ("domain_classifier sgd", MultivariateOptions(methods=["domain_classifier"], max_rows=ROWS)),
        (
            "domain_classifier gradient_boosting",
            MultivariateOptions(methods=["domain_classifier"], max_rows=ROWS, classifier="gradient_boosting"),
        ),
    ]:
        prep_s, prep = median_time(lambda o=opts: PreparedMultivariate(ref, cols, o), REPEATS)
        detect_s, result = median_time(lambda p=prep: p.detect(cur), REPEATS)
        (method,) = result.results.values()  # type: ignore[union-attr]
        rows.append(
            {
                "bench": "multivariate",
                "test": label,
                "rows": f"{result.reference_rows} x {result.current_rows} x {COLS}",  # type: ignore[union-attr]
                "prepare_reference_s": round(prep_s, 3),
                "detect_s": round(detect_s, 3),
                "statistic": round(method.statistic, 6),
                "threshold": round(method.threshold, 6),
                "p_value": method.p_value,
                "drifted": method.drifted,
            }
        )
    return rows


def bench_batch() -> dict[str, object]:
    from mlplatform.batch.scoring import BatchSettings, run_batch
    from mlplatform.core.registry import ModelRef
    from mlplatform.features import contract as feat
    from mlplatform.training.data import raw_path
    from mlplatform.training.pipeline import TrainSettings, run_training

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        settings = TrainSettings(
            rows=TRAIN_ROWS, seed=7, data_dir=data, tracking_uri=None, n_estimators=50, epochs=2
        )
        summary = run_training(settings, force=True, progress=False)
        tx = pd.read_parquet(raw_path(data))
        picked = tx.sample(min(BATCH_ROWS, len(tx)), random_state=1)
        entities = Path(tmp) / "entities.parquet"
        picked[[*feat.ENTITY_KEYS, feat.TIMESTAMP_COLUMN, *feat.REQUEST_FEATURES]].to_parquet(entities)
        times, result = [], None
        for i in range(REPEATS):
            t0 = time.perf_counter()
            result = run_batch(
                ModelRef("fraud-detector"),
                entities,
                Path(tmp) / f"scores-{i}.parquet",
                data_dir=data,
                tracking_uri=summary["tracking_uri"],
                settings=BatchSettings(drift_url=None),
            )
            times.append(time.perf_counter() - t0)
        assert result is not None
        total = statistics.median(times)
        return {
            "bench": "batch_score",
            "rows": result.rows,
            "model": f"{result.model}/{result.version}",
            "seconds_median": round(total, 3),
            "rows_per_s": round(result.rows / total, 1),
            "features_s_last": round(result.seconds_features, 3),
            "predict_s_last": round(result.seconds_predict, 3),
            "runs": REPEATS,
        }


def main() -> int:
    for row in bench_multivariate():
        print(json.dumps(row))
    print(json.dumps(bench_batch()))
    return 0


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    raise SystemExit(main())
