"""Generation metrics (prefix ``mlplatform_serving_generation_``) on the serving app's registry."""

from __future__ import annotations

from mlplatform.core.metrics import MetricSet

#: error kinds of ``mlplatform_serving_generation_errors_total``
KIND_INVALID = "invalid_input"  # a 4xx: bad parameters, empty text, over the context length
KIND_DISCONNECTED = "client_disconnected"  # the client went away mid-generation (slot freed)
KIND_INTERNAL = "internal"  # the model raised


class GenerationMetrics(MetricSet):
    """Per model and version: time to first token, duration, tokens/s, input/output tokens; per model:
    requests in flight and the batch size of each decoder loop; errors by model and kind (families in
    ``core/metrics_catalogue.yaml`` under ``GenerationMetrics``)."""
