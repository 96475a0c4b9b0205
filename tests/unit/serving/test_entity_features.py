"""Entity-based inference with the real FeatureStoreClient pointed at a port nobody listens on:
503 naming the feature store (no hang, counted), or the documented fallback to default features."""

from __future__ import annotations

import time

import pytest

from mlplatform.core.registry import TAG_FEATURE_SERVICE, mlflow_client
from tests.procs import free_port
from tests.unit.serving.registry_models import FOREST

ENTITY_BODY = {
    "inputs": [
        {"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
        {"name": "merchant_id", "shape": [2], "datatype": "BYTES", "data": ["m-1", "m-2"]},
        {"name": "amount", "shape": [2], "datatype": "FP64", "data": [10.0, 5000.0]},
    ]
}


@pytest.fixture
def dead_feature_store(serving_registry):
    from mlplatform.features.client import FeatureStoreClient

    mlflow_client(serving_registry.uri).set_model_version_tag(
        FOREST, "1", TAG_FEATURE_SERVICE, "fraud_detection_v1"
    )
    return FeatureStoreClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.2, retries=1)


@pytest.mark.parametrize("fallback", [False, True])
async def test_feature_store_down(app_factory, dead_feature_store, fallback):
    app = await app_factory(
        models=FOREST, feature_client=dead_feature_store, feature_fallback_defaults=fallback
    )
    assert app.repository.get(FOREST).model.feature_service == "fraud_detection_v1"
    start = time.monotonic()
    r = await app.client.post(f"/v2/models/{FOREST}/infer", json=ENTITY_BODY)
    assert time.monotonic() - start < 5
    if fallback:
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [2]
    else:
        assert r.status_code == 503
        assert "feature store unavailable" in r.json()["error"] and FOREST in r.json()["error"]
    text = (await app.client.get("/metrics")).text
    assert (
        f'mlplatform_serving_feature_store_failures_total{{model="{FOREST}",reason="unavailable"}} 1.0'
        in text
    )
    await dead_feature_store.aclose()


async def test_entity_request_without_feature_store_is_422(app_factory):
    app = await app_factory(models=FOREST)
    r = await app.client.post(f"/v2/models/{FOREST}/infer", json=ENTITY_BODY)
    assert r.status_code == 422 and "SERVING_FEATURE_STORE_URL" in r.json()["error"]
