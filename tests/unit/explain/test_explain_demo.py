"""Explanations of the demo models (real MLflow registry, real SHAP) through the in-process app."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shap
import torch

from mlplatform.core.registry import download_reference, mlflow_client, parse_model_ref, resolve_version
from tests.helpers import v2_body
from tests.unit.explain.conftest import DEMO_MLP, DEMO_TREE

DEEP_TOLERANCE = 1e-2  # shap's own additivity tolerance for DeepExplainer (deep_utils._check_additivity)


@pytest.fixture(scope="module")
def demo(demo_registry, tmp_path_factory):
    """The demo models loaded directly from MLflow, and their reference samples."""
    import mlflow

    client = mlflow_client(demo_registry.tracking_uri)
    out = {}
    for name in (DEMO_TREE, DEMO_MLP):
        version = resolve_version(client, parse_model_ref(name))
        ref = pd.read_parquet(download_reference(client, version, tmp_path_factory.mktemp(name)))
        location = client.get_model_version_download_uri(name, version.version)
        flavour = mlflow.sklearn if name == DEMO_TREE else mlflow.pytorch
        out[name] = {"version": version.version, "reference": ref, "model": flavour.load_model(location)}
    return out


def features(demo, name: str) -> pd.DataFrame:
    ref = demo[name]["reference"]
    return ref.drop(columns=["prediction"])


async def explain(app, name: str, frame: pd.DataFrame, path_extra: str = "", **body_extra):
    r = await app.client.post(f"/v2/models/{name}{path_extra}/explain", json=v2_body(frame, **body_extra))
    assert r.status_code == 200, r.text
    return r.json()


def attributions(doc: dict) -> np.ndarray:
    return np.array([[a["attribution"] for a in row["attributions"]] for row in doc["explanations"]])


async def test_tree_additivity_and_model_output(explain_app, demo):
    rows = features(demo, DEMO_TREE).sample(40, random_state=3)
    doc = await explain(explain_app, DEMO_TREE, rows)
    assert doc["model_version"] == demo[DEMO_TREE]["version"]
    assert doc["explainer"] == "tree"
    assert doc["output_space"] == "probability"  # a random forest's trees hold probabilities
    assert doc["feature_perturbation"] == "interventional"
    expected = demo[DEMO_TREE]["model"].predict_proba(rows)[:, 1]
    attr = attributions(doc)
    for i, row in enumerate(doc["explanations"]):
        assert row["output"] == pytest.approx(expected[i], abs=1e-6)
        assert row["prediction"] == pytest.approx(expected[i], abs=1e-6)
        assert abs(row["base_value"] + attr[i].sum() - row["output"]) < 1e-6
        assert [a["name"] for a in row["attributions"]] == list(rows.columns)
        assert [a["value"] for a in row["attributions"]] == pytest.approx(rows.iloc[i].tolist())


async def test_tree_equals_direct_shap_call(explain_app, demo):
    settings = explain_app.plane.settings
    x = features(demo, DEMO_TREE)
    rows = x.sample(10, random_state=5)
    doc = await explain(explain_app, DEMO_TREE, rows)
    background = x.astype(np.float64).sample(
        n=settings.tree_background_size, random_state=settings.sample_seed
    )
    direct = shap.TreeExplainer(
        demo[DEMO_TREE]["model"], data=background.to_numpy(), feature_perturbation="interventional"
    )
    values = direct.shap_values(rows.to_numpy(np.float64))[:, :, 1]
    np.testing.assert_allclose(attributions(doc), values, rtol=0, atol=1e-12)
    assert doc["explanations"][0]["base_value"] == pytest.approx(direct.expected_value[1], abs=1e-12)


async def test_mlp_deep_explainer_additivity(explain_app, demo):
    rows = features(demo, DEMO_MLP).sample(30, random_state=7)
    doc = await explain(explain_app, DEMO_MLP, rows)
    assert doc["explainer"] == "deep"
    assert doc["output_space"] == "probability"
    model = demo[DEMO_MLP]["model"]
    with torch.no_grad():
        expected = model(torch.from_numpy(rows.to_numpy(np.float32))).numpy().ravel()
    attr = attributions(doc)
    for i, row in enumerate(doc["explanations"]):
        assert row["output"] == pytest.approx(float(expected[i]), abs=1e-6)
        assert abs(row["base_value"] + attr[i].sum() - row["output"]) < DEEP_TOLERANCE


async def test_mlp_equals_direct_deep_explainer(explain_app, demo):
    """The service's values equal shap.DeepExplainer on a hand-built eager copy of the same model.

    The demo MLP calls ``torch.sigmoid`` in ``forward``; the copy uses the model's own layers with
    ``nn.Sigmoid`` so that plain shap applies its DeepLIFT rule to every nonlinearity.
    """
    settings = explain_app.plane.settings
    model = demo[DEMO_MLP]["model"]
    x = features(demo, DEMO_MLP)
    rows = x.sample(8, random_state=11)
    doc = await explain(explain_app, DEMO_MLP, rows)

    class Standardize(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return (t - model.mean) / model.std

    copy = torch.nn.Sequential(Standardize(), model.net, torch.nn.Sigmoid()).eval()
    background = x.astype(np.float64).sample(n=settings.background_size, random_state=settings.sample_seed)
    direct = shap.DeepExplainer(copy, torch.from_numpy(background.to_numpy(np.float32)))
    values = direct.shap_values(torch.from_numpy(rows.to_numpy(np.float32)))[:, :, 0]
    np.testing.assert_allclose(attributions(doc), values, rtol=1e-4, atol=1e-7)


async def test_top_k_from_query_body_and_default(explain_app, demo):
    rows = features(demo, DEMO_TREE).sample(3, random_state=1)
    default = await explain(explain_app, DEMO_TREE, rows)
    assert default["top_k"] == explain_app.plane.settings.default_top_k
    body = await explain(explain_app, DEMO_TREE, rows, parameters={"top_k": 2}, id="req-7")
    assert body["top_k"] == 2 and body["id"] == "req-7"
    assert all(len(row["top_features"]) == 2 for row in body["explanations"])
    r = await explain_app.client.post(
        f"/v2/models/{DEMO_TREE}/explain?top_k=3", json=v2_body(rows, parameters={"top_k": 2})
    )
    assert r.status_code == 200 and r.json()["top_k"] == 3  # the query parameter wins
    for row in r.json()["explanations"]:
        top = row["top_features"]
        assert len(top) == 3
        magnitudes = sorted((abs(a["attribution"]) for a in row["attributions"]), reverse=True)
        assert [abs(a["attribution"]) for a in top] == magnitudes[:3]


async def test_version_route_explains_served_version_only(explain_app, demo):
    rows = features(demo, DEMO_TREE).head(2)
    version = demo[DEMO_TREE]["version"]
    doc = await explain(explain_app, DEMO_TREE, rows, path_extra=f"/versions/{version}")
    assert doc["model_version"] == version
    r = await explain_app.client.post(f"/v2/models/{DEMO_TREE}/versions/999/explain", json=v2_body(rows))
    assert r.status_code == 404
    assert r.json() == {"error": f"model '{DEMO_TREE}' version 999 is not loaded (serving version {version})"}


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (lambda b: b["inputs"].pop(1), 422, "input 'hour': missing"),
        (lambda b: b["inputs"][1].update(datatype="FP64"), 422, "input 'hour': datatype FP64"),
        (lambda b: b["inputs"][0].update(data=[1.0]), 422, "input 'amount': data has 1 elements"),
        (lambda b: b["inputs"][0].update(data=["x", 2.0]), 422, "input 'amount': element 0"),
        (lambda b: b.update(parameters={"top_k": 0}), 422, "parameters.top_k: must be a positive integer"),
        (lambda b: b.update(inputs=[]), 422, "inputs: must be a non-empty list"),
    ],
)
async def test_bad_input_gets_serving_errors(explain_app, demo, mutate, status, fragment):
    body = v2_body(features(demo, DEMO_TREE).head(2))
    mutate(body)
    r = await explain_app.client.post(f"/v2/models/{DEMO_TREE}/explain", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]


async def test_malformed_json_unknown_model_and_entity_without_store(explain_app, demo):
    r = await explain_app.client.post(
        f"/v2/models/{DEMO_TREE}/explain", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"].startswith("malformed JSON body")
    body = v2_body(features(demo, DEMO_TREE).head(1))
    r = await explain_app.client.post("/v2/models/nope/explain", json=body)
    assert r.status_code == 404 and r.json() == {
        "error": "model 'nope' is not served (not in EXPLAIN_MODELS)"
    }
    r = await explain_app.client.get("/v2/models/nope/importance")
    assert r.status_code == 404
    entity = {
        "inputs": [
            {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [3]},
            {"name": "merchant_id", "shape": [1], "datatype": "INT64", "data": [9]},
            {"name": "amount", "shape": [1], "datatype": "FP64", "data": [12.5]},
        ]
    }
    r = await explain_app.client.post(f"/v2/models/{DEMO_TREE}/explain", json=entity)
    assert r.status_code == 422 and "EXPLAIN_FEATURE_STORE_URL" in r.json()["error"]
    r = await explain_app.client.post(f"/v2/models/{DEMO_TREE}/explain?top_k=0", json=body)
    assert r.status_code == 422 and "top_k" in r.json()["error"]


async def test_global_importance_is_cached_mean_abs_shap(explain_app, demo):
    plane = explain_app.plane
    r = await explain_app.client.get(f"/v2/models/{DEMO_TREE}/importance")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == demo[DEMO_TREE]["version"] and doc["explainer"] == "tree"
    names = [f["name"] for f in doc["features"]]
    assert sorted(names) == sorted(features(demo, DEMO_TREE).columns)
    values = [f["mean_abs_attribution"] for f in doc["features"]]
    assert values == sorted(values, reverse=True) and values[0] > 0
    # the same numbers as explaining the importance sample row by row through the API
    x = features(demo, DEMO_TREE).astype(np.float64)
    sample = x.sample(n=plane.settings.importance_sample_size, random_state=plane.settings.sample_seed)
    per_row = await explain(explain_app, DEMO_TREE, features(demo, DEMO_TREE).loc[sample.index])
    expected = dict(zip(x.columns, np.abs(attributions(per_row)).mean(axis=0), strict=True))
    for f in doc["features"]:
        assert f["mean_abs_attribution"] == pytest.approx(expected[f["name"]], rel=1e-9, abs=1e-12)
    again = await explain_app.client.get(f"/v2/models/{DEMO_TREE}/importance")
    assert again.json() == doc
    metrics = (await explain_app.client.get("/metrics")).text
    assert f'mlplatform_explain_cache_hits_total{{cache="importance",model="{DEMO_TREE}"}}' in metrics


async def test_metrics_count_rows_latency_and_builds(explain_app, demo):
    def sample(text: str, prefix: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    rows_metric = f'mlplatform_explain_rows_total{{explainer="tree",model="{DEMO_TREE}"}}'
    count_metric = f'mlplatform_explain_duration_seconds_count{{explainer="tree",model="{DEMO_TREE}"}}'
    before = (await explain_app.client.get("/metrics")).text
    await explain(explain_app, DEMO_TREE, features(demo, DEMO_TREE).head(7))
    after = (await explain_app.client.get("/metrics")).text
    assert sample(after, rows_metric) - sample(before, rows_metric) == 7
    assert sample(after, count_metric) - sample(before, count_metric) == 1
    version = demo[DEMO_MLP]["version"]
    build = f'mlplatform_explain_explainer_build_seconds_count{{explainer="deep",model="{DEMO_MLP}",version="{version}"}}'
    assert sample(after, build) == 1
    assert sample(after, f'mlplatform_explain_cache_hits_total{{cache="explainer",model="{DEMO_TREE}"}}') >= 1


async def test_auth_requires_explain_scope(demo_registry, demo, tmp_path):
    from mlplatform.core.auth import hash_key
    from tests.unit.explain.conftest import demo_settings, running

    keys = f"{hash_key('explainer-key')}:explain,{hash_key('infer-key')}:infer"
    settings = demo_settings(demo_registry, tmp_path, auth_enabled=True, models=DEMO_TREE)
    async with running(settings, secrets_env={"MLPLATFORM_API_KEYS": keys}) as app:
        body = v2_body(features(demo, DEMO_TREE).head(1))
        url = f"/v2/models/{DEMO_TREE}/explain"
        assert (await app.client.post(url, json=body)).status_code == 401
        r = await app.client.post(url, json=body, headers={"X-API-Key": "infer-key"})
        assert r.status_code == 403 and "explain" in r.json()["error"]
        r = await app.client.post(url, json=body, headers={"Authorization": "Bearer explainer-key"})
        assert r.status_code == 200
