"""The text model's dashboard panels (#20) read metrics and labels the services really register.

The live check (test_live.py) runs the tabular demo models only and skips these panels, so this test
builds the model-serving and drift-detection apps (no lifespan: nothing is loaded or connected) and
compares every metric and label name the text panels use with what the apps' registries hold.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.observability.promql import dashboards, is_text_model, metric_names, prometheus_targets

# The agreed names (closing-note brief of #20): one panel at least reads each of them.
AGREED = {
    "mlplatform_serving_generation_time_to_first_token_seconds_bucket",
    "mlplatform_serving_generation_duration_seconds_bucket",
    "mlplatform_serving_generation_tokens_per_second_bucket",
    "mlplatform_serving_generation_input_tokens_bucket",
    "mlplatform_serving_generation_output_tokens_bucket",
    "mlplatform_serving_generation_output_tokens_sum",
    "mlplatform_serving_generation_in_flight",
    "mlplatform_serving_generation_batch_size_bucket",
    "mlplatform_serving_generation_errors_total",
    "mlplatform_drift_text_descriptor",
}
# Labels Prometheus adds at scrape time (target labels) or that histogram series carry.
SCRAPE_LABELS = {"namespace", "instance", "job", "pod", "le"}


def _text_exprs() -> list[str]:
    return [
        expr
        for dash in dashboards().values()
        for _, expr in prometheus_targets(dash)
        if any(is_text_model(n) for n in metric_names(expr))
    ]


def _exposed(registry: Any) -> dict[str, set[str]]:
    """Series name -> label names, for every collector of a prometheus_client registry."""
    out: dict[str, set[str]] = {}
    for collector, names in registry._collector_to_names.items():  # noqa: SLF001 (no public API lists labels)
        labels = set(getattr(collector, "_labelnames", ()))
        for name in names:
            out[name] = labels
    return out


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict[str, set[str]]:  # noqa: ANN001
    from mlplatform.core.secrets import EnvSecretsBackend
    from mlplatform.drift.app import create_app as drift_app
    from mlplatform.drift.settings import DriftSettings
    from mlplatform.serving.app import create_app as serving_app
    from mlplatform.serving.settings import ServingSettings

    secrets = EnvSecretsBackend({})
    serving = serving_app(ServingSettings(auth_enabled=False, otlp_endpoint=""), secrets=secrets)
    drift = drift_app(
        DriftSettings(
            auth_enabled=False,
            otlp_endpoint="",
            data_dir=tmp_path_factory.mktemp("drift"),
            retrain_mode="off",
        ),
        secrets=secrets,
    )
    return {**_exposed(serving.state.ctx.registry), **_exposed(drift.state.ctx.registry)}


def test_text_panels_read_every_agreed_metric() -> None:
    used = {n for expr in _text_exprs() for n in metric_names(expr) if is_text_model(n)}
    assert used == AGREED


def _labels(expr: str) -> set[str]:
    """Label names an expression groups by or matches on."""
    groups = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
    matchers = [
        m for block in re.findall(r"\{([^}]*)\}", expr) for m in re.findall(r'(\w+)\s*[=!]~?\s*"', block)
    ]
    return {label.strip() for group in groups for label in group.split(",") if label.strip()} | set(matchers)


def test_text_panels_read_metrics_and_labels_the_services_register(registered) -> None:  # noqa: ANN001
    exprs = _text_exprs()
    assert exprs
    for expr in exprs:
        names = {n for n in metric_names(expr) if is_text_model(n)}
        unknown = names - set(registered)
        assert not unknown, f"not registered by model-serving or drift-detection: {sorted(unknown)}"
        missing = _labels(expr) - SCRAPE_LABELS - set().union(*(registered[n] for n in names))
        assert not missing, f"{expr}: no label(s) {sorted(missing)} on {sorted(names)}"
