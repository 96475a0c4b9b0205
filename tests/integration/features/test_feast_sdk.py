"""The real Feast SDK against a real feature-store process: ``online_store: {type: remote, path: <url>}``
(Feast's ``RemoteOnlineStore``) reads, pushes and writes through our Feast feature-server routes, and
its answers equal a local Feast read of the same repository.

Auth is the real thing: Feast's client sends ``Authorization: Bearer <token>`` when the repo config has
``auth: {type: oidc, token_env_var: <VAR>}``, and our API keys are bearer tokens, so the key goes in
that variable. Errors reach the SDK as ``RuntimeError`` carrying our status and ``{"error": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from mlplatform.core.auth import hash_key
from mlplatform.features.store import FeatureRepoPaths, open_store
from tests.procs import ServiceProcess, running_service
from tests.unit.features.small_repo import SmallRepo, build_small_repo

pytestmark = pytest.mark.integration

READ_KEY, ADMIN_KEY, OTHER_KEY = "sdk-read-key", "sdk-admin-key", "sdk-infer-key"
KEY_VAR = "MLPLATFORM_FEATURES_API_KEY"
SERVICE = "fraud_detection_v1"
REFS = [
    "merchant_activity:merchant_fraud_rate_30d",
    "user_activity_1h:user_txn_count_1h",
    "user_activity_7d:user_mean_amount_7d",
    "user_activity_24h:user_mean_amount_24h",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SmallRepo, ServiceProcess]]:
    tmp = tmp_path_factory.mktemp("feast-sdk")
    repo = build_small_repo(tmp / "data", rows=1500, seed=31)
    keys = (
        f"{hash_key(READ_KEY)}:features:read,{hash_key(ADMIN_KEY)}:admin|features:read,"
        f"{hash_key(OTHER_KEY)}:infer"
    )
    env = {"MLPLATFORM_DATA_DIR": str(repo.data_dir), "MLPLATFORM_API_KEYS": keys}
    with running_service("feature-store", env, tmp / "logs") as svc:
        yield repo, svc
    from feast.permissions.client.http_auth_requests_wrapper import HttpSessionManager

    HttpSessionManager.close_session()


def remote_store(repo: SmallRepo, url: str, auth: dict[str, Any] | None = None) -> Any:
    """The Feast SDK as a client would configure it (same registry, remote online store)."""
    from feast import FeatureStore, RepoConfig

    paths = FeatureRepoPaths(repo.data_dir)
    config = RepoConfig(
        project="mlplatform",
        provider="local",
        registry={"registry_type": "file", "path": str(paths.registry)},
        online_store={"type": "remote", "path": url},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        auth=auth or {"type": "oidc", "token_env_var": KEY_VAR},
        repo_path=str(paths.repo_dir),
    )
    return FeatureStore(config=config)


def _rows(repo: SmallRepo) -> list[dict[str, Any]]:
    tx = repo.transactions.tail(4)
    rows = [
        {"user_id": int(u), "merchant_id": int(m), "amount": float(a)}
        for u, m, a in zip(tx["user_id"], tx["merchant_id"], tx["amount"], strict=True)
    ]
    rows.append({"user_id": 912_345_678, "merchant_id": 1, "amount": 10.0})  # unknown: nulls
    return rows


@pytest.mark.parametrize(
    ("features", "full_names"),
    [(SERVICE, False), (REFS, False), (REFS, True)],
    ids=["feature-service", "feature-list", "full-names"],
)
def test_sdk_reads_equal_local_feast(
    served: tuple[SmallRepo, ServiceProcess],
    monkeypatch: pytest.MonkeyPatch,
    features: Any,
    full_names: bool,
) -> None:
    repo, svc = served
    monkeypatch.setenv(KEY_VAR, READ_KEY)
    remote = remote_store(repo, svc.url)
    local = open_store(FeatureRepoPaths(repo.data_dir))
    rows = _rows(repo)
    if features != SERVICE:
        rows = [{k: v for k, v in r.items() if k != "amount"} for r in rows]
    kw = {"entity_rows": rows, "full_feature_names": full_names}
    got = remote.get_online_features(
        features=remote.get_feature_service(SERVICE) if features == SERVICE else features, **kw
    ).to_dict()
    want = local.get_online_features(
        features=local.get_feature_service(SERVICE) if features == SERVICE else features, **kw
    ).to_dict()
    assert got == want
    some = next(k for k in got if k.endswith("user_mean_amount_7d"))
    assert got[some][-1] is None and got[some][0] is not None  # the unknown user's row is null


def test_sdk_auth(served: tuple[SmallRepo, ServiceProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    repo, svc = served
    refs = ["user_activity_1h:user_txn_count_1h"]
    rows = [{"user_id": 1}]
    with pytest.raises(RuntimeError, match="401.*missing API key"):
        remote_store(repo, svc.url, {"type": "no_auth"}).get_online_features(features=refs, entity_rows=rows)
    monkeypatch.setenv(KEY_VAR, "not-a-key")
    with pytest.raises(RuntimeError, match="401"):
        remote_store(repo, svc.url).get_online_features(features=refs, entity_rows=rows)
    monkeypatch.setenv(KEY_VAR, OTHER_KEY)
    with pytest.raises(RuntimeError, match="403.*features:read"):
        remote_store(repo, svc.url).get_online_features(features=refs, entity_rows=rows)
    monkeypatch.setenv(KEY_VAR, READ_KEY)
    assert remote_store(repo, svc.url).get_online_features(features=refs, entity_rows=rows).to_dict()


def _user_frame(user: int, count: int, mean: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [user],
            "event_timestamp": [pd.Timestamp("2026-04-01T08:00:00", tz="UTC")],
            "user_txn_count_1h": [count],
            "user_mean_amount_1h": [mean],
            "user_txn_count_24h": [count + 1],
            "user_mean_amount_24h": [mean + 1],
            "user_txn_count_7d": [count + 2],
            "user_mean_amount_7d": [mean + 2],
        }
    )


def test_sdk_push_then_read(
    served: tuple[SmallRepo, ServiceProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FeatureStore.push`` through the remote online store (``/write-to-online-store``) needs the
    admin scope; after it the SDK and a local Feast read see the pushed values."""
    repo, svc = served
    monkeypatch.setenv(KEY_VAR, READ_KEY)
    remote = remote_store(repo, svc.url)
    with pytest.raises(RuntimeError, match="403.*admin"):
        remote.push("user_activity_push", _user_frame(8_000_001, 4, 12.5))
    monkeypatch.setenv(KEY_VAR, ADMIN_KEY)
    remote.push("user_activity_push", _user_frame(8_000_001, 4, 12.5))
    refs = ["user_activity_1h:user_txn_count_1h", "user_activity_7d:user_mean_amount_7d"]
    got = remote.get_online_features(features=refs, entity_rows=[{"user_id": 8_000_001}]).to_dict()
    assert got == {"user_id": [8_000_001], "user_txn_count_1h": [4], "user_mean_amount_7d": [14.5]}
    local = open_store(FeatureRepoPaths(repo.data_dir))
    assert local.get_online_features(features=refs, entity_rows=[{"user_id": 8_000_001}]).to_dict() == got


def test_feast_serve_client_push_and_materialize(
    served: tuple[SmallRepo, ServiceProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain client of ``feast serve`` (feast serve's bodies over HTTP): ``/push`` answers an empty
    200, ``/materialize-incremental`` ``null``; the SDK then reads the pushed row."""
    repo, svc = served
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    frame = _user_frame(8_000_002, 9, 3.25)
    df = {
        **frame.to_dict(orient="list"),
        "event_timestamp": [t.isoformat() for t in frame["event_timestamp"]],
    }
    r = requests.post(
        svc.url + "/push",
        json={"push_source_name": "user_activity_push", "df": df, "to": "online"},
        headers=admin,
    )
    assert (r.status_code, r.content) == (200, b"")
    end = (repo.transactions["event_timestamp"].max() + pd.Timedelta(days=1)).isoformat()
    r = requests.post(svc.url + "/materialize-incremental", json={"end_ts": end}, headers=admin)
    assert (r.status_code, r.json()) == (200, None)
    monkeypatch.setenv(KEY_VAR, READ_KEY)
    got = remote_store(repo, svc.url).get_online_features(
        features=["user_activity_24h:user_txn_count_24h"], entity_rows=[{"user_id": 8_000_002}]
    )
    assert got.to_dict()["user_txn_count_24h"] == [10]
    metrics = requests.get(svc.url + "/metrics", timeout=5).text
    for route in ("/get-online-features", "/push", "/write-to-online-store", "/materialize-incremental"):
        assert f'route="{route}"' in metrics, route


def test_sdk_sees_bad_input_as_runtime_error(
    served: tuple[SmallRepo, ServiceProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input: the SDK raises ``RuntimeError`` with our status and the ``{"error"}`` body naming
    the field (Feast cannot map it to a Feast exception class, so it does not try)."""
    repo, svc = served
    monkeypatch.setenv(KEY_VAR, READ_KEY)
    remote = remote_store(repo, svc.url)
    with pytest.raises(RuntimeError, match="404.*has no feature 'nope'"):
        remote.get_online_features(features=["user_activity_1h:nope"], entity_rows=[{"user_id": 1}])
    with pytest.raises(RuntimeError, match=r"422.*entities\.user_id\[0\]"):
        remote.get_online_features(
            features=["user_activity_1h:user_txn_count_1h"], entity_rows=[{"user_id": "x"}]
        )
    r = requests.post(
        svc.url + "/get-online-features",
        json={
            "entities": {"user_id": [1]},
            "features": ["user_activity_1h:user_txn_count_1h"],
            "full_feature_names": 3,
        },
        headers={"Authorization": f"Bearer {READ_KEY}"},
    )
    assert r.status_code == 422 and "full_feature_names" in r.json()["error"]


def test_repo_yaml_for_docs(
    tmp_path: Path, served: tuple[SmallRepo, ServiceProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feature_store.yaml of docs/features.md (remote online store, bearer key from a variable)
    loads as written and reads through the service."""
    import yaml
    from feast import FeatureStore

    repo, svc = served
    registry = FeatureRepoPaths(repo.data_dir).registry
    (tmp_path / "feature_store.yaml").write_text(
        yaml.safe_dump(
            {
                "project": "mlplatform",
                "provider": "local",
                "registry": str(registry),
                "online_store": {"type": "remote", "path": svc.url},
                "entity_key_serialization_version": 3,
                "auth": {"type": "oidc", "token_env_var": KEY_VAR},
            }
        )
    )
    monkeypatch.setenv(KEY_VAR, READ_KEY)
    store = FeatureStore(repo_path=str(tmp_path))
    rows = _rows(repo)[:1]
    out = store.get_online_features(features=store.get_feature_service(SERVICE), entity_rows=rows).to_dict()
    assert out["user_id"] == [rows[0]["user_id"]] and out["user_txn_count_7d"][0] is not None
