"""End to end: inferences through model-serving reach drift detection exactly once, across an outage.

Real processes: drift-detection and model-serving (SERVING_DRIFT_URL set, so serving builds its
PayloadLogger), the trained demo model ``fraud-detector`` from ``demo_registry``. Drift is
stopped while inferences continue (serving spools), then restarted on the same port; every
inference row must be stored once. Clients reuse their V2 ``id`` on purpose: the idempotency key is
the id serving assigns (``parameters.prediction_id``), so no row is dropped as a duplicate.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from mlplatform.drift.store import SqliteDriftStore
from tests.helpers import random_v2_body, wait_until_sync
from tests.integration.drift.support import drift_env, serving_env
from tests.procs import free_port, start_service

# training the demo models (session fixture) alone can take minutes on a busy machine
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "fraud-detector"
ROWS_PER_REQUEST = 4


def _sent(serving_url: str) -> float:
    text = httpx.get(f"{serving_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("mlplatform_payload_records_sent_total "):
            return float(line.split()[1])
    return 0.0


def test_inferences_reach_drift_exactly_once_across_an_outage(demo_registry, tmp_path):
    drift_port = free_port()
    logs = tmp_path / "logs"
    drift_vars = drift_env(demo_registry, tmp_path, 40)
    drift = start_service("drift-detection", drift_vars, logs, port=drift_port)
    serving = start_service(
        "model-serving", serving_env(demo_registry, tmp_path, MODEL, drift_port, 16), logs
    )
    rng = np.random.default_rng(0)
    sent_ids: list[tuple[str, str]] = []  # (version, prediction_id) of every answered request
    try:
        meta = httpx.get(f"{serving.url}/v2/models/{MODEL}", timeout=10).json()

        def drive(prefix: str, n: int) -> None:
            with httpx.Client(base_url=serving.url, timeout=30) as client:
                for i in range(n):
                    rid = f"{prefix}-{i % 3}"  # a client that reuses its ids
                    r = client.post(
                        f"/v2/models/{MODEL}/infer", json=random_v2_body(meta, rid, rng, ROWS_PER_REQUEST)
                    )
                    assert r.status_code == 200, r.text
                    doc = r.json()
                    assert doc["id"] == rid
                    sent_ids.append((doc["model_version"], doc["parameters"]["prediction_id"]))

        drive("before", 15)
        wait_until_sync(lambda: _sent(serving.url) >= 15 * ROWS_PER_REQUEST)
        drift.stop()
        drive("during", 20)  # drift is down: serving keeps answering and spools
        drift = start_service("drift-detection", drift_vars, logs, port=drift_port)
        drive("after", 10)
        total = len(sent_ids) * ROWS_PER_REQUEST
        wait_until_sync(lambda: _sent(serving.url) >= total)
        status = httpx.get(f"{drift.url}/v1/models/{MODEL}/drift", timeout=30).json()
        assert status["window"] is not None and status["window"]["features"]
    finally:
        serving.stop()
        drift.stop()
    store = SqliteDriftStore(tmp_path / "drift-data" / "drift" / "drift.db")
    keys = store.record_keys()
    store.close()
    assert len(set(sent_ids)) == len(sent_ids)  # serving never repeats a prediction id
    expected = {(MODEL, v, pid, i) for v, pid in sent_ids for i in range(ROWS_PER_REQUEST)}
    assert len(keys) == len(expected) and set(keys) == expected
