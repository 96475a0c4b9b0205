"""`make render ENV=...` (scripts/render.py) and the render API the policy checks call."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mlplatform.deploy.render import (
    ENVIRONMENTS,
    RELEASES,
    SERVICE_CHARTS,
    RenderError,
    chart_version,
    parse_documents,
    render_overlay,
)
from tests.deploy.conftest import ROOT


def test_render_script_writes_the_overlay(tmp_path, rendered):
    out = tmp_path / "prod"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render.py"), "--env", "prod", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    written = parse_documents((out / "all.yaml").read_text())
    assert written == rendered["prod"]
    singles = sorted(p for p in out.glob("*.yaml") if p.name != "all.yaml")
    assert len(singles) == len(written)
    assert (out / "rollout-model-serving.yaml").is_file()
    assert yaml.safe_load((out / "namespace-mlplatform-prod.yaml").read_text())["kind"] == "Namespace"


def test_render_script_rejects_an_unknown_environment(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render.py"), "--env", "qa", "--out", str(tmp_path / "qa")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "unknown environment 'qa'" in proc.stderr


def test_render_overlay_is_deterministic(rendered):
    assert render_overlay("dev", ROOT) == rendered["dev"]


def test_render_error_carries_the_tool_message(tmp_path):
    root = tmp_path / "repo"
    overlay = root / "kubernetes" / "overlays" / "broken"
    overlay.mkdir(parents=True)
    (root / "charts").mkdir()
    (root / ".venv").mkdir()
    (root / ".venv" / "bin").symlink_to(ROOT / ".venv" / "bin")
    (overlay / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(RenderError, match="missing.yaml"):
        render_overlay("broken", root)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlays_pin_the_exact_chart_versions(env):
    kustomization = yaml.safe_load(
        (ROOT / "kubernetes" / "overlays" / env / "kustomization.yaml").read_text()
    )
    releases = {c["releaseName"]: c for c in kustomization["helmCharts"]}
    assert len(releases) == len(kustomization["helmCharts"]) and set(releases) == set(RELEASES)
    assert {c["name"] for c in releases.values()} == set(SERVICE_CHARTS)
    for release, entry in releases.items():
        name = entry["name"]
        assert name == RELEASES[release]
        assert entry["version"] == chart_version(name, ROOT)
        assert entry["namespace"] == f"mlplatform-{env}"
        for values in entry["additionalValuesFiles"]:
            assert (ROOT / "kubernetes" / "overlays" / env / values).is_file()
