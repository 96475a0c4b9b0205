"""Prometheus rules: promtool check + unit tests, and the conventions every alert must follow."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.observability.promql import (
    ROOT,
    RULE_TESTS_DIR,
    RUNBOOK_URL,
    RUNBOOKS_DIR,
    alert_rules,
    all_rules,
    declared_metrics,
    is_external,
    metric_names,
    promtool,
    recording_rules,
    rule_files,
)


def test_promtool_check_rules() -> None:
    files = rule_files()
    assert files, "no rule files under observability/prometheus/rules"
    out = subprocess.run(
        [promtool(), "check", "rules", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(RULE_TESTS_DIR.glob("*.test.yaml"))
    assert tests
    out = subprocess.run(
        [promtool(), "test", "rules", *map(str, tests)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_can_fail(tmp_path) -> None:
    """A wrong expectation fails promtool (the harness is not vacuous)."""
    src = RULE_TESTS_DIR / "platform-alerts.test.yaml"
    doc = yaml.safe_load(src.read_text())
    doc["rule_files"] = [str((RULE_TESTS_DIR / f).resolve()) for f in doc["rule_files"]]
    doc["tests"][0]["alert_rule_test"][1]["exp_alerts"] = []  # the target-down alert does fire here
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(yaml.safe_dump(doc))
    out = subprocess.run(
        [promtool(), "test", "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0


def _unit_test_expectations() -> dict[str, dict[str, bool]]:
    """alertname -> {"fires": bool, "silent": bool} over every promtool test file."""
    seen: dict[str, dict[str, bool]] = {}
    for path in RULE_TESTS_DIR.glob("*.test.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                entry = seen.setdefault(check["alertname"], {"fires": False, "silent": False})
                if check.get("exp_alerts"):
                    entry["fires"] = True
                else:
                    entry["silent"] = True
    return seen


@pytest.mark.parametrize("alert", sorted({r["alert"] for r in alert_rules()}))
def test_every_alert_has_firing_and_silent_unit_tests(alert: str) -> None:
    seen = _unit_test_expectations().get(alert)
    assert seen, f"{alert} has no promtool unit test in observability/prometheus/tests/"
    assert seen["fires"], f"{alert}: no unit test where it fires"
    assert seen["silent"], f"{alert}: no unit test where it stays silent"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_annotations_and_runbook(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    ann = rule["annotations"]
    assert ann.get("summary") and ann.get("description")
    assert ann["runbook_url"] == RUNBOOK_URL.format(alert=rule["alert"])
    runbook = RUNBOOKS_DIR / f"{rule['alert']}.md"
    assert runbook.exists(), f"missing runbook {runbook.relative_to(ROOT)}"
    text = runbook.read_text()
    for section in ("## What it means", "## How to check", "## What to do"):
        assert section in text, f"{runbook.name} lacks '{section}'"
    assert "kubectl" in text, f"{runbook.name} shows no kubectl command"


def test_rules_only_use_exported_or_recorded_metrics() -> None:
    """Every metric a rule reads is exported by src/, recorded by a rule, or from a cluster exporter."""
    declared = declared_metrics()
    recorded = {r["record"] for r in recording_rules()}
    missing = {}
    for rule in all_rules():
        for name in metric_names(rule["expr"]):
            if name not in declared and name not in recorded and not is_external(name):
                missing.setdefault(rule.get("alert") or rule.get("record"), set()).add(name)
    assert not missing, f"rules read metrics nothing exports: {missing}"


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (service, le) (rate(mlplatform_http_request_duration_seconds_bucket{code=~"5..", le="0.25"}[5m]))'
        " / on (service) group_left(model) foo:bar:ratio_rate5m > bool 0.1 and up"
    )
    assert metric_names(expr) == {
        "mlplatform_http_request_duration_seconds_bucket",
        "foo:bar:ratio_rate5m",
        "up",
    }
