"""Register small real models in a real MLflow (SQLite + local artifacts) for the explain tests.

Each version is logged like training logs the demo models: a named-column signature, the reference
sample ``reference/reference.parquet`` (features + ``prediction``) in the run, the
``mlplatform.feature_service`` tag, and alias ``champion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.core.registry import TAG_FEATURE_SERVICE

FEATURES = ["amount", "hour", "txn_count_24h", "avg_amount_7d", "merchant_risk", "distance_km"]
FEATURE_SERVICE = "fraud_features"
TREE = "fraud-tree"
MLP = "fraud-mlp"
LINEAR = "fraud-linear"
BOOSTED = "fraud-boosted"


@dataclass
class Registry:
    tracking_uri: str
    frame: pd.DataFrame  # features + label


def make_data(rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 1.0, rows),
            "hour": rng.integers(0, 24, rows).astype(np.float64),
            "txn_count_24h": rng.poisson(3, rows).astype(np.float64),
            "avg_amount_7d": rng.lognormal(3.5, 0.5, rows),
            "merchant_risk": rng.beta(2, 8, rows),
            "distance_km": rng.exponential(20, rows),
        }
    )
    logit = (
        -3.0
        + 0.8 * np.log(df.amount / df.avg_amount_7d)
        + 4.0 * df.merchant_risk
        + 0.02 * df.distance_km
        + 0.15 * df.txn_count_24h
        + 0.5 * ((df.hour < 6).astype(float))
    )
    df["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return df


def _log(flavor: str, model: object, name: str, x: pd.DataFrame, preds: np.ndarray, tmp: Path) -> str:
    import mlflow
    from mlflow.models import infer_signature

    extra: dict[str, object] = {}
    if flavor == "pytorch":  # MLflow's default pt2 format: tensor signature and an input example
        example = x.to_numpy(np.float32)[:8]
        signature = infer_signature(example, preds[:8].reshape(-1, 1).astype(np.float32))
        extra = {"input_example": example, "pip_requirements": ["torch"]}
    else:
        signature = infer_signature(x, preds)
        extra = {"skops_trusted_types": ["sklearn.tree._tree.Tree"], "pip_requirements": ["scikit-learn"]}
    ref = x.copy()
    ref["prediction"] = preds
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name=name):
        ref_path = tmp / name / "reference.parquet"
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref.to_parquet(ref_path, index=False)
        mlflow.log_artifact(str(ref_path), artifact_path="reference")
        module = getattr(mlflow, flavor)
        info = module.log_model(model, name="model", signature=signature, registered_model_name=name, **extra)
        version = str(info.registered_model_version)
        client.set_model_version_tag(name, version, TAG_FEATURE_SERVICE, FEATURE_SERVICE)
        client.set_registered_model_alias(name, "champion", version)
    return version


def train_tree(df: pd.DataFrame, trees: int = 100, seed: int = 0):  # noqa: ANN201
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=trees, max_depth=8, random_state=seed, n_jobs=1)
    model.fit(df[FEATURES], df["label"])
    return model


def train_mlp(df: pd.DataFrame, seed: int = 0):  # noqa: ANN201
    import torch

    torch.manual_seed(seed)
    x = df[FEATURES].to_numpy(np.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6

    class Standardize(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("std", torch.from_numpy(std))

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return (t - self.mean) / self.std

    model = torch.nn.Sequential(
        Standardize(),
        torch.nn.Linear(len(FEATURES), 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 1),
        torch.nn.Sigmoid(),
    )
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(df["label"].to_numpy(np.float32)).reshape(-1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.BCELoss()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


def register_models(root: Path, rows: int = 2000) -> Registry:
    """Register a small forest, a torch MLP (MLflow's default pt2 format, tensor signature), a
    logistic regression (no specialised explainer) and a gradient-boosted classifier (log-odds
    trees) as ``champion``."""
    import mlflow
    import torch
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        exp = mlflow.create_experiment("explain-tests", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=exp)
        df = make_data(rows)
        x = df[FEATURES]
        ref = x.sample(n=min(400, len(x)), random_state=1).reset_index(drop=True)

        tree = train_tree(df, trees=20)
        _log("sklearn", tree, TREE, ref, tree.predict_proba(ref)[:, 1], root)

        mlp = train_mlp(df)
        with torch.no_grad():
            preds = mlp(torch.from_numpy(ref.to_numpy(np.float32))).numpy().ravel()
        _log("pytorch", mlp, MLP, ref, preds.astype(np.float64), root)

        linear = LogisticRegression(max_iter=500).fit(x, df["label"])
        _log("sklearn", linear, LINEAR, ref, linear.predict_proba(ref)[:, 1], root)

        boosted = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, df["label"])
        _log("sklearn", boosted, BOOSTED, ref, boosted.predict_proba(ref)[:, 1], root)
    finally:
        mlflow.set_tracking_uri(previous)
    return Registry(tracking_uri=uri, frame=df)


def register_new_tree_version(tracking_uri: str, df: pd.DataFrame, root: Path, seed: int) -> str:
    """Register another version of the tree model and move ``champion`` to it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        mlflow.set_experiment("explain-tests")
        x = df[FEATURES]
        ref = x.sample(n=400, random_state=2).reset_index(drop=True)
        tree = train_tree(df, trees=20, seed=seed)
        return _log("sklearn", tree, TREE, ref, tree.predict_proba(ref)[:, 1], root / f"v{seed}")
    finally:
        mlflow.set_tracking_uri(previous)
