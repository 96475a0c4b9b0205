"""A new model version promoted (alias ``champion`` moved) while serving is under load.

Requirement: zero failed requests across the swap, and responses switch to the new version
within a few poll intervals and stay there. The registry is a private copy of the demo SQLite
registry; the new version is registered from the champion's own model source with its tags.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlplatform.core.registry import mlflow_client
from mlplatform.training.pipeline import mlflow_uri
from tests.faults.conftest import SERVED_MODEL, START_TIMEOUT_S, base_env
from tests.faults.harness import Burst, Call, run_for, summary
from tests.faults.registry import copy_registry
from tests.helpers import wait_until
from tests.load.payloads import tensor_request
from tests.procs import start_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

POLL_S = 0.3


def _promote_copy(uri: str) -> str:
    """Register a new version of the served model from the champion's source and move the alias."""
    client = mlflow_client(uri)
    current = client.get_model_version_by_alias(SERVED_MODEL, "champion")
    # MLflow resolves a 'models:/m-...' source through the fluent (process-global) tracking URI.
    with mlflow_uri(uri):
        new = client.create_model_version(
            SERVED_MODEL, source=current.source, run_id=current.run_id, tags=dict(current.tags)
        )
    client.set_registered_model_alias(SERVED_MODEL, "champion", new.version)
    return str(new.version)


async def test_promotion_under_load(demo_registry: Any, samples: list[dict], workdir: Path) -> None:
    uri = copy_registry(demo_registry, workdir / "registry")
    env = {
        **base_env(demo_registry, workdir / "data"),
        "MLFLOW_TRACKING_URI": uri,
        "SERVING_POLL_INTERVAL_S": str(POLL_S),
    }
    serving = await asyncio.to_thread(
        start_service, "model-serving", env, workdir / "logs", ready_timeout=START_TIMEOUT_S
    )
    try:
        url = f"{serving.url}/v2/models/{SERVED_MODEL}/infer"

        def make(worker: int, i: int) -> Call:
            start = (worker * 71 + i) % (len(samples) - 2)
            return Call("tensor", url, tensor_request(samples[start : start + 2]))

        async with Burst(make, concurrency=4, interval_s=0.01) as burst:
            await burst.warmed_up()
            old = {o.body["model_version"] for o in burst.results if o.ok}
            assert len(old) == 1, old
            new_version = await asyncio.to_thread(_promote_copy, uri)
            assert new_version not in old
            t_switch = await wait_until(
                lambda: any(o.ok and o.body["model_version"] == new_version for o in burst.results),
                120.0,
                f"responses from version {new_version}",
            )
            await run_for(1.5)

        results = burst.results
        failed = [o for o in results if not o.ok]
        assert not failed, f"requests failed across the swap: {summary(failed)}; first: {failed[0].body}"
        # Requests queued on the old version finish on it; anything started a moment after the first
        # new-version answer is served by the new version, and nothing goes back.
        late = [o for o in results if o.start > t_switch + 0.5]
        assert late, "no requests after the swap"
        stale = [o for o in late if o.body["model_version"] != new_version]
        assert not stale, f"{len(stale)} responses from the old version after the swap"
        assert results[-1].body["model_version"] == new_version
    finally:
        serving.stop()
