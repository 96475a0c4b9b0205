"""A model version with a labelled reference (``quality/reference.parquet``), like training logs one.

The population: the tiny registry's fraud-like features (:func:`tests.unit.drift.tiny_registry.make_frame`);
the model's score is ``sigmoid(s - 3)`` with ``s = 0.01 amount + 3 merchant_risk`` and the true fraud
probability ``sigmoid(1.6 (s - 3.2))``, so the scores need calibration (CBPE's isotonic step has work
to do). Labels are drawn from the true probability.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from tests.unit.drift.tiny_registry import make_frame, register

QMODEL = "quality-demo"
FEATURES = ["amount", "merchant_risk", "hour", "is_foreign"]


def _s(frame: pd.DataFrame) -> pd.Series:
    return 0.01 * frame["amount"] + 3 * frame["merchant_risk"]


def score(frame: pd.DataFrame) -> np.ndarray:
    return (1 / (1 + np.exp(-(_s(frame) - 3)))).to_numpy()


def true_probability(frame: pd.DataFrame) -> np.ndarray:
    return (1 / (1 + np.exp(-1.6 * (_s(frame) - 3.2)))).to_numpy()


def population(n: int, seed: int) -> pd.DataFrame:
    """``n`` rows of inputs with the model's score as ``prediction``."""
    frame = make_frame(n, seed=seed)
    frame["prediction"] = score(frame)
    return frame


def labels(frame: pd.DataFrame, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(len(frame)) < true_probability(frame)).astype(np.int64)


def joint_shift(frame: pd.DataFrame) -> pd.DataFrame:
    """The same values in every column (identical marginals), re-paired so that high amounts meet low
    merchant risk: scores crowd the uncertain middle. Input drift per column cannot see it."""
    out = frame.copy()
    order = np.argsort(out["amount"].to_numpy())
    risk = np.sort(out["merchant_risk"].to_numpy())[::-1]
    values = out["merchant_risk"].to_numpy().copy()
    values[order] = risk
    out["merchant_risk"] = values
    out["prediction"] = score(out)
    return out


def add_quality_model(registry_uri: str, root: Path, *, with_labels: bool = True) -> str:
    """Register QMODEL (a version with drift reference and, if asked, labelled reference)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    exp = client.get_experiment_by_name("quality-tests")
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment("quality-tests", artifact_location=(root / "qa").as_uri())
    )
    reference = population(2000, seed=101)
    version = register(client, exp_id, QMODEL, reference, root / "tmp")
    if with_labels:
        held_out = population(4000, seed=102)
        held_out["label"] = labels(held_out, 103)
        path = root / uuid.uuid4().hex / "reference.parquet"
        path.parent.mkdir(parents=True)
        held_out.to_parquet(path, index=False)
        run_id = client.get_model_version(QMODEL, version).run_id
        client.log_artifact(run_id, str(path), "quality")
    return version
