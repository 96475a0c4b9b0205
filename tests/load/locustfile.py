"""The client API mix for ``locust --headless`` (run by scripts/load.py; never imported by pytest).

Weights: entity-based infer 4, tensor infer 4, feature read 2, explain 1 (each user paced by
``LOAD_USER_RPS`` requests per second). Payloads are real demo transactions from the data dir
(``tests/load/payloads.py``). Service URLs and the model come from the environment:

``LOAD_SERVING_URL`` (default http://127.0.0.1:8080), ``LOAD_FEATURES_URL`` (8081),
``LOAD_EXPLAIN_URL`` (8083), ``LOAD_DATA_DIR`` (default ``$MLPLATFORM_DATA_DIR`` or ./data),
``LOAD_MODEL`` (fraud-detector), ``LOAD_FEATURE_SERVICE`` (fraud_detection_v1), ``LOAD_USER_RPS`` (2),
``LOAD_API_KEY`` (sent as a bearer token when set).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root: `tests.load.payloads`

from tests.load.payloads import (  # noqa: E402
    entity_request,
    feature_read_request,
    load_samples,
    tensor_request,
)

SERVING = os.environ.get("LOAD_SERVING_URL", "http://127.0.0.1:8080").rstrip("/")
FEATURES = os.environ.get("LOAD_FEATURES_URL", "http://127.0.0.1:8081").rstrip("/")
EXPLAIN = os.environ.get("LOAD_EXPLAIN_URL", "http://127.0.0.1:8083").rstrip("/")
MODEL = os.environ.get("LOAD_MODEL", "fraud-detector")
FEATURE_SERVICE = os.environ.get("LOAD_FEATURE_SERVICE", "fraud_detection_v1")
USER_RPS = float(os.environ.get("LOAD_USER_RPS", "2"))

SAMPLES: list[dict[str, Any]] = []


@events.init.add_listener
def _load_samples(environment: Any, **_: Any) -> None:
    data_dir = os.environ.get("LOAD_DATA_DIR") or os.environ.get("MLPLATFORM_DATA_DIR") or "data"
    SAMPLES.extend(load_samples(Path(data_dir), n=2000, seed=int(os.environ.get("LOAD_SEED", "0"))))


def _check(resp: Any, what: str, key: str) -> None:
    """Mark the request failed unless it is a 200 JSON document holding ``key``."""
    if resp.status_code != 200:
        if not resp.status_code:  # no HTTP answer: connection refused/reset, timeout
            resp.failure(f"{what}: no response ({getattr(resp, 'error', None)!r})")
        else:
            resp.failure(f"{what}: HTTP {resp.status_code} {resp.text[:200] if resp.text else ''}")
        return
    try:
        doc = resp.json()
    except ValueError:
        resp.failure(f"{what}: body is not JSON")
        return
    if key not in doc:
        resp.failure(f"{what}: response has no '{key}'")
    else:
        resp.success()


class ClientMix(FastHttpUser):
    """One API client: mostly inference, some feature reads, a few explanations."""

    host = SERVING
    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        key = os.environ.get("LOAD_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.rng = random.Random()

    def _rows(self, n: int = 1) -> list[dict[str, Any]]:
        return self.rng.sample(SAMPLES, n)

    def _post(self, url: str, body: dict[str, Any], name: str, key: str) -> None:
        with self.client.post(url, json=body, name=name, headers=self.headers, catch_response=True) as resp:
            _check(resp, name, key)

    @task(4)
    def infer_entity(self) -> None:
        self._post(
            f"{SERVING}/v2/models/{MODEL}/infer", entity_request(self._rows()), "infer:entity", "outputs"
        )

    @task(4)
    def infer_tensor(self) -> None:
        self._post(
            f"{SERVING}/v2/models/{MODEL}/infer", tensor_request(self._rows()), "infer:tensor", "outputs"
        )

    @task(2)
    def feature_read(self) -> None:
        body = feature_read_request(self._rows(), FEATURE_SERVICE)
        self._post(f"{FEATURES}/v1/features/online", body, "features:online", "rows")

    @task(1)
    def explain(self) -> None:
        self._post(
            f"{EXPLAIN}/v2/models/{MODEL}/explain", tensor_request(self._rows()), "explain", "explanations"
        )
