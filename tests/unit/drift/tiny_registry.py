"""A throw-away SQLite MLflow registry with drift references (real MLflow client calls, no training).

Each registered version points at a run holding ``reference/reference.parquet`` (features plus a
``prediction`` column), exactly what training logs, so drift detection resolves and downloads it
through ``core.registry`` like in production.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pandas as pd

MODEL = "drift-demo"
BROKEN = "drift-broken"
REF_ROWS = 2000


@dataclass
class TinyRegistry:
    uri: str
    data_dir: Path
    references: dict[tuple[str, str], pd.DataFrame]

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.uri, "MLPLATFORM_DATA_DIR": str(self.data_dir)}


def make_frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Fraud-like features; ``shift`` moves amount/risk means and the foreign share."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n) * (1 + shift),
            "merchant_risk": np.clip(rng.random(n) + 0.5 * shift, 0, 2),
            "hour": rng.integers(0, 24, n).astype(np.int64),
            "is_foreign": (rng.random(n) < 0.2 + 0.4 * shift).astype(np.int64),
        }
    )
    df["prediction"] = 1 / (1 + np.exp(-(0.01 * df["amount"] + df["merchant_risk"] - 3)))
    return df


def register(client, exp_id: str, name: str, reference: pd.DataFrame, tmp: Path) -> str:  # noqa: ANN001
    run = client.create_run(exp_id)
    path = tmp / f"{uuid.uuid4().hex}" / "reference.parquet"
    path.parent.mkdir(parents=True)
    reference.to_parquet(path, index=False)
    client.log_artifact(run.info.run_id, str(path), "reference")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already registered: add a version
        pass
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


def make_registry(root: Path) -> TinyRegistry:
    from mlflow import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = client.create_experiment("drift-tests", artifact_location=(root / "artifacts").as_uri())
    refs: dict[tuple[str, str], pd.DataFrame] = {}
    v1 = make_frame(REF_ROWS, seed=1)
    refs[(MODEL, register(client, exp_id, MODEL, v1, root / "tmp"))] = v1
    # version 2 brings its own reference with an extra column
    v2 = make_frame(REF_ROWS, seed=2).assign(tx_count=lambda d: np.arange(len(d)) % 30)
    refs[(MODEL, register(client, exp_id, MODEL, v2, root / "tmp"))] = v2
    # a version whose reference artifact has vanished from the artifact store
    broken = client.get_model_version(BROKEN, register(client, exp_id, BROKEN, v1, root / "tmp"))
    artifacts = urlparse(client.get_run(broken.run_id).info.artifact_uri).path
    (Path(artifacts) / "reference" / "reference.parquet").unlink()
    return TinyRegistry(uri=uri, data_dir=root / "data", references=refs)


def records(frame: pd.DataFrame, model: str, version: str, prefix: str, start: int = 0) -> list[dict]:
    """InferenceRecord JSON bodies for every row of ``frame`` (one request per row)."""
    feats = [c for c in frame.columns if c != "prediction"]
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        out.append(
            {
                "request_id": f"{prefix}-{start + i}",
                "row_index": 0,
                "model": model,
                "version": version,
                "timestamp": 1_700_000_000.0 + i,
                "inputs": {c: row[c] for c in feats},
                "outputs": {"fraud_probability": row["prediction"]},
            }
        )
    return out


def drift_settings(reg: TinyRegistry, data_dir: Path, **kw: object):  # noqa: ANN201
    from mlplatform.drift.settings import DriftSettings

    base = {
        "data_dir": data_dir,
        "mlflow_tracking_uri": reg.uri,
        "auth_enabled": False,
        "window_size": 200,
        "retrain_mode": "off",
    }
    return DriftSettings(**{**base, **kw})


@asynccontextmanager
async def running_app(settings, **kw: object) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:  # noqa: ANN001
    from mlplatform.drift.app import create_app

    app = create_app(settings, **kw)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://drift") as client:
            yield client, app
