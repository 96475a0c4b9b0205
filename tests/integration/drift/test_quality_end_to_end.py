"""End to end: delayed labels by serving's prediction ids, on real processes and the trained demo model.

model-serving (SERVING_DRIFT_URL set) serves the demo ``fraud-detector`` (trained by the pipeline in
``demo_registry``, with its labelled reference logged) on the held-out demo transactions it was never
trained on (the latest 20 %, features by the point-in-time join, in random order as traffic spread
over the period would come); drift-detection windows them (1,000 rows) and checks the segment
columns against the champion at start-up. (Those rows are also the version's labelled reference,
so the calm windows' CBPE estimates are in-sample; the test only relies on the estimate not moving.) Labels go back through ``POST /v1/models/{model}/labels``
keyed by the ``parameters.prediction_id`` of each response and the row. The third window is a concept
shift: the same kind of inputs, but a new fraud pattern in one merchant category (the labels change,
the inputs do not). Input drift does not see it, nor can CBPE (it only sees scores); realized
performance does, for the model and for that segment.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from mlplatform.features import contract as feat
from mlplatform.training import data as data_mod
from mlplatform.training.pipeline import time_split
from tests.helpers import wait_until_sync
from tests.integration.drift.support import drift_env, serving_env
from tests.procs import free_port, start_service

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "fraud-detector"
ROWS_PER_REQUEST = 100
WINDOW = 1000


def _traffic(data_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    tx = pd.read_parquet(data_mod.raw_path(data_dir))
    frame = feat.point_in_time_join(tx, feat.entity_snapshots(tx))
    _, held_out = time_split(frame, 0.2)
    frame = held_out.sample(frac=1.0, random_state=3).head(3 * WINDOW).reset_index(drop=True)
    return frame, frame[feat.LABEL_COLUMN].to_numpy().copy()


def test_concept_shift_in_a_segment_is_caught_by_realized_performance_only(demo_registry, tmp_path):
    frame, y = _traffic(demo_registry.data_dir)
    category = int(frame["merchant_category"].iloc[2 * WINDOW :].value_counts().index[0])
    third = np.arange(len(frame)) >= 2 * WINDOW
    legit = third & (frame["merchant_category"].to_numpy() == category) & (y == 0)
    rng = np.random.default_rng(1)
    y_shift = y.copy()
    y_shift[legit & (rng.random(len(y)) < 0.25)] = 1  # the new pattern: a quarter of them is fraud now

    drift_port = free_port()
    drift_vars = drift_env(
        demo_registry,
        tmp_path,
        WINDOW,
        DRIFT_QUALITY_MIN_LABELS="500",
        DRIFT_SEGMENTS=f'{{"{MODEL}": ["merchant_category", "hour"]}}',
        DRIFT_MULTIVARIATE='{"methods": []}',  # not what this test is about (and seconds per window)
    )
    logs = tmp_path / "logs"
    drift = start_service("drift-detection", drift_vars, logs, port=drift_port)
    serving = start_service(
        "model-serving", serving_env(demo_registry, tmp_path, MODEL, drift_port, 200), logs
    )
    keys: list[tuple[str, int]] = []  # (prediction_id, row) of every frame row, in order
    try:
        meta = httpx.get(f"{serving.url}/v2/models/{MODEL}", timeout=10).json()
        with httpx.Client(base_url=serving.url, timeout=60) as client:
            for start in range(0, len(frame), ROWS_PER_REQUEST):
                rows = frame.iloc[start : start + ROWS_PER_REQUEST]
                inputs = [
                    {
                        "name": spec["name"],
                        "shape": [len(rows)],
                        "datatype": spec["datatype"],
                        "data": rows[spec["name"]].astype(feat.feature_dtype(spec["name"])).tolist(),
                    }
                    for spec in meta["inputs"]
                ]
                r = client.post(f"/v2/models/{MODEL}/infer", json={"id": "same-id", "inputs": inputs})
                assert r.status_code == 200, r.text
                pid = r.json()["parameters"]["prediction_id"]
                keys += [(pid, i) for i in range(len(rows))]

        with httpx.Client(base_url=drift.url, timeout=60) as client:
            wait_until_sync(
                lambda: len(client.get(f"/v1/models/{MODEL}/drift/history").json()["windows"]) == 3
            )
            before = client.get(f"/v1/models/{MODEL}/quality").json()["windows"][::-1]
            assert [w["n_labeled"] for w in before] == [0, 0, 0]
            assert all(w["estimated"]["roc_auc"] is not None for w in before)
            # labels, days later, through the API; a batch with a key serving never issued
            body = [
                {"prediction_id": p, "row_index": i, "label": int(v)}
                for (p, i), v in zip(keys, y_shift, strict=True)
            ]
            body.append({"prediction_id": "never-issued", "row_index": 0, "label": 1})
            r = client.post(f"/v1/models/{MODEL}/labels", json={"labels": body})
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == len(keys) and r.json()["unknown"] == 1
            drift_windows = client.get(f"/v1/models/{MODEL}/drift/history").json()["windows"][::-1]
            quality = client.get(f"/v1/models/{MODEL}/quality").json()["windows"][::-1]
            seg_calm = client.get(
                f"/v1/models/{MODEL}/segments", params={"window_id": quality[1]["window_id"]}
            )
            seg_shift = client.get(
                f"/v1/models/{MODEL}/segments", params={"window_id": quality[2]["window_id"]}
            )
            metrics = client.get("/metrics").text
    finally:
        serving.stop()
        drift.stop()

    # input drift: the concept-shift window looks like the calm ones
    flags = [w["dataset_drift"] for w in drift_windows]
    assert flags == [False, False, False], flags
    real = [w["realized"]["roc_auc"] for w in quality]
    est = [w["estimated"]["roc_auc"] for w in quality]
    assert real[2] < min(real[:2]) - 0.1, real  # realized performance catches it
    assert abs(est[2] - est[1]) < 0.05, est  # CBPE cannot: only scores, no labels
    assert [w["performance_dropped"] for w in quality] == [False, False, True]
    assert all(w["n_labeled"] == WINDOW for w in quality)
    # and for whom: the segment's recall fell, its equal-opportunity gap opened
    calm_cat = seg_calm.json()["segments"]["merchant_category"]
    shift_cat = seg_shift.json()["segments"]["merchant_category"]
    assert shift_cat["values"][str(category)]["realized"]["recall"] < 0.5
    assert shift_cat["equal_opportunity_difference"] > (calm_cat["equal_opportunity_difference"] or 0)
    assert set(seg_shift.json()["segments"]["hour_bucket"]["values"]) <= {
        "[0,6)",
        "[6,12)",
        "[12,18)",
        "[18,24)",
    }
    assert f'mlplatform_drift_performance_dropped{{model="{MODEL}",version="1"}} 1.0' in metrics
