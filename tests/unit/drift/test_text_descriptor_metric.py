"""mlplatform_drift_text_descriptor carries the model version: two versions of one model keep separate
values (without the label the second version's window overwrote the first's)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from mlplatform.drift.dataplane import DriftDataPlane
from mlplatform.drift.metrics import DriftMetrics


def _summary(length: float) -> dict:
    text = {
        "method": "perc_text_content_drift",
        "statistic": 0.5,
        "drifted": False,
        "descriptors": {"length": {"reference": 40.0, "current": length}},
    }
    return {"features": {"text_input": text}, "drift_share": 0.0, "dataset_drift": False}


def test_two_versions_of_a_model_keep_their_own_descriptor_values() -> None:
    registry = CollectorRegistry()
    plane = SimpleNamespace(metrics=DriftMetrics(registry))  # _export_window only reads .metrics
    DriftDataPlane._export_window(plane, "summarizer", "1", _summary(55.0), 10)  # type: ignore[arg-type]
    DriftDataPlane._export_window(plane, "summarizer", "2", _summary(81.0), 10)  # type: ignore[arg-type]

    def value(version: str, window: str) -> float | None:
        labels = {"model": "summarizer", "version": version, "feature": "text_input", "descriptor": "length"}
        return registry.get_sample_value("mlplatform_drift_text_descriptor", {**labels, "window": window})

    assert value("1", "current") == 55.0
    assert value("2", "current") == 81.0
    assert value("1", "reference") == value("2", "reference") == 40.0
