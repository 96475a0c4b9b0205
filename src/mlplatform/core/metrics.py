"""Prometheus metrics on a private registry per app, served at ``GET /metrics``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase

from mlplatform.core.tracing import current_trace_id

# Label names code outside the catalogue uses (metrics_catalogue.yaml declares every family's labels).
LABEL_MODEL = "model"
LABEL_VERSION = "version"
LABEL_OUTCOME = "outcome"

CATALOGUE_FILE = "metrics_catalogue.yaml"  # package data of mlplatform.core
METRIC_TYPES = ("counter", "gauge", "histogram")


@dataclass(frozen=True)
class MetricSpec:
    """One family of the catalogue: the attribute its class exposes it as, and how it is declared."""

    attr: str
    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    buckets: str | None = None  # the name of a bucket set (histograms only)


@dataclass(frozen=True)
class MetricClassSpec:
    """A metrics class's catalogue entry: where the class lives, which service runs it, its families."""

    name: str
    module: str
    service: str
    metrics: tuple[MetricSpec, ...]
    when: str | None = None  # the condition under which the service declares the class (None: always)


@dataclass(frozen=True)
class MetricCatalogue:
    """``metrics_catalogue.yaml``: named bucket sets and each metrics class's families."""

    buckets: dict[str, tuple[float, ...]]
    classes: dict[str, MetricClassSpec]

    @classmethod
    def parse(cls, text: str) -> MetricCatalogue:
        """Parse and check the catalogue; a ValueError names the entry and what is wrong with it."""
        raw = yaml.safe_load(text) or {}
        buckets = {k: tuple(float(b) for b in v) for k, v in (raw.get("buckets") or {}).items()}
        classes: dict[str, MetricClassSpec] = {}
        names: set[str] = set()
        for cname, entry in (raw.get("classes") or {}).items():
            specs = []
            for attr, m in (entry.get("metrics") or {}).items():
                where = f"metrics catalogue: {cname}.{attr}"
                spec = MetricSpec(
                    attr, m["name"], m["type"], m["help"], tuple(m.get("labels") or ()), m.get("buckets")
                )
                if spec.type not in METRIC_TYPES:
                    raise ValueError(f"{where}: type {spec.type!r} is not one of {', '.join(METRIC_TYPES)}")
                if (spec.type == "histogram") != (spec.buckets is not None):
                    raise ValueError(f"{where}: a histogram names a bucket set, other types do not")
                if spec.buckets is not None and spec.buckets not in buckets:
                    raise ValueError(f"{where}: no bucket set {spec.buckets!r} under buckets")
                if spec.name in names:
                    raise ValueError(f"{where}: {spec.name} is declared twice")
                names.add(spec.name)
                specs.append(spec)
            classes[cname] = MetricClassSpec(
                cname, entry["module"], entry["service"], tuple(specs), entry.get("when")
            )
        return cls(buckets, classes)

    def family_set(self, cls: type) -> MetricClassSpec:
        """The entry of ``cls`` or of the nearest base class that has one (a test's subclass)."""
        for klass in cls.__mro__:
            if klass.__name__ in self.classes:
                return self.classes[klass.__name__]
        raise KeyError(f"{cls.__name__} has no entry in the metrics catalogue ({CATALOGUE_FILE})")


@functools.cache
def metric_catalogue() -> MetricCatalogue:
    """The catalogue shipped with the package (read once per process)."""
    return MetricCatalogue.parse(resources.files(__package__).joinpath(CATALOGUE_FILE).read_text())


def bucket_set(name: str) -> tuple[float, ...]:
    """A named bucket set of the catalogue."""
    return metric_catalogue().buckets[name]


class MetricFactory:
    """Declares metrics on one app's private registry, so a declaration is only what differs:
    name, help text, label names and, for a histogram, its buckets."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def declare(self, spec: MetricSpec) -> MetricWrapperBase:
        """Declare one catalogue family."""
        if spec.type == "histogram":
            assert spec.buckets is not None  # checked when the catalogue was parsed
            return self.histogram(spec.name, spec.help, spec.labels, buckets=bucket_set(spec.buckets))
        make = self.counter if spec.type == "counter" else self.gauge
        return make(spec.name, spec.help, spec.labels)


class MetricSet:
    """Base of a metrics class: its families are the catalogue entry named like the class, declared
    on the registry it is handed and set as attributes named as in the catalogue. The subclass keeps
    only behaviour (observe helpers, label caches) and its docstring."""

    def __init__(self, registry: CollectorRegistry) -> None:
        factory = MetricFactory(registry)
        for spec in metric_catalogue().family_set(type(self)).metrics:
            setattr(self, spec.attr, factory.declare(spec))

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: the families are instance attributes (typed Any for
        # type checkers, which cannot read the catalogue), so this is the clear error for a wrong name
        try:
            declared = ", ".join(s.attr for s in metric_catalogue().family_set(type(self)).metrics)
        except KeyError as exc:
            raise AttributeError(str(exc)) from None
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r}; its metrics catalogue entry declares: {declared}"
        )


class HttpMetrics(MetricSet):
    """Request metrics every service exports (health probes and /metrics are left out)."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        super().__init__(registry)
        self.service = service
        self._in_flight = self.in_flight.labels(service)
        # label children by (route, method, code): ``labels()`` costs more than the observation
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def inc_in_flight(self) -> None:
        self._in_flight.inc()

    def dec_in_flight(self) -> None:
        self._in_flight.dec()

    def observe(
        self, route: str, method: str, code: int, seconds: float, trace_id: str | None = None
    ) -> None:
        """Count the request and record its latency, with the trace id as exemplar.

        ``trace_id=None`` reads the active span's trace id; pass ``""`` when the caller knows there is none.
        """
        key = (route, method, code)
        child = self._children.get(key)
        if child is None:
            child = (
                self.requests.labels(self.service, route, method, str(code)),
                self.latency.labels(self.service, route, method),
            )
            self._children[key] = child
        child[0].inc()
        if trace_id is None:
            trace_id = current_trace_id()
        child[1].observe(seconds, exemplar={"trace_id": trace_id} if trace_id else None)


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """``GET /metrics`` for this app's registry.

    Prometheus text format by default; OpenMetrics (which carries the latency histogram's
    ``trace_id`` exemplars for Grafana's jump to Tempo) when the scraper's ``Accept`` asks for it.
    """
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return router
