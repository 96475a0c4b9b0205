"""End-to-end demo training: generate data, build features, train, evaluate, log and register.

``run_training(TrainSettings(...))`` is what ``mlplatform train`` and ``mlplatform up`` call.
Both models take the columns of :data:`mlplatform.features.contract.MODEL_FEATURES` (int64
"long" and float64 "double") and are registered with alias ``champion``, the feature service tag
and the reference sample artifact (training features plus a ``prediction`` column).

The steps are reusable one model at a time (``mlplatform retrain`` in
:mod:`mlplatform.training.retrain` uses them): :func:`load_transactions`, :func:`prepare_data`
(features, the time split, the reference sample) and :func:`train_and_register`.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.core.registry import (
    DEFAULT_ALIAS,
    REFERENCE_ARTIFACT_PATH,
    TAG_FEATURE_SERVICE,
    TAG_REFERENCE_ARTIFACT,
    mlflow_client,
)
from mlplatform.core.settings import default_data_dir
from mlplatform.features import contract as feat
from mlplatform.features.repo import FEATURE_SERVICE_VERSION
from mlplatform.training import data as data_mod

#: Version tag holding the version of the feature service definition the model was trained on.
TAG_FEATURE_SERVICE_VERSION = "mlplatform.feature_service_version"
#: Version tag holding the comma-separated model input columns, in order.
TAG_MODEL_FEATURES = "mlplatform.model_features"


class TrainSettings(BaseSettings):
    """Settings of the demo training pipeline (env prefix ``TRAIN_``)."""

    model_config = SettingsConfigDict(env_prefix="TRAIN_", extra="ignore", populate_by_name=True)

    rows: int = Field(200_000, ge=1000, description="Number of generated transactions.")
    seed: int = Field(7, description="Random seed: the same seed gives the same data and models.")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        validation_alias=AliasChoices("MLPLATFORM_DATA_DIR", "data_dir"),
        description="Data directory: raw transactions, feature sources and the embedded MLflow live here.",
    )
    tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "tracking_uri"),
        description="MLflow tracking/registry URI. Default: SQLite database under data_dir/mlflow.",
    )
    experiment: str = Field("fraud-detection", description="MLflow experiment the training runs go to.")
    sklearn_model_name: str = Field("fraud-detector", description="Registered name of the random forest.")
    mlp_model_name: str = Field("fraud-detector-mlp", description="Registered name of the torch MLP.")
    feature_service: str = Field(
        "fraud_detection_v1", description="Feature service the models read (tag mlplatform.feature_service)."
    )
    feature_source: Literal["feast", "pandas"] = Field(
        "feast",
        description="How training rows get their history features: Feast point-in-time retrieval for the "
        "feature service (default) or the equivalent in-memory pandas join.",
    )
    materialize: bool = Field(
        True, description="After training, load the latest feature values into the embedded online store."
    )
    feature_database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("FEATURES_DATABASE_URL", "feature_database_url"),
        description="PostgreSQL URL of the feature store's registry and offline store (the feature-store "
        "service's FEATURES_DATABASE_URL): the snapshot sources become tables there and the training rows "
        "come from its PostgreSQL offline store. Unset: parquet and the file registry under data_dir.",
    )
    write_sources: bool = Field(
        True,
        description="Write the entity snapshots as the feature store's batch sources before training (the "
        "demo bootstrap). False, with feature_database_url set: train on the shared offline tables as they "
        "are, rows pushed to them included (the retraining Job); without a database the sources are local "
        "files and are always written.",
    )
    n_estimators: int = Field(100, ge=1, description="Trees in the random forest.")
    max_depth: int = Field(12, ge=1, description="Maximum depth of each tree.")
    n_jobs: int = Field(2, ge=1, description="CPU threads for forest training.")
    epochs: int = Field(8, ge=1, description="Training epochs of the MLP.")
    batch_size: int = Field(512, ge=8, description="Mini-batch size of the MLP.")
    learning_rate: float = Field(2e-3, gt=0, description="Adam learning rate of the MLP.")
    test_fraction: float = Field(
        0.2, gt=0, lt=0.9, description="Latest fraction of transactions (by time) held out for evaluation."
    )
    reference_rows: int = Field(
        5000, ge=100, description="Rows of the reference sample logged with each model (drift baseline)."
    )

    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to SQLite under the data directory (same as the services)."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    def artifact_root(self) -> Path:
        """Local artifact folder for the embedded MLflow."""
        return (self.data_dir / "mlflow" / "artifacts").resolve()


class _Progress:
    """Rich progress bars when asked for, silence otherwise."""

    def __init__(self, enabled: bool) -> None:
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
            )

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int) -> Any:
        return self._progress.add_task(description, total=total) if self._progress is not None else None

    def advance(self, task: Any, n: int = 1) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, n)


@contextlib.contextmanager
def mlflow_uri(uri: str) -> Iterator[None]:
    """Point the mlflow fluent API at ``uri`` for the duration, then restore the previous URIs."""
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils

    prev_tracking = tracking_utils._tracking_uri
    prev_registry = mlflow.get_registry_uri() if prev_tracking else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(prev_tracking)
        mlflow.set_registry_uri(prev_registry)


def _has_champion(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, DEFAULT_ALIAS).version)
    except MlflowException:
        return None


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The model version ``name@alias``, or ``None`` when the model or the alias does not exist.

    Any other registry failure (server unreachable, permission denied) is raised, not read as
    "no such alias".
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # MLflow 3: RESOURCE_DOES_NOT_EXIST for an unknown model, INVALID_PARAMETER_VALUE for an
        # unknown alias of a known model.
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def experiment_id(client: Any, settings: TrainSettings, uri: str) -> str:
    """The id of the training experiment, created (with a local artifact root for SQLite) if missing."""
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        root = settings.artifact_root()
        root.mkdir(parents=True, exist_ok=True)
        location = root.as_uri()
    return client.create_experiment(settings.experiment, artifact_location=location)


def time_split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by time: the latest ``test_fraction`` of transactions is the held-out set."""
    frame = frame.sort_values(feat.TIMESTAMP_COLUMN, kind="stable").reset_index(drop=True)
    cut = int(len(frame) * (1.0 - test_fraction))
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


def model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The model input columns of ``frame`` in order, with their contract dtypes."""
    return pd.DataFrame({c: frame[c].astype(feat.feature_dtype(c)) for c in feat.MODEL_FEATURES})


def held_out_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Held-out metrics of fraud probabilities ``p`` for labels ``y``: ROC AUC, PR AUC, fraud rate."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "test_fraud_rate": float(np.mean(y)),
    }


#: Where the labelled reference (held-out features, ``prediction`` and ``label``) is logged: drift
#: detection calibrates its CBPE performance estimate on it and judges realized performance against it.
QUALITY_REFERENCE_ARTIFACT_PATH = "quality/reference.parquet"
#: Held-out rows logged in the labelled reference at most (the latest ones).
QUALITY_REFERENCE_MAX_ROWS = 50_000


def quality_reference(data: TrainingData, p_test: np.ndarray) -> pd.DataFrame:
    """The labelled reference of a trained version: its held-out inputs, scores and labels."""
    frame = data.x_test.assign(
        prediction=np.asarray(p_test, dtype=np.float64), label=data.y_test.astype(np.int64)
    )
    return frame.tail(QUALITY_REFERENCE_MAX_ROWS).reset_index(drop=True)


def _log_and_register(
    client: Any,
    settings: TrainSettings,
    *,
    experiment_id: str,
    name: str,
    flavor: str,
    model: Any,
    params: dict[str, Any],
    metrics: dict[str, float],
    reference: pd.DataFrame,
    example: pd.DataFrame,
    example_output: np.ndarray,
    alias: str = DEFAULT_ALIAS,
    quality_reference: pd.DataFrame | None = None,
) -> dict[str, Any]:
    import mlflow
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "integer columns cannot hold NaN": ours never do
        signature = infer_signature(example, example_output)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-{int(time.time())}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                TAG_FEATURE_SERVICE: settings.feature_service,
                TAG_FEATURE_SERVICE_VERSION: FEATURE_SERVICE_VERSION,
                "mlplatform.model": name,
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(REFERENCE_ARTIFACT_PATH).name
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT_PATH).parent))
            if quality_reference is not None:
                # the labelled reference drift detection's CBPE calibrates on (held-out rows)
                qpath = Path(tmp) / "quality" / Path(QUALITY_REFERENCE_ARTIFACT_PATH).name
                qpath.parent.mkdir()
                quality_reference.to_parquet(qpath, index=False)
                mlflow.log_artifact(
                    str(qpath), artifact_path=str(Path(QUALITY_REFERENCE_ARTIFACT_PATH).parent)
                )
        logged = {
            "name": "model",
            "signature": signature,
            "input_example": example,
            "registered_model_name": name,
        }
        if flavor == "sklearn":
            import sklearn

            info = mlflow.sklearn.log_model(
                model,
                **logged,
                pyfunc_predict_fn="predict_proba",
                skops_trusted_types=["sklearn.tree._tree.Tree"],
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            )
        else:
            import torch

            info = mlflow.pytorch.log_model(
                model,
                **logged,
                serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
        version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, TAG_FEATURE_SERVICE, settings.feature_service)
    client.set_model_version_tag(name, version, TAG_FEATURE_SERVICE_VERSION, FEATURE_SERVICE_VERSION)
    client.set_model_version_tag(name, version, TAG_REFERENCE_ARTIFACT, REFERENCE_ARTIFACT_PATH)
    client.set_model_version_tag(name, version, TAG_MODEL_FEATURES, ",".join(feat.MODEL_FEATURES))
    client.set_registered_model_alias(name, alias, version)
    return {"version": version, "run_id": run.info.run_id, **metrics}


def build_training_frame(settings: TrainSettings, transactions: pd.DataFrame) -> pd.DataFrame:
    """Every transaction with its point-in-time correct features.

    Writes the entity snapshots as the feature store's batch sources (parquet, or tables in the
    feature store's PostgreSQL when ``feature_database_url`` is set). With ``feature_source=feast``
    (default) it applies the Feast repository under ``data_dir``, builds the rows with Feast's
    point-in-time historical retrieval for the feature service, and materialises the latest values
    into the embedded online store; with ``pandas`` it joins in memory (same values).
    """
    from mlplatform.features.database import DatabaseURL
    from mlplatform.features.store import (
        FeatureRepoPaths,
        apply_definitions,
        historical_training_frame,
        open_store,
        write_sources,
    )

    snapshots = feat.entity_snapshots(transactions)
    paths = FeatureRepoPaths(settings.data_dir)
    database = DatabaseURL.parse(settings.feature_database_url) if settings.feature_database_url else None
    if settings.write_sources or database is None:
        write_sources(snapshots, paths, database)
    if settings.feature_source == "pandas":
        return feat.point_in_time_join(transactions, snapshots)
    store = open_store(paths, database=database)
    apply_definitions(store, paths)
    frame = historical_training_frame(store, transactions)
    if settings.materialize:
        start = transactions[feat.TIMESTAMP_COLUMN].min().to_pydatetime() - timedelta(days=31)
        end = transactions[feat.TIMESTAMP_COLUMN].max().to_pydatetime() + timedelta(days=1)
        store.materialize(start_date=start, end_date=end)
    return frame


@dataclass(frozen=True)
class TrainingData:
    """The rows one training run uses: time split, model inputs, labels and the reference sample.

    ``train`` and ``test`` are the full feature frames (with ``event_timestamp`` and the label);
    ``test`` is the latest ``test_fraction`` of transactions by event time, never trained on.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_test: pd.DataFrame
    y_test: np.ndarray
    x_ref: pd.DataFrame
    example: pd.DataFrame

    def split_params(self) -> dict[str, Any]:
        """Run params naming the rows trained on and the held-out window (event-time bounds)."""
        ts = feat.TIMESTAMP_COLUMN
        return {
            "train_rows": len(self.train),
            "train_start": self.train[ts].min().isoformat(),
            "train_end": self.train[ts].max().isoformat(),
            "test_rows": len(self.test),
            "test_start": self.test[ts].min().isoformat(),
            "test_end": self.test[ts].max().isoformat(),
        }


def load_transactions(settings: TrainSettings) -> pd.DataFrame:
    """The current training data: ``<data_dir>/raw/transactions.parquet``, generated if it is missing."""
    path = data_mod.raw_path(settings.data_dir)
    if path.is_file():
        return pd.read_parquet(path)
    transactions = data_mod.generate_transactions(settings.rows, settings.seed)
    data_mod.write_transactions(transactions, settings.data_dir)
    return transactions


def prepare_data(settings: TrainSettings, transactions: pd.DataFrame) -> TrainingData:
    """Features for every transaction, split by time (:func:`time_split`), plus the reference sample."""
    frame = build_training_frame(settings, transactions)
    train, test = time_split(frame, settings.test_fraction)
    x_train, x_test = model_input(train), model_input(test)
    ref_idx = np.random.default_rng(settings.seed).choice(
        len(x_train), min(settings.reference_rows, len(x_train)), replace=False
    )
    return TrainingData(
        train=train,
        test=test,
        x_train=x_train,
        y_train=train[feat.LABEL_COLUMN].to_numpy(),
        x_test=x_test,
        y_test=test[feat.LABEL_COLUMN].to_numpy(),
        x_ref=x_train.iloc[np.sort(ref_idx)].reset_index(drop=True),
        example=x_test.head(5).reset_index(drop=True),
    )


def model_flavor(settings: TrainSettings, name: str) -> Literal["sklearn", "pytorch"] | None:
    """Which demo model ``name`` is: the random forest (``sklearn``), the MLP (``pytorch``), or neither."""
    if name == settings.sklearn_model_name:
        return "sklearn"
    if name == settings.mlp_model_name:
        return "pytorch"
    return None


def train_and_register(
    client: Any,
    settings: TrainSettings,
    data: TrainingData,
    name: str,
    *,
    experiment_id: str,
    alias: str = DEFAULT_ALIAS,
    on_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train demo model ``name`` on ``data.train``, evaluate on ``data.test``, log, register, set ``alias``.

    Needs the mlflow fluent API pointed at the registry (:func:`mlflow_uri`). ``on_step`` is called
    after the forest is fitted, after each MLP epoch and after registering. Returns the version,
    run id and held-out metrics.
    """
    import mlflow.pytorch  # noqa: F401 - registers the flavour modules used below
    import mlflow.sklearn  # noqa: F401

    from mlplatform.training.models import mlp_predict, train_forest, train_mlp

    step = on_step or (lambda: None)
    flavor = model_flavor(settings, name)
    common = {
        "rows": settings.rows,
        "seed": settings.seed,
        "feature_service": settings.feature_service,
        "feature_source": settings.feature_source,
        **data.split_params(),
    }
    if flavor == "sklearn":
        model: Any = train_forest(
            data.x_train,
            data.y_train,
            n_estimators=settings.n_estimators,
            max_depth=settings.max_depth,
            seed=settings.seed,
            n_jobs=settings.n_jobs,
        )
        step()

        def predict(x: pd.DataFrame) -> np.ndarray:
            return model.predict_proba(x)[:, 1]

        params = {**common, "n_estimators": settings.n_estimators, "max_depth": settings.max_depth}
        example_output = model.predict_proba(data.example)
    elif flavor == "pytorch":
        model = train_mlp(
            data.x_train,
            data.y_train,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            seed=settings.seed,
            on_epoch=lambda _e, _loss: step(),
        )

        def predict(x: pd.DataFrame) -> np.ndarray:
            return mlp_predict(model, x)

        params = {
            **common,
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
        }
        example_output = predict(data.example).reshape(-1, 1).astype(np.float32)
    else:
        raise ValueError(
            f"model {name!r} is not one the training pipeline trains "
            f"({settings.sklearn_model_name}, {settings.mlp_model_name})"
        )
    p_test = predict(data.x_test)
    result = _log_and_register(
        client,
        settings,
        experiment_id=experiment_id,
        name=name,
        flavor=flavor,
        model=model,
        params=params,
        metrics=held_out_metrics(data.y_test, p_test),
        reference=data.x_ref.assign(prediction=predict(data.x_ref)),
        quality_reference=quality_reference(data, p_test),
        example=data.example,
        example_output=example_output,
        alias=alias,
    )
    step()
    return result


def prepare_registry(settings: TrainSettings) -> tuple[str, Any]:
    """The tracking URI (its SQLite folder created) and a client for it."""
    uri = settings.resolved_tracking_uri()
    if uri.startswith("sqlite:"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri, mlflow_client(uri)


def run_training(settings: TrainSettings, force: bool = False, progress: bool = False) -> dict[str, Any]:
    """Generate, train, evaluate and register both demo models; skip if both have a champion already.

    Returns a summary: ``skipped``, ``tracking_uri``, ``data_dir`` and per model its ``version``,
    ``run_id`` and held-out ``roc_auc`` / ``pr_auc``.
    """
    uri, client = prepare_registry(settings)
    names = (settings.sklearn_model_name, settings.mlp_model_name)
    summary: dict[str, Any] = {"tracking_uri": uri, "data_dir": str(settings.data_dir), "models": {}}
    if not force:
        existing = {n: _has_champion(client, n) for n in names}
        if all(existing.values()):
            summary["skipped"] = True
            summary["models"] = {n: {"version": v} for n, v in existing.items()}
            return summary

    with _Progress(progress) as bars, mlflow_uri(uri):
        t_data = bars.task("generating transactions", 3)
        transactions = data_mod.generate_transactions(settings.rows, settings.seed)
        bars.advance(t_data)
        data_mod.write_transactions(transactions, settings.data_dir)
        bars.advance(t_data)
        data = prepare_data(settings, transactions)
        bars.advance(t_data)

        t_train = bars.task("training and registering", 1 + settings.epochs + len(names))
        exp_id = experiment_id(client, settings, uri)
        for name in names:
            summary["models"][name] = train_and_register(
                client,
                settings,
                data,
                name,
                experiment_id=exp_id,
                alias=DEFAULT_ALIAS,
                on_step=lambda: bars.advance(t_train),
            )
    summary["skipped"] = False
    summary["fraud_rate"] = float(transactions[feat.LABEL_COLUMN].mean())
    return summary
