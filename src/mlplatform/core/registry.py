"""MLflow model registry helpers shared by serving, explainability and drift detection.

Model references are ``name`` (alias ``champion``), ``name@alias`` or ``name/version``. Every
service resolves them the same way, so what is explained or monitored is what is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlplatform.core.environment import mlflow_http_timeout
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


def mlflow_client(tracking_uri: str):  # noqa: ANN201 - MlflowClient is imported lazily (slow import)
    """An MLflow client for ``tracking_uri`` (tracking and registry on the same URI).

    Its HTTP retries and timeout follow ``MLFLOW_HTTP_REQUEST_*``, which each process sets at start-up
    (:mod:`mlplatform.core.environment`), never this function."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_version(client, ref: ModelRef) -> ResolvedVersion:  # noqa: ANN001
    """Resolve an alias or version to a concrete model version (404 when it does not exist).

    ``client`` is an ``MlflowClient`` or a :class:`RestRegistryClient` (same two methods)."""
    try:
        if ref.version:
            mv = client.get_model_version(ref.name, ref.version)
        else:
            mv = client.get_model_version_by_alias(ref.name, ref.alias or DEFAULT_ALIAS)
    except NotFound:
        raise
    except Exception as exc:
        # imported only on this path: mlflow is already loaded when an MlflowClient raised
        from mlflow.exceptions import MlflowException

        code = getattr(exc, "error_code", "") if isinstance(exc, MlflowException) else ""
        if code in _MISSING_CODES:
            raise NotFound(f"model {ref} is not in the registry") from exc
        raise
    return ResolvedVersion(
        name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id, tags=dict(mv.tags or {})
    )


_MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


@dataclass(frozen=True)
class RestModelVersion:
    """The fields of MLflow's ``ModelVersion`` that :func:`resolve_version` reads."""

    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]


def _mlflow_env_auth():  # noqa: ANN202 - an httpx.Auth (httpx is imported lazily)
    """httpx auth reading MLflow's credential variables at every request, as MLflow's own client
    does, so rotated credentials (:mod:`mlplatform.core.mlflow_auth`) apply to the next call."""
    import base64
    import os

    import httpx

    class MlflowEnvAuth(httpx.Auth):
        def auth_flow(self, request: httpx.Request):  # noqa: ANN202 - httpx's generator protocol
            if os.environ.get("MLFLOW_TRACKING_TOKEN"):
                request.headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
            elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
                pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
                request.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            yield request

    return MlflowEnvAuth()


class RestRegistryClient:
    """Model-version look-ups over the MLflow REST API (``/api/2.0/mlflow/...``) with httpx.

    Importing ``mlflow`` costs about a second and ~160 MB of resident memory (its tracking stores,
    SQLAlchemy, pandas); a serving pod whose model is already in its cache needs only these two
    GETs to know which version to serve. Credentials and TLS follow the variables MLflow's own
    client reads: ``MLFLOW_TRACKING_TOKEN`` (bearer) or ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` (basic), read at every request (rotated credentials apply to the
    next call), ``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``,
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``.
    """

    def __init__(self, tracking_uri: str, *, transport: object | None = None) -> None:
        import os

        import httpx

        self.tracking_uri = tracking_uri
        verify: bool | str = True
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            verify = False
        elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        timeout = mlflow_http_timeout()
        self._http = httpx.Client(
            base_url=tracking_uri.rstrip("/"),
            auth=_mlflow_env_auth(),
            verify=verify,
            timeout=timeout,
            transport=transport,  # type: ignore[arg-type]
        )

    def _get(self, path: str, params: dict[str, str], what: str) -> RestModelVersion:
        r = self._http.get(f"/api/2.0/mlflow/{path}", params=params)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code == 404 or body.get("error_code") in _MISSING_CODES:
            raise NotFound(f"model {what} is not in the registry")
        if r.status_code != 200:
            raise RuntimeError(f"MLflow registry answered {r.status_code} for {what}: {r.text[:200]}")
        mv = body.get("model_version") or {}
        tags = {t["key"]: t.get("value", "") for t in mv.get("tags") or []}
        return RestModelVersion(
            name=mv["name"],
            version=str(mv["version"]),
            source=mv.get("source", ""),
            run_id=mv.get("run_id") or None,
            tags=tags,
        )

    def get_model_version(self, name: str, version: str) -> RestModelVersion:
        return self._get("model-versions/get", {"name": name, "version": str(version)}, f"{name}/{version}")

    def get_model_version_by_alias(self, name: str, alias: str) -> RestModelVersion:
        return self._get("registered-models/alias", {"name": name, "alias": alias}, f"{name}@{alias}")

    def close(self) -> None:
        self._http.close()


def registry_client(tracking_uri: str):  # noqa: ANN201 - RestRegistryClient or MlflowClient
    """The cheapest client that resolves versions: REST for an ``http(s)://`` tracking server (no
    ``mlflow`` import), ``MlflowClient`` for a database or file store."""
    if tracking_uri.startswith(("http://", "https://")):
        return RestRegistryClient(tracking_uri)
    return mlflow_client(tracking_uri)


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
