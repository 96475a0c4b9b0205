"""core.metrics' catalogue: a MetricSet declares its catalogue entry's families as attributes, a wrong
attribute name is a clear AttributeError, and a malformed catalogue fails naming the entry."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from mlplatform.core.metrics import MetricCatalogue, MetricSet, metric_catalogue
from mlplatform.explain.metrics import ExplainMetrics

GOOD = """
buckets:
  quick: [0.1, 1]
classes:
  ExplainMetrics:
    module: mlplatform.explain.metrics
    service: explainability
    metrics:
      latency:
        name: t_latency_seconds
        type: histogram
        help: "Latency."
        labels: [model]
        buckets: quick
"""


def test_the_shipped_catalogue_parses_and_names_every_class_once() -> None:
    catalogue = metric_catalogue()
    assert {"HttpMetrics", "ServingMetrics", "GenerationMetrics", "FeatureMetrics"} <= set(catalogue.classes)
    assert {"DriftMetrics", "QualityMetrics", "ExplainMetrics"} <= set(catalogue.classes)
    names = [m.name for c in catalogue.classes.values() for m in c.metrics]
    assert len(names) == len(set(names))


def test_families_are_attributes_and_observations_land_on_the_given_registry() -> None:
    registry = CollectorRegistry()
    metrics = ExplainMetrics(registry)
    metrics.cache("m", "explainer", hit=True)
    metrics.latency.labels("m", "kernel").observe(0.003)
    assert (
        registry.get_sample_value("mlplatform_explain_cache_hits_total", {"model": "m", "cache": "explainer"})
        == 1
    )
    le = {"model": "m", "explainer": "kernel", "le": "0.005"}
    assert registry.get_sample_value("mlplatform_explain_duration_seconds_bucket", le) == 1


def test_an_unknown_attribute_is_a_clear_attribute_error() -> None:
    metrics = ExplainMetrics(CollectorRegistry())
    with pytest.raises(
        AttributeError, match=r"ExplainMetrics has no attribute 'latncy'.*declares: latency, rows"
    ):
        metrics.latncy  # noqa: B018
    assert getattr(metrics, "latncy", None) is None


def test_a_class_without_an_entry_fails_naming_it() -> None:
    class Unlisted(MetricSet):
        pass

    with pytest.raises(KeyError, match="Unlisted has no entry in the metrics catalogue"):
        Unlisted(CollectorRegistry())


def test_a_subclass_uses_its_base_class_entry() -> None:
    class SlowExplainMetrics(ExplainMetrics):
        pass

    registry = CollectorRegistry()
    SlowExplainMetrics(registry).rows.labels("m", "tree").inc()
    assert (
        registry.get_sample_value("mlplatform_explain_rows_total", {"model": "m", "explainer": "tree"}) == 1
    )


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("type: histogram", "type: summary", r"ExplainMetrics.latency: type 'summary' is not one of"),
        ("        buckets: quick\n", "", r"ExplainMetrics.latency: a histogram names a bucket set"),
        ("buckets: quick", "buckets: slow", r"ExplainMetrics.latency: no bucket set 'slow'"),
        ('help: "Latency."', "", r"ExplainMetrics.latency: missing help"),
        (
            "labels: [model]",
            "label: [model]",
            r"ExplainMetrics.latency: unknown key\(s\) label \(known: name",
        ),
        ("labels: [model]", "labels: model", r"ExplainMetrics.latency: labels must be a list of label names"),
        ("    module: mlplatform.explain.metrics\n", "", r"catalogue: ExplainMetrics: missing module"),
        ("quick: [0.1, 1]", "quick: 0.1", r"bucket set 'quick' is not a list of numbers"),
    ],
)
def test_a_malformed_catalogue_fails_naming_the_entry(old: str, new: str, error: str) -> None:
    assert MetricCatalogue.parse(GOOD).buckets == {"quick": (0.1, 1.0)}
    assert old in GOOD
    with pytest.raises(ValueError, match=error):
        MetricCatalogue.parse(GOOD.replace(old, new))


def test_a_name_declared_twice_fails() -> None:
    twice = GOOD + GOOD.split("    metrics:\n")[1].replace("      latency:", "      again:")
    with pytest.raises(ValueError, match="ExplainMetrics.again: t_latency_seconds is declared twice"):
        MetricCatalogue.parse(twice)


def test_a_family_named_like_a_method_of_its_class_fails() -> None:
    class Clashing(ExplainMetrics):
        def rows(self) -> None:  # the catalogue's ExplainMetrics.rows would hide it
            pass

    with pytest.raises(TypeError, match="Clashing.rows is both a catalogue family and the class's own"):
        Clashing(CollectorRegistry())


def test_families_land_on_the_given_registry_never_the_default_one() -> None:
    registry = CollectorRegistry()
    ExplainMetrics(registry).rows.labels("m", "tree").inc(2)
    assert (
        registry.get_sample_value("mlplatform_explain_rows_total", {"model": "m", "explainer": "tree"}) == 2
    )
    assert (
        REGISTRY.get_sample_value("mlplatform_explain_rows_total", {"model": "m", "explainer": "tree"})
        is None
    )
    types = {f.name: f.type for f in registry.collect()}
    assert types["mlplatform_explain_duration_seconds"] == "histogram"
    assert types["mlplatform_explain_cache_hits"] == "counter"
