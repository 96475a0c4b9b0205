"""Kernel fallback, unsupported flavours, MLflow's pt2 torch format and alias changes (own registry)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shap
import torch

from mlplatform.explain.explainers import _as_eager_modules
from tests.unit.explain.conftest import running
from tests.unit.explain.models import FEATURES, LINEAR, MLP, TREE, register_new_tree_version


def body(frame: pd.DataFrame) -> dict:
    return {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].astype(float).tolist()}
            for c in frame.columns
        ]
    }


def attr(doc: dict) -> np.ndarray:
    return np.array([[a["attribution"] for a in row["attributions"]] for row in doc["explanations"]])


async def test_kernel_fallback_is_additive(extra_app, extra_registry):
    rows = extra_registry.frame[FEATURES].sample(4, random_state=2)
    r = await extra_app.client.post(f"/v2/models/{LINEAR}/explain", json=body(rows))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["explainer"] == "kernel" and doc["output_space"] == "probability"
    a = attr(doc)
    for i, row in enumerate(doc["explanations"]):
        # Kernel SHAP solves with the efficiency constraint: exact additivity up to float error
        assert abs(row["base_value"] + a[i].sum() - row["output"]) < 1e-6


async def test_flavour_without_explainer_is_422(extra_registry, tmp_path):
    from mlplatform.explain.settings import ExplainSettings

    settings = ExplainSettings(
        data_dir=tmp_path,
        mlflow_tracking_uri=extra_registry.tracking_uri,
        models=LINEAR,
        auth_enabled=False,
        kernel_fallback=False,
        poll_interval_s=3600,
    )
    async with running(settings) as app:
        rows = extra_registry.frame[FEATURES].head(1)
        r = await app.client.post(f"/v2/models/{LINEAR}/explain", json=body(rows))
        assert r.status_code == 422
        assert r.json() == {
            "error": f"model '{LINEAR}' version 1 has flavour 'sklearn' (LogisticRegression) and no "
            "explainer supports it (EXPLAIN_KERNEL_FALLBACK is off)"
        }
        assert (await app.client.get(f"/v2/models/{LINEAR}/importance")).status_code == 422


async def test_pt2_torch_model_uses_deep_explainer(extra_app, extra_registry):
    """MLflow's default pt2 format loads as a torch.export graph; it is still explained by DeepLIFT."""
    rows = extra_registry.frame[FEATURES].sample(6, random_state=4)
    r = await extra_app.client.post(f"/v2/models/{MLP}/explain", json=body(rows))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["explainer"] == "deep" and doc["output_space"] == "probability"
    assert [a["name"] for a in doc["explanations"][0]["attributions"]] == FEATURES
    a = attr(doc)
    for i, row in enumerate(doc["explanations"]):
        assert abs(row["base_value"] + a[i].sum() - row["output"]) < 1e-2  # DeepExplainer's tolerance


def test_functional_nonlinearities_become_hookable_modules():
    """Without the rewrite, DeepExplainer on torch.sigmoid-in-forward is not additive; with it, it is."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 8)
            self.b = torch.nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.b(torch.relu(self.a(x))) * 3.0)

    torch.manual_seed(0)
    net = Net().eval()
    bg, x = torch.randn(50, 4), torch.randn(10, 4)
    with pytest.raises(AssertionError):
        shap.DeepExplainer(net, bg).shap_values(x, check_additivity=True)
    traced = _as_eager_modules(net)
    values = shap.DeepExplainer(traced, bg).shap_values(x, check_additivity=True)
    with torch.no_grad():
        out = net(x).numpy().ravel()
        base = net(bg).mean().item()
    assert np.abs(values[:, :, 0].sum(1) + base - out).max() < 1e-5


async def test_alias_change_builds_new_explainer(extra_app, extra_registry, tmp_path):
    plane = extra_app.plane
    rows = extra_registry.frame[FEATURES].head(3)
    first = (await extra_app.client.post(f"/v2/models/{TREE}/explain", json=body(rows))).json()
    assert first["model_version"] == "1"
    new_version = register_new_tree_version(extra_registry.tracking_uri, extra_registry.frame, tmp_path, 5)
    assert new_version == "2"
    await plane.refresh()  # what the poll loop runs every poll_interval_s
    second = (await extra_app.client.post(f"/v2/models/{TREE}/explain", json=body(rows))).json()
    assert second["model_version"] == "2"
    assert (TREE, "1") in plane.cached_versions() and (TREE, "2") in plane.cached_versions()
    assert not np.allclose(attr(first), attr(second))
    for i, row in enumerate(second["explanations"]):
        assert abs(row["base_value"] + attr(second)[i].sum() - row["output"]) < 1e-6
    old = await extra_app.client.post(f"/v2/models/{TREE}/versions/1/explain", json=body(rows))
    assert old.status_code == 404  # only the version serving uses is explained
