"""Generation metrics (prefix ``mlplatform_serving_generation_``) on the serving app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import LABEL_MODEL, LABEL_VERSION, MetricFactory

LABEL_KIND = "kind"
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)

#: error kinds of ``mlplatform_serving_generation_errors_total``
KIND_INVALID = "invalid_input"  # a 4xx: bad parameters, empty text, over the context length
KIND_DISCONNECTED = "client_disconnected"  # the client went away mid-generation (slot freed)
KIND_INTERNAL = "internal"  # the model raised


class GenerationMetrics:
    """Per model and version: time to first token, duration, tokens/s, input/output tokens; per model:
    requests in flight and the batch size of each decoder loop; errors by model and kind."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry)
        labels = [LABEL_MODEL, LABEL_VERSION]
        self.ttft = m.histogram(
            "mlplatform_serving_generation_time_to_first_token_seconds",
            "Time from a generation request's arrival at the scheduler to its first generated token.",
            labels,
            buckets=TTFT_BUCKETS,
        )
        self.duration = m.histogram(
            "mlplatform_serving_generation_duration_seconds",
            "Time from a generation request's arrival at the scheduler to its last token.",
            labels,
            buckets=DURATION_BUCKETS,
        )
        self.tokens_per_second = m.histogram(
            "mlplatform_serving_generation_tokens_per_second",
            "Output tokens per second of one generation request (after its first token).",
            labels,
            buckets=RATE_BUCKETS,
        )
        self.input_tokens = m.histogram(
            "mlplatform_serving_generation_input_tokens",
            "Input tokens of a generation request.",
            labels,
            buckets=TOKEN_BUCKETS,
        )
        self.output_tokens = m.histogram(
            "mlplatform_serving_generation_output_tokens",
            "Output tokens of a generation request (rate of _sum: generated tokens per second).",
            labels,
            buckets=TOKEN_BUCKETS,
        )
        self.in_flight = m.gauge(
            "mlplatform_serving_generation_in_flight",
            "Generation requests queued or generating.",
            [LABEL_MODEL],
        )
        self.batch_size = m.histogram(
            "mlplatform_serving_generation_batch_size",
            "Requests generated together in one batched decoder loop.",
            [LABEL_MODEL],
            buckets=BATCH_BUCKETS,
        )
        self.errors = m.counter(
            "mlplatform_serving_generation_errors_total",
            "Generation requests that failed, by model and kind (invalid_input, client_disconnected, internal).",
            [LABEL_MODEL, LABEL_KIND],
        )
