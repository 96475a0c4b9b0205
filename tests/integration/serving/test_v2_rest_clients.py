"""Clients already written for V2 work unchanged over REST: NVIDIA's ``tritonclient.http`` (binary
tensors by default) and the kserve SDK's REST client, against a real ``mlplatform serve model-serving``
process with API keys on.

The clients run from their own pinned environment (``.venv-clients``, see tests/clients/harness.py).
Models: the shared test registry's forest (a column signature: one named input per column) and a
logistic regression with a tensor signature (-1, 20): one input of shape [N, 20]. Answers are compared
with the models' own predictions (the fitted objects, or the registered model loaded with MLflow).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.clients.harness import run_clients
from tests.helpers import v2_body
from tests.procs import start_service
from tests.unit.serving.registry_models import (
    FEATURES,
    FOREST,
    TENSOR,
    TENSOR_WIDTH,
    TYPES,
    shared_registry,
    tensor_input,
    tensor_model,
)
from tests.unit.serving.support import process_env

pytestmark = pytest.mark.integration
KEY = "v2-clients-infer-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reg = shared_registry(tmp_path_factory.getbasetemp() / "serving-registry")
    model, x = tensor_model(reg.uri)
    data_dir = tmp_path_factory.mktemp("v2-clients")
    env = process_env(reg, data_dir, f"{FOREST},{TENSOR}", KEY, SERVING_GRPC_PORT="0")
    svc = start_service("model-serving", env, data_dir / "logs", ready_timeout=180)
    yield svc, reg, model, x
    svc.stop()


def forest_expected(reg, rows) -> np.ndarray:  # noqa: ANN001
    import mlflow.sklearn

    mlflow.set_tracking_uri(reg.uri)
    mlflow.set_registry_uri(reg.uri)  # an earlier test may have pointed the global registry elsewhere
    forest = mlflow.sklearn.load_model(f"models:/{FOREST}/1")
    return forest.predict_proba(rows[FEATURES])[:, 1]


def probability(result: dict) -> np.ndarray:
    (out,) = [o for o in result["outputs"] if o["datatype"].startswith("FP")]
    return np.asarray(out["data"], dtype=float)


def test_tritonclient_http_binary_and_json(server):
    svc, reg, model, x = server
    url = f"127.0.0.1:{svc.port}"
    rows = reg.frame.iloc[:5]
    columns = v2_body(rows, TYPES, tensor={"binary": True})["inputs"]
    calls = [
        {"op": "server_live"},
        {"op": "server_ready"},
        {"op": "model_ready", "model": TENSOR},
        {"op": "model_metadata", "model": TENSOR},
        # tritonclient's default: binary inputs, binary outputs (binary_data_output)
        {
            "op": "infer",
            "model": TENSOR,
            "id": "tc-1",
            "inputs": [tensor_input(x[:3])],
        },
        # JSON inputs, one output requested as JSON
        {
            "op": "infer",
            "model": TENSOR,
            "inputs": [tensor_input(x[3:5], binary=False)],
            "outputs": [{"name": "probability", "binary": False}],
        },
        {"op": "infer", "model": FOREST, "version": "1", "inputs": columns},
        # a mistake: the wrong input name
        {
            "op": "infer",
            "model": TENSOR,
            "inputs": [tensor_input(np.zeros(TENSOR_WIDTH), name="x")],
        },
    ]
    results = run_clients("triton-http", url, calls, headers={"x-api-key": KEY})
    assert all(r["ok"] for r in results[:7]), [(i, r) for i, r in enumerate(results) if not r["ok"]]
    assert results[0]["result"] is True and results[1]["result"] is True and results[2]["result"] is True
    meta = results[3]["result"]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, TENSOR_WIDTH]}]
    first = results[4]["result"]
    assert (first["model_name"], first["id"]) == (TENSOR, "tc-1")
    np.testing.assert_allclose(probability(first), model.predict_proba(x[:3])[:, 1], atol=1e-5)
    second = results[5]["result"]
    assert [o["name"] for o in second["outputs"]] == ["probability"]
    np.testing.assert_allclose(probability(second), model.predict_proba(x[3:5])[:, 1], atol=1e-5)
    forest = results[6]["result"]
    assert forest["model_version"] == "1"
    np.testing.assert_allclose(probability(forest), forest_expected(reg, rows), atol=1e-6)
    error = results[7]
    assert not error["ok"] and "its input is 'input-0'" in error["error"]["message"]


def test_tritonclient_http_without_a_key_is_refused(server):
    svc, _, _, x = server
    (result,) = run_clients(
        "triton-http",
        f"127.0.0.1:{svc.port}",
        [
            {
                "op": "infer",
                "model": TENSOR,
                "inputs": [tensor_input(x[0])],
            }
        ],
    )
    assert not result["ok"] and "missing API key" in result["error"]["message"]


def test_kserve_rest_client(server):
    svc, reg, model, x = server
    rows = reg.frame.iloc[5:9]
    calls = [
        {"op": "server_live"},
        {"op": "model_ready", "model": TENSOR},
        {
            "op": "infer",
            "model": TENSOR,
            "id": "ks-1",
            "inputs": [tensor_input(x[:4])],
        },
        {
            "op": "infer",
            "model": TENSOR,
            "inputs": [tensor_input(x[:2], binary=True)],
            "outputs": [{"name": "probability", "binary": True}],
        },
        {
            "op": "infer",
            "model": FOREST,
            "inputs": v2_body(rows, TYPES)["inputs"],
        },
    ]
    results = run_clients("kserve-rest", f"127.0.0.1:{svc.port}", calls, headers={"x-api-key": KEY})
    assert all(r["ok"] for r in results), results
    first = results[2]["result"]
    assert (first["model_name"], first["id"]) == (TENSOR, "ks-1")
    np.testing.assert_allclose(probability(first), model.predict_proba(x[:4])[:, 1], atol=1e-5)
    np.testing.assert_allclose(probability(results[3]["result"]), model.predict_proba(x[:2])[:, 1], atol=1e-5)
    np.testing.assert_allclose(probability(results[4]["result"]), forest_expected(reg, rows), atol=1e-6)
