"""Batch-scored rows (source "batch") are windowed apart from online traffic; records without a source
(every sender that predates the field) stay online."""

from __future__ import annotations

from mlplatform.drift import sources
from tests.unit.drift.tiny_registry import MODEL, drift_settings, make_frame, records, running_app


def test_stream_keys():
    assert sources.stream_version("3", "online") == "3"
    assert sources.stream_version("3", "batch") == "3@batch"
    assert sources.registry_version("3@batch") == "3" and sources.registry_version("3") == "3"
    assert sources.source_of("3@batch") == "batch" and sources.source_of("3") == "online"


async def test_batch_rows_fill_their_own_windows(tiny_registry, tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFT_DATABASE_URL", raising=False)
    settings = drift_settings(
        tiny_registry, tmp_path, window_size=200, retrain_after_windows=1, multivariate={"methods": []}
    )
    online = records(make_frame(150, seed=51), MODEL, "1", "on")  # no "source": an older sender
    batch = [
        {**r, "source": "batch", "request_id": f"b-{i}"}
        for i, r in enumerate(records(make_frame(200, seed=52, shift=1.0), MODEL, "1", "b"))
    ]
    async with running_app(settings) as (client, app):
        r = await client.post("/v1/records", json={"records": online + batch})
        assert r.status_code == 200, r.text
        # 350 rows of one version, but only the 200 batch rows make a full window
        assert r.json() == {"accepted": 350, "duplicates": 0, "windows_closed": 1}
        status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
        assert status["open_records"] == {"1": 150}
        assert status["window"]["version"] == "1@batch" and status["window"]["dataset_drift"] is True
        # a drifted batch window does not start the online retraining episode
        assert status["retraining"]["consecutive_drift_windows"] == 0
        metrics = (await client.get("/metrics")).text
        assert f'mlplatform_drift_dataset_drifted{{model="{MODEL}",version="1@batch"}} 1.0' in metrics
        assert (
            f'mlplatform_drift_records_ingested_total{{model="{MODEL}",version="1@batch"}} 200.0' in metrics
        )
        assert f'mlplatform_drift_records_ingested_total{{model="{MODEL}",version="1"}} 150.0' in metrics
        # online rows close their own window, against the same version's reference
        more = records(make_frame(50, seed=53), MODEL, "1", "on", start=150)
        assert (await client.post("/v1/records", json={"records": more})).json()["windows_closed"] == 1
        history = (await client.get(f"/v1/models/{MODEL}/drift/history")).json()["windows"]
        assert [(w["version"], w["n_records"]) for w in history] == [("1", 200), ("1@batch", 200)]
        assert history[0]["dataset_drift"] is False
        assert list(app.state.dataplane.detectors) == [(MODEL, "1")]  # one reference for both streams
        bad = {**online[0], "request_id": "bad", "source": "nightly"}
        r = await client.post("/v1/records", json={"records": [bad]})
        assert r.status_code == 422 and "source" in r.json()["error"]
