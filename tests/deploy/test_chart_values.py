"""The service charts' values.yaml and values.schema.json are generated from charts/values-source/
(scripts/chart_values.py, `make chart-values`): the committed files are current, and an edit of the
source reaches the charts it should and only those."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from mlplatform.deploy.chart_values import SOURCE_DIR, check, generate, write
from mlplatform.deploy.render import SERVICE_CHARTS
from mlplatform.services import SERVICES
from tests.deploy.conftest import ROOT


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The charts and their source in a scratch tree (the generator reads nothing else)."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "charts", root / "charts", symlinks=True)
    return root


def test_committed_chart_values_are_current():
    stale = check(ROOT)
    assert stale == [], "run `make chart-values`:\n" + "\n".join(map(str, stale))


def test_script_check_and_write(repo):
    script = [sys.executable, str(ROOT / "scripts" / "chart_values.py")]
    env_path = repo / "charts" / "values-source" / "values.yaml.j2"
    env_path.write_text(env_path.read_text().replace("replicaCount: 2", "replicaCount: 3"))
    (repo / "kubernetes" / "overlays").mkdir(parents=True)
    proc = subprocess.run([*script, "--check"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 1 and "run: make chart-values" in proc.stderr, proc.stderr
    assert proc.stderr.count("values.yaml: not what charts/values-source generates") == len(SERVICE_CHARTS)
    proc = subprocess.run(script, cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert subprocess.run([*script, "--check"], cwd=repo).returncode == 0
    for chart in SERVICE_CHARTS:
        assert yaml.safe_load((repo / "charts" / chart / "values.yaml").read_text())["replicaCount"] == 3


def test_common_edit_reaches_every_chart_and_chart_edit_only_its_own(repo):
    base = repo / SOURCE_DIR / "values.yaml.j2"
    base.write_text(base.read_text().replace("maxSkew: 1", "maxSkew: 2"))
    child = repo / SOURCE_DIR / "explainability.values.yaml.j2"
    child.write_text(child.read_text().replace('targetAverageValue: "4"', 'targetAverageValue: "5"'))
    before = {rel: (repo / rel).read_text() for rel in generate(ROOT)}
    changed = set(write(repo))
    assert changed == {Path("charts") / chart / "values.yaml" for chart in SERVICE_CHARTS}
    for chart in SERVICE_CHARTS:
        values = yaml.safe_load((repo / "charts" / chart / "values.yaml").read_text())
        assert values["topologySpread"]["maxSkew"] == 2
        targets = [m["targetAverageValue"] for m in values["autoscaling"]["podMetrics"]]
        assert ("5" in targets) == (chart == "explainability"), (chart, targets)
    rel = Path("charts") / "model-serving" / "values.yaml"
    assert (repo / rel).read_text() == before[rel].replace("maxSkew: 1", "maxSkew: 2")


def test_schema_source_common_and_chart_only_properties(repo):
    source_path = repo / SOURCE_DIR / "values.schema.yaml"
    source = yaml.safe_load(source_path.read_text())
    source["schema"]["properties"]["replicaCount"]["maximum"] = 50
    source_path.write_text(yaml.safe_dump(source, sort_keys=False))
    write(repo)
    for chart in SERVICE_CHARTS:
        schema = json.loads((repo / "charts" / chart / "values.schema.json").read_text())
        props = schema["properties"]
        assert props["replicaCount"]["maximum"] == 50
        assert props["component"] == {"const": chart} and schema["title"] == f"{chart} chart values"
        own = set(source["charts"][chart].get("properties") or {})
        assert own <= set(props)
        for other in SERVICE_CHARTS:
            assert not (set(source["charts"][other].get("properties") or {}) - own) & set(props), (
                chart,
                other,
            )
        values = yaml.safe_load((repo / "charts" / chart / "values.yaml").read_text())
        assert values["port"] == SERVICES[chart].port
        # properties follow values.yaml's order
        in_values = [k for k in props if k in values]
        assert in_values == list(values), chart


def test_values_key_without_schema_is_refused(repo):
    base = repo / SOURCE_DIR / "values.yaml.j2"
    base.write_text(base.read_text() + "\n# -- new\nnewKey: 1\n")
    with pytest.raises(ValueError, match="newKey"):
        generate(repo)


def test_chart_template_missing_a_setting_is_refused(repo):
    child = repo / SOURCE_DIR / "feature-store.values.yaml.j2"
    child.write_text(child.read_text().replace('{% set env_prefix = "FEATURES_" %}\n', ""))
    with pytest.raises(jinja2.UndefinedError, match="env_prefix"):
        generate(repo)
