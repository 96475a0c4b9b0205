"""The demo training pipeline against a real SQLite MLflow registry (shared ``demo_registry`` fixture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.registry import (
    DEMO_MODELS,
    REFERENCE_ARTIFACT_PATH,
    TAG_FEATURE_SERVICE,
    TAG_REFERENCE_ARTIFACT,
    download_reference,
    mlflow_client,
    parse_model_ref,
    resolve_version,
)
from mlplatform.features.contract import INT_FEATURES, MODEL_FEATURES
from mlplatform.training.data import raw_path
from mlplatform.training.pipeline import TAG_MODEL_FEATURES, TrainSettings, mlflow_uri, run_training


@pytest.fixture(scope="module")
def client(demo_registry):  # noqa: ANN001, ANN201
    return mlflow_client(demo_registry.tracking_uri)


def test_raw_data_written(demo_registry) -> None:  # noqa: ANN001
    df = pd.read_parquet(raw_path(demo_registry.data_dir))
    assert len(df) == 20_000
    assert 0.01 <= df["is_fraud"].mean() <= 0.03


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_champion_registered_with_tags(client, name: str) -> None:  # noqa: ANN001
    version = resolve_version(client, parse_model_ref(name))
    assert version.tags[TAG_FEATURE_SERVICE] == "fraud_detection_v1"
    assert version.tags[TAG_REFERENCE_ARTIFACT] == REFERENCE_ARTIFACT_PATH
    assert version.tags[TAG_MODEL_FEATURES].split(",") == list(MODEL_FEATURES)
    run = client.get_run(version.run_id)
    assert run.data.metrics["roc_auc"] > 0.8, run.data.metrics
    assert run.data.metrics["pr_auc"] > 0.2, run.data.metrics
    assert run.data.params["feature_service"] == "fraud_detection_v1"


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_signature_names_and_types(demo_registry, client, name: str) -> None:  # noqa: ANN001
    from mlflow.models import get_model_info

    version = resolve_version(client, parse_model_ref(name))
    with mlflow_uri(demo_registry.tracking_uri):
        info = get_model_info(f"models:/{name}/{version.version}")
    inputs = info.signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == list(MODEL_FEATURES)
    for col in inputs:
        assert col["type"] == ("long" if col["name"] in INT_FEATURES else "double"), col
    assert info.saved_input_example_info is not None


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_reference_sample(demo_registry, client, name: str, tmp_path: Path) -> None:  # noqa: ANN001
    version = resolve_version(client, parse_model_ref(name))
    ref = pd.read_parquet(download_reference(client, version, tmp_path))
    assert list(ref.columns) == [*MODEL_FEATURES, "prediction"]
    assert len(ref) == 2000
    assert ref["prediction"].between(0.0, 1.0).all()
    assert ref["prediction"].std() > 0


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_pyfunc_outputs_fraud_probability(demo_registry, client, name: str) -> None:  # noqa: ANN001
    import mlflow.pyfunc

    from mlplatform.features.contract import build_training_frame
    from mlplatform.training.pipeline import model_input

    version = resolve_version(client, parse_model_ref(name))
    with mlflow_uri(demo_registry.tracking_uri):
        model = mlflow.pyfunc.load_model(version.uri)
    frame = build_training_frame(pd.read_parquet(raw_path(demo_registry.data_dir)))
    x = model_input(frame.tail(4000))
    out = np.asarray(model.predict(x))
    p_fraud = out[:, -1]  # sklearn: predict_proba (N, 2); torch: (N, 1)
    assert out.shape[0] == len(x)
    assert ((p_fraud >= 0) & (p_fraud <= 1)).all()
    y = frame.tail(4000)["is_fraud"].to_numpy()
    assert p_fraud[y == 1].mean() > 3 * p_fraud[y == 0].mean()


def test_forest_converts_to_onnx(demo_registry, client) -> None:  # noqa: ANN001
    import mlflow.sklearn
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    version = resolve_version(client, parse_model_ref("fraud-detector"))
    with mlflow_uri(demo_registry.tracking_uri):
        forest = mlflow.sklearn.load_model(version.uri)
    onx = convert_sklearn(
        forest,
        initial_types=[("input", FloatTensorType([None, len(MODEL_FEATURES)]))],
        options={"zipmap": False},
    )
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = pd.read_parquet(download_reference(client, version, Path(demo_registry.data_dir) / "onnx-check"))
    x = ref[list(MODEL_FEATURES)].to_numpy(np.float32)
    _, proba = sess.run(None, {"input": x})
    np.testing.assert_allclose(proba[:, 1], ref["prediction"].to_numpy(), atol=1e-4)


def test_second_run_skips_unless_forced(demo_registry) -> None:  # noqa: ANN001
    settings = TrainSettings(
        rows=20_000, data_dir=demo_registry.data_dir, tracking_uri=demo_registry.tracking_uri
    )
    summary = run_training(settings)
    assert summary["skipped"] is True
    assert (
        summary["models"]["fraud-detector"]["version"]
        == demo_registry.summary["models"]["fraud-detector"]["version"]
    )


def test_settings_read_platform_env(monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TRAIN_N_ESTIMATORS", "7")
    s = TrainSettings()
    assert s.data_dir == tmp_path
    assert s.n_estimators == 7
    assert s.resolved_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert TrainSettings().resolved_tracking_uri() == "http://mlflow:5000"


def test_settings_fields_are_documented() -> None:
    for name, f in TrainSettings.model_fields.items():
        assert f.description, name
