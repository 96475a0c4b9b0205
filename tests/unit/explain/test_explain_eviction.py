"""Evicting a tabular explainer while requests use it (own registry: a forest whose alias moves).

With ``EXPLAIN_EXPLAINER_CACHE_SIZE=1``, the explainer of the version the alias left is evicted when
the plane switches to the new version. Unloading waits for a running explanation (the explainer's
lock): the data plane must not wait for it on the event loop, and a request that fetched the
explainer before it was unloaded gets a 422 naming the reason, not a 500.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest

import mlplatform.explain.dataplane as dataplane_module
from tests.helpers import v2_body, wait_until
from tests.unit.explain.conftest import explain_settings, running
from tests.unit.explain.models import FEATURES, TREE, Registry, make_data, register_new_tree_version


@pytest.fixture
def tree_registry(tmp_path: Path) -> Registry:
    """A registry holding version 1 of the forest as ``champion``."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment(
        "explain-tests", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    frame = make_data(600)
    assert register_new_tree_version(uri, frame, tmp_path, seed=1) == "1"
    return Registry(uri, frame)


def _body(registry: Registry) -> dict[str, Any]:
    """A V2 request for two rows of the forest's features, as FP64."""
    return v2_body(registry.frame[FEATURES].head(2).astype(float))


async def _move_alias_and_evict(app: Any, registry: Registry, tmp_path: Path) -> asyncio.Task:
    """Register version 2 and let the plane switch to it, which evicts version 1's explainer (cache size
    1); start a request for version 2. Returns that request's task once version 1 is gone."""
    assert register_new_tree_version(registry.tracking_uri, registry.frame, tmp_path, seed=2) == "2"
    await app.plane.refresh()
    second = asyncio.create_task(app.client.post(f"/v2/models/{TREE}/explain", json=_body(registry)))
    await wait_until(lambda: (TREE, "1") not in app.plane.cached_versions(), 60, "version 1 evicted")
    return second


async def test_evicting_during_a_slow_explanation_keeps_the_event_loop_answering(tree_registry, tmp_path):
    settings = explain_settings(tmp_path / "data", tree_registry.tracking_uri, TREE, explainer_cache_size=1)
    async with running(settings) as app:
        old = await app.plane.explainer_for(TREE)
        gate = threading.Event()
        timed_out: list[bool] = []
        real = old._explain

        def slow(x: Any) -> Any:  # noqa: ANN401 - an explanation that lasts until the test lets it go
            if not gate.wait(10):
                timed_out.append(True)  # the test never got to let it go: the loop was stalled
            return real(x)

        old._explain = slow
        first = asyncio.create_task(app.client.post(f"/v2/models/{TREE}/explain", json=_body(tree_registry)))
        await wait_until(old._lock.locked, 30, "the slow explanation to start")
        gaps: list[float] = []

        async def heartbeat() -> None:  # the event loop's longest stall while the eviction happens
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        try:
            second = await _move_alias_and_evict(app, tree_registry, tmp_path)
            start = time.perf_counter()
            live = await app.client.get("/v2/health/live")
            elapsed = time.perf_counter() - start
            # the loop answered while the evicted explainer's explanation still runs
            assert live.status_code == 200 and not first.done() and not timed_out
            assert elapsed < 0.5, f"/v2/health/live took {elapsed:.2f}s during an eviction"
            assert max(gaps) < 1.0, f"the event loop stalled for {max(gaps):.2f}s"
        finally:
            gate.set()
            beat.cancel()
        r1, r2 = await first, await second
        assert r1.status_code == 200 and r1.json()["model_version"] == "1"  # finished normally
        assert r2.status_code == 200 and r2.json()["model_version"] == "2"
        await wait_until(lambda: old._explainer is None, 30, "version 1 unloaded after its explanation")


async def test_an_explainer_unloaded_between_lookup_and_explain_is_a_422(
    tree_registry, tmp_path, monkeypatch
):
    settings = explain_settings(tmp_path / "data", tree_registry.tracking_uri, TREE, explainer_cache_size=1)
    async with running(settings) as app:
        old = await app.plane.explainer_for(TREE)
        looking_up, release = asyncio.Event(), asyncio.Event()
        real = dataplane_module.feature_matrix

        async def held_lookup(*args: Any) -> Any:  # noqa: ANN401 - a feature lookup the test holds
            if not looking_up.is_set():
                looking_up.set()
                await release.wait()
            return await real(*args)

        monkeypatch.setattr(dataplane_module, "feature_matrix", held_lookup)
        first = asyncio.create_task(app.client.post(f"/v2/models/{TREE}/explain", json=_body(tree_registry)))
        await asyncio.wait_for(looking_up.wait(), 30)
        second = await _move_alias_and_evict(app, tree_registry, tmp_path)
        await wait_until(lambda: old._explainer is None, 30, "version 1 unloaded")
        release.set()
        r1, r2 = await first, await second
        assert r1.status_code == 422, r1.text
        assert r1.json() == {"error": f"model '{TREE}' version 1: its explainer was unloaded"}
        assert r2.status_code == 200 and r2.json()["model_version"] == "2"


async def test_a_moved_alias_keeps_the_new_versions_explainer_and_drops_the_old(tree_registry, tmp_path):
    """Cache size 1: refresh builds version 2 before switching to it. The explainer kept is version 2's (it
    used to evict the one it had just built, since version 1 was still current, and build it again for
    the next request)."""
    settings = explain_settings(tmp_path / "data", tree_registry.tracking_uri, TREE, explainer_cache_size=1)
    async with running(settings) as app:
        assert app.plane.cached_versions() == [(TREE, "1")]
        built = app.plane.metrics.build
        assert (
            register_new_tree_version(tree_registry.tracking_uri, tree_registry.frame, tmp_path, seed=2)
            == "2"
        )
        await app.plane.refresh()
        assert app.plane.cached_versions() == [(TREE, "2")]
        r = await app.client.post(f"/v2/models/{TREE}/explain", json=_body(tree_registry))
        assert r.status_code == 200, r.text
        builds = {
            s.labels["version"]: s.value for s in built.collect()[0].samples if s.name.endswith("_count")
        }
        assert builds == {"1": 1, "2": 1}


async def test_a_failing_background_unload_is_logged(tree_registry, tmp_path, caplog) -> None:  # noqa: ANN001
    settings = explain_settings(tmp_path / "data", tree_registry.tracking_uri, TREE, explainer_cache_size=1)
    async with running(settings) as app:
        old = await app.plane.explainer_for(TREE)

        def fails() -> None:
            raise RuntimeError("unload broke for the test")

        old.unload = fails
        assert (
            register_new_tree_version(tree_registry.tracking_uri, tree_registry.frame, tmp_path, seed=2)
            == "2"
        )
        with caplog.at_level("ERROR", logger="mlplatform.explain"):
            await app.plane.refresh()
            await wait_until(lambda: not app.plane._unloading, 30, "the background unload to end")
    assert "unloading an explainer failed: unload broke for the test" in caplog.text
