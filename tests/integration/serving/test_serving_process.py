"""The real `mlplatform serve model-serving` process on a free port against a real SQLite MLflow registry.

Feature store and drift detection are pointed at closed ports: entity requests must answer 503
naming the feature store (real FeatureStoreClient), and payload logging must never hold up inference.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import orjson
import pytest

from mlplatform.core.registry import TAG_FEATURE_SERVICE, mlflow_client
from tests.helpers import v2_body
from tests.procs import free_port, start_service
from tests.unit.serving.registry_models import FEATURES, FOREST, HGB, MLP, TYPES, shared_registry
from tests.unit.serving.support import process_env

pytestmark = pytest.mark.integration
KEY = "integration-infer-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reg = shared_registry(tmp_path_factory.getbasetemp() / "serving-registry")
    mlflow_client(reg.uri).set_model_version_tag(FOREST, "1", TAG_FEATURE_SERVICE, "fraud_detection_v1")
    data_dir = tmp_path_factory.mktemp("serving-proc")
    env = process_env(
        reg,
        data_dir,
        f"{FOREST},{MLP}@champion,{HGB}/1",
        KEY,
        SERVING_FEATURE_STORE_URL=f"http://127.0.0.1:{free_port()}",
        SERVING_FEATURE_STORE_TIMEOUT_S="0.3",
        SERVING_DRIFT_URL=f"http://127.0.0.1:{free_port()}",
    )
    svc = start_service("model-serving", env, data_dir / "logs", ready_timeout=180)
    yield svc, reg
    svc.stop()


def post(url: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(url, json=body, headers={"x-api-key": KEY}, timeout=30, **kw)


def test_infer_metadata_and_errors_over_http(server):
    svc, reg = server
    df = reg.frame.iloc[:4]
    for name in (FOREST, MLP, HGB):
        r = post(f"{svc.url}/v2/models/{name}/infer", v2_body(df, TYPES, id="it-1"))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["id"] == "it-1" and doc["model_version"] == "1"
        assert doc["outputs"][0]["name"] == "probability" and len(doc["outputs"][0]["data"]) == 4
    meta = httpx.get(f"{svc.url}/v2/models/{FOREST}", headers={"x-api-key": KEY}).json()
    assert meta["parameters"]["runtime"] == "onnxruntime"
    assert meta["parameters"]["feature_service"] == "fraud_detection_v1"
    assert httpx.post(f"{svc.url}/v2/models/{FOREST}/infer", json=v2_body(df, TYPES)).status_code == 401
    bad = v2_body(df, TYPES)
    bad["inputs"][0]["datatype"] = "BYTES"
    r = post(f"{svc.url}/v2/models/{FOREST}/infer", bad)
    assert r.status_code == 422 and "input 'amount'" in r.json()["error"]
    r = post(f"{svc.url}/v2/models/ghost/infer", v2_body(df, TYPES))
    assert r.status_code == 404
    r = httpx.post(
        f"{svc.url}/v2/models/{FOREST}/infer",
        content=b"x" * (5 * 1024 * 1024),
        headers={"x-api-key": KEY, "content-type": "application/json"},
    )
    assert r.status_code == 413


def test_entity_request_with_feature_store_down_is_503_and_counted(server):
    svc, _ = server
    body = {
        "inputs": [
            {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [42]},
            {"name": "merchant_id", "shape": [1], "datatype": "INT64", "data": [7]},
            {"name": "amount", "shape": [1], "datatype": "FP64", "data": [99.5]},
        ]
    }
    r = post(f"{svc.url}/v2/models/{FOREST}/infer", body)
    assert r.status_code == 503, r.text
    assert "feature store" in r.json()["error"]
    assert r.elapsed.total_seconds() < 5
    # the MLP has no feature service tag: entity requests are a client mistake there
    r = post(f"{svc.url}/v2/models/{MLP}/infer", body)
    assert r.status_code == 422 and "feature service" in r.json()["error"]
    metrics = httpx.get(f"{svc.url}/metrics").text
    assert f'mlplatform_serving_feature_store_failures_total{{model="{FOREST}"' in metrics


# Large enough that eight serial native predictions outlast the client sending all eight requests.
ROWS_PER_REQUEST = 10000  # the per-request row limit


async def test_sigterm_drains_requests_in_flight(tmp_path):
    reg = shared_registry(tmp_path.parent.parent / "serving-registry")
    env = process_env(
        reg,
        tmp_path,
        HGB,  # native runtime: predictions run on a worker thread, one batch at a time
        SERVING_RUNTIME="native",  # said, not assumed: an ONNX-served model answers too fast to hold eight
        SERVING_MAX_BATCH_SIZE="1",
        SERVING_MAX_BODY_BYTES=str(64 * 1024 * 1024),
    )
    svc = start_service("model-serving", env, tmp_path / "logs", ready_timeout=180)
    try:
        big = reg.frame.sample(n=ROWS_PER_REQUEST, replace=True, random_state=1)[FEATURES].reset_index(
            drop=True
        )
        body = v2_body(big, TYPES)
        async with httpx.AsyncClient(base_url=svc.url, timeout=60) as client:
            payload = orjson.dumps(body)  # serialised once: the eight requests reach the server together
            headers = {"content-type": "application/json"}
            tasks = [
                asyncio.create_task(client.post(f"/v2/models/{HGB}/infer", content=payload, headers=headers))
                for _ in range(8)
            ]
            loop = asyncio.get_running_loop()
            end = loop.time() + 30
            while loop.time() < end:  # wait until the server has all eight, some of them still in flight
                text = (await client.get("/metrics")).text
                line = next(
                    (ln for ln in text.splitlines() if ln.startswith("mlplatform_http_requests_in_flight{")),
                    "",
                )
                in_flight = float(line.rsplit(" ", 1)[1]) if line else 0.0
                done = sum(
                    float(ln.rsplit(" ", 1)[1])
                    for ln in text.splitlines()
                    if ln.startswith("mlplatform_http_requests_total{") and "/infer" in ln
                )
                if in_flight >= 1 and in_flight + done >= 8:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail(f"requests never were all received with some in flight (last: {line!r})")
            svc.proc.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*tasks)
        assert [r.status_code for r in responses] == [200] * 8
        assert all(len(r.json()["outputs"][0]["data"]) == ROWS_PER_REQUEST for r in responses)
        # uvicorn exits 0 or re-raises the SIGTERM it handled once shutdown completed
        assert svc.proc.wait(timeout=40) in (0, -signal.SIGTERM)
        assert "Traceback" not in svc.logs()
    finally:
        svc.stop()


def batched_requests(url: str) -> float:
    prefix = f'mlplatform_serving_batch_size_requests_sum{{model="{FOREST}"}} '
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


async def test_concurrent_single_row_requests_each_get_their_own_row(server):
    """The production HTTP path (fast routes served by the server protocol) with same-turn batching:
    400 distinct single-row requests over 16 keep-alive connections; every answer must be the model's
    answer for that request's row (taken from one 400-row request) and carry that request's id."""
    svc, reg = server
    rows = reg.frame.iloc[:400].reset_index(drop=True)
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    url = f"{svc.url}/v2/models/{FOREST}/infer"
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    before = batched_requests(svc.url)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        whole = await client.post(url, content=orjson.dumps(v2_body(rows, TYPES)), headers=headers)
        assert whole.status_code == 200, whole.text
        expected = whole.json()["outputs"][0]["data"]

        async def one(i: int) -> tuple[int, httpx.Response]:
            body = orjson.dumps(v2_body(rows.iloc[i : i + 1], TYPES, id=f"row-{i}"))
            return i, await client.post(url, content=body, headers=headers)

        answers = await asyncio.gather(*(one(i) for i in range(len(rows))))
    for i, r in answers:
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["id"] == f"row-{i}"
        assert doc["outputs"][0]["data"] == pytest.approx([expected[i]], abs=1e-9)
    assert len({round(p, 9) for p in expected}) > 50  # distinct rows give distinct answers
    # every request went through the batcher exactly once
    assert batched_requests(svc.url) - before == len(rows) + 1
