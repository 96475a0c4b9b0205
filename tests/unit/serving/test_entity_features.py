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


def _card_feature_store(data_dir):
    """A real Feast repository whose one feature service, ``card_risk_v1``, is keyed by ``card_id``
    and serves the forest's history inputs; two cards written to its SQLite online store."""
    from datetime import UTC, datetime, timedelta

    import pandas as pd
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64

    from mlplatform.features.store import FeatureRepoPaths, open_store

    paths = FeatureRepoPaths(data_dir)
    paths.source_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    frame = pd.DataFrame(
        {
            "card_id": [11, 12],
            "event_timestamp": [now - timedelta(minutes=5)] * 2,
            "merchant_risk": [0.1, 0.9],
            "tx_count_24h": [2, 25],
            "is_foreign": [False, True],
        }
    )
    frame.to_parquet(paths.source_dir / "cards.parquet")
    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="card_activity",
        entities=[card],
        ttl=timedelta(days=1),
        schema=[
            Field(name="card_id", dtype=Int64),
            Field(name="merchant_risk", dtype=Float64),
            Field(name="tx_count_24h", dtype=Int64),
            Field(name="is_foreign", dtype=Bool),
        ],
        source=FileSource(path=str(paths.source_dir / "cards.parquet"), timestamp_field="event_timestamp"),
    )
    store = open_store(paths)
    store.apply([card, view, FeatureService(name="card_risk_v1", features=[view])])
    store.write_to_online_store("card_activity", frame)
    return frame


async def test_a_model_keyed_by_card_id(app_factory, serving_registry, tmp_path):
    """Entity keys come from the model's feature service (its tags), not from a protocol constant: a
    model fed by a feature service keyed by ``card_id`` answers a request of ``card_id`` plus its
    request-time fields with the same probabilities as the request carrying every input."""
    import httpx

    from mlplatform.features.app import create_app as create_feature_app
    from mlplatform.features.client import FeatureStoreClient
    from mlplatform.features.enrich import TAG_ENTITY_KEYS
    from mlplatform.features.settings import FeatureSettings
    from tests.unit.serving.registry_models import TYPES

    cards = _card_feature_store(tmp_path / "features")
    registry = mlflow_client(serving_registry.uri)
    before = registry.get_model_version(FOREST, "1").tags
    registry.set_model_version_tag(FOREST, "1", TAG_FEATURE_SERVICE, "card_risk_v1")
    registry.set_model_version_tag(FOREST, "1", TAG_ENTITY_KEYS, "card_id")
    features = create_feature_app(
        FeatureSettings(data_dir=tmp_path / "features", auth_enabled=False, apply_on_start=False)
    )
    client = FeatureStoreClient("http://features", timeout_s=5.0, retries=0)
    await client.aclose()
    client._client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=features), base_url="http://features"
    )
    try:
        async with features.router.lifespan_context(features):
            app = await app_factory(models=FOREST, feature_client=client)
            model = app.repository.get(FOREST).model
            assert model.feature_service == "card_risk_v1" and model.entity_keys == ("card_id",)
            request_fields = {"amount": [120.0, 40.0], "hour": [3, 22]}
            entity_body = {
                "inputs": [
                    {"name": "card_id", "shape": [2], "datatype": "INT64", "data": [11, 12]},
                    *[
                        {"name": k, "shape": [2], "datatype": TYPES[k], "data": v}
                        for k, v in request_fields.items()
                    ],
                ]
            }
            r = await app.client.post(f"/v2/models/{FOREST}/infer", json=entity_body)
            assert r.status_code == 200, r.text
            full = {
                **request_fields,
                **{k: cards[k].tolist() for k in ("merchant_risk", "tx_count_24h", "is_foreign")},
            }
            full_body = {
                "inputs": [
                    {"name": k, "shape": [2], "datatype": TYPES[k], "data": v} for k, v in full.items()
                ]
            }
            direct = await app.client.post(f"/v2/models/{FOREST}/infer", json=full_body)
            assert direct.status_code == 200, direct.text
            assert r.json()["outputs"] == direct.json()["outputs"]
            # user_id is not this model's entity key: an ordinary "not an input" 422
            wrong = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]}
            r = await app.client.post(f"/v2/models/{FOREST}/infer", json=wrong)
            assert r.status_code == 422 and "'user_id'" in r.json()["error"]
    finally:
        for tag in (TAG_ENTITY_KEYS, TAG_FEATURE_SERVICE):
            if tag in before:
                registry.set_model_version_tag(FOREST, "1", tag, before[tag])
            else:
                registry.delete_model_version_tag(FOREST, "1", tag)
        await client.aclose()
