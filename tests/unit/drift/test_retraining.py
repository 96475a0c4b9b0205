"""Retraining triggers: once per drift episode, manual admin route, Kubernetes Job and subprocess paths."""

from __future__ import annotations

import sys

import pytest

from mlplatform.core.auth import hash_key
from tests.helpers import wait_until_sync
from tests.kube_api import KubeApiDouble
from tests.unit.drift.tiny_registry import MODEL, drift_settings, make_frame, records, running_app

# every test here runs on both store backends (SQLite and a real PostgreSQL)
pytestmark = pytest.mark.usefixtures("drift_backend")


async def _window(client, shift: float, tag: str, seed: int) -> None:
    body = {"records": records(make_frame(300, seed=seed, shift=shift), MODEL, "1", tag)}
    r = await client.post("/v1/records", json=body)
    assert r.status_code == 200 and r.json()["windows_closed"] == 1, r.text


async def test_retraining_fires_once_per_episode_via_subprocess(tiny_registry, tmp_path):
    marker = tmp_path / "retrained.txt"
    cmd = f"{sys.executable} -c \"import os; open({str(marker)!r}, 'a').write(os.environ['MLPLATFORM_RETRAIN_MODEL'] + chr(10))\""
    settings = drift_settings(
        tiny_registry,
        tmp_path / "d",
        window_size=300,
        retrain_after_windows=2,
        retrain_cooldown_s=0,
        retrain_mode="subprocess",
        retrain_command=cmd,
    )
    async with running_app(settings) as (client, app):
        svc = app.state.dataplane
        await _window(client, 1.0, "a", 1)
        assert await svc.retrain_events(MODEL) == []  # one drifted window is not enough
        for i in range(4):  # the episode goes on: still exactly one trigger
            await _window(client, 1.0, f"b{i}", 10 + i)
        events = await svc.retrain_events(MODEL)
        assert len(events) == 1 and events[0]["mode"] == "subprocess" and events[0]["outcome"] == "started"
        wait_until_sync(lambda: marker.exists() and marker.read_text() == f"{MODEL}\n", 10.0, step_s=0.05)
        state = (await client.get(f"/v1/models/{MODEL}/drift")).json()["retraining"]
        assert state["consecutive_drift_windows"] == 5 and state["episode_active"] is True

        await _window(client, 0.0, "calm", 30)  # episode over
        await _window(client, 1.0, "c1", 31)
        assert len(await svc.retrain_events(MODEL)) == 1
        await _window(client, 1.0, "c2", 32)  # a new episode fires again
        assert len(await svc.retrain_events(MODEL)) == 2
        wait_until_sync(lambda: marker.read_text().count(MODEL) == 2, 10.0, step_s=0.05)
        metrics = (await client.get("/metrics")).text
        assert (
            'mlplatform_drift_retraining_triggers_total{mode="subprocess",model="drift-demo",outcome="started"} 2.0'
            in metrics
        )


async def test_cooldown_blocks_a_second_episode(tiny_registry, tmp_path):
    settings = drift_settings(
        tiny_registry, tmp_path, window_size=300, retrain_after_windows=1, retrain_cooldown_s=3600
    )
    async with running_app(settings) as (client, app):
        await _window(client, 1.0, "x1", 1)
        await _window(client, 0.0, "x2", 2)
        await _window(client, 1.0, "x3", 3)
        events = await app.state.dataplane.retrain_events(MODEL)
        assert [e["mode"] for e in events] == ["off"] and events[0]["outcome"] == "skipped"


RBAC = [
    {
        "kind": "Role",
        "metadata": {"name": "retrain", "namespace": "ml"},
        "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "retrain", "namespace": "ml"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "retrain"},
        "subjects": [{"kind": "ServiceAccount", "name": "drift-detection", "namespace": "ml"}],
    },
]


@pytest.fixture
def kube_api():
    """The Kubernetes API double (tests/kube_api.py): token ``sa-token`` is the drift service account."""
    with KubeApiDouble(RBAC, {"sa-token": "system:serviceaccount:ml:drift-detection"}) as api:
        yield api


async def test_manual_retrain_creates_kubernetes_job(tiny_registry, tmp_path, kube_api, monkeypatch):
    """The Job path against the Kubernetes API double (documented wire format, RBAC checked)."""
    url = kube_api.url
    monkeypatch.setenv("MLPLATFORM_API_KEYS", f"{hash_key('writer')}:drift:write,{hash_key('boss')}:admin")
    settings = drift_settings(
        tiny_registry,
        tmp_path,
        auth_enabled=True,
        retrain_mode="kubernetes",
        kube_api_url=url,
        kube_token="sa-token",
        retrain_namespace="ml",
    )
    async with running_app(settings) as (client, _):
        route = f"/v1/models/{MODEL}/retrain"
        assert (await client.post(route, json={})).status_code == 401
        r = await client.post(route, json={}, headers={"Authorization": "Bearer writer"})
        assert r.status_code == 403
        r = await client.post(route, json={"reason": "new data"}, headers={"Authorization": "Bearer boss"})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "model": MODEL,
            "mode": "kubernetes",
            "outcome": "started",
            "detail": "job ml/mlplatform-retrain-00001",
        }
        (created,) = kube_api.jobs
        assert created.namespace == "ml" and created.subject == "system:serviceaccount:ml:drift-detection"
        job = created.body
        assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
        assert job["metadata"]["labels"]["mlplatform.io/model"] == MODEL
        assert job["metadata"]["labels"]["mlplatform.io/model-version"] == "2"  # the champion
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["mlplatform", "retrain"]
        assert {"name": "MLPLATFORM_RETRAIN_MODEL", "value": MODEL} in container["env"]
        # ingest needs drift:write
        body = {"records": records(make_frame(2, seed=1), MODEL, "1", "k")}
        assert (await client.post("/v1/records", json=body)).status_code == 401
        r = await client.post("/v1/records", json=body, headers={"X-API-Key": "writer"})
        assert r.status_code == 200


async def test_failed_job_creation_is_reported_not_raised(tiny_registry, tmp_path, kube_api):
    # a namespace the service account may not create Jobs in: 403 from the API, a failed trigger
    settings = drift_settings(
        tiny_registry,
        tmp_path,
        retrain_mode="kubernetes",
        kube_api_url=kube_api.url,
        kube_token="sa-token",
        retrain_namespace="other",
    )
    async with running_app(settings) as (client, app):
        r = await client.post(f"/v1/models/{MODEL}/retrain", json={})
        assert r.status_code == 200 and r.json()["outcome"] == "failed"
        assert "403" in r.json()["detail"] and kube_api.jobs == []
        assert kube_api.denied == [
            (
                "system:serviceaccount:ml:drift-detection",
                "other",
                "no RoleBinding grants create on batch/jobs",
            )
        ]
        metrics = (await client.get("/metrics")).text
        assert (
            'mlplatform_drift_retraining_triggers_total{mode="kubernetes",model="drift-demo",outcome="failed"} 1.0'
            in metrics
        )
