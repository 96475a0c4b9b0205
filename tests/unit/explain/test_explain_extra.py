"""Kernel fallback, unsupported flavours, MLflow's pt2 torch format and alias changes (own registry)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shap
import torch

from mlplatform.explain.explainers import _as_eager_modules
from tests.unit.explain.conftest import running
from tests.unit.explain.models import BOOSTED, FEATURES, LINEAR, MLP, TREE, register_new_tree_version


def body(frame: pd.DataFrame) -> dict:
    return {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].astype(float).tolist()}
            for c in frame.columns
        ]
    }


def attr(doc: dict) -> np.ndarray:
    return np.array([[a["attribution"] for a in row["attributions"]] for row in doc["explanations"]])


@pytest.mark.parametrize(
    ("model", "n", "seed", "explainer", "tolerance"),
    [
        # Kernel SHAP solves with the efficiency constraint: exact additivity up to float error
        pytest.param(LINEAR, 4, 2, "kernel", 1e-6, id="kernel-fallback"),
        # MLflow's default pt2 format loads as a torch.export graph; it is still explained by DeepLIFT
        # (additive within DeepExplainer's tolerance)
        pytest.param(MLP, 6, 4, "deep", 1e-2, id="pt2-torch-deep"),
    ],
)
async def test_explainer_and_additivity(extra_app, extra_registry, model, n, seed, explainer, tolerance):
    """The kernel fallback (LogisticRegression) and the pt2 torch model (DeepLIFT) answer additive
    explanations in probability space."""
    rows = extra_registry.frame[FEATURES].sample(n, random_state=seed)
    r = await extra_app.client.post(f"/v2/models/{model}/explain", json=body(rows))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["explainer"] == explainer and doc["output_space"] == "probability"
    assert [a["name"] for a in doc["explanations"][0]["attributions"]] == FEATURES
    a = attr(doc)
    for i, row in enumerate(doc["explanations"]):
        assert abs(row["base_value"] + a[i].sum() - row["output"]) < tolerance


async def test_boosted_trees_are_explained_in_margin_space(extra_app, extra_registry, tmp_path):
    """Gradient boosting's trees hold log-odds: the response says margin, and additivity holds there."""
    import mlflow

    from mlplatform.core.registry import mlflow_client

    client = mlflow_client(extra_registry.tracking_uri)
    model = mlflow.sklearn.load_model(client.get_model_version_download_uri(BOOSTED, "1"))
    rows = extra_registry.frame[FEATURES].sample(10, random_state=8)
    r = await extra_app.client.post(f"/v2/models/{BOOSTED}/explain", json=body(rows))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["explainer"] == "tree" and doc["output_space"] == "margin"
    margin = model.decision_function(rows)
    proba = model.predict_proba(rows)[:, 1]
    a = attr(doc)
    for i, row in enumerate(doc["explanations"]):
        assert row["output"] == pytest.approx(margin[i], abs=1e-6)
        assert row["prediction"] == pytest.approx(proba[i], abs=1e-6)
        assert abs(row["base_value"] + a[i].sum() - row["output"]) < 1e-6
    direct = shap.TreeExplainer(
        model,
        data=service_background(extra_app, extra_registry, BOOSTED, tmp_path),
        feature_perturbation="interventional",
    )
    np.testing.assert_allclose(a, direct.shap_values(rows.to_numpy(np.float64)), rtol=0, atol=1e-9)


def service_background(app, registry, name: str, dest) -> np.ndarray:
    """The background the service draws for tree ensembles: a seeded sample of the version's reference data."""
    from mlplatform.core.registry import download_reference, mlflow_client, parse_model_ref, resolve_version

    client = mlflow_client(registry.tracking_uri)
    ref = pd.read_parquet(download_reference(client, resolve_version(client, parse_model_ref(name)), dest))
    settings = app.plane.settings
    sample = (
        ref[FEATURES]
        .astype(np.float64)
        .sample(n=settings.tree_background_size, random_state=settings.sample_seed)
    )
    return sample.to_numpy()


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


async def test_not_ready_until_models_load(extra_registry, tmp_path):
    """A configured model missing from the registry keeps readiness at 503 and explain at 503."""
    import httpx

    from mlplatform.core.secrets import EnvSecretsBackend
    from mlplatform.explain.app import create_app
    from mlplatform.explain.settings import ExplainSettings

    settings = ExplainSettings(
        data_dir=tmp_path,
        mlflow_tracking_uri=extra_registry.tracking_uri,
        models="not-registered",
        auth_enabled=False,
    )
    app = create_app(settings, secrets=EnvSecretsBackend({}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://explain") as client:
            await app.state.dataplane.refresh()  # the first load attempt, as the poller runs it
            assert (await client.get("/v2/health/live")).status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 503
            r = await client.post(
                "/v2/models/not-registered/explain", json=body(extra_registry.frame.head(1))
            )
            assert r.status_code == 503 and r.json() == {"error": "model 'not-registered' is not loaded yet"}
