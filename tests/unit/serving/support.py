"""Helpers the serving tests (unit and integration) share: settings and app wrapper, a payload sink,
gRPC request builders. Fixtures stay in ``conftest.py``; generic helpers in ``tests/helpers.py``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd

from mlplatform.core.payloads import InferenceBatch
from mlplatform.serving.settings import ServingSettings
from mlplatform.v2.grpc_gen import open_inference_grpc_pb2 as pb2
from tests.unit.serving.registry_models import FEATURES, FOREST, HGB, MLP, TYPES, Registry


def make_settings(reg: Registry, tmp_path, **kw) -> ServingSettings:  # noqa: ANN001
    """Serving settings against the test registry: all three models, no auth, no polling."""
    base: dict[str, Any] = dict(
        data_dir=tmp_path,
        mlflow_tracking_uri=reg.uri,
        models=f"{FOREST},{MLP},{HGB}",
        auth_enabled=False,
        poll_interval_s=0,
        model_cache_dir=reg.data_dir / "cache",
    )
    base.update(kw)
    return ServingSettings(**base)


def process_env(
    reg: Registry, data_dir: Path, models: str, api_key: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a ``mlplatform serve model-serving`` process against the test registry:
    ``models``, data in ``data_dir``, no polling, WARNING logs; with ``api_key``, keys on and that
    key allowed to infer, without, auth off. ``extra``: any other variable, or one of these replaced."""
    from mlplatform.core.auth import hash_key

    env = {
        "MLFLOW_TRACKING_URI": reg.uri,
        "MLPLATFORM_DATA_DIR": str(data_dir),
        "SERVING_MODELS": models,
        "SERVING_POLL_INTERVAL_S": "0",
        "SERVING_LOG_LEVEL": "WARNING",
    }
    if api_key:
        env["MLPLATFORM_API_KEYS"] = f"{hash_key(api_key)}:infer"
    else:
        env["SERVING_AUTH_ENABLED"] = "false"
    return {**env, **extra}


def text_settings(tmp_path, tracking_uri: str, models: str, **kw) -> ServingSettings:  # noqa: ANN001
    """Serving settings for the text-model tests: ``models`` from ``tracking_uri``, no auth, no polling,
    the model cache under ``tmp_path``."""
    base: dict[str, Any] = dict(
        data_dir=tmp_path,
        mlflow_tracking_uri=tracking_uri,
        models=models,
        auth_enabled=False,
        poll_interval_s=0,
        model_cache_dir=tmp_path / "cache",
    )
    base.update(kw)
    return ServingSettings(**base)


@contextlib.contextmanager
def registry_run(tmp: Path, experiment: str) -> Iterator[tuple[str, Any]]:
    """A fresh SQLite MLflow registry under ``tmp`` (artifacts in ``tmp/artifacts``) and a run in its new
    ``experiment``: yields the tracking URI and an MLflow client, with the URI set for the run."""
    from mlplatform.core.registry import mlflow_client
    from mlplatform.training.pipeline import mlflow_uri

    (tmp / "mlflow").mkdir()
    uri = f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment(experiment, artifact_location=(tmp / "artifacts").as_uri())
    with mlflow_uri(uri), mlflow.start_run(experiment_id=exp):
        yield uri, client


class RunningApp:
    """An app with its lifespan entered, and an in-process client."""

    def __init__(self, app, client: httpx.AsyncClient) -> None:  # noqa: ANN001
        self.app = app
        self.client = client

    @property
    def plane(self):  # noqa: ANN201
        return self.app.state.dataplane

    @property
    def repository(self):  # noqa: ANN201
        return self.app.state.repository


class ListSink:
    """An in-process PayloadSink (the core protocol): keeps the records serving hands it, read back
    from the batch's wire document as drift detection reads it."""

    def __init__(self) -> None:
        self.records: list = []

    def submit(self, batch) -> None:  # noqa: ANN001
        self.records.extend(InferenceBatch.model_validate_json(batch.encode()).records())


def want_proba(reg: Registry, name: str, df: pd.DataFrame) -> np.ndarray:
    """Version 1 of sklearn model ``name``'s positive-class probabilities, loaded by MLflow itself."""
    mlflow.set_tracking_uri(reg.uri)
    mlflow.set_registry_uri(reg.uri)
    return mlflow.sklearn.load_model(f"models:/{name}/1").predict_proba(df[FEATURES])[:, 1]


def typed_request(df: pd.DataFrame, model: str = FOREST) -> pb2.ModelInferRequest:
    """A gRPC ModelInfer request with one typed tensor per feature."""
    req = pb2.ModelInferRequest(model_name=model, id="grpc-typed")
    field = {"FP64": "fp64_contents", "INT64": "int64_contents", "BOOL": "bool_contents"}
    for col in FEATURES:
        t = req.inputs.add(name=col, datatype=TYPES[col], shape=[len(df)])
        getattr(t.contents, field[TYPES[col]]).extend(df[col].tolist())
    return req


def raw_matrix_request(df: pd.DataFrame, model: str = FOREST) -> pb2.ModelInferRequest:
    """A gRPC ModelInfer request with the features as one FP64 matrix in ``raw_input_contents``."""
    matrix = df[FEATURES].astype(float).to_numpy()
    req = pb2.ModelInferRequest(model_name=model, model_version="1", id="grpc-raw")
    req.inputs.add(name="input-0", datatype="FP64", shape=list(matrix.shape))
    req.raw_input_contents.append(matrix.astype("<f8").tobytes())
    return req


def decode_outputs(resp: pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    """A ModelInfer response's raw outputs as arrays, by output name."""
    dtypes = {"FP64": "<f8", "INT64": "<i8", "BOOL": "?"}
    return {
        o.name: np.frombuffer(raw, dtype=dtypes[o.datatype]).reshape(list(o.shape))
        for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True)
    }
