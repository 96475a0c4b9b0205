"""MLflow model registry helpers shared by serving, explainability and drift detection.

Model references are ``name`` (alias ``champion``), ``name@alias`` or ``name/version``. Every
service resolves them the same way, so what is explained or monitored is what is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlplatform.core.errors import InvalidInput, NotFound

DEFAULT_ALIAS = "champion"
DEMO_MODELS = ("fraud-detector", "fraud-detector-mlp")
# Tags set on each registered model version by training (and expected from user models, optional).
TAG_FEATURE_SERVICE = "mlplatform.feature_service"
TAG_REFERENCE_ARTIFACT = "mlplatform.reference_artifact"
REFERENCE_ARTIFACT_PATH = "reference/reference.parquet"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ModelRef:
    """A registered model plus either an alias or a version number."""

    name: str
    alias: str | None = DEFAULT_ALIAS
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}/{self.version}" if self.version else f"{self.name}@{self.alias}"


def parse_model_ref(spec: str) -> ModelRef:
    """Parse ``name``, ``name@alias`` or ``name/version``."""
    spec = spec.strip()
    if "/" in spec:
        name, _, version = spec.partition("/")
        if not version.isdigit():
            raise ValueError(f"model reference {spec!r}: version must be a positive integer")
        ref = ModelRef(name=name, alias=None, version=version)
    elif "@" in spec:
        name, _, alias = spec.partition("@")
        ref = ModelRef(name=name, alias=alias or DEFAULT_ALIAS)
    else:
        ref = ModelRef(name=spec)
    if not _NAME_RE.match(ref.name):
        raise ValueError(f"model reference {spec!r}: invalid model name")
    return ref


def parse_model_list(value: str) -> list[ModelRef]:
    """Parse a comma-separated list of model references (the ``SERVING_MODELS`` setting)."""
    refs = [parse_model_ref(p) for p in value.split(",") if p.strip()]
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise ValueError("each registered model may appear only once in the model list")
    return refs


@dataclass(frozen=True)
class ResolvedVersion:
    """A concrete registered model version."""

    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


#: MLflow's REST client defaults (7 retries, back-off factor 2, 120 s timeout) make one call to an
#: unreachable server block for minutes, so the services' own retry loops (serving's start-up
#: back-off, the alias pollers) never run. Unless the operator set them, fail fast instead.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def mlflow_client(tracking_uri: str):  # noqa: ANN201 - MlflowClient is imported lazily (slow import)
    """An MLflow client for ``tracking_uri`` (tracking and registry on the same URI).

    For an ``http(s)://`` tracking server, :data:`MLFLOW_HTTP_DEFAULTS` are applied to the process
    environment where not already set (MLflow reads them on every request).
    """
    import os

    from mlflow import MlflowClient

    if tracking_uri.startswith(("http://", "https://")):
        for key, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_version(client, ref: ModelRef) -> ResolvedVersion:  # noqa: ANN001
    """Resolve an alias or version to a concrete model version (404 when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        if ref.version:
            mv = client.get_model_version(ref.name, ref.version)
        else:
            mv = client.get_model_version_by_alias(ref.name, ref.alias or DEFAULT_ALIAS)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise NotFound(f"model {ref} is not in the registry") from exc
        raise
    return ResolvedVersion(
        name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id, tags=dict(mv.tags or {})
    )


def download_reference(client, version: ResolvedVersion, dest: Path) -> Path:  # noqa: ANN001
    """Download the training reference sample (parquet) logged with this model version."""
    import mlflow.artifacts

    if not version.run_id:
        raise InvalidInput(f"model {version.name}/{version.version} has no run, so no reference data")
    artifact = version.tags.get(TAG_REFERENCE_ARTIFACT, REFERENCE_ARTIFACT_PATH)
    dest.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path=artifact, dst_path=str(dest), tracking_uri=client.tracking_uri
    )
    return Path(local)
