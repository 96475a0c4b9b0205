"""Model quality in the drift service, in-process on both store backends: delayed labels (idempotent,
partial, late, unknown ids, bad types), realized and CBPE-estimated performance per window, the
performance retraining trigger, segments and fairness, and the shift per-column drift misses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlplatform.quality.metrics import realized_metrics
from tests.unit.drift.quality_registry import (
    QMODEL,
    add_quality_model,
    joint_shift,
    labels,
    population,
    true_probability,
)
from tests.unit.drift.tiny_registry import drift_settings, records, running_app

pytestmark = pytest.mark.usefixtures("drift_backend")


@pytest.fixture(scope="module")
def qregistry(tiny_registry, tmp_path_factory):  # noqa: ANN001, ANN201
    add_quality_model(tiny_registry.uri, tmp_path_factory.mktemp("quality-registry"))
    return tiny_registry


def _records(frame: pd.DataFrame, prefix: str) -> list[dict]:
    out = records(frame, QMODEL, "1", prefix)
    for i, rec in enumerate(out):
        rec["prediction_id"] = f"pid-{prefix}-{i}"
    return out


def _labels(prefix: str, y: np.ndarray, rows: range | None = None) -> dict:
    rows = rows if rows is not None else range(len(y))
    return {
        "labels": [{"prediction_id": f"pid-{prefix}-{i}", "row_index": 0, "label": int(y[i])} for i in rows]
    }


async def _window(client, frame: pd.DataFrame, prefix: str) -> None:  # noqa: ANN001
    r = await client.post("/v1/records", json={"records": _records(frame, prefix)})
    assert r.status_code == 200 and r.json()["windows_closed"] == 1, r.text


async def test_labels_are_idempotent_partial_late_and_unknown_ids_are_reported(qregistry, tmp_path):
    settings = drift_settings(qregistry, tmp_path, window_size=200, quality_min_labels=50)
    frame = population(200, seed=7)
    y = labels(frame, 8)
    async with running_app(settings) as (client, app):
        await _window(client, frame, "a")
        # half of the labels, hours later
        r = await client.post(f"/v1/models/{QMODEL}/labels", json=_labels("a", y, range(100)))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "accepted": 100,
            "updated": 0,
            "duplicates": 0,
            "unknown": 0,
            "unknown_ids": [],
            "windows_updated": 1,
        }
        # the same batch again changes nothing
        again = (await client.post(f"/v1/models/{QMODEL}/labels", json=_labels("a", y, range(100)))).json()
        assert (again["accepted"], again["duplicates"], again["windows_updated"]) == (0, 100, 0)
        # the rest, with labels for predictions nobody made
        body = _labels("a", y, range(100, 200))
        body["labels"] += [{"prediction_id": f"ghost-{i}", "row_index": 0, "label": 1} for i in range(3)]
        body["labels"].append({"prediction_id": "pid-a-5", "row_index": 7, "label": 0})  # a row it never had
        rest = (await client.post(f"/v1/models/{QMODEL}/labels", json=body)).json()
        assert rest["accepted"] == 100 and rest["unknown"] == 4
        assert rest["unknown_ids"] == ["ghost-0/0", "ghost-1/0", "ghost-2/0", "pid-a-5/7"]
        # a corrected label replaces the old one
        fixed = (
            await client.post(
                f"/v1/models/{QMODEL}/labels",
                json={"labels": [{"prediction_id": "pid-a-0", "label": bool(1 - y[0])}]},
            )
        ).json()
        assert fixed["updated"] == 1
        y[0] = 1 - y[0]

        hist = (await client.get(f"/v1/models/{QMODEL}/quality")).json()
        w = hist["windows"][0]
        assert w["n_records"] == 200 and w["n_labeled"] == 200
        expected = realized_metrics(y, frame["prediction"].to_numpy())
        assert w["realized"] == pytest.approx(expected)
        assert w["realized"]["roc_auc"] == pytest.approx(roc_auc_score(y, frame["prediction"]))
        assert set(w["estimated"]) == {"precision", "recall", "f1", "roc_auc", "pr_auc", "accuracy"}
        assert w["estimation_error"]["roc_auc"] == pytest.approx(
            w["estimated"]["roc_auc"] - w["realized"]["roc_auc"]
        )

        metrics = (await client.get("/metrics")).text
        line = f'mlplatform_drift_realized_performance{{metric="roc_auc",model="{QMODEL}",version="1"}}'
        assert line in metrics
        assert (
            f'mlplatform_drift_estimated_performance{{metric="roc_auc",model="{QMODEL}",version="1"}}'
            in metrics
        )
        assert f'mlplatform_drift_labels_total{{model="{QMODEL}",result="unknown"}} 4.0' in metrics
        assert f'mlplatform_drift_labels_total{{model="{QMODEL}",result="duplicate"}} 100.0' in metrics
        n_labels = app.state.dataplane.store.count_labels(QMODEL)
        assert n_labels == 200

        # wrong types: 422 naming the row; nothing of that batch is stored
        bad = _labels("a", y, range(3))
        bad["labels"][2]["label"] = "yes"
        r = await client.post(f"/v1/models/{QMODEL}/labels", json=bad)
        assert r.status_code == 422 and "labels.2.label" in r.json()["error"], r.text
        bad["labels"][2]["label"] = 2
        r = await client.post(f"/v1/models/{QMODEL}/labels", json=bad)
        assert r.status_code == 422 and "labels.2.label" in r.json()["error"], r.text
        bad["labels"][2] = {"row_index": 0, "label": 1}
        r = await client.post(f"/v1/models/{QMODEL}/labels", json=bad)
        assert r.status_code == 422 and "labels.2.prediction_id" in r.json()["error"], r.text
        r = await client.post(f"/v1/models/{QMODEL}/labels", content=b"{not json")
        assert r.status_code == 400
        r = await client.post("/v1/models/nobody/labels", json=_labels("a", y, range(2)))
        assert r.status_code == 404 and "nobody" in r.json()["error"]
        assert app.state.dataplane.store.count_labels(QMODEL) == 200
    # a restarted service keeps labels and quality, and exports the gauges again
    async with running_app(settings) as (client, app):
        metrics = (await client.get("/metrics")).text
        assert line in metrics
        hist = (await client.get(f"/v1/models/{QMODEL}/quality")).json()
        assert hist["windows"][0]["n_labeled"] == 200


async def test_a_joint_shift_input_drift_misses_is_caught_by_realized_and_estimated_performance(
    qregistry, tmp_path
):
    """Same values in every column, re-paired: per-column drift sees nothing; the scores crowd the
    uncertain middle, so realized ROC AUC drops, and CBPE says so before any label arrives. A concept
    shift (labels of one segment flipped, inputs unchanged) is seen by realized performance only."""
    settings = drift_settings(qregistry, tmp_path, window_size=1000, quality_min_labels=100)
    calm = population(1000, seed=21)
    calm_y = labels(calm, 22)
    shifted = joint_shift(population(1000, seed=23))
    shifted_y = labels(shifted, 24)
    concept = population(1000, seed=25)
    concept_y = labels(concept, 26)
    concept_y = np.where(concept["is_foreign"] == 1, 1 - concept_y, concept_y)
    async with running_app(settings) as (client, app):
        await _window(client, calm, "calm")
        await _window(client, shifted, "shift")
        await _window(client, concept, "concept")
        drift = (await client.get(f"/v1/models/{QMODEL}/drift/history")).json()["windows"][::-1]
        assert [w["dataset_drift"] for w in drift] == [False, False, False]
        assert drift[1]["drifted_features"] == 0 and drift[2]["drifted_features"] == 0
        # before labels: the estimate already shows the drop
        est = [
            w["estimated"]["roc_auc"]
            for w in (await client.get(f"/v1/models/{QMODEL}/quality")).json()["windows"][::-1]
        ]
        assert est[1] < est[0] - 0.08, est
        assert abs(est[2] - est[0]) < 0.03, est  # concept shift: invisible without labels
        for prefix, y in (("calm", calm_y), ("shift", shifted_y), ("concept", concept_y)):
            r = await client.post(f"/v1/models/{QMODEL}/labels", json=_labels(prefix, y))
            assert r.json()["accepted"] == 1000
        rows = (await client.get(f"/v1/models/{QMODEL}/quality")).json()["windows"][::-1]
        real = [w["realized"]["roc_auc"] for w in rows]
        assert real[1] < real[0] - 0.08 and real[2] < real[0] - 0.08, real
        assert (
            abs(rows[0]["estimation_error"]["roc_auc"]) < 0.04
            and abs(rows[1]["estimation_error"]["roc_auc"]) < 0.04
        )
        assert [w["performance_dropped"] for w in rows] == [False, True, True]
        # the realized values are sklearn's on exactly those rows
        assert real[1] == pytest.approx(roc_auc_score(shifted_y, shifted["prediction"]))
        # and the estimate is CBPE fitted on the version's labelled reference, on the window's scores
        ref = app.state.quality._refs[(QMODEL, "1")]
        assert rows[1]["estimated"]["roc_auc"] == pytest.approx(
            ref.cbpe.estimate(shifted["prediction"].to_numpy())["roc_auc"]
        )
        assert np.corrcoef(shifted["prediction"], true_probability(shifted))[0, 1] > 0.9


async def test_a_sustained_performance_drop_starts_retraining_once_per_episode(qregistry, tmp_path):
    settings = drift_settings(
        qregistry,
        tmp_path,
        window_size=500,
        quality_min_labels=100,
        retrain_after_windows=2,
        retrain_cooldown_s=0,
    )
    async with running_app(settings) as (client, app):
        svc = app.state.dataplane
        frames = {}
        for i, kind in enumerate(["bad", "bad", "bad", "good", "bad", "bad"]):
            f = population(500, seed=40 + i)
            frames[f"w{i}"] = joint_shift(f) if kind == "bad" else f
            await _window(client, frames[f"w{i}"], f"w{i}")
        assert await svc.retrain_events(QMODEL) == []  # nothing without labels
        # labels come late and out of order: the episode is judged in window order
        for name in ["w1", "w0"]:
            await client.post(f"/v1/models/{QMODEL}/labels", json=_labels(name, labels(frames[name], 1)))
        events = await svc.retrain_events(QMODEL)
        assert len(events) == 1 and "realized roc_auc below the reference" in events[0]["reason"]
        assert events[0]["mode"] == "off" and events[0]["outcome"] == "skipped"
        await client.post(f"/v1/models/{QMODEL}/labels", json=_labels("w2", labels(frames["w2"], 2)))
        assert len(await svc.retrain_events(QMODEL)) == 1  # the same episode
        await client.post(f"/v1/models/{QMODEL}/labels", json=_labels("w3", labels(frames["w3"], 3)))
        await client.post(f"/v1/models/{QMODEL}/labels", json=_labels("w4", labels(frames["w4"], 4)))
        assert len(await svc.retrain_events(QMODEL)) == 1  # a good window ended it; one bad is not enough
        await client.post(f"/v1/models/{QMODEL}/labels", json=_labels("w5", labels(frames["w5"], 5)))
        assert len(await svc.retrain_events(QMODEL)) == 2
        metrics = (await client.get("/metrics")).text
        assert f'mlplatform_drift_performance_dropped{{model="{QMODEL}",version="1"}} 1.0' in metrics


async def test_segments_and_fairness_per_window(qregistry, tmp_path):
    settings = drift_settings(
        qregistry,
        tmp_path,
        window_size=600,
        segments={QMODEL: ["hour", "is_foreign"]},
        segment_bins={"hour": [0, 6, 12, 18, 24]},
    )
    frame = population(600, seed=61)
    y = labels(frame, 62)
    async with running_app(settings) as (client, _):
        await _window(client, frame, "s")
        await client.post(f"/v1/models/{QMODEL}/labels", json=_labels("s", y))
        out = (await client.get(f"/v1/models/{QMODEL}/segments")).json()
        hours = out["segments"]["hour_bucket"]["values"]
        assert set(hours) == {"[0,6)", "[6,12)", "[12,18)", "[18,24)"}
        assert sum(v["volume"] for v in hours.values()) == 600
        p = frame["prediction"].to_numpy()
        night = (frame["hour"] < 6).to_numpy()
        assert hours["[0,6)"]["volume"] == night.sum()
        assert hours["[0,6)"]["prediction_rate"] == pytest.approx(np.mean(p[night] >= 0.5))
        assert hours["[0,6)"]["realized"] == pytest.approx(realized_metrics(y[night], p[night]))
        assert hours["[0,6)"]["drift_share"] is not None
        foreign = out["segments"]["is_foreign"]
        rates = [foreign["values"][v]["prediction_rate"] for v in ("0", "1")]
        assert foreign["disparate_impact_ratio"] == pytest.approx(min(rates) / max(rates))
        tpr = []
        for v in (0, 1):
            m = (frame["is_foreign"] == v).to_numpy()
            tpr.append(realized_metrics(y[m], p[m])["recall"])
        assert foreign["equal_opportunity_difference"] == pytest.approx(max(tpr) - min(tpr))
        metrics = (await client.get("/metrics")).text
        assert (
            f'mlplatform_drift_disparate_impact_ratio{{model="{QMODEL}",segment="is_foreign",version="1"}}'
            in metrics
        )
        assert (
            f'mlplatform_drift_segment_records{{model="{QMODEL}",segment="hour_bucket",value="[0,6)",version="1"}} '
            f"{float(night.sum())}" in metrics
        )
        r = await client.get("/v1/models/drift-demo/segments")
        assert r.status_code == 404 and "DRIFT_SEGMENTS" in r.json()["error"]


async def test_a_segment_column_the_model_lacks_fails_start_up_naming_it(qregistry, tmp_path):
    settings = drift_settings(qregistry, tmp_path, segments={QMODEL: ["hour", "merchant_category"]})
    with pytest.raises(RuntimeError, match="merchant_category") as err:
        async with running_app(settings):
            pass
    assert "DRIFT_SEGMENTS" in str(err.value) and QMODEL in str(err.value)


async def test_a_version_without_labelled_reference_gets_realized_performance_but_no_estimate(
    qregistry, tmp_path
):
    from tests.unit.drift.tiny_registry import MODEL, make_frame

    settings = drift_settings(qregistry, tmp_path, window_size=200)
    frame = make_frame(200, seed=3)
    recs = records(frame, MODEL, "1", "noref")
    y = (np.random.default_rng(4).random(200) < frame["prediction"]).astype(int)
    async with running_app(settings) as (client, _):
        assert (await client.post("/v1/records", json={"records": recs})).json()["windows_closed"] == 1
        body = {"labels": [{"prediction_id": f"noref-{i}", "label": int(v)} for i, v in enumerate(y)]}
        assert (await client.post(f"/v1/models/{MODEL}/labels", json=body)).json()["accepted"] == 200
        w = (await client.get(f"/v1/models/{MODEL}/quality")).json()["windows"][0]
        assert w["estimated"] is None and w["performance_dropped"] is None
        assert "quality/reference.parquet" in w["detail"]["unavailable"]
        assert w["realized"]["roc_auc"] == pytest.approx(roc_auc_score(y, frame["prediction"]))


async def test_the_segment_check_gives_up_on_a_registry_that_does_not_answer(tmp_path):
    """A listening socket that never answers stands for a hung registry: start-up goes on after the
    timeout instead of waiting out MLflow's retries."""
    import socket
    import time

    from mlplatform.drift.settings import DriftSettings
    from mlplatform.quality.segments import parse_specs

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        settings = DriftSettings(
            data_dir=tmp_path, mlflow_tracking_uri=f"http://127.0.0.1:{port}", auth_enabled=False
        )
        async with running_app(settings) as (_, app):
            quality = app.state.quality
            quality.specs = {"fraud-detector": parse_specs(["no_such_column"], {})}
            t0 = time.monotonic()
            quality.check_segments(timeout_s=0.5)  # no RuntimeError: not checked
            assert time.monotonic() - t0 < 5
