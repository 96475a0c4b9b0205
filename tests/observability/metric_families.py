"""Families of a prometheus_client registry and of the metrics catalogue, in one comparable form:
``{name: {"type", "help", "labels", "buckets"}}`` (a counter's name with ``_total``, as exposed;
``buckets`` without ``+Inf``, ``None`` for other types)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from mlplatform.core.metrics import MetricCatalogue, MetricClassSpec


def _family(type_: str, help_: str, labels: Any, buckets: Any = None) -> dict[str, Any]:
    return {
        "type": type_,
        "help": help_,
        "labels": list(labels),
        "buckets": [float(b) for b in buckets] if buckets is not None else None,
    }


def registry_families(registry: CollectorRegistry) -> dict[str, dict[str, Any]]:
    """Every family ``registry`` exposes, with label names and buckets even before any observation."""
    out: dict[str, dict[str, Any]] = {}
    for collector in list(registry._collector_to_names):  # private: no public listing of collectors
        if isinstance(collector, MetricWrapperBase):
            name = collector._name + ("_total" if collector._type == "counter" else "")
            bounds = getattr(collector, "_upper_bounds", None)
            out[name] = _family(
                collector._type,
                collector._documentation,
                collector._labelnames,
                bounds[:-1] if bounds is not None else None,  # without +Inf
            )
            continue
        for fam in collector.collect():  # a custom collector (Vault secrets): labels from its samples
            labels = sorted({k for s in fam.samples for k in s.labels})
            name = fam.name + ("_total" if fam.type == "counter" else "")
            out[name] = _family(fam.type, fam.documentation, labels)
    return out


def catalogue_families(catalogue: MetricCatalogue, *classes: MetricClassSpec) -> dict[str, dict[str, Any]]:
    """The families the catalogue declares for ``classes`` (every class when none is given)."""
    out: dict[str, dict[str, Any]] = {}
    for cls in classes or tuple(catalogue.classes.values()):
        for spec in cls.metrics:
            buckets = catalogue.buckets[spec.buckets] if spec.buckets is not None else None
            out[spec.name] = _family(spec.type, spec.help, spec.labels, buckets)
    return out
