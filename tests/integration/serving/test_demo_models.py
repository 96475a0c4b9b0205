"""The two demo models (tests/conftest.py demo_registry) served with the default SERVING_MODELS:
both on the ONNX fast path, answers equal to the native models on the reference rows."""

from __future__ import annotations

import contextlib

import httpx
import numpy as np
import pytest

from mlplatform.core.registry import DEMO_MODELS
from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.serving.app import create_app
from mlplatform.serving.settings import ServingSettings
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


async def test_demo_models_serve_on_onnx_and_match_native(demo_registry, tmp_path):
    import mlflow.pytorch
    import mlflow.sklearn
    import pandas as pd
    import torch

    settings = ServingSettings(
        data_dir=tmp_path,
        mlflow_tracking_uri=demo_registry.tracking_uri,
        auth_enabled=False,
        poll_interval_s=0,
    )
    assert settings.models == ",".join(DEMO_MODELS)
    app = create_app(settings, secrets=EnvSecretsBackend({}))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        )
        await wait_until(app.state.repository.ready, 300)
        for name in DEMO_MODELS:
            meta = (await client.get(f"/v2/models/{name}")).json()
            assert meta["parameters"]["runtime"] == "onnxruntime", meta["parameters"]
            assert meta["parameters"]["feature_service"]
            cols = [i["name"] for i in meta["inputs"]]
            assert cols == list(demo_registry.features)
            model = app.state.repository.get(name).model
            rows = pd.DataFrame(model.check_rows[:50], columns=cols)
            body = {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [50, len(cols)],
                        "datatype": "FP64",
                        "data": rows.to_numpy().tolist(),
                    }
                ]
            }
            r = await client.post(f"/v2/models/{name}/infer", json=body)
            assert r.status_code == 200, r.text
            got = np.array(r.json()["outputs"][0]["data"])
            mlflow.set_tracking_uri(demo_registry.tracking_uri)
            mlflow.set_registry_uri(demo_registry.tracking_uri)
            version = meta["versions"][0]
            if meta["platform"] == "pytorch":
                net = mlflow.pytorch.load_model(f"models:/{name}/{version}")
                with torch.no_grad():
                    want = net(torch.tensor(rows.to_numpy(dtype=np.float32))).numpy().reshape(-1)
            else:
                typed = rows.astype({c.name: "int64" for c in model.schema.columns if c.type == "long"})
                want = mlflow.sklearn.load_model(f"models:/{name}/{version}").predict_proba(typed)[:, 1]
            np.testing.assert_allclose(got, want, atol=1e-4)
