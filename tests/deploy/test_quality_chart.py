"""drift-detection's model-quality settings and alerts in every rendered overlay."""

from __future__ import annotations

import json

import pytest

from mlplatform.drift.settings import DriftSettings
from mlplatform.features.contract import MODEL_FEATURES
from mlplatform.quality.segments import missing_columns, parse_specs
from tests.deploy.rendered import container_env, render_overlay


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_segments_of_the_demo_models_and_quality_alerts_are_deployed(env):
    objects = render_overlay(env)
    value = container_env(objects, "drift-detection")["DRIFT_SEGMENTS"]
    settings = DriftSettings(segments=json.loads(value))  # what the service parses
    assert set(settings.segments) == {"fraud-detector", "fraud-detector-mlp"}
    for columns in settings.segments.values():
        # every configured column is a model input (else the pods would stop at start-up)
        assert missing_columns(parse_specs(columns, settings.segment_bins), MODEL_FEATURES) == []
    (rule,) = [
        o
        for o in objects
        if o["kind"] == "PrometheusRule" and o["metadata"]["name"].startswith("drift-detection")
    ]
    alerts = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"ModelPerformanceDropped", "EstimatedPerformanceDropped", "SegmentDisparateImpact"} <= alerts
