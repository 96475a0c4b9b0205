"""The serving app in-process against a real SQLite MLflow registry: V2 routes, errors, auth, metrics."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from mlplatform.core.auth import hash_key
from tests.helpers import in_process, v2_body, wait_until
from tests.unit.serving.registry_models import FEATURES, FOREST, HGB, MLP, TYPES
from tests.unit.serving.support import RunningApp, make_settings


@pytest.fixture(scope="module")
async def served(serving_registry, tmp_path_factory):
    """One app with all three models for the read-only tests of this module."""
    from mlplatform.core.secrets import EnvSecretsBackend
    from mlplatform.serving.app import create_app

    settings = make_settings(
        serving_registry, tmp_path_factory.mktemp("served"), models=f"{FOREST},{MLP},{HGB}"
    )
    app = create_app(settings, secrets=EnvSecretsBackend({}))
    async with in_process(app, "http://t") as client:
        running = RunningApp(app, client)
        await wait_until(running.repository.ready)
        yield running


async def test_server_and_model_metadata(served):
    c = served.client
    r = await c.get("/v2")
    assert r.status_code == 200 and r.json()["name"] == "mlplatform-model-serving"
    meta = (await c.get(f"/v2/models/{FOREST}")).json()
    assert meta["platform"] == "sklearn" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert [i["datatype"] for i in meta["inputs"]] == [TYPES[f] for f in FEATURES]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"probability": "FP64", "label": "INT64"}
    assert meta["parameters"]["runtime"] == "onnxruntime"
    assert meta["parameters"]["alias"] == "champion"
    mlp = (await c.get(f"/v2/models/{MLP}")).json()
    assert mlp["platform"] == "pytorch" and mlp["parameters"]["runtime"] == "onnxruntime"
    hgb = (await c.get(f"/v2/models/{HGB}")).json()
    assert hgb["parameters"]["runtime"] == "sklearn"
    assert "ONNX conversion failed" in hgb["parameters"]["runtime_reason"]
    assert (await c.get(f"/v2/models/{FOREST}/ready")).json() == {"name": FOREST, "ready": True}
    assert (await c.get("/v2/health/ready")).status_code == 200


async def test_infer_matches_native_model_for_every_runtime(served, serving_registry):
    import mlflow.pytorch
    import mlflow.sklearn
    import numpy as np
    import torch

    df = serving_registry.frame.iloc[100:140].reset_index(drop=True)
    for name in (FOREST, MLP, HGB):
        r = await served.client.post(f"/v2/models/{name}/infer", json=v2_body(df, TYPES, id="req-1"))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_name"] == name and doc["model_version"] == "1" and doc["id"] == "req-1"
        outs = {o["name"]: o for o in doc["outputs"]}
        assert outs["probability"]["shape"] == [40] and outs["probability"]["datatype"] == "FP64"
        got = np.array(outs["probability"]["data"])
        uri = f"models:/{name}/1"
        mlflow.set_tracking_uri(serving_registry.uri)
        mlflow.set_registry_uri(serving_registry.uri)
        if name == MLP:
            net = mlflow.pytorch.load_model(uri)
            with torch.no_grad():
                want = net(torch.tensor(df[FEATURES].to_numpy(dtype=np.float32))).numpy().reshape(-1)
        else:
            want = mlflow.sklearn.load_model(uri).predict_proba(df[FEATURES])[:, 1]
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_array_equal(outs["label"]["data"], (got >= 0.5).astype(int))


async def test_two_dimensional_input_and_version_route_and_output_filter(served, serving_registry):
    df = serving_registry.frame.iloc[:3]
    matrix = df[FEATURES].astype(float).to_numpy().tolist()
    body = {"inputs": [{"name": "input-0", "shape": [3, 5], "datatype": "FP64", "data": matrix}]}
    r1 = await served.client.post(f"/v2/models/{FOREST}/versions/1/infer", json=body)
    r2 = await served.client.post(f"/v2/models/{FOREST}/infer", json=v2_body(df, TYPES))
    assert r1.status_code == 200, r1.text
    assert r1.json()["outputs"][0]["data"] == r2.json()["outputs"][0]["data"]
    r3 = await served.client.post(f"/v2/models/{FOREST}/infer", json={**body, "outputs": [{"name": "label"}]})
    assert [o["name"] for o in r3.json()["outputs"]] == ["label"]


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (lambda b: b["inputs"].pop(0), 422, "input 'amount': missing"),
        (
            lambda b: b["inputs"].append({"name": "zip", "shape": [1], "datatype": "FP64", "data": [1.0]}),
            422,
            "input 'zip'",
        ),
        (lambda b: b["inputs"][2].update(datatype="FP64", data=[1.5]), 422, "input 'hour': datatype FP64"),
        (lambda b: b["inputs"][0].update(shape=[2]), 422, "input 'amount': data has 1 elements"),
        (lambda b: b["inputs"][0].update(shape=[1, 1, 1]), 422, "input 'amount': shape"),
        (lambda b: b["inputs"][1].update(data=["NaN"]), 422, "input 'merchant_risk': NaN"),
        (lambda b: b.update(outputs=[{"name": "shap"}]), 422, "outputs: 'shap'"),
    ],
)
async def test_client_mistakes_are_4xx_naming_the_input(served, serving_registry, mutate, status, fragment):
    body = v2_body(serving_registry.frame.iloc[:1], TYPES)
    mutate(body)
    r = await served.client.post(f"/v2/models/{FOREST}/infer", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


async def test_unknown_model_version_malformed_json_and_oversized_body(served, serving_registry):
    c = served.client
    body = v2_body(serving_registry.frame.iloc[:1], TYPES)
    r = await c.post("/v2/models/nope/infer", json=body)
    assert r.status_code == 404 and "model 'nope'" in r.json()["error"]
    r = await c.post(f"/v2/models/{FOREST}/versions/9/infer", json=body)
    assert r.status_code == 404 and "version 9" in r.json()["error"]
    assert (await c.get("/v2/models/nope")).status_code == 404
    assert (await c.get("/v2/models/nope/ready")).status_code == 404
    r = await c.post(
        f"/v2/models/{FOREST}/infer", content=b'{"inputs": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    big = orjson.dumps(
        {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [1.0] * 1_200_000}]}
    )
    r = await c.post(f"/v2/models/{FOREST}/infer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]


async def test_metrics_by_model_version_and_outcome(app_factory, serving_registry):
    served = await app_factory(models=FOREST)
    c = served.client
    await c.post(f"/v2/models/{FOREST}/infer", json=v2_body(serving_registry.frame.iloc[:2], TYPES))
    bad = v2_body(serving_registry.frame.iloc[:1], TYPES)
    bad["inputs"].pop()
    await c.post(f"/v2/models/{FOREST}/infer", json=bad)
    text = (await c.get("/metrics")).text
    assert f'mlplatform_serving_requests_total{{model="{FOREST}",outcome="success",version="1"}} 1.0' in text
    assert (
        f'mlplatform_serving_requests_total{{model="{FOREST}",outcome="client_error",version="1"}} 1.0'
        in text
    )
    assert (
        f'mlplatform_serving_request_duration_seconds_count{{model="{FOREST}",outcome="success",version="1"}} 1.0'
        in text
    )
    assert f'mlplatform_serving_batch_size_rows_sum{{model="{FOREST}"}} 2.0' in text
    assert f'mlplatform_serving_model_info{{model="{FOREST}",runtime="onnxruntime",version="1"}} 1.0' in text
    assert "mlplatform_serving_model_load_duration_seconds_count" in text
    assert "mlplatform_serving_queue_depth_requests" in text


async def test_auth_scopes_for_infer_and_admin(app_factory, serving_registry):
    keys = f"{hash_key('infer-key')}:infer,{hash_key('admin-key')}:admin,{hash_key('other')}:explain"
    app = await app_factory(models=FOREST, auth_enabled=True, secrets_env={"MLPLATFORM_API_KEYS": keys})
    c = app.client
    body = v2_body(serving_registry.frame.iloc[:1], TYPES)
    url = f"/v2/models/{FOREST}/infer"
    assert (await c.post(url, json=body)).status_code == 401
    assert (await c.post(url, json=body, headers={"x-api-key": "other"})).status_code == 403
    assert (await c.post(url, json=body, headers={"x-api-key": "infer-key"})).status_code == 200
    reload_url = f"/v2/repository/models/{FOREST}/load"
    assert (await c.post(reload_url, headers={"x-api-key": "infer-key"})).status_code == 403
    r = await c.post(reload_url, headers={"authorization": "Bearer admin-key"})
    assert r.status_code == 200 and r.json()["version"] == "1" and r.json()["runtime"] == "onnxruntime"


async def test_openapi_documents_every_route_with_models(served):
    spec = (await served.client.get("/openapi.json")).json()
    infer = spec["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert "inputs" in str(infer["requestBody"])
    assert "InferenceResponse" in str(infer["responses"]["200"])
    for code in ("404", "422", "503"):
        assert code in infer["responses"]


async def test_registry_unreachable_stays_not_ready(app_factory, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    app = await app_factory(
        wait_ready=False, models=FOREST, mlflow_tracking_uri="http://127.0.0.1:9", load_retry_initial_s=0.05
    )
    c = app.client
    assert (await c.get("/v2/health/ready")).status_code == 503
    assert (await c.get(f"/v2/models/{FOREST}/ready")).status_code == 503
    r = await c.post(f"/v2/models/{FOREST}/infer", json={"inputs": []})
    assert r.status_code == 503 and "not loaded yet" in r.json()["error"]
    # the failed registry lookups are counted, so ServingModelNotLoaded can fire for this model
    deadline = asyncio.get_running_loop().time() + 20
    failures = 0.0
    while asyncio.get_running_loop().time() < deadline and failures < 1:
        for line in (await c.get("/metrics")).text.splitlines():
            if (
                line.startswith("mlplatform_serving_model_load_failures_total{")
                and f'model="{FOREST}"' in line
            ):
                failures = float(line.rsplit(" ", 1)[1])
        await asyncio.sleep(0.05)
    assert failures >= 1
