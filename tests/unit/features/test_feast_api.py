"""Feast's feature-server API on the feature store, in-process, differentially against ``feast serve``.

The reference is Feast's own feature server (``feast.feature_server.get_app``, what ``feast serve``
runs) on the same repository: for the same request body both must name the same features and give
the same values, statuses and event timestamps (Feast orders features within a view by a set, so the
comparison is by name; the entity columns come first in the request's order in both).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlplatform.core.auth import hash_key
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.features.app import create_app
from mlplatform.features.settings import FeatureSettings
from mlplatform.features.store import FeatureRepoPaths, open_store

from .conftest import SmallRepo, build_small_repo

READ_KEY, ADMIN_KEY, OTHER_KEY = "feast-read", "feast-admin", "feast-infer"
SERVICE = "fraud_detection_v1"
BATCH_REFS = [
    "user_activity_1h:user_txn_count_1h",
    "user_activity_1h:user_mean_amount_1h",
    "user_activity_24h:user_txn_count_24h",
    "user_activity_7d:user_txn_count_7d",
    "user_activity_7d:user_mean_amount_7d",
    "merchant_activity:merchant_txn_count_7d",
    "merchant_activity:merchant_fraud_rate_30d",
]
ODFV_REF = "transaction_ratios:amount_over_user_mean_7d"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> SmallRepo:
    return build_small_repo(tmp_path_factory.mktemp("feast-api"), rows=1500, seed=23)


@pytest.fixture(scope="module")
async def ours(repo: SmallRepo) -> AsyncIterator[httpx.AsyncClient]:
    keys = (
        f"{hash_key(READ_KEY)}:features:read,{hash_key(ADMIN_KEY)}:admin|features:read,"
        f"{hash_key(OTHER_KEY)}:infer"
    )
    app = create_app(
        FeatureSettings(data_dir=repo.data_dir, auth_enabled=True),
        secrets=EnvSecretsBackend({"MLPLATFORM_API_KEYS": keys}),
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://features",
            headers={"Authorization": f"Bearer {READ_KEY}"},
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture(scope="module")
async def feast_serve(repo: SmallRepo) -> AsyncIterator[httpx.AsyncClient]:
    """Feast's own feature server app (``feast serve``) on the same repository."""
    from feast.feature_server import get_app

    store = open_store(FeatureRepoPaths(repo.data_dir))
    app = get_app(store, registry_ttl_sec=0)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://feast") as c:
            yield c


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = doc["metadata"]["feature_names"]
    assert len(names) == len(doc["results"]) == len(set(names))
    return dict(zip(names, doc["results"], strict=True))


async def _both(ours: httpx.AsyncClient, feast_serve: httpx.AsyncClient, body: dict[str, Any]) -> dict:
    mine, theirs = (
        await ours.post("/get-online-features", json=body),
        await feast_serve.post("/get-online-features", json=body),
    )
    assert theirs.status_code == 200, theirs.text
    assert mine.status_code == 200, mine.text
    got, want = mine.json(), theirs.json()
    entity_cols = [k for k in body["entities"] if k in ("user_id", "merchant_id")]
    assert got["metadata"]["feature_names"][: len(entity_cols)] == entity_cols
    assert want["metadata"]["feature_names"][: len(entity_cols)] == entity_cols
    assert _by_name(got) == _by_name(want), body
    return got


def _entities(repo: SmallRepo, n: int, seed: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    tx = repo.transactions
    users = rng.sample(sorted(set(tx["user_id"].tolist())), n)
    merchants = rng.sample(sorted(set(tx["merchant_id"].tolist())), n)
    users[-1] = 987_654_321  # never seen: NOT_FOUND
    return {
        "user_id": [int(u) for u in users],
        "merchant_id": [int(m) for m in merchants],
        "amount": [round(rng.uniform(1, 500), 2) for _ in range(n)],
    }


async def test_feature_service_equals_feast_serve(
    ours: httpx.AsyncClient, feast_serve: httpx.AsyncClient, repo: SmallRepo
) -> None:
    got = await _both(ours, feast_serve, {"entities": _entities(repo, 4, 1), "feature_service": SERVICE})
    results = _by_name(got)
    assert results["user_txn_count_7d"]["statuses"][-1] == "NOT_FOUND"
    assert results["user_txn_count_7d"]["values"][-1] is None
    assert results["user_txn_count_7d"]["statuses"][0] == "PRESENT"
    assert isinstance(results["user_txn_count_7d"]["values"][0], int)
    assert "amount" not in results  # request-time fields are inputs, not answers (as in Feast)


@pytest.mark.parametrize(
    "body",
    [
        # views interleaved, entities in the other order
        {"features": [BATCH_REFS[5], BATCH_REFS[0], BATCH_REFS[4], BATCH_REFS[1]], "merchant_first": True},
        {"features": BATCH_REFS, "full_feature_names": True},
        # a join key no requested view needs is still echoed; an unknown column is ignored
        {"features": [BATCH_REFS[3]], "extra": {"foo": [1, 2, 3, 4]}},
        {"features": [ODFV_REF, BATCH_REFS[2]]},
        {"features": [BATCH_REFS[6]], "float_keys": True},
    ],
    ids=["interleaved", "full-names", "extra-columns", "on-demand", "float-keys"],
)
async def test_feature_lists_equal_feast_serve(
    ours: httpx.AsyncClient, feast_serve: httpx.AsyncClient, repo: SmallRepo, body: dict[str, Any]
) -> None:
    entities = _entities(repo, 4, 2)
    if body.pop("merchant_first", False):
        entities = {"merchant_id": entities["merchant_id"], "user_id": entities["user_id"]}
    entities.update(body.pop("extra", {}))
    if body.pop("float_keys", False):
        entities["merchant_id"] = [float(v) for v in entities["merchant_id"]]
    await _both(ours, feast_serve, {"entities": entities, **body})


async def test_random_requests_equal_feast_serve(
    ours: httpx.AsyncClient, feast_serve: httpx.AsyncClient, repo: SmallRepo
) -> None:
    """A seeded sweep: random subsets of the batch features (on-demand feature included at random,
    short names only: Feast drops on-demand features with full names) and random entity rows."""
    rng = random.Random(7)
    for case in range(20):
        refs = rng.sample(BATCH_REFS, rng.randint(1, len(BATCH_REFS)))
        full = rng.random() < 0.4
        if not full and rng.random() < 0.5:
            refs.insert(rng.randrange(len(refs) + 1), ODFV_REF)
        entities = _entities(repo, rng.randint(1, 6), 100 + case)
        await _both(ours, feast_serve, {"entities": entities, "features": refs, "full_feature_names": full})


async def test_view_metadata(ours: httpx.AsyncClient, repo: SmallRepo) -> None:
    body = {
        "entities": _entities(repo, 2, 3),
        "features": [BATCH_REFS[0], BATCH_REFS[5]],
        "include_feature_view_version_metadata": True,
    }
    r = await ours.post("/get-online-features", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["feature_view_metadata"] == [
        {"name": "user_activity_1h"},
        {"name": "merchant_activity"},
    ]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"features": [BATCH_REFS[0]]}, 422, "entities"),
        ({"entities": {"user_id": [1]}}, 422, "features"),
        ({"entities": {"user_id": [1]}, "features": ["no_colon"]}, 422, "features[0]"),
        ({"entities": {"user_id": ["x"]}, "features": [BATCH_REFS[0]]}, 422, "entities.user_id[0]"),
        ({"entities": {"user_id": [True]}, "features": [BATCH_REFS[0]]}, 422, "entities.user_id[0]"),
        ({"entities": {"user_id": [None]}, "features": [BATCH_REFS[0]]}, 422, "entities.user_id[0]"),
        ({"entities": {"merchant_id": [1]}, "features": [BATCH_REFS[0]]}, 422, "entities.user_id"),
        (
            {"entities": {"user_id": [1, 2], "merchant_id": [1]}, "features": [BATCH_REFS[0]]},
            422,
            "entities.merchant_id",
        ),
        ({"entities": {"user_id": []}, "features": [BATCH_REFS[0]]}, 422, "entities"),
        ({"entities": {"user_id": [1]}, "features": [ODFV_REF]}, 422, "entities.amount"),
        ({"entities": {"user_id": [1], "amount": ["x"]}, "features": [ODFV_REF]}, 422, "entities.amount[0]"),
        ({"entities": {"user_id": [1]}, "features": [BATCH_REFS[0], BATCH_REFS[0]]}, 422, "duplicate"),
        ({"entities": {"user_id": "1"}, "features": [BATCH_REFS[0]]}, 422, "entities"),
        ({"entities": {"user_id": [1]}, "features": ["nope:x"]}, 404, "nope"),
        ({"entities": {"user_id": [1]}, "features": ["user_activity_1h:nope"]}, 404, "nope"),
        ({"entities": {"user_id": [1]}, "feature_service": "nope"}, 404, "feature_service"),
    ],
)
async def test_bad_reads_name_the_field(
    ours: httpx.AsyncClient, body: dict[str, Any], status: int, field: str
) -> None:
    app = ours.app  # type: ignore[attr-defined]
    fast = await ours.post("/get-online-features", json=body)
    assert fast.status_code == status, fast.text
    assert field in fast.json()["error"]
    saved, app.fast_routes = app.fast_routes, ()
    try:  # the documented FastAPI route answers the same
        slow = await ours.post("/get-online-features", json=body)
    finally:
        app.fast_routes = saved
    assert (slow.status_code, slow.json()) == (fast.status_code, fast.json())


async def test_auth_scopes(ours: httpx.AsyncClient, repo: SmallRepo) -> None:
    body = {"entities": _entities(repo, 1, 4), "feature_service": SERVICE}
    assert (await ours.post("/get-online-features", json=body)).status_code == 200
    for headers, status in (
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {OTHER_KEY}"}, 403),
    ):
        r = await ours.post("/get-online-features", json=body, headers=headers)
        assert r.status_code == status and "error" in r.json()
    write = {"end_ts": "2026-01-01T00:00:00"}
    for path in ("/materialize-incremental", "/push", "/write-to-online-store", "/materialize"):
        r = await ours.post(path, json=write)  # the read key cannot write
        assert r.status_code == 403, (path, r.text)
        assert "admin" in r.json()["error"]


def _user_push(user: int, ts: str = "2026-03-01T12:00:00Z") -> dict[str, list[Any]]:
    return {
        "user_id": [user],
        "event_timestamp": [ts],
        "user_txn_count_1h": [3],
        "user_mean_amount_1h": [30.5],
        "user_txn_count_24h": [4],
        "user_mean_amount_24h": [40.5],
        "user_txn_count_7d": [5],
        "user_mean_amount_7d": [50.5],
    }


async def test_push_then_read(ours: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = await ours.post(
        "/push", json={"push_source_name": "user_activity_push", "df": _user_push(6_000_001)}, headers=admin
    )
    assert (r.status_code, r.content) == (200, b"")
    r = await ours.post(
        "/get-online-features",
        json={"entities": {"user_id": [6_000_001]}, "features": [BATCH_REFS[4], BATCH_REFS[0]]},
    )
    results = _by_name(r.json())
    assert results["user_mean_amount_7d"]["values"] == [50.5]
    assert results["user_txn_count_1h"]["values"] == [3]
    assert results["user_txn_count_1h"]["event_timestamps"] == ["2026-03-01T12:00:00Z"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/push", {"push_source_name": "nope", "df": {"user_id": [1]}}, "push_source"),
        ("/push", {"push_source_name": "user_activity_push", "df": {"user_id": [1]}}, "df.event_timestamp"),
        ("/push", {"push_source_name": "user_activity_push", "df": {"user_id": [1, 2], "x": [1]}}, "df.x"),
        ("/push", {"push_source_name": "user_activity_push", "df": _user_push(1), "to": "x"}, "to"),
        (
            "/push",
            {"push_source_name": "user_activity_push", "df": {**_user_push(1), "user_mean_amount_1h": ["x"]}},
            "df.user_mean_amount_1h[0]",
        ),
        (
            "/push",
            {"push_source_name": "user_activity_push", "df": {**_user_push(1), "event_timestamp": ["soon"]}},
            "df.event_timestamp",
        ),
        ("/push", {"df": {}}, "push_source_name"),
        (
            "/write-to-online-store",
            {"feature_view_name": "nope", "df": {"user_id": [1]}},
            "feature_view_name",
        ),
        (
            "/write-to-online-store",
            {"feature_view_name": "user_activity_1h", "df": {"user_id": [1]}},
            "df.event_timestamp",
        ),
        ("/materialize-incremental", {}, "end_ts"),
        ("/materialize-incremental", {"end_ts": "not a date"}, "end_ts"),
        ("/materialize-incremental", {"end_ts": "2026-01-01", "feature_views": ["nope"]}, "feature_views"),
        ("/materialize-incremental", {"end_ts": "2026-01-01", "version": "v2"}, "version"),
        ("/materialize", {"end_ts": "2026-01-01"}, "start_ts"),
        ("/materialize", {"start_ts": "2026-01-02", "end_ts": "2026-01-01"}, "start_ts"),
        ("/materialize", {"disable_event_timestamp": True}, "disable_event_timestamp"),
        ("/materialize?async=true", {"start_ts": "2026-01-01", "end_ts": "2026-01-02"}, "async"),
    ],
)
async def test_bad_writes_name_the_field(
    ours: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    r = await ours.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    assert field in r.json()["error"], r.text


async def test_metrics_by_route_template(ours: httpx.AsyncClient, repo: SmallRepo) -> None:
    await ours.post(
        "/get-online-features", json={"entities": _entities(repo, 1, 5), "feature_service": SERVICE}
    )
    text = (await ours.get("/metrics")).text
    assert 'mlplatform_http_requests_total{code="200",method="POST",route="/get-online-features"' in text
    assert "mlplatform_features_online_store_read_duration_seconds_bucket" in text


async def test_materialize_then_materialize_incremental(tmp_path: Path) -> None:
    """Unmaterialised repository: reads are NOT_FOUND; ``/materialize`` of ``[start, t1]`` loads the
    values as of ``t1``; ``/materialize-incremental`` up to the end then loads the later rows (from
    each view's last materialised end), so the user's value changes to the snapshot's latest."""
    repo = build_small_repo(tmp_path / "data", rows=600, seed=29, materialize=False)
    app = create_app(FeatureSettings(data_dir=repo.data_dir, auth_enabled=False))
    snap = repo.snapshots["user_id"].sort_values("event_timestamp")
    ts = repo.transactions["event_timestamp"]
    t1 = ts.quantile(0.5)
    early, late = snap[snap["event_timestamp"] <= t1], snap[snap["event_timestamp"] > t1]
    user = next(
        int(u)
        for u in late["user_id"].unique()
        if u in set(early["user_id"])
        and early[early["user_id"] == u].iloc[-1]["user_txn_count_7d"]
        != late[late["user_id"] == u].iloc[-1]["user_txn_count_7d"]
    )
    body = {"entities": {"user_id": [user]}, "features": [BATCH_REFS[3], BATCH_REFS[4]]}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://f") as c:

            async def read() -> dict[str, dict[str, Any]]:
                return _by_name((await c.post("/get-online-features", json=body)).json())

            assert (await read())["user_txn_count_7d"]["statuses"] == ["NOT_FOUND"]
            r = await c.post(
                "/materialize",
                json={
                    "start_ts": (ts.min() - pd.Timedelta(days=31)).isoformat(),
                    "end_ts": t1.isoformat(),
                    "feature_views": ["user_activity_7d"],
                },
            )
            assert (r.status_code, r.json()) == (200, None)
            mid = await read()
            r = await c.post(
                "/materialize-incremental",
                json={
                    "end_ts": (ts.max() + pd.Timedelta(days=1)).isoformat(),
                    "feature_views": ["user_activity_7d"],
                },
            )
            assert (r.status_code, r.json()) == (200, None)
            after = await read()
    as_of_t1 = early[early["user_id"] == user].iloc[-1]
    latest = late[late["user_id"] == user].iloc[-1]
    assert mid["user_txn_count_7d"]["values"] == [int(as_of_t1["user_txn_count_7d"])]
    assert after["user_txn_count_7d"]["values"] == [int(latest["user_txn_count_7d"])]
    assert after["user_mean_amount_7d"]["values"][0] == pytest.approx(latest["user_mean_amount_7d"])
    assert after["user_txn_count_7d"]["statuses"] == ["PRESENT"]
