"""Feast repository: config rendering, point-in-time retrieval, join helper and the client."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform.core.errors import PlatformError
from mlplatform.features.client import FeatureStoreClient, FeatureStoreUnavailable
from mlplatform.features.contract import MODEL_FEATURES, entity_snapshots, point_in_time_join
from mlplatform.features.settings import FeatureSettings
from mlplatform.features.store import (
    FeatureRepoPaths,
    OnlineStoreSpec,
    apply_definitions,
    historical_training_frame,
    open_store,
    render_feature_store_yaml,
    write_sources,
)
from mlplatform.training.data import generate_transactions
from tests.procs import free_port

from .conftest import SmallRepo


def test_render_sqlite_default(tmp_path: Path) -> None:
    text = render_feature_store_yaml(FeatureRepoPaths(tmp_path), OnlineStoreSpec())
    cfg = yaml.safe_load(text)
    assert cfg["online_store"] == {
        "type": "sqlite",
        "path": str((tmp_path / "feature_repo/data/online_store.db").resolve()),
    }
    assert cfg["offline_store"] == {"type": "file"}
    assert cfg["project"] == "mlplatform"


def test_render_redis_keeps_password_off_disk(tmp_path: Path) -> None:
    spec = OnlineStoreSpec(
        kind="redis", redis_address="redis.prod:6380", redis_password="s3cret", redis_ssl=True
    )
    paths = FeatureRepoPaths(tmp_path)
    on_disk = render_feature_store_yaml(paths, spec, environment="prod")
    assert "s3cret" not in on_disk
    assert yaml.safe_load(on_disk)["online_store"]["connection_string"] == (
        "redis.prod:6380,db=0,ssl=true,password=${FEAST_REDIS_PASSWORD}"
    )
    revealed = yaml.safe_load(
        render_feature_store_yaml(paths, spec, environment="prod", reveal_password=True)
    )
    assert revealed["online_store"]["connection_string"].endswith("password=s3cret")
    store = open_store(paths, spec, environment="prod")
    assert "s3cret" not in paths.yaml.read_text()
    assert store.config.online_store.connection_string.endswith("password=s3cret")
    assert 'environment "prod"' in paths.yaml.read_text()


def test_feast_training_rows_match_pandas(small_repo: SmallRepo) -> None:
    """Feast point-in-time retrieval for the feature service gives exactly the phase-1 pandas features."""
    store = open_store(FeatureRepoPaths(small_repo.data_dir))
    tx = small_repo.transactions
    via_feast = historical_training_frame(store, tx)
    via_pandas = point_in_time_join(tx, small_repo.snapshots)
    assert len(via_feast) == len(tx)
    pd.testing.assert_frame_equal(via_feast[list(MODEL_FEATURES)], via_pandas[list(MODEL_FEATURES)])


def test_value_written_after_event_never_reaches_its_training_row(tmp_path: Path) -> None:
    """A snapshot stamped at (or after) the event's own second must not appear in that event's row."""
    tx = generate_transactions(600, seed=13)
    snaps = entity_snapshots(tx)
    event = tx.iloc[400]
    user = int(event["user_id"])
    poison = pd.DataFrame(
        {
            "user_id": [user, user],
            "event_timestamp": [
                event["event_timestamp"],
                event["event_timestamp"] + pd.Timedelta(seconds=30),
            ],
            "user_txn_count_1h": [999, 998],
            "user_mean_amount_1h": [1e6, 1e6],
            "user_txn_count_24h": [999, 998],
            "user_mean_amount_24h": [1e6, 1e6],
            "user_txn_count_7d": [999, 998],
            "user_mean_amount_7d": [1e6, 1e6],
        }
    ).astype(snaps["user_id"].dtypes.to_dict())
    users = snaps["user_id"]
    # drop the event's own genuine snapshot so only the poisoned values sit at/after the event
    users = users[~((users["user_id"] == user) & (users["event_timestamp"] >= event["event_timestamp"]))]
    snaps["user_id"] = pd.concat([users, poison], ignore_index=True)
    paths = FeatureRepoPaths(tmp_path)
    write_sources(snaps, paths)
    store = open_store(paths)
    apply_definitions(store, paths)
    frame = historical_training_frame(store, tx).set_index("transaction_id")
    row = frame.loc[int(event["transaction_id"])]
    assert row["user_txn_count_7d"] < 998
    assert row["user_mean_amount_7d"] < 1e6
    # the control: an event one minute later does see the poisoned snapshot (so the test can fail)
    later = tx.iloc[[400]].assign(
        transaction_id=10_000, event_timestamp=event["event_timestamp"] + pd.Timedelta(minutes=1)
    )
    seen = historical_training_frame(store, later).iloc[0]
    assert seen["user_txn_count_7d"] == 998


async def test_client_reads_through_the_service(small_repo: SmallRepo) -> None:
    from mlplatform.features.app import create_app

    app = create_app(FeatureSettings(data_dir=small_repo.data_dir, auth_enabled=False))
    async with app.router.lifespan_context(app):
        client = FeatureStoreClient("http://features", timeout_s=2.0, retries=0)
        await client.aclose()
        client._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://features")
        user = int(small_repo.transactions["user_id"].iloc[-1])
        merchant = int(small_repo.transactions["merchant_id"].iloc[-1])
        rows = [{"user_id": user, "merchant_id": merchant, "amount": 10.0}]
        (got,) = await client.get_online_features("fraud_detection_v1", rows)
        assert set(got) == set(MODEL_FEATURES) - {"amount", "hour", "merchant_category", "distance_from_home"}
        assert got["user_txn_count_7d"] >= 1
        with pytest.raises(PlatformError) as err:
            await client.get_online_features("no_such_service", rows)
        assert err.value.status_code == 404 and "no_such_service" in err.value.message
        await client.aclose()


async def test_client_raises_unavailable_when_store_is_down() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    client = FeatureStoreClient(
        f"http://127.0.0.1:{free_port()}", timeout_s=0.3, retries=1, registry=registry
    )
    FeatureStoreClient("http://x", registry=registry)  # a second client on the same registry is fine
    try:
        with pytest.raises(FeatureStoreUnavailable) as err:
            await client.get_online_features(
                "fraud_detection_v1", [{"user_id": 1, "merchant_id": 2, "amount": 1.0}]
            )
        assert err.value.status_code == 503 and "feature store" in err.value.message
    finally:
        await client.aclose()
    assert (
        registry.get_sample_value("mlplatform_feature_client_errors_total", {"outcome": "unavailable"}) == 1.0
    )


def test_settings_documented_and_env() -> None:
    for name, f in FeatureSettings.model_fields.items():
        assert f.description, name
    s = FeatureSettings(_env_file=None, online_store="redis", redis_address="r:1")
    assert s.port == 8081 and s.online_store == "redis"
    assert np.isfinite(s.max_rows)
