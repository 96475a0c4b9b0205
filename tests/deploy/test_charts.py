"""Helm charts: lint --strict and template with the defaults and every CI values file, schemas that
reject mistakes (the schemas and values are generated from one source: tests/deploy/test_chart_values.py),
documented values, rule files identical to observability/, versions bumped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlplatform.deploy.render import (
    CHART_DIGESTS_FILE,
    LIBRARY_CHART,
    SERVICE_CHARTS,
    RenderError,
    chart_rule_files,
    chart_version,
    check_chart_files,
    current_chart_digests,
    helm_lint,
    helm_template,
    helm_version,
    observability_rule_files,
    sync_chart_files,
)
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import by_kind, containers, validate_object, workloads
from tests.deploy.rendered import helm_template_fails

CHARTS = ROOT / "charts"


def _values_cases() -> list[tuple[str, Path | None]]:
    cases: list[tuple[str, Path | None]] = []
    for chart in SERVICE_CHARTS:
        cases.append((chart, None))
        cases.extend((chart, path) for path in sorted((CHARTS / chart / "ci").glob("*.yaml")))
    return cases


def test_helm_is_v3():
    assert helm_version(ROOT).startswith("v3.17.")


def test_every_service_chart_has_ci_values():
    for chart in SERVICE_CHARTS:
        assert len(list((CHARTS / chart / "ci").glob("*.yaml"))) >= 3, chart


def test_library_chart_lints():
    helm_lint(LIBRARY_CHART, root=ROOT)
    meta = yaml.safe_load((CHARTS / LIBRARY_CHART / "Chart.yaml").read_text())
    assert meta["type"] == "library"


@pytest.mark.parametrize(
    ("chart", "values"), _values_cases(), ids=lambda v: v.name if isinstance(v, Path) else str(v)
)
def test_chart_lints_and_renders(chart, values):
    files = [values] if values else []
    helm_lint(chart, files, root=ROOT)
    objects = helm_template(chart, files, release=chart, namespace="ci", root=ROOT)
    errors = [e for obj in objects for e in validate_object(obj)]
    assert errors == []
    (workload,) = workloads(objects)
    assert workload["metadata"]["labels"]["app.kubernetes.io/component"] == chart
    for c in containers(workload):
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["args"][:2] == ["serve", chart]
    for ing in by_kind(objects, "Ingress"):
        assert ing["spec"]["tls"]


@pytest.mark.parametrize(
    ("chart", "bad", "needle"),
    [
        ("model-serving", "replicaCont=2", "replicaCont"),
        ("model-serving", "image.tag=latest", "tag"),
        ("model-serving", "image.digest=sha256:abc", "digest"),
        ("model-serving", "securityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),
        ("model-serving", "models.fraud-detector=bad pin!", "fraud-detector"),
        ("model-serving", "config.environment=production", "environment"),
        ("feature-store", "gpu.enabled=true", "enabled"),
        ("explainability", "rollout.enabled=true", "enabled"),
        ("drift-detection", "networkPolicy.allowFrom[0]=somebody", "allowFrom"),
    ],
)
def test_values_schema_rejects_mistakes(chart, bad, needle):
    assert needle in helm_template_fails(chart, bad)


def test_vault_backend_requires_address_and_role():
    assert "secrets.vault.addr is required" in helm_template_fails("model-serving", "secrets.backend=vault")


def test_ingress_requires_an_issuer():
    assert "clusterIssuer" in helm_template_fails(
        "explainability", "ingress.enabled=true", "ingress.clusterIssuer="
    )


def _documented_leaves(path: Path) -> list[str]:
    """Keys of values.yaml with no `# --` comment on themselves or on an ancestor key."""
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    comment_block: list[str] = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        if not stripped:
            comment_block = []
            continue
        match = re.match(r"^( *)([A-Za-z0-9_.-]+):(.*)$", line)
        if not match:
            comment_block = []
            continue
        indent, key, rest = len(match[1]), match[2], match[3].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = any(c.startswith("# --") for c in comment_block) or any(d for _, _, d in stack)
        nxt = next((n for n in lines[i + 1 :] if n.strip() and not n.strip().startswith("#")), "")
        is_parent = not rest and (len(nxt) - len(nxt.lstrip()) > indent)
        if not is_parent and not documented:
            undocumented.append(".".join([*(k for _, k, _ in stack), key]))
        stack.append((indent, key, documented))
        comment_block = []
    return undocumented


@pytest.mark.parametrize("chart", SERVICE_CHARTS)
def test_every_value_is_documented_and_in_the_schema(chart):
    values_path = CHARTS / chart / "values.yaml"
    assert _documented_leaves(values_path) == []
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    values = yaml.safe_load(values_path.read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])
    for key, sub in values.items():
        if isinstance(sub, dict) and schema["properties"][key].get("type") == "object":
            props = schema["properties"][key].get("properties")
            if props is not None:
                assert set(sub) <= set(props), key


def test_documentation_check_finds_an_undocumented_key(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text("# -- documented\na: 1\nb: 2\nc:\n  # -- inner\n  d: 3\n  e: 4\n")
    assert _documented_leaves(path) == ["b", "c.e"]


def test_chart_rule_files_are_identical_to_observability():
    drift = check_chart_files(ROOT)
    assert drift == [], "chart copies drifted from observability/: run `make chart-files`\n" + "\n".join(
        map(str, drift)
    )
    for chart in SERVICE_CHARTS:
        for name in chart_rule_files(chart, ROOT):
            assert (CHARTS / chart / "files" / "rules" / name).is_file()


def test_chart_copy_check_detects_drift(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "charts", root / "charts", symlinks=True)
    shutil.copytree(ROOT / "observability", root / "observability")
    (root / "kubernetes" / "overlays").mkdir(parents=True)
    assert check_chart_files(root) == []
    copy = next((root / "charts" / "model-serving" / "files" / "rules").glob("*.yaml"))
    copy.write_text(copy.read_text() + "# edited in the chart only\n")
    assert [d.chart for d in check_chart_files(root)] == ["model-serving"]
    sync_chart_files(root)
    assert check_chart_files(root) == []
    new_rules = root / "observability" / "prometheus" / "rules" / "new-alerts.yaml"
    new_rules.write_text("groups: []\n")
    assert [str(d) for d in check_chart_files(root)] == [
        "observability/prometheus/rules/new-alerts.yaml: shipped by no chart: "
        "list it in one chart's prometheusRule.files"
    ]


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (APT package prometheus) not installed"
)
def test_rule_files_pass_promtool():
    rules = sorted(observability_rule_files(ROOT).values())
    assert len(rules) >= 2
    proc = subprocess.run(["promtool", "check", "rules", *map(str, rules)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("chart", SERVICE_CHARTS)
def test_prometheus_rule_loads_the_rule_files(chart):
    objects = helm_template(chart, root=ROOT)
    (rule,) = by_kind(objects, "PrometheusRule")
    sources = observability_rule_files(ROOT)
    expected = [
        group
        for name in chart_rule_files(chart, ROOT)
        for group in yaml.safe_load(sources[name].read_text())["groups"]
    ]
    assert expected and rule["spec"]["groups"] == expected


def test_chart_versions_bumped_on_change():
    """A chart whose content changed since its digest was recorded must get a new version."""
    recorded = json.loads((ROOT / CHART_DIGESTS_FILE).read_text())
    current = current_chart_digests(ROOT)
    for chart, now in current.items():
        before = recorded.get(chart)
        assert before is not None, f"{chart} has no recorded digest: run `make chart-digests`"
        if before["sha256"] != now["sha256"]:
            assert before["version"] != now["version"], (
                f"chart {chart} changed but its version is still {now['version']}: bump it in Chart.yaml, "
                "then run `make chart-digests`"
            )
            pytest.fail(
                f"chart {chart} was bumped to {now['version']}: run `make chart-digests` to record it"
            )
    lib_version = chart_version(LIBRARY_CHART, ROOT)
    for chart in SERVICE_CHARTS:
        deps = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())["dependencies"]
        assert [d["version"] for d in deps if d["name"] == LIBRARY_CHART] == [lib_version]


def test_record_refuses_change_without_bump(tmp_path):
    from mlplatform.deploy.render import record_chart_digests

    root = tmp_path / "repo"
    shutil.copytree(ROOT / "charts", root / "charts", symlinks=True)
    (root / "kubernetes" / "overlays").mkdir(parents=True)
    values = root / "charts" / "drift-detection" / "values.yaml"
    values.write_text(values.read_text().replace("replicaCount: 2", "replicaCount: 3"))
    with pytest.raises(RenderError, match="drift-detection"):
        record_chart_digests(root)
    chart_yaml = root / "charts" / "drift-detection" / "Chart.yaml"
    version = chart_version("drift-detection", root)
    major_minor, _, patch = version.rpartition(".")
    bumped = f"{major_minor}.{int(patch) + 1}"
    chart_yaml.write_text(chart_yaml.read_text().replace(f"version: {version}", f"version: {bumped}", 1))
    assert record_chart_digests(root)["drift-detection"]["version"] == bumped
