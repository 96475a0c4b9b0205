"""``mlplatform batch-score`` on the demo registry: Feast point-in-time features (checked against the
pandas point-in-time join), the registered model's scores, parquet out, rows logged to a real
drift-detection process as source "batch"; bad input exits 2 naming the problem."""

from __future__ import annotations

import json

import httpx
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlplatform.cli import app
from mlplatform.features import contract as feat
from mlplatform.training.data import raw_path
from mlplatform.training.pipeline import mlflow_uri
from tests.procs import running_service

MODEL = "fraud-detector"
ROWS = 300


@pytest.fixture(scope="module")
def transactions(demo_registry) -> pd.DataFrame:
    return pd.read_parquet(raw_path(demo_registry.data_dir))


def _entities(transactions: pd.DataFrame) -> pd.DataFrame:
    picked = transactions.sample(ROWS, random_state=3).sort_values(feat.TIMESTAMP_COLUMN)
    return picked[["transaction_id", *feat.ENTITY_KEYS, feat.TIMESTAMP_COLUMN, *feat.REQUEST_FEATURES]]


def test_batch_score_features_predictions_and_drift_rows(demo_registry, transactions, tmp_path):
    entities = _entities(transactions)
    src, out_arg = tmp_path / "entities.parquet", tmp_path / "out" / "scores-{run}.parquet"
    entities.to_parquet(src, index=False)
    window = 200
    drift_env = {
        **demo_registry.env(),
        "MLPLATFORM_DATA_DIR": str(tmp_path / "drift-data"),
        "DRIFT_AUTH_ENABLED": "false",
        "DRIFT_WINDOW_SIZE": str(window),
        "DRIFT_MULTIVARIATE": '{"methods": []}',
    }
    with running_service("drift-detection", drift_env, tmp_path / "logs") as drift:
        env = {**demo_registry.env(), "BATCH_DRIFT_URL": drift.url}
        run = CliRunner().invoke(
            app,
            ["batch-score", "--model", MODEL, "--entities", str(src), "--out", str(out_arg)],
            env=env,
        )
        assert run.exit_code == 0, run.output
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        status = httpx.get(f"{drift.url}/v1/models/{MODEL}/drift", timeout=10).json()
    version = summary["version"]
    assert summary["rows"] == ROWS and summary["drift_records"] == ROWS
    (out,) = (tmp_path / "out").glob("scores-*.parquet")  # {run}: the run's UTC start
    assert out.name == f"scores-{pd.Timestamp(summary['scored_at']).strftime('%Y%m%dT%H%M%SZ')}.parquet"
    assert str(out) == summary["out"]

    scored = pd.read_parquet(out)
    assert len(scored) == ROWS
    assert scored["transaction_id"].tolist() == entities["transaction_id"].tolist()
    assert set(scored["model"]) == {MODEL} and set(scored["model_version"]) == {version}
    assert scored["scored_at"].nunique() == 1 and scored["prediction_id"].nunique() == 1
    # features: Feast's point-in-time retrieval equals the in-memory point-in-time join of training
    expected = feat.point_in_time_join(
        transactions[transactions["transaction_id"].isin(entities["transaction_id"])],
        feat.entity_snapshots(transactions),
    ).set_index("transaction_id")
    got = scored.set_index("transaction_id")
    for col in feat.MODEL_FEATURES:
        np.testing.assert_allclose(
            got[col].to_numpy(dtype=float), expected.loc[got.index, col].to_numpy(dtype=float), rtol=1e-9
        )
    # scores: the registered version's own predictions on those features
    with mlflow_uri(demo_registry.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    x = expected.loc[got.index, list(feat.MODEL_FEATURES)]
    want = np.asarray(model.predict(x), dtype=float)
    want = want[:, -1] if want.ndim == 2 else want
    np.testing.assert_allclose(scored["fraud_probability"].to_numpy(), want, rtol=1e-9)
    # drift detection: batch rows in their own stream, one window closed, the rest open
    batch_stream = f"{version}@batch"
    assert status["open_records"] == {batch_stream: ROWS - window}
    assert status["window"]["version"] == batch_stream and status["window"]["n_records"] == window


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        ("drop_amount", [], "missing columns ['amount']"),
        ("text_amount", [], "column amount row 1: not a number"),
        (None, ["--version", "1", "--alias", "champion"], "exclude each other"),
        (None, ["--version", "x1"], "expected a positive integer"),
        ("csv", ["--model", "no-such-model"], "no-such-model"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(demo_registry, transactions, tmp_path, change, args, message):
    entities = _entities(transactions).head(5)
    src = tmp_path / "entities.parquet"
    if change == "drop_amount":
        entities = entities.drop(columns=["amount"])
    if change == "text_amount":
        entities = entities.astype({"amount": object})
        entities.iloc[1, entities.columns.get_loc("amount")] = "lots"
    if change in ("csv", "text_amount"):
        src = tmp_path / "entities.csv"
        entities.to_csv(src, index=False)
    else:
        entities.to_parquet(src, index=False)
    base = ["batch-score", "--model", MODEL, "--entities", str(src), "--out", str(tmp_path / "o.parquet")]
    run = CliRunner().invoke(app, base + args, env=demo_registry.env())
    assert run.exit_code == 2, run.output
    assert message in run.output
    assert not (tmp_path / "o.parquet").exists()
