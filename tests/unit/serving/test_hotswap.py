"""Alias change -> new version loaded, warmed and swapped in with no failed request in flight;
registry down after start -> keep serving; payload records per row."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mlplatform.core.registry import mlflow_client
from tests.helpers import v2_body, wait_until
from tests.unit.serving.registry_models import FEATURES, TYPES, make_frame, make_target, register_sklearn
from tests.unit.serving.support import ListSink

SWAP = "sv-swap"


@pytest.fixture(scope="module")
def swap_models(serving_registry):
    """Two versions of one model that answer differently (v2 learned the inverted target)."""
    from sklearn.ensemble import RandomForestClassifier

    df = make_frame(800, seed=3)
    y = make_target(df)
    v1 = RandomForestClassifier(n_estimators=40, max_depth=6, random_state=0).fit(df, y)
    v2 = RandomForestClassifier(n_estimators=40, max_depth=6, random_state=0).fit(df, 1 - y)
    client = mlflow_client(serving_registry.uri)
    existing = client.search_model_versions(f"name='{SWAP}'")
    if not existing:
        register_sklearn(serving_registry.uri, SWAP, v1, df)
        register_sklearn(serving_registry.uri, SWAP, v2, df, alias="challenger")
    client.set_registered_model_alias(SWAP, "champion", "1")
    return {"1": v1, "2": v2}


@pytest.mark.parametrize("runtime", ["native", "auto"])
async def test_alias_move_swaps_without_failing_requests_in_flight(
    app_factory, serving_registry, swap_models, runtime
):
    app = await app_factory(models=SWAP, runtime=runtime, max_batch_size=8)
    expected_runtime = "sklearn" if runtime == "native" else "onnxruntime"
    assert app.repository.get(SWAP).model.runtime.name == expected_runtime
    df = serving_registry.frame
    results: list[tuple[int, str, int, list[float]]] = []
    stop = asyncio.Event()

    async def client_loop(worker: int) -> None:
        i = worker
        while not stop.is_set():
            row = i % 500
            r = await app.client.post(f"/v2/models/{SWAP}/infer", json=v2_body(df.iloc[row : row + 1], TYPES))
            doc = r.json()
            results.append(
                (
                    r.status_code,
                    doc.get("model_version", doc.get("error")),
                    row,
                    doc.get("outputs", [{}])[0].get("data"),
                )
            )
            i += 8
            # ASGITransport never suspends when the model answers inline: yield like a socket would
            await asyncio.sleep(0)

    workers = [asyncio.create_task(client_loop(w)) for w in range(8)]
    await wait_until(lambda: len(results) >= 40, 60.0, "40 answers", step_s=0.01)
    mlflow_client(serving_registry.uri).set_registered_model_alias(SWAP, "champion", "2")
    assert await app.repository.poll_once() == [SWAP]
    n_at_swap = len(results)
    await wait_until(lambda: len(results) >= n_at_swap + 40, 60.0, "40 answers after the swap", step_s=0.01)
    stop.set()
    await asyncio.gather(*workers)

    assert all(status == 200 for status, *_ in results), [r for r in results if r[0] != 200][:3]
    versions = {v for _, v, _, _ in results}
    assert versions == {"1", "2"}
    for _, version, row, data in results:  # every answer is exactly its own row on its own version
        want = swap_models[version].predict_proba(df.iloc[row : row + 1][FEATURES])[:, 1]
        np.testing.assert_allclose(data, want, atol=1e-6)
    meta = (await app.client.get(f"/v2/models/{SWAP}")).json()
    assert meta["versions"] == ["2"]
    text = (await app.client.get("/metrics")).text
    assert (
        f'mlplatform_serving_model_info{{model="{SWAP}",runtime="{expected_runtime}",version="2"}} 1.0'
        in text
    )
    info = [
        line
        for line in text.splitlines()
        if line.startswith(f'mlplatform_serving_model_info{{model="{SWAP}"')
    ]
    assert len(info) == 1 and 'version="2"' in info[0]
    mlflow_client(serving_registry.uri).set_registered_model_alias(SWAP, "champion", "1")


async def test_registry_down_after_start_keeps_serving(
    app_factory, serving_registry, swap_models, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    app = await app_factory(models=SWAP)
    app.repository._client = mlflow_client("http://127.0.0.1:9")  # the registry goes away
    assert await app.repository.poll_once() == []
    assert app.repository.slots[SWAP].last_error
    r = await app.client.post(
        f"/v2/models/{SWAP}/infer", json=v2_body(serving_registry.frame.iloc[:2], TYPES)
    )
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    assert (await app.client.get("/v2/health/ready")).status_code == 200


async def test_payload_records_one_per_row(app_factory, serving_registry, swap_models):
    sink = ListSink()
    app = await app_factory(models=SWAP, payload_sink=sink)
    df = serving_registry.frame.iloc[:3]
    r = await app.client.post(f"/v2/models/{SWAP}/infer", json=v2_body(df, TYPES, id="abc"))
    assert r.status_code == 200
    probs = r.json()["outputs"][0]["data"]
    assert [rec.row_index for rec in sink.records] == [0, 1, 2]
    for i, rec in enumerate(sink.records):
        assert rec.request_id == "abc" and rec.model == SWAP and rec.version == "1"
        assert list(rec.inputs) == FEATURES
        assert rec.inputs["amount"] == pytest.approx(df.iloc[i]["amount"])
        assert rec.outputs["probability"] == pytest.approx(probs[i])


async def test_swapped_out_versions_are_freed_despite_the_frozen_heap(
    app_factory, serving_registry, swap_models
):
    """Each load ends with gc.freeze(); a retired version must still be freed (by reference counting)."""
    import gc
    import weakref

    app = await app_factory(models=SWAP, runtime="auto", max_batch_size=8)
    retired = []
    for _ in range(3):
        handle = app.repository.get(SWAP)
        retired.append(
            (weakref.ref(handle.model), weakref.ref(handle.model.runtime), weakref.ref(handle.batcher))
        )
        del handle
        assert await app.repository.reload(SWAP, force=True)
    assert gc.get_freeze_count() > 0
    assert [tuple(ref() is None for ref in refs) for refs in retired] == [(True, True, True)] * 3
