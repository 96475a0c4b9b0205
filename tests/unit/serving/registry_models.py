"""Small real models registered into a throw-away SQLite MLflow registry (serving's own fixtures).

Columns mimic the fraud demo: floats, integers and a boolean. ``register_demo_models`` registers a
scikit-learn random forest, a torch MLP and a histogram gradient-boosting model (which skl2onnx cannot
convert here, so it exercises the native fallback), each with a signature and an input example, and
points alias ``champion`` at them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FEATURES = ["amount", "merchant_risk", "hour", "tx_count_24h", "is_foreign"]
TYPES = {  # the V2 datatype of each feature, as the models' signatures declare it
    "amount": "FP64",
    "merchant_risk": "FP64",
    "hour": "INT64",
    "tx_count_24h": "INT64",
    "is_foreign": "BOOL",
}
FOREST = "sv-forest"
MLP = "sv-mlp"
HGB = "sv-hgb"


@dataclass
class Registry:
    uri: str
    data_dir: Path
    frame: pd.DataFrame


def make_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n),
            "merchant_risk": rng.random(n),
            "hour": rng.integers(0, 24, n).astype(np.int64),
            "tx_count_24h": rng.integers(0, 30, n).astype(np.int64),
            "is_foreign": rng.random(n) < 0.2,
        }
    )


def make_target(df: pd.DataFrame) -> np.ndarray:
    score = 0.01 * df["amount"] + 2 * df["merchant_risk"] + 0.1 * df["tx_count_24h"] + df["is_foreign"]
    return (score > np.quantile(score, 0.8)).astype(np.int64).to_numpy()


def train_mlp(df: pd.DataFrame, y: np.ndarray, seed: int = 0):  # noqa: ANN201
    """A small sigmoid MLP; input standardisation is folded into the first layer (plain nn.Sequential)."""
    import torch

    torch.manual_seed(seed)
    x = torch.tensor(df.to_numpy(dtype=np.float32))
    mean, std = x.mean(0), x.std(0) + 1e-6
    first = torch.nn.Linear(x.shape[1], 16)
    model = torch.nn.Sequential(first, torch.nn.ReLU(), torch.nn.Linear(16, 1), torch.nn.Sigmoid())
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    target = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    xs = (x - mean) / std
    for _ in range(80):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(model(xs), target)
        loss.backward()
        opt.step()
    with torch.no_grad():
        first.bias -= (first.weight * (mean / std)).sum(1)
        first.weight /= std
    return model.eval()


@contextlib.contextmanager
def _logging_run(uri: str) -> Iterator[None]:
    """An MLflow run in the ``serving-tests`` experiment of the registry at ``uri`` (tracking and
    registry both), with MLflow's logging warnings silenced."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    root = Path(uri.removeprefix("sqlite:///")).parent
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("serving-tests")
    if exp is None:
        client.create_experiment("serving-tests", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment("serving-tests")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run():
            yield


def _register(
    uri: str,
    name: str,
    alias: str,
    log_model: Any,
    model: Any,
    example: Any,
    prediction: np.ndarray,
    *,
    reference: bool = True,
    **flavour: Any,
) -> str:
    """Log ``model`` with ``log_model`` (an MLflow flavour's), its signature inferred from ``example``
    (a frame or matrix) and ``prediction``, its first five rows as the input example, registered as
    ``name``; with ``reference``, the training reference sample every version carries (``example``
    a frame). Points ``alias`` at the new version and returns it. ``flavour``: the flavour's options."""
    import mlflow
    from mlflow.models import infer_signature

    with _logging_run(uri):
        info = log_model(
            model,
            name="model",
            signature=infer_signature(example, prediction),
            input_example=example[:5],
            registered_model_name=name,
            **flavour,
        )
        if reference:
            _log_reference(example, prediction)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    return version


def _sklearn_options(model: Any) -> dict[str, Any]:
    import skops.io

    return {
        "skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        "pip_requirements": ["scikit-learn"],
    }


def register_sklearn(uri: str, name: str, model, df: pd.DataFrame, alias: str = "champion") -> str:  # noqa: ANN001
    import mlflow.sklearn

    prediction = model.predict_proba(df)[:, 1]
    return _register(
        uri, name, alias, mlflow.sklearn.log_model, model, df, prediction, **_sklearn_options(model)
    )


def _log_reference(df: pd.DataFrame, prediction: np.ndarray) -> None:
    """The training reference sample every registered version carries (reference/reference.parquet)."""
    import tempfile

    import mlflow

    ref = df.head(200).copy()
    ref["prediction"] = np.asarray(prediction).reshape(-1)[:200]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        ref.to_parquet(path)
        mlflow.log_artifact(str(path), artifact_path="reference")


def register_torch(uri: str, name: str, model, df: pd.DataFrame, alias: str = "champion") -> str:  # noqa: ANN001
    import mlflow.pytorch
    import torch

    with torch.no_grad():
        out = model(torch.tensor(df.to_numpy(dtype=np.float32))).numpy()
    return _register(
        uri,
        name,
        alias,
        mlflow.pytorch.log_model,
        model,
        df,
        out,
        serialization_format="pickle",
        pip_requirements=["torch"],
    )


def register_demo_models(root: Path) -> Registry:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    df = make_frame(2000)
    y = make_target(df)
    forest = RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0, n_jobs=1).fit(df, y)
    register_sklearn(uri, FOREST, forest, df)
    hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(df, y)
    register_sklearn(uri, HGB, hgb, df)
    register_torch(uri, MLP, train_mlp(df, y), df)
    return Registry(uri=uri, data_dir=root, frame=df)


_SHARED: dict[str, Any] = {}
TENSOR = "sv-tensor"
TENSOR_WIDTH = 20


def tensor_model(uri: str) -> tuple[Any, np.ndarray]:
    """A logistic regression fitted on a float32 matrix, registered as ``sv-tensor`` (once per test
    process): MLflow infers a tensor signature (-1, 20), the shape V2 clients send as one input.
    Returns the fitted model and its training matrix."""
    if "tensor" in _SHARED:
        return _SHARED["tensor"]
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, TENSOR_WIDTH)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(x, y)
    prediction = model.predict_proba(x)[:, 1]
    options = _sklearn_options(model)
    _register(
        uri, TENSOR, "champion", mlflow.sklearn.log_model, model, x, prediction, reference=False, **options
    )
    _SHARED["tensor"] = (model, x)
    return model, x


def tensor_input(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    """The tensor model's one V2 input (``input-0``, FP32 ``[N, TENSOR_WIDTH]``) holding the rows of
    ``x`` (one row or several) as flat JSON ``data``; ``extra`` adds keys (``binary``) or overrides one."""
    rows = np.atleast_2d(x)
    return {
        "name": "input-0",
        "shape": list(rows.shape),
        "datatype": "FP32",
        "data": rows.reshape(-1).tolist(),
        **extra,
    }


def shared_registry(root: Path) -> Registry:
    """Register the models once per test process (unit and integration tests share them)."""
    if "registry" not in _SHARED:
        _SHARED["registry"] = register_demo_models(root)
    return _SHARED["registry"]
