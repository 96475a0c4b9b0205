"""Turn a V2 request into the model's feature matrix, validating exactly like serving.

Parsing and validation are the V2 codec's (:mod:`mlplatform.v2.codec`), as in serving: the same checks, the
same 400/422 messages. A request carries either every model input (one tensor per column, or one
2-D tensor in column order), or the entity keys of the model's feature service (``user_id`` and
``merchant_id`` for the demo models) plus request-time fields, in which case the other features come
from the feature store's online read (:class:`~mlplatform.features.enrich.FeatureEnricher`, as in
serving).
"""

from __future__ import annotations

import numpy as np

from mlplatform.core.errors import InvalidInput
from mlplatform.explain.explainers import LoadedModel
from mlplatform.features.enrich import FeatureEnricher
from mlplatform.v2.codec import ParsedRequest, assemble_frame, frame_from_rows, is_entity_request


async def feature_matrix(req: ParsedRequest, model: LoadedModel, enricher: FeatureEnricher) -> np.ndarray:
    """The (rows, features) float64 matrix of a parsed request, fetching features for entity requests."""
    schema = model.schema
    if is_entity_request(req, schema, model.request_keys):
        rows = await enricher.rows(
            req,
            schema,
            name=model.name,
            label=model.label,
            feature_service=model.feature_service,
            keys=model.request_keys,
        )
        frame = frame_from_rows(rows, schema)
    else:
        frame = assemble_frame(req, schema)
    if frame.matrix is None:  # string columns: rejected when the explainer is built
        raise InvalidInput(f"model {model.label} has non-numeric inputs, which cannot be explained")
    return np.ascontiguousarray(frame.matrix, dtype=np.float64)
