"""The metrics catalogue (src/mlplatform/core/metrics_catalogue.yaml) is what the services expose:
each of the four apps, built from its default settings, declares exactly the catalogue's families
(name, type, help, labels, buckets) on its registry and nothing else; and docs/metrics.md, generated
from the catalogue, is current."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mlplatform.core.metrics import MetricSet, metric_catalogue
from mlplatform.services import SERVICES
from tests.observability.metric_families import catalogue_families, registry_families
from tests.observability.promql import load_module

ROOT = Path(__file__).resolve().parents[2]


def _app_registry(service: str, monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    """Build ``service``'s app from default settings; return the registry its context was given."""
    spec = SERVICES[service]
    module = importlib.import_module(spec.factory.partition(":")[0])
    contexts: list[Any] = []
    real = module.build_context

    def build_context(*args: Any, **kwargs: Any) -> Any:
        contexts.append(real(*args, **kwargs))
        return contexts[-1]

    monkeypatch.setattr(module, "build_context", build_context)
    app = spec.load_factory()(spec.load_settings_class()())
    store = getattr(getattr(app.state, "dataplane", None), "store", None)
    if store is not None and hasattr(store, "close"):
        store.close()
    assert len(contexts) == 1, f"{service} built {len(contexts)} contexts"
    return contexts[0].registry


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_an_apps_registry_exposes_exactly_the_catalogue_families(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path))
    catalogue = metric_catalogue()
    # default settings: the classes declared always (a `when` class has its own test below)
    classes = [
        c for c in catalogue.classes.values() if c.service in (service, "every service") and not c.when
    ]
    assert classes, f"the catalogue has no class for {service}"
    exposed = registry_families(_app_registry(service, monkeypatch))
    declared = catalogue_families(catalogue, *classes)
    assert sorted(set(exposed) - set(declared)) == [], "exposed but missing from the catalogue"
    assert sorted(set(declared) - set(exposed)) == [], "in the catalogue but not exposed"
    for name, family in declared.items():
        assert exposed[name] == family, name


@pytest.mark.parametrize("name", sorted(metric_catalogue().classes))
def test_each_catalogue_class_declares_exactly_its_entry(name: str) -> None:
    catalogue = metric_catalogue()
    entry = catalogue.classes[name]
    cls = getattr(importlib.import_module(entry.module), name)
    assert issubclass(cls, MetricSet)
    registry = CollectorRegistry()
    metrics = cls(registry, "svc") if name == "HttpMetrics" else cls(registry)
    exposed = registry_families(registry)
    own = catalogue_families(catalogue, entry)
    # a class may hold another one (ServingMetrics.generation): its families are that class's entry
    nested = [v for v in vars(metrics).values() if isinstance(v, MetricSet)]
    for inner in nested:
        own.update(catalogue_families(catalogue, catalogue.family_set(type(inner))))
    assert exposed == own
    for spec in entry.metrics:
        assert getattr(metrics, spec.attr)._name == spec.name.removesuffix("_total")


def test_the_payload_logger_declares_exactly_the_payload_metrics_entry(tmp_path: Path) -> None:
    """model-serving builds it at start-up when SERVING_DRIFT_URL is set: its families are in the catalogue."""
    from mlplatform.drift.payload_logger import PayloadLogger

    registry = CollectorRegistry()
    PayloadLogger(
        "http://127.0.0.1:9",
        batch_size=10,
        sample_rate=1.0,
        spool_dir=tmp_path,
        spool_max_bytes=1 << 20,
        flush_interval_s=1.0,
        registry=registry,
    )
    catalogue = metric_catalogue()
    assert registry_families(registry) == catalogue_families(catalogue, catalogue.classes["PayloadMetrics"])


def test_docs_metrics_md_is_current() -> None:
    script = load_module(ROOT / "scripts" / "metrics_docs.py", "metrics_docs")
    assert (ROOT / "docs" / "metrics.md").read_text() == script.render(metric_catalogue()), (
        "docs/metrics.md is stale: run make metrics-docs"
    )
