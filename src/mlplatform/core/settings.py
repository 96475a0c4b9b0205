"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own env prefix (``SERVING_``,
``FEATURES_``, ``DRIFT_``, ``EXPLAIN_``). A few platform-wide variables are read under their
standard names regardless of prefix (``MLFLOW_TRACKING_URI``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``MLPLATFORM_DATA_DIR``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.core.registry import DEMO_MODELS, ModelRef, parse_model_list


def default_data_dir() -> Path:
    """The data directory used when none is configured: ``./data`` under the working directory."""
    return Path.cwd() / "data"


class ModelListSettings(BaseSettings):
    """The registered models a service loads: model-serving serves them, explainability explains them
    (``SERVING_MODELS``, ``EXPLAIN_MODELS``), both resolved the same way."""

    models: str = Field(
        ",".join(DEMO_MODELS),
        description=(
            "Comma-separated registered models: 'name' (alias champion), 'name@alias' or 'name/version'. "
            "Each name may appear once. Keep EXPLAIN_MODELS equal to SERVING_MODELS so the explained "
            "version is the served one."
        ),
    )

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: str) -> str:
        parse_model_list(value)
        return value

    def model_refs(self) -> list[ModelRef]:
        """The parsed ``models`` list."""
        return parse_model_list(self.models)


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set ``model_config`` with their env prefix."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = Field("0.0.0.0", description="Interface the HTTP server binds to.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    log_level: str = Field(
        "INFO", description="Log level of the JSON logs on stdout (DEBUG, INFO, WARNING, ERROR)."
    )
    environment: str = Field(
        "local",
        validation_alias=AliasChoices("MLPLATFORM_ENV", "environment"),
        description="Deployment environment: local, dev, staging or prod. prod turns on fail-fast checks.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        validation_alias=AliasChoices("MLPLATFORM_DATA_DIR", "data_dir"),
        description="Directory for embedded state: MLflow SQLite DB and artifacts, Feast repo, spools.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
        description="MLflow tracking/registry URI. Default: SQLite database under data_dir.",
    )
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint"),
        description="OTLP/HTTP collector endpoint for traces. Tracing export is off when unset.",
    )
    traces_sampler: str = Field(
        "parentbased_always_on",
        validation_alias=AliasChoices("OTEL_TRACES_SAMPLER", "traces_sampler"),
        description="Which requests are traced (OpenTelemetry's standard variable): always_on, always_off, "
        "traceidratio, or parentbased_ plus one of those (follow the caller's sampled flag).",
    )
    traces_sampler_arg: float | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_TRACES_SAMPLER_ARG", "traces_sampler_arg"),
        description="Share of new traces kept by the *traceidratio samplers (0..1; default 1).",
    )
    slow_request_ms: float = Field(
        500.0,
        gt=0,
        description="Requests slower than this are written to the access log (level warning) even when "
        "LOG_LEVEL is above INFO.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest accepted request body in bytes; larger bodies get 413."
    )
    auth_enabled: bool = Field(
        True,
        description="Require an API key on client-facing endpoints. Turning it off logs a warning at start-up.",
    )
    api_keys_secret: str = Field(
        "MLPLATFORM_API_KEYS",
        description="Name of the secret holding API keys: comma-separated 'sha256hex:scope1|scope2' entries.",
    )
    secrets_backend: str = Field(
        "env",
        description="Where secrets come from: 'env' (environment variables) or 'vault' (HashiCorp Vault).",
    )
    shutdown_delay_s: float = Field(
        0.0,
        ge=0,
        le=120,
        description="On SIGTERM, answer readiness with 503 and keep serving this many seconds before "
        "shutting down, so load balancers and kube-proxy stop routing here first (the charts set it; "
        "0: shut down at once).",
    )

    @model_validator(mode="after")
    def _check_sampler(self) -> ServiceSettings:
        from mlplatform.core.tracing import build_sampler

        build_sampler(self.traces_sampler, self.traces_sampler_arg)  # raises naming the variable
        return self

    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to SQLite under the data directory."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    def artifact_root(self) -> Path:
        """Local artifact folder for the embedded MLflow."""
        return (self.data_dir / "mlflow" / "artifacts").resolve()
