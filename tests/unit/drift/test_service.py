"""Drift-detection service in-process: ingest, idempotency, 404/422, windows, restart, metrics, report."""

from __future__ import annotations

import pytest

from tests.unit.drift.tiny_registry import BROKEN, MODEL, drift_settings, make_frame, records, running_app

# every test here runs on both store backends (SQLite and a real PostgreSQL)
pytestmark = pytest.mark.usefixtures("drift_backend")


async def test_ingest_is_idempotent_and_survives_restart(tiny_registry, tmp_path):
    settings = drift_settings(tiny_registry, tmp_path, window_size=500)
    batch = records(make_frame(120, seed=5), MODEL, "1", "idem")
    async with running_app(settings) as (client, app):
        first = await client.post("/v1/records", json={"records": batch})
        assert first.status_code == 200, first.text
        assert first.json() == {"accepted": 120, "duplicates": 0, "windows_closed": 0}
        again = await client.post("/v1/records", json={"records": batch[:50]})
        assert again.json() == {"accepted": 0, "duplicates": 50, "windows_closed": 0}
        status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
        assert status["open_records"] == {"1": 120}
        assert status["window"] is None
        metrics = (await client.get("/metrics")).text
        assert 'mlplatform_drift_records_ingested_total{model="drift-demo",version="1"} 120.0' in metrics
        assert 'mlplatform_drift_records_duplicate_total{model="drift-demo",version="1"} 50.0' in metrics
    # a new app on the same data directory still has every record, and still de-duplicates
    async with running_app(settings) as (client, app):
        assert app.state.dataplane.store.count_records(MODEL) == 120
        again = await client.post("/v1/records", json={"records": batch})
        assert again.json()["accepted"] == 0
        more = records(make_frame(10, seed=6), MODEL, "1", "idem", start=120)
        assert (await client.post("/v1/records", json={"records": more})).json()["accepted"] == 10
        assert app.state.dataplane.store.count_records(MODEL) == 130


async def test_unknown_model_is_404_and_schema_mismatch_is_422(tiny_registry, tmp_path):
    settings = drift_settings(tiny_registry, tmp_path)
    good = records(make_frame(3, seed=1), MODEL, "1", "bad")
    async with running_app(settings) as (client, _):
        r = await client.post("/v1/records", json={"records": [{**good[0], "model": "nope"}]})
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = await client.post("/v1/records", json={"records": [{**good[0], "version": "99"}]})
        assert r.status_code == 404 and "99" in r.json()["error"]
        assert (await client.get("/v1/models/nope/drift")).status_code == 404

        wrong = dict(good[1])
        wrong["inputs"] = {k: v for k, v in wrong["inputs"].items() if k != "hour"} | {"colour": 3.0}
        r = await client.post("/v1/records", json={"records": [good[0], wrong]})
        assert r.status_code == 422
        msg = r.json()["error"]
        assert "missing columns ['hour']" in msg and "unexpected columns ['colour']" in msg

        typed = dict(good[2])
        typed["inputs"] = {**typed["inputs"], "amount": "lots"}
        r = await client.post("/v1/records", json={"records": [typed]})
        assert r.status_code == 422 and "amount" in r.json()["error"]

        # version 2 has its own reference, with an extra column: v1-shaped records are rejected
        r = await client.post("/v1/records", json={"records": [{**good[0], "version": "2"}]})
        assert r.status_code == 422 and "tx_count" in r.json()["error"]

        r = await client.post("/v1/records", json={"records": [{"request_id": "x"}]})
        assert r.status_code == 422 and "model" in r.json()["error"]
        # nothing of the rejected batches was stored
        # entity keys serving adds (DRIFT_IGNORED_INPUT_COLUMNS) are accepted
        good[0]["inputs"]["user_id"] = "u-17"
        r = await client.post("/v1/records", json={"records": good})
        assert r.json()["accepted"] == 3


async def test_windows_report_drift_per_feature_with_evidently_methods(tiny_registry, tmp_path):
    settings = drift_settings(tiny_registry, tmp_path, window_size=200)
    async with running_app(settings) as (client, _):
        calm = records(make_frame(200, seed=11), MODEL, "1", "calm")
        r = await client.post("/v1/records", json={"records": calm})
        assert r.json()["windows_closed"] == 1
        status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
        window = status["window"]
        assert window["n_records"] == 200 and window["dataset_drift"] is False
        # 2000-row reference: Evidently picks normed Wasserstein for rich numerics, JS for the binary
        assert window["features"]["amount"]["method"] == "wasserstein"
        assert window["features"]["hour"]["method"] == "wasserstein"
        assert window["features"]["is_foreign"]["method"] == "jensenshannon"
        assert window["features"]["is_foreign"]["column_type"] == "categorical"
        assert window["prediction"]["method"] == "wasserstein"

        shifted = records(make_frame(200, seed=12, shift=1.0), MODEL, "1", "shift")
        await client.post("/v1/records", json={"records": shifted})
        status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
        window = status["window"]
        assert window["dataset_drift"] is True
        assert window["features"]["amount"]["drifted"] is True
        assert window["features"]["merchant_risk"]["drifted"] is True
        assert window["prediction"]["drifted"] is True
        drifted = sum(f["drifted"] for f in window["features"].values())
        assert window["drift_share"] == pytest.approx(drifted / 4) and window["drifted_features"] == drifted

        history = (await client.get(f"/v1/models/{MODEL}/drift/history")).json()
        assert [w["dataset_drift"] for w in history["windows"]] == [True, False]

        metrics = (await client.get("/metrics")).text
        share = window["drift_share"]
        assert (
            f'mlplatform_drift_dataset_drift_share_ratio{{model="drift-demo",version="1"}} {share}' in metrics
        )
        assert (
            'mlplatform_drift_feature_drifted{feature="amount",model="drift-demo",version="1"} 1.0' in metrics
        )
        assert 'mlplatform_drift_window_size_records{model="drift-demo",version="1"} 200.0' in metrics

        report = await client.get(f"/v1/models/{MODEL}/drift/report")
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/html")
        assert "merchant_risk" in report.text and "Wasserstein distance (normed)" in report.text


async def test_time_windows_close_by_age(tiny_registry, tmp_path):
    import time

    settings = drift_settings(
        tiny_registry, tmp_path, window_mode="time", window_seconds=3600, min_window_records=20
    )
    async with running_app(settings) as (client, app):
        svc = app.state.dataplane
        await client.post("/v1/records", json={"records": records(make_frame(30, seed=3), MODEL, "1", "t")})
        assert await svc.close_due_time_windows() == 0
        assert await svc.close_due_time_windows(now=time.time() + 3601) == 1
        status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
        assert status["window"]["n_records"] == 30 and status["open_records"] == {}


async def test_registry_failure_is_503_so_senders_retry(tiny_registry, tmp_path):
    """A reference that cannot be fetched from the artifact store is a 503 (never 500); nothing is stored."""
    settings = drift_settings(tiny_registry, tmp_path)
    async with running_app(settings) as (client, app):
        body = {"records": records(make_frame(2, seed=1), BROKEN, "1", "down")}
        r = await client.post("/v1/records", json=body)
        assert r.status_code == 503 and "retry" in r.json()["error"]
        assert app.state.dataplane.store.count_records() == 0


async def test_a_feature_without_values_is_left_out_of_the_window(tiny_registry, tmp_path):
    settings = drift_settings(tiny_registry, tmp_path, window_size=100)
    body = records(make_frame(100, seed=8), MODEL, "1", "nulls")
    for rec in body:
        rec["inputs"]["merchant_risk"] = None
    async with running_app(settings) as (client, _):
        r = await client.post("/v1/records", json={"records": body})
        assert r.status_code == 200 and r.json()["windows_closed"] == 1
        window = (await client.get(f"/v1/models/{MODEL}/drift")).json()["window"]
        assert set(window["features"]) == {"amount", "hour", "is_foreign"}
