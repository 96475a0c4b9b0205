"""Settings of the model-serving service (env prefix ``SERVING_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from mlplatform.core.settings import ModelListSettings, ServiceSettings
from mlplatform.features.client import FeatureStoreClientSettings

#: The accepted values of the settings that take one of a few words.
CHOICES: dict[str | None, tuple[str, ...]] = {
    "runtime": ("auto", "native", "onnx"),
    "torch_device": ("auto", "cpu", "cuda"),
}


class ServingSettings(ServiceSettings, ModelListSettings, FeatureStoreClientSettings):
    """Configuration of model-serving. Every field is read from ``SERVING_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore", populate_by_name=True)

    port: int = Field(8080, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    grpc_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description=(
            "TCP port of the Open Inference Protocol gRPC service (inference.GRPCInferenceService), bound "
            "on the same interface as HTTP; 0 turns gRPC off. Same models, API keys (metadata 'x-api-key' "
            "or 'authorization: Bearer'), metrics and payload logging as REST."
        ),
    )
    grpc_shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        le=120,
        description=(
            "On shutdown, how long in-flight gRPC calls may finish after the HTTP server has drained "
            "(new calls are refused); keep shutdown_delay_s plus this below terminationGracePeriodSeconds."
        ),
    )
    runtime: str = Field(
        "auto",
        description=(
            "Runtime choice: 'auto' (ONNX Runtime when conversion succeeds and matches the native model "
            "within onnx_tolerance, else native), 'native' (never convert) or 'onnx' (same as auto; "
            "native is still used, with the reason logged, when conversion fails)."
        ),
    )
    onnx_tolerance: float = Field(
        1e-4,
        gt=0,
        description="Largest absolute difference allowed between ONNX and native outputs on the check rows.",
    )
    onnx_threads: int = Field(
        1, ge=1, description="ONNX Runtime intra-op threads per model (1 is fastest for single rows)."
    )
    torch_device: str = Field(
        "auto", description="Torch device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda'."
    )
    max_batch_size: int = Field(
        64, ge=1, le=4096, description="Most requests the adaptive batcher merges into one model call."
    )
    max_batch_wait_ms: float = Field(
        1.0,
        ge=0,
        le=1000,
        description=(
            "Longest a queued request waits for more to fill a batch. Only applies while the model is "
            "busy; an idle model runs a request at once."
        ),
    )
    max_rows_per_request: int = Field(
        10_000, ge=1, description="Most rows one inference request may carry (more gets 422)."
    )
    allow_nan: bool = Field(
        False, description="Accept NaN and +/-Inf in float inputs (they are rejected with 422 when off)."
    )
    poll_interval_s: float = Field(
        30.0,
        ge=0,
        description="Seconds between registry polls for alias changes (0 turns the poller off).",
    )
    load_retry_initial_s: float = Field(
        1.0, gt=0, description="First back-off when the registry is unreachable at start-up."
    )
    load_retry_max_s: float = Field(
        30.0, gt=0, description="Longest back-off between start-up attempts to reach the registry."
    )
    model_cache_dir: Path | None = Field(
        None, description="Where downloaded model artifacts are kept. Default: <data_dir>/serving/models."
    )
    feature_fallback_defaults: bool = Field(
        False,
        description=(
            "When the feature store is down, predict with default feature values (the training "
            "reference sample medians) instead of answering 503. Off by default."
        ),
    )
    drift_url: str | None = Field(
        None, description="Drift-detection base URL. When set, inference payloads are logged to it."
    )
    drift_api_key_secret: str = Field(
        "SERVING_DRIFT_API_KEY",
        description="Name of the secret holding the API key (drift:write scope) sent to drift detection.",
    )
    payload_sample_rate: float = Field(
        1.0, ge=0, le=1, description="Fraction of inference rows logged for drift detection."
    )
    payload_batch_size: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="Payload rows sent to drift detection in one POST (drift detection takes up to 10,000).",
    )
    payload_flush_interval_s: float = Field(
        2.0, gt=0, description="Longest a payload record waits before it is sent."
    )
    payload_spool_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Disk budget for payloads spooled while drift detection is unreachable.",
    )
    payload_drain_timeout_s: float = Field(
        20.0,
        ge=0,
        description="On shutdown, how long the payload logger keeps sending queued and spooled records "
        "to drift detection; keep it below the pod's terminationGracePeriodSeconds. What is left is "
        "counted in mlplatform_payload_records_undelivered_total.",
    )
    payload_spool_dir: Path | None = Field(
        None, description="Spool folder for undelivered payloads. Default: <data_dir>/serving/spool."
    )

    @field_validator("runtime", "torch_device")
    @classmethod
    def _check_choice(cls, value: str, info: ValidationInfo) -> str:
        choices = CHOICES[info.field_name]
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices[:-1])
            raise ValueError(f"{info.field_name} must be {listed} or {choices[-1]!r}")
        return value

    def resolved_cache_dir(self) -> Path:
        """Folder for downloaded model artifacts."""
        return (self.model_cache_dir or self.data_dir / "serving" / "models").resolve()

    def resolved_spool_dir(self) -> Path:
        """Folder for spooled payload records."""
        return (self.payload_spool_dir or self.data_dir / "serving" / "spool").resolve()
