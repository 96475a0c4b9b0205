"""The explainability service as a real process (uvicorn, `mlplatform serve`) on a free port.

It explains the demo models from the shared SQLite MLflow registry, and reads the features of
entity requests from a real feature-store process (Feast, SQLite online store) on another port.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from mlplatform.core.registry import download_reference, mlflow_client, parse_model_ref, resolve_version
from mlplatform.features.contract import REQUEST_FEATURES
from tests.helpers import v2_body
from tests.procs import running_service
from tests.unit.features.small_repo import build_small_repo

pytestmark = pytest.mark.integration

TREE = "fraud-detector"


def additive(doc: dict, tolerance: float) -> bool:
    for row in doc["explanations"]:
        total = row["base_value"] + sum(a["attribution"] for a in row["attributions"])
        if abs(total - row["output"]) >= tolerance:
            return False
    return True


def test_explain_service_process(demo_registry, tmp_path):
    client = mlflow_client(demo_registry.tracking_uri)
    version = resolve_version(client, parse_model_ref(TREE))
    ref = pd.read_parquet(download_reference(client, version, tmp_path / "ref")).drop(columns=["prediction"])
    repo = build_small_repo(tmp_path / "features", rows=2000)
    logs = tmp_path / "logs"
    features_env = {"MLPLATFORM_DATA_DIR": str(repo.data_dir), "FEATURES_AUTH_ENABLED": "false"}
    with running_service("feature-store", features_env, logs) as store:
        env = {
            **demo_registry.env(),
            "EXPLAIN_MODELS": TREE,  # the torch MLP is covered in-process (tests/unit/explain)
            "EXPLAIN_AUTH_ENABLED": "false",
            "EXPLAIN_FEATURE_STORE_URL": store.url,
        }
        with (
            running_service("explainability", env, logs) as svc,
            httpx.Client(base_url=svc.url, timeout=60) as http,
        ):
            rows = ref.sample(5, random_state=2)
            r = http.post(f"/v2/models/{TREE}/explain?top_k=4", json=v2_body(rows))
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["output_space"] == "probability" and len(doc["explanations"]) == 5
            assert additive(doc, 1e-6)
            assert all(len(row["top_features"]) == 4 for row in doc["explanations"])

            # entity request: history features come from the feature store process
            tx = repo.transactions.iloc[:3]
            entity = {
                "inputs": [
                    {"name": "user_id", "shape": [3], "datatype": "INT64", "data": tx["user_id"].tolist()},
                    {
                        "name": "merchant_id",
                        "shape": [3],
                        "datatype": "INT64",
                        "data": tx["merchant_id"].tolist(),
                    },
                ]
            }
            for field in REQUEST_FEATURES:
                datatype = "INT64" if tx[field].dtype.kind in "iu" else "FP64"
                entity["inputs"].append(
                    {"name": field, "shape": [3], "datatype": datatype, "data": tx[field].tolist()}
                )
            r = http.post(f"/v2/models/{TREE}/explain", json=entity)
            assert r.status_code == 200, r.text
            doc = r.json()
            assert additive(doc, 1e-6)
            values = {a["name"]: a["value"] for a in doc["explanations"][0]["attributions"]}
            assert values["amount"] == pytest.approx(float(tx["amount"].iloc[0]))
            assert set(values) == set(ref.columns)
            assert np.isfinite(list(values.values())).all()

            r = http.get(f"/v2/models/{TREE}/importance")
            assert r.status_code == 200 and len(r.json()["features"]) == len(ref.columns)
            assert http.post("/v2/models/unknown/explain", json=v2_body(rows)).status_code == 404
            metrics = http.get("/metrics").text
            assert 'mlplatform_explain_rows_total{explainer="tree",model="fraud-detector"} 8.0' in metrics
            assert "mlplatform_explain_explainer_build_seconds_count" in metrics

            # the feature store going away gives a 503 naming it, not a 500
            store.stop()
            r = http.post(f"/v2/models/{TREE}/explain", json=entity)
            assert r.status_code == 503 and "feature store" in r.json()["error"]
