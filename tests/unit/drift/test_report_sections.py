"""The drift report's own sections (multivariate drift, model quality, segments and fairness): the
values they show are the API's, every value is escaped, and the joint shift per-column drift misses is
shown as multivariate drift next to the performance it costs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlplatform.drift import report_sections as rs
from tests.unit.drift.quality_registry import QMODEL, add_quality_model, joint_shift, labels, population
from tests.unit.drift.tiny_registry import MODEL, drift_settings, records, running_app


@pytest.fixture(scope="module")
def qversion(tiny_registry, tmp_path_factory) -> str:  # noqa: ANN001
    return add_quality_model(tiny_registry.uri, tmp_path_factory.mktemp("report-quality"))


def test_sections_escape_every_value():
    evil = "<script>alert(1)</script>"
    mv = {
        "drifted": True,
        "reference_rows": 10,
        "current_rows": 5,
        "columns": [evil],
        "methods": {
            "mmd": {
                "statistic": 0.1,
                "threshold": 0.01,
                "p_value": 0.0,
                "drifted": True,
                "seconds": 0.1,
                "details": {evil: evil},
            }
        },
    }
    seg = {
        "window_id": 3,
        "version": evil,
        "segments": {
            evil: {
                "column": evil,
                "disparate_impact_ratio": 0.5,
                "equal_opportunity_difference": 0.2,
                "values": {
                    evil: {
                        "volume": 3,
                        "prediction_rate": 0.1,
                        "mean_score": 0.2,
                        "labeled": 1,
                        "positives": 1,
                        "realized": None,
                        "drift_share": None,
                        "reference_volume_share": None,
                    }
                },
            }
        },
    }
    quality = {
        "metric": evil,
        "windows": [
            {
                "window_id": 1,
                "version": evil,
                "n_records": 4,
                "n_labeled": 2,
                "estimated": {evil: 0.5},
                "realized": None,
                "estimation_error": {},
                "performance_dropped": None,
            }
        ],
    }
    page = rs.insert_sections(
        "<html><body></body></html>",
        [rs.multivariate_section(mv), rs.segments_section(seg), rs.quality_section(quality)],
    )
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.endswith("</body></html>") and page.count("<style>") == 1
    assert 'class="mlp-drift">0.5<' in page  # disparate impact below 0.8 is flagged


async def test_report_shows_quality_segments_and_the_joint_shift_as_multivariate_drift(
    qversion, tiny_registry, tmp_path, monkeypatch
):
    monkeypatch.delenv("DRIFT_DATABASE_URL", raising=False)
    settings = drift_settings(
        tiny_registry,
        tmp_path,
        window_size=600,
        segments={QMODEL: ["is_foreign"]},
        multivariate={"methods": ["mmd", "domain_classifier"], "permutations": 50, "max_rows": 1000},
    )
    calm = population(600, seed=201)
    shifted = joint_shift(population(600, seed=202))
    async with running_app(settings) as (client, _):
        for prefix, frame in (("calm", calm), ("joint", shifted)):
            recs = records(frame, QMODEL, qversion, prefix)
            for i, rec in enumerate(recs):
                rec["prediction_id"] = f"pid-{prefix}-{i}"
            r = await client.post("/v1/records", json={"records": recs})
            assert r.json()["windows_closed"] == 1, r.text
            y = labels(frame, 7)
            body = {
                "labels": [{"prediction_id": f"pid-{prefix}-{i}", "label": int(y[i])} for i in range(600)]
            }
            assert (await client.post(f"/v1/models/{QMODEL}/labels", json=body)).status_code == 200
        window = (await client.get(f"/v1/models/{QMODEL}/drift")).json()["window"]
        # per column the joint shift is invisible; MMD on the rows sees it
        assert window["dataset_drift"] is False and window["drifted_features"] == 0
        assert window["multivariate"]["methods"]["mmd"]["drifted"] is True
        quality = (await client.get(f"/v1/models/{QMODEL}/quality")).json()
        segments = (await client.get(f"/v1/models/{QMODEL}/segments")).json()
        page = (await client.get(f"/v1/models/{QMODEL}/drift/report")).text

    assert page.count("<style>") >= 1 and page.index('id="multivariate-drift"') < page.index(
        'id="model-quality"'
    )
    quality_html = page[page.index('id="model-quality"') : page.index('id="segments"')]
    newest = quality["windows"][0]
    metric = quality["metric"]
    shown = f"{rs._fmt(newest['estimated'][metric])} / {rs._fmt(newest['realized'][metric])}"
    assert shown in quality_html
    assert len(re.findall(r"<tr><td>\d+</td>", quality_html)) == len(quality["windows"]) == 2
    assert "<polyline" in quality_html  # estimated and realized over the windows
    seg_html = page[page.index('id="segments"') :]
    foreign = segments["segments"]["is_foreign"]
    assert (
        "Disparate impact ratio <span" in seg_html and rs._fmt(foreign["disparate_impact_ratio"]) in seg_html
    )
    for value, v in foreign["values"].items():
        assert f"<tr><td>{value}</td><td>{v['volume']}</td>" in seg_html
    assert np.isclose(sum(v["volume"] for v in foreign["values"].values()), 600)


async def test_report_of_a_model_without_segments_says_so(tiny_registry, tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFT_DATABASE_URL", raising=False)
    from tests.unit.drift.tiny_registry import make_frame

    settings = drift_settings(tiny_registry, tmp_path, window_size=200, multivariate={"methods": []})
    async with running_app(settings) as (client, _):
        await client.post("/v1/records", json={"records": records(make_frame(200, seed=3), MODEL, "1", "x")})
        page = (await client.get(f"/v1/models/{MODEL}/drift/report")).text
    assert "Multivariate drift is turned off for this model." in page
    assert "no segment columns are configured for model" in page
    assert 'id="model-quality"' in page
