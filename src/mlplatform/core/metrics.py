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

# A label name code outside the catalogue uses (metrics_catalogue.yaml declares every family's labels).
LABEL_OUTCOME = "outcome"

CATALOGUE_FILE = "metrics_catalogue.yaml"  # package data of mlplatform.core
_TYPES: dict[str, type[MetricWrapperBase]] = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}
_CLASS_KEYS = ("module", "service", "metrics")  # required keys of a class entry
_METRIC_KEYS = ("name", "type", "help")  # required keys of a family
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's loader when built with it


def _check_keys(where: str, entry: object, required: Sequence[str], optional: Sequence[str]) -> None:
    """A catalogue entry is a mapping with every required key and no key it does not know (a typo such as
    ``label:`` would otherwise declare a family without its labels)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
    missing = [k for k in required if k not in entry]
    unknown = sorted(set(entry) - set(required) - set(optional))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join([*required, *optional])})")
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")


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
        raw = yaml.load(text, Loader=_YAML_LOADER) or {}
        _check_keys("metrics catalogue", raw, (), ("buckets", "classes"))
        buckets: dict[str, tuple[float, ...]] = {}
        for name, bounds in (raw.get("buckets") or {}).items():
            if not isinstance(bounds, list) or not all(isinstance(b, int | float) for b in bounds):
                raise ValueError(f"metrics catalogue: bucket set {name!r} is not a list of numbers")
            buckets[name] = tuple(float(b) for b in bounds)
        classes: dict[str, MetricClassSpec] = {}
        names: set[str] = set()
        for cname, entry in (raw.get("classes") or {}).items():
            _check_keys(f"metrics catalogue: {cname}", entry, _CLASS_KEYS, ("when",))
            specs = []
            for attr, m in (entry["metrics"] or {}).items():
                where = f"metrics catalogue: {cname}.{attr}"
                _check_keys(where, m, _METRIC_KEYS, ("labels", "buckets"))
                labels = m.get("labels") or []
                if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                    raise ValueError(f"{where}: labels must be a list of label names, not {labels!r}")
                spec = MetricSpec(attr, m["name"], m["type"], m["help"], tuple(labels), m.get("buckets"))
                if spec.type not in _TYPES:
                    raise ValueError(f"{where}: type {spec.type!r} is not one of {', '.join(_TYPES)}")
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


class MetricSet:
    """Base of a metrics class: its families are the catalogue entry named like the class, declared
    on the registry it is handed and set as attributes named as in the catalogue. The subclass keeps
    only behaviour (observe helpers, label caches) and its docstring."""

    def __init__(self, registry: CollectorRegistry) -> None:
        for spec in metric_catalogue().family_set(type(self)).metrics:
            if hasattr(self, spec.attr):  # a method or attribute of the class: it would be hidden
                raise TypeError(
                    f"{type(self).__name__}.{spec.attr} is both a catalogue family and the class's own"
                )
            kwargs = {"buckets": bucket_set(spec.buckets)} if spec.buckets is not None else {}
            family = _TYPES[spec.type](spec.name, spec.help, spec.labels, registry=registry, **kwargs)
            setattr(self, spec.attr, family)

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
