"""The feature-store service in-process against a real Feast repository (SQLite online store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlplatform.core.auth import hash_key
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.features.app import create_app
from mlplatform.features.contract import HISTORY_FEATURES, MODEL_FEATURES, ON_DEMAND_FEATURE, REQUEST_FEATURES
from mlplatform.features.settings import FeatureSettings
from mlplatform.features.store import FeatureRepoPaths

from .small_repo import SmallRepo, build_small_repo, latest

READ_KEY, ADMIN_KEY, OTHER_KEY = "read-key", "admin-key", "infer-key"


def _settings(data_dir: Path, **kw: object) -> FeatureSettings:
    return FeatureSettings(data_dir=data_dir, auth_enabled=True, **kw)


def _secrets() -> EnvSecretsBackend:
    keys = f"{hash_key(READ_KEY)}:features:read,{hash_key(ADMIN_KEY)}:admin|features:read,{hash_key(OTHER_KEY)}:infer"
    return EnvSecretsBackend({"MLPLATFORM_API_KEYS": keys})


async def _client(app) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://features", headers={"Authorization": f"Bearer {READ_KEY}"}
        ) as client:
            yield client


@pytest.fixture(scope="module")
async def client(small_repo: SmallRepo) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(small_repo.data_dir), secrets=_secrets())
    async for c in _client(app):
        c.app = app  # type: ignore[attr-defined]
        yield c


async def test_online_read_returns_feast_values(client: httpx.AsyncClient, small_repo: SmallRepo) -> None:
    tx = small_repo.transactions
    users = tx["user_id"].drop_duplicates().head(3).tolist()
    merchants = tx["merchant_id"].drop_duplicates().head(3).tolist()
    rows = [{"user_id": u, "merchant_id": m, "amount": 100.0} for u, m in zip(users, merchants, strict=True)]
    r = await client.post("/v1/features/online", json={"feature_service": "fraud_detection_v1", "rows": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["features"] == [*HISTORY_FEATURES, ON_DEMAND_FEATURE]
    assert body["missing"] == []
    for row, user, merchant in zip(body["rows"], users, merchants, strict=True):
        u = latest(small_repo, "user_id", user)
        m = latest(small_repo, "merchant_id", merchant)
        assert row["user_txn_count_7d"] == u["user_txn_count_7d"]
        assert row["user_mean_amount_1h"] == pytest.approx(u["user_mean_amount_1h"])
        assert row["merchant_fraud_rate_30d"] == pytest.approx(m["merchant_fraud_rate_30d"])
        assert row[ON_DEMAND_FEATURE] == pytest.approx(100.0 / u["user_mean_amount_7d"])
        assert isinstance(row["user_txn_count_1h"], int)


async def test_feature_refs_and_unknown_entities(client: httpx.AsyncClient, small_repo: SmallRepo) -> None:
    user = int(small_repo.transactions["user_id"].iloc[0])
    rows = [{"user_id": user}, {"user_id": 999_999_999}]
    r = await client.post(
        "/v1/features/online", json={"features": ["user_activity_24h:user_txn_count_24h"], "rows": rows}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["feature_service"] is None
    assert body["rows"][0]["user_txn_count_24h"] == latest(small_repo, "user_id", user)["user_txn_count_24h"]
    assert body["rows"][1] == {"user_txn_count_24h": None}
    assert body["missing"] == [
        {"row": 1, "feature_view": "user_activity_24h", "join_key": "user_id", "value": 999_999_999}
    ]


async def test_unknown_service_and_view_are_404_naming_them(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/features/online", json={"feature_service": "nope_v9", "rows": [{"user_id": 1}]}
    )
    assert r.status_code == 404 and "nope_v9" in r.json()["error"]
    r = await client.post(
        "/v1/features/online", json={"features": ["ghost_view:x"], "rows": [{"user_id": 1}]}
    )
    assert r.status_code == 404 and "ghost_view" in r.json()["error"]
    r = await client.post(
        "/v1/features/online", json={"features": ["user_activity_1h:ghost_feature"], "rows": [{"user_id": 1}]}
    )
    assert r.status_code == 404 and "ghost_feature" in r.json()["error"]


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([{"merchant_id": 1, "amount": 1.0}], "rows[0].user_id"),
        ([{"user_id": "abc", "merchant_id": 1, "amount": 1.0}], "rows[0].user_id"),
        ([{"user_id": True, "merchant_id": 1, "amount": 1.0}], "rows[0].user_id"),
        ([{"user_id": 1, "merchant_id": 1.5, "amount": 1.0}], "rows[0].merchant_id"),
        ([{"user_id": 1, "merchant_id": 2}], "rows[0].amount"),
        ([{"user_id": 1, "merchant_id": 2, "amount": "x"}], "rows[0].amount"),
        ([], "rows"),
    ],
)
async def test_malformed_rows_are_422(client: httpx.AsyncClient, rows: list, needle: str) -> None:
    r = await client.post("/v1/features/online", json={"feature_service": "fraud_detection_v1", "rows": rows})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]


async def test_service_xor_refs(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/features/online", json={"rows": [{"user_id": 1}]})
    assert r.status_code == 422 and "feature_service" in r.json()["error"]
    r = await client.post("/v1/features/online", json={"features": ["bad-ref"], "rows": [{"user_id": 1}]})
    assert r.status_code == 422 and "bad-ref" in r.json()["error"]


async def test_listings(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/features/services")
    assert r.status_code == 200
    svc = r.json()["feature_services"][0]
    assert svc["name"] == "fraud_detection_v1"
    assert len(svc["features"]) == len(MODEL_FEATURES) - len(REQUEST_FEATURES)
    r = await client.get("/v1/features/views")
    views = {v["name"]: v for v in r.json()["feature_views"]}
    assert views["user_activity_1h"]["ttl_seconds"] == 3600
    assert views["user_activity_1h"]["materialized_until"] is not None
    assert views["transaction_ratios"]["kind"] == "on_demand"
    assert views["transaction_ratios"]["request_fields"] == ["amount"]


async def test_scopes(client: httpx.AsyncClient) -> None:
    body = {
        "feature_service": "fraud_detection_v1",
        "rows": [{"user_id": 1, "merchant_id": 2, "amount": 1.0}],
    }
    r = await client.post("/v1/features/online", json=body, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert r.status_code == 403
    r = await client.post("/v1/features/online", json=body, headers={"Authorization": ""})
    assert r.status_code == 401
    r = await client.post("/v1/features/materialize", json={})
    assert r.status_code == 403  # read key cannot materialise
    r = await client.post("/v1/features/push", json={"push_source": "user_activity_push", "rows": []})
    assert r.status_code == 403


async def test_metrics_exported(client: httpx.AsyncClient, small_repo: SmallRepo) -> None:
    user = int(small_repo.transactions["user_id"].iloc[0])
    merchant = int(small_repo.transactions["merchant_id"].iloc[0])
    body = {
        "feature_service": "fraud_detection_v1",
        "rows": [{"user_id": user, "merchant_id": merchant, "amount": 3.0}],
    }
    assert (await client.post("/v1/features/online", json=body)).status_code == 200
    text = (await client.get("/metrics")).text
    assert (
        'mlplatform_features_online_request_duration_seconds_count{feature_service="fraud_detection_v1"}'
        in text
    )
    assert (
        'mlplatform_features_online_store_read_duration_seconds_count{feature_view="user_activity_7d",store="sqlite"}'
        in text
    )
    assert 'mlplatform_features_freshness_seconds{feature_view="merchant_activity"}' in text


async def test_push_then_materialize(tmp_path: Path) -> None:
    """Push fresh values (visible at once), then incremental materialisation counts rows written."""
    repo = build_small_repo(tmp_path, rows=1500, seed=8)
    app = create_app(_settings(tmp_path), secrets=_secrets())
    async for client in _client(app):
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        row = {
            "user_id": 424242,
            "event_timestamp": "2026-03-01T10:00:00Z",
            "user_txn_count_1h": 9,
            "user_mean_amount_1h": 700.0,
            "user_txn_count_24h": 10,
            "user_mean_amount_24h": 650.0,
            "user_txn_count_7d": 12,
            "user_mean_amount_7d": 600.0,
        }
        r = await client.post(
            "/v1/features/push", json={"push_source": "user_activity_push", "rows": [row]}, headers=admin
        )
        assert r.status_code == 200, r.text
        assert sorted(r.json()["feature_views"]) == [
            "user_activity_1h",
            "user_activity_24h",
            "user_activity_7d",
        ]
        r = await client.post(
            "/v1/features/online",
            json={
                "feature_service": "fraud_detection_v1",
                "rows": [{"user_id": 424242, "merchant_id": 1, "amount": 1200.0}],
            },
        )
        got = r.json()["rows"][0]
        assert got["user_txn_count_1h"] == 9 and got["user_mean_amount_7d"] == 600.0
        assert got[ON_DEMAND_FEATURE] == pytest.approx(2.0)
        assert got["merchant_txn_count_7d"] is None  # unknown merchant: null, listed as missing
        # bad pushes
        r = await client.post("/v1/features/push", json={"push_source": "nope", "rows": [row]}, headers=admin)
        assert r.status_code == 404 and "nope" in r.json()["error"]
        bad = {k: v for k, v in row.items() if k != "user_txn_count_7d"}
        r = await client.post(
            "/v1/features/push", json={"push_source": "user_activity_push", "rows": [bad]}, headers=admin
        )
        assert r.status_code == 422 and "user_txn_count_7d" in r.json()["error"]
        # a batch job appends a newer snapshot to the offline source; incremental materialisation loads it
        tx_end = repo.transactions["event_timestamp"].max()
        users = repo.snapshots["user_id"]
        fresh = users.iloc[[-1]].copy()
        fresh["event_timestamp"] = tx_end + pd.Timedelta(days=1, hours=12)
        fresh["user_txn_count_7d"] = 77
        FeatureRepoPaths(tmp_path).source_dir.joinpath("user_snapshots.parquet").unlink()
        pd.concat([users, fresh]).to_parquet(
            FeatureRepoPaths(tmp_path).source_dir / "user_snapshots.parquet", index=False
        )
        user = int(fresh["user_id"].iloc[0])
        end = (tx_end + pd.Timedelta(days=2)).isoformat()
        r = await client.post("/v1/features/materialize", json={"end": end}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["rows_written"] == {
            "user_activity_1h": 1,
            "user_activity_24h": 1,
            "user_activity_7d": 1,
            "merchant_activity": 0,
        }
        r = await client.post(
            "/v1/features/online",
            json={"features": ["user_activity_7d:user_txn_count_7d"], "rows": [{"user_id": user}]},
        )
        assert r.json()["rows"][0]["user_txn_count_7d"] == 77
        text = (await client.get("/metrics")).text
        assert 'mlplatform_features_materialization_runs_total{outcome="success"} 1.0' in text
        assert 'mlplatform_features_pushed_rows_total{push_source="user_activity_push"} 1.0' in text
        r = await client.post("/v1/features/materialize", json={"feature_views": ["ghost"]}, headers=admin)
        assert r.status_code == 404 and "ghost" in r.json()["error"]


async def test_scheduled_materialization(tmp_path: Path) -> None:
    """With FEATURES_MATERIALIZE_INTERVAL_S set, runs happen on their own (polled with a deadline)."""
    import asyncio
    import time

    build_small_repo(tmp_path, rows=800, seed=3, materialize=False)
    app = create_app(_settings(tmp_path, materialize_interval_s=0.2), secrets=_secrets())
    async for client in _client(app):
        assert (await client.get("/v2/health/ready")).status_code == 200
        deadline = time.monotonic() + 60
        registry = app.state.ctx.registry
        while (
            registry.get_sample_value(
                "mlplatform_features_materialization_runs_total", {"outcome": "success"}
            )
            or 0
        ) < 1:
            assert time.monotonic() < deadline, "no scheduled materialisation within 60 s"
            await asyncio.sleep(0.05)
        r = await client.get("/v1/features/views")
        assert all(v["materialized_until"] for v in r.json()["feature_views"] if v["kind"] == "batch")


async def test_online_fast_route_matches_the_fastapi_route(
    client: httpx.AsyncClient, small_repo: SmallRepo
) -> None:
    """The online read is dispatched ahead of FastAPI; its answers (200, 4xx, scopes) equal the FastAPI route's."""
    app = client.app  # type: ignore[attr-defined]
    hits = [r.match("/v1/features/online") for r in app.fast_routes]
    assert [h for h in hits if h is not None] == [("/v1/features/online", ())]
    tx = small_repo.transactions
    good = {
        "feature_service": "fraud_detection_v1",
        "rows": [
            {
                "user_id": int(tx["user_id"].iloc[0]),
                "merchant_id": int(tx["merchant_id"].iloc[0]),
                "amount": 5,
            }
        ],
    }
    cases = [
        (good, {}),
        ({"feature_service": "fraud_detection_v1", "rows": [{"user_id": "x", "merchant_id": 1}]}, {}),
        ({"feature_service": "nope", "rows": [{"user_id": 1, "merchant_id": 1, "amount": 1.0}]}, {}),
        ({"rows": "not-a-list"}, {}),
        ({"feature_service": "fraud_detection_v1", "rows": [], "extra": 1}, {}),
        (good, {"Authorization": f"Bearer {OTHER_KEY}"}),
        (good, {"Authorization": "Bearer wrong"}),
    ]
    fast_answers = []
    for body, headers in cases:
        r = await client.post("/v1/features/online", json=body, headers=headers)
        fast_answers.append((r.status_code, r.json(), r.headers.get("www-authenticate")))
    malformed = await client.post(
        "/v1/features/online", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    assert [a[0] for a in fast_answers] == [200, 422, 404, 422, 422, 403, 401]
    assert fast_answers[6][2] == "Bearer"
    # the same requests through FastAPI's route (what runs when tracing is on)
    saved = app.fast_routes
    app.fast_routes = ()
    try:
        for (body, headers), fast in zip(cases, fast_answers, strict=True):
            r = await client.post("/v1/features/online", json=body, headers=headers)
            assert (r.status_code, r.json(), r.headers.get("www-authenticate")) == fast, body
    finally:
        app.fast_routes = saved
