"""Settings of the drift-detection service (env prefix ``DRIFT_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mlplatform.core.secrets import SecretsBackend
from mlplatform.core.settings import ServiceSettings
from mlplatform.drift.multivariate import MultivariateOptions
from mlplatform.quality.segments import SegmentBinsSettings


class DriftSettings(ServiceSettings, SegmentBinsSettings):
    """Configuration of drift detection; every field is read from ``DRIFT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DRIFT_", extra="ignore", populate_by_name=True)

    port: int = Field(8082, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (libpq form, e.g. postgresql://user:pass@host:5432/db) of the database "
        "every replica shares: records, windows, drift history and retraining episodes. Unset: an embedded "
        "SQLite file under the data directory (one process only). Read from the secrets backend under the "
        "same name (DRIFT_DATABASE_URL) when the Vault backend is on; never put it in a ConfigMap.",
    )
    database_required: bool = Field(
        False,
        description="Refuse to start when no database_url is set (the charts set it: several replicas on "
        "per-pod SQLite would each see a slice of the traffic).",
    )
    window_mode: str = Field(
        "count",
        pattern="^(count|time)$",
        description="How windows close: 'count' (every window_size records) or 'time' (every window_seconds).",
    )
    window_size: int = Field(
        1000,
        ge=10,
        description="Records per window in count mode (most recent records of one model version).",
    )
    window_seconds: float = Field(
        3600.0, gt=0, description="Window length in seconds in time mode (by ingestion time)."
    )
    min_window_records: int = Field(
        50, ge=1, description="A time window with fewer records than this is carried into the next window."
    )
    drift_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Dataset drift when at least this share of features drifted (Evidently's default 0.5).",
    )
    prediction_output: str | None = Field(
        None,
        description="Output name whose value is the model's prediction; default: the first numeric output.",
    )
    ignored_input_columns: str = Field(
        "user_id,merchant_id",
        description="Comma-separated input names that are not model features (entity keys serving adds "
        "for traceability); accepted in records and left out of drift and schema checks.",
    )
    max_records_per_request: int = Field(
        10_000, ge=1, description="Largest number of records accepted in one POST /v1/records."
    )
    max_labels_per_request: int = Field(
        10_000, ge=1, description="Largest number of labels accepted in one POST /v1/models/{model}/labels."
    )
    quality_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Score at or above which a prediction is positive: precision, recall, F1, prediction "
        "rates and the CBPE estimate use it.",
    )
    quality_min_labels: int = Field(
        50,
        ge=1,
        description="Labelled records a window needs before its realized performance is exported and judged.",
    )
    quality_interval_s: float = Field(
        5.0,
        gt=0,
        description="Seconds between looks for closed windows without a quality result (CBPE, segments).",
    )
    performance_metric: str = Field(
        "roc_auc",
        pattern="^(precision|recall|f1|roc_auc|pr_auc)$",
        description="Realized metric the performance alert and retraining trigger watch.",
    )
    performance_drop: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="A window whose realized performance_metric is below the version's labelled reference "
        "by more than this is a performance drop; retrain_after_windows consecutive drops start retraining "
        "(once per episode, at least retrain_cooldown_s apart), like dataset drift does.",
    )
    segments: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Segment columns per model, as JSON: {"fraud-rf": ["merchant_category", "hour"]}. Each must '
        "be an input column of the model: checked at start-up against the @champion's reference, a missing "
        "column fails start-up naming it.",
    )
    retrain_after_windows: int = Field(
        3, ge=1, description="Start retraining after dataset drift in this many consecutive windows."
    )
    retrain_cooldown_s: float = Field(
        3600.0,
        ge=0,
        description="Minimum seconds between two retraining triggers of the same model (besides the episode rule).",
    )
    retrain_mode: str = Field(
        "auto",
        pattern="^(auto|kubernetes|subprocess|off)$",
        description="'kubernetes' creates a batch/v1 Job, 'subprocess' runs retrain_command, 'off' only logs; "
        "'auto' picks kubernetes inside a cluster (KUBERNETES_SERVICE_HOST set), else subprocess.",
    )
    retrain_command: str = Field(
        "mlplatform retrain --promote auto",
        description="Command run locally (subprocess mode) to retrain; split like a shell would. The default "
        "retrains the drifted model as @challenger and moves @champion only if it beats it on recent data.",
    )
    retrain_namespace: str = Field("mlplatform", description="Namespace the retraining Job is created in.")
    retrain_job_template: Path | None = Field(
        None,
        description="YAML file with the batch/v1 Job manifest to create; default: a built-in training Job.",
    )
    retrain_image: str = Field(
        "ghcr.io/mlplatform/mlplatform:0.1.0",
        description="Container image of the built-in training Job template.",
    )
    kube_api_url: str | None = Field(
        None,
        description="Kubernetes API server URL; default: in-cluster config (service account token and CA).",
    )
    kube_token: str | None = Field(
        None, description="Bearer token for kube_api_url (only used together with kube_api_url)."
    )
    report_max_rows: int = Field(
        5000, ge=100, description="Rows of reference and current data the HTML report renders at most."
    )
    multivariate: MultivariateOptions = Field(
        default_factory=MultivariateOptions,
        description="Multivariate drift (MMD permutation test, domain classifier) on every window, as JSON, "
        'e.g. {"methods": ["mmd"], "permutations": 200}; {"methods": []} turns it off. Fields: methods, '
        "max_rows, permutations, p_value, classifier, classifier_threshold, quantile, seed.",
    )
    multivariate_models: dict[str, MultivariateOptions] = Field(
        default_factory=dict,
        description="Per-model multivariate settings replacing `multivariate` for those models, as JSON: "
        '{"fraud-detector": {"methods": ["mmd", "domain_classifier"], "classifier": "gradient_boosting"}}.',
    )

    def resolved_database_url(self, secrets: SecretsBackend) -> str | None:
        """``database_url`` if set, else the secret ``DRIFT_DATABASE_URL`` (Vault or environment); a
        RuntimeError naming the setting when neither is set and ``database_required`` is true."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        url = secrets.get("DRIFT_DATABASE_URL")
        if url is None and self.database_required:
            raise RuntimeError(
                f"DRIFT_DATABASE_URL is not set (neither in the environment nor in the {type(secrets).__name__}) "
                "and DRIFT_DATABASE_REQUIRED is true"
            )
        return url

    def ignored_columns(self) -> frozenset[str]:
        """The parsed ``ignored_input_columns``."""
        return frozenset(c.strip() for c in self.ignored_input_columns.split(",") if c.strip())

    def drift_dir(self) -> Path:
        """Where the SQLite database, cached references and reports live."""
        return self.data_dir / "drift"
