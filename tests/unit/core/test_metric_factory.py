"""core.metrics.MetricFactory declares on the registry it is handed, never on the global default one."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from mlplatform.core.metrics import LABEL_MODEL, LABEL_VERSION, MetricFactory


def test_metrics_land_on_the_given_registry_with_labels_and_buckets() -> None:
    registry = CollectorRegistry()
    m = MetricFactory(registry)
    m.counter("t_factory_requests_total", "Requests.", [LABEL_MODEL]).labels("a").inc(2)
    m.gauge("t_factory_depth", "Depth.").set(3)
    m.histogram("t_factory_seconds", "Latency.", [LABEL_MODEL, LABEL_VERSION], buckets=(0.1, 1.0)).labels(
        "a", "1"
    ).observe(0.5)

    assert registry.get_sample_value("t_factory_requests_total", {"model": "a"}) == 2
    assert registry.get_sample_value("t_factory_depth") == 3
    le = {"model": "a", "version": "1"}
    assert registry.get_sample_value("t_factory_seconds_bucket", {**le, "le": "0.1"}) == 0
    assert registry.get_sample_value("t_factory_seconds_bucket", {**le, "le": "1.0"}) == 1
    assert registry.get_sample_value("t_factory_seconds_bucket", {**le, "le": "+Inf"}) == 1
    types = {f.name: f.type for f in registry.collect()}
    assert types == {
        "t_factory_requests": "counter",
        "t_factory_depth": "gauge",
        "t_factory_seconds": "histogram",
    }
    assert REGISTRY.get_sample_value("t_factory_depth") is None
