"""Load a registered model version and its reference sample from MLflow for explanation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.core.errors import InvalidInput
from mlplatform.core.registry import TAG_FEATURE_SERVICE, ResolvedVersion, download_reference
from mlplatform.explain.explainers import LoadedModel, UnsupportedModel
from mlplatform.explain.text import TextModel, is_text_model, load_text_model
from mlplatform.features.enrich import entity_keys_from_tags, request_keys
from mlplatform.v2.schema import ColumnSpec, InputSchema, schema_from_signature
from mlplatform.v2.schema import UnsupportedModel as ServingUnsupported

PREDICTION_COLUMN = "prediction"


def _input_schema(signature, reference: pd.DataFrame, label: str) -> InputSchema:  # noqa: ANN001
    """Serving's input schema for the signature; a tensor signature takes the reference column names."""
    try:
        schema = schema_from_signature(signature)
    except ServingUnsupported as exc:
        raise UnsupportedModel(f"model {label}: {exc}") from None
    if not schema.numeric:
        raise UnsupportedModel(f"model {label} has non-numeric inputs, which cannot be explained")
    if signature.inputs.is_tensor_spec():
        columns = [c for c in reference.columns if c != PREDICTION_COLUMN]
        if len(columns) == len(schema.columns):
            schema = InputSchema(
                tuple(ColumnSpec(name, spec.type) for name, spec in zip(columns, schema.columns, strict=True))
            )
    return schema


def load_model_version(
    client,  # noqa: ANN001 - MlflowClient
    version: ResolvedVersion,
    work_dir: Path,
) -> LoadedModel | TextModel:
    """Download the model version and its reference sample; load the model with its native flavour."""
    import mlflow
    from mlflow.models import Model

    uri = client.tracking_uri
    label = f"'{version.name}' version {version.version}"
    dest = work_dir / version.name / version.version
    # The storage location of the version's files (models:/ URIs would go through the global registry URI)
    location = client.get_model_version_download_uri(version.name, version.version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=location, dst_path=str(dest / "model"), tracking_uri=uri
    )
    meta = Model.load(local)
    flavors = meta.flavors or {}
    if is_text_model(flavors):  # text models: no tabular schema or reference sample
        return load_text_model(version.name, version.version, local, flavors, meta.metadata)
    ref_path = download_reference(client, version, dest / "reference")
    reference = pd.read_parquet(ref_path)
    schema = _input_schema(meta.signature, reference, label)
    names = schema.names
    missing = [n for n in names if n not in reference.columns]
    if missing:
        raise InvalidInput(f"reference data of model {label} lacks the model inputs {missing}")
    reference = reference[names].astype(np.float64).dropna().reset_index(drop=True)
    if reference.empty:
        raise InvalidInput(f"reference data of model {label} has no complete rows")
    if "sklearn" in flavors:
        flavour, model = "sklearn", mlflow.sklearn.load_model(local)
    elif "pytorch" in flavors:
        flavour, model = "pytorch", mlflow.pytorch.load_model(local)
        try:
            model.eval()
        except NotImplementedError:  # pt2 (torch.export) modules are already in eval mode
            pass
    elif "python_function" in flavors:
        flavour, model = "pyfunc", mlflow.pyfunc.load_model(local)
    else:
        flavour, model = next(iter(flavors), "unknown"), None
    feature_service = version.tags.get(TAG_FEATURE_SERVICE)
    entity_keys = entity_keys_from_tags(version.tags)
    return LoadedModel(
        name=version.name,
        version=version.version,
        flavour=flavour,
        model=model,
        schema=schema,
        reference=reference,
        feature_service=feature_service,
        request_keys=request_keys(feature_service, entity_keys),  # once, in the loading thread
    )
