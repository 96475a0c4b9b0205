"""`mlplatform promote`: a one-line edit of the overlay pin that the rendered manifests then carry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlplatform.cli import app as cli
from mlplatform.deploy.promote import PromoteError, plan_promotion, set_scalar
from mlplatform.deploy.render import render_overlay
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import by_kind, containers, workloads

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "kubernetes", root / "kubernetes")
    shutil.copytree(ROOT / "charts", root / "charts", symlinks=True)
    (root / ".venv").mkdir()
    (root / ".venv" / "bin").symlink_to(ROOT / ".venv" / "bin")
    return root


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    b, a = before.splitlines(), after.splitlines()
    assert len(a) == len(b), "lines were added or removed"
    return [(x, y) for x, y in zip(b, a, strict=True) if x != y]


def test_promote_model_is_a_one_line_diff_that_renders(repo):
    common = repo / "kubernetes/overlays/prod/values/common.yaml"
    before = common.read_text()
    result = CliRunner().invoke(
        cli, ["promote", "--model", "fraud-detector", "--version", "7", "--env", "prod", "--root", str(repo)]
    )
    assert result.exit_code == 0, result.output
    assert '+  fraud-detector: "7"' in result.output
    assert _changed_lines(before, common.read_text()) == [('  fraud-detector: "1"', '  fraud-detector: "7"')]
    objects = render_overlay("prod", repo)
    data = {c["metadata"]["name"]: c["data"] for c in by_kind(objects, "ConfigMap")}
    assert "fraud-detector/7" in data["model-serving"]["SERVING_MODELS"].split(",")
    assert "fraud-detector/7" in data["explainability"]["EXPLAIN_MODELS"].split(",")
    # Promoting again is a no-op.
    again = CliRunner().invoke(
        cli, ["promote", "--model", "fraud-detector", "--version", "7", "--env", "prod", "--root", str(repo)]
    )
    assert again.exit_code == 0 and "nothing changed" in again.output


def test_promote_image_tag_in_staging(repo):
    common = repo / "kubernetes/overlays/staging/values/common.yaml"
    before = common.read_text()
    result = CliRunner().invoke(
        cli, ["promote", "--image-tag", "0.2.0", "--env", "staging", "--root", str(repo)]
    )
    assert result.exit_code == 0, result.output
    assert _changed_lines(before, common.read_text()) == [('  tag: "0.1.0"', '  tag: "0.2.0"')]
    images = {c["image"] for w in workloads(render_overlay("staging", repo)) for c in containers(w)}
    assert images and all(i.endswith(":0.2.0") for i in images)


def test_promote_image_in_prod_needs_digests(repo):
    result = CliRunner().invoke(
        cli, ["promote", "--image-tag", "0.2.0", "--env", "prod", "--root", str(repo)]
    )
    assert result.exit_code == 2
    assert "--image-digest" in result.output
    args = ["promote", "--image-tag", "0.2.0", "--env", "prod", "--root", str(repo)]
    for svc in ("model-serving", "feature-store", "drift-detection", "explainability"):
        args += ["--image-digest", f"{svc}={DIGEST}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    images = {
        w["metadata"]["name"]: c["image"]
        for w in workloads(render_overlay("prod", repo))
        for c in containers(w)
    }
    assert images["feature-store"] == f"ghcr.io/mlplatform/feature-store:0.2.0@{DIGEST}"
    # No GPU digest was given: the GPU variants are pinned by the exact tag alone.
    assert images["model-serving"] == "ghcr.io/mlplatform/model-serving-gpu:0.2.0"


def test_new_tag_clears_the_digests_it_does_not_renew(repo):
    """A digest belongs to one tag: a new tag never runs with the previous tag's digest."""
    other = "sha256:" + "cd" * 32
    args = ["promote", "--image-tag", "0.2.0", "--env", "prod", "--root", str(repo)]
    for svc in ("model-serving", "feature-store", "drift-detection", "explainability"):
        args += ["--image-digest", f"{svc}={DIGEST}"]
    args += ["--gpu-image-digest", f"model-serving={other}", "--gpu-image-digest", f"explainability={other}"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    serving = repo / "kubernetes/overlays/prod/values/model-serving.yaml"
    # The same tag again with new CPU digests only: the GPU digest of that tag stays.
    again = [a.replace(DIGEST, "sha256:" + "ef" * 32) for a in args[: args.index("--gpu-image-digest")]]
    assert CliRunner().invoke(cli, again).exit_code == 0
    before = serving.read_text()
    assert f'    digest: "{other}"' in before
    # A new tag with CPU digests only: the GPU digest (of 0.2.0) is cleared, a one-line diff.
    result = CliRunner().invoke(cli, [a.replace("0.2.0", "0.3.0") for a in again])
    assert result.exit_code == 0, result.output
    ((old, new),) = _changed_lines(before, serving.read_text())
    assert old.startswith(f'    digest: "{other}"') and new.startswith('    digest: ""')
    images = {
        w["metadata"]["name"]: c["image"]
        for w in workloads(render_overlay("prod", repo))
        for c in containers(w)
    }
    assert images["model-serving"] == "ghcr.io/mlplatform/model-serving-gpu:0.3.0"
    assert images["explainability"] == "ghcr.io/mlplatform/explainability-gpu:0.3.0"
    assert images["feature-store"] == f"ghcr.io/mlplatform/feature-store:0.3.0@sha256:{'ef' * 32}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "fraud-detector"}, "--model and --version go together"),
        ({"model": "fraud detector", "version": 2}, "--model"),
        ({"model": "fraud-detector", "version": 0}, "--version"),
        ({"image_tag": "latest"}, "--image-tag"),
        ({"image_tag": "0.2.0", "image_digests": ["model-serving=sha256:xyz"]}, "--image-digest"),
        ({"image_digests": ["nobody=" + DIGEST]}, "SERVICE"),
        ({}, "nothing to promote"),
    ],
)
def test_promote_rejects_bad_input(repo, kwargs, message):
    with pytest.raises(PromoteError, match=message):
        plan_promotion(repo, "staging", **kwargs)


def test_promote_unknown_environment(repo):
    result = CliRunner().invoke(
        cli, ["promote", "--model", "fraud-detector", "--version", "3", "--env", "qa", "--root", str(repo)]
    )
    assert result.exit_code == 2
    assert "unknown environment 'qa'" in result.output


def test_set_scalar_keeps_comments_and_layout():
    text = 'a: 1\n# -- doc\nmodels:\n  # pinned\n  m1: "1"  # note\n  m2: champion\nother:\n  x: 1\n'
    out = set_scalar(text, ["models", "m1"], "5")
    assert out == text.replace('m1: "1"  # note', 'm1: "5"  # note')
    added = set_scalar(text, ["models", "m3"], "2")
    assert added == text.replace("  m2: champion\n", '  m2: champion\n  m3: "2"\n')
    nested = set_scalar("x: 1\n", ["gpu", "image", "digest"], DIGEST)
    assert nested == f'x: 1\ngpu:\n  image:\n    digest: "{DIGEST}"\n'
    with pytest.raises(PromoteError):
        set_scalar("image: {tag: x}\n", ["image", "tag"], "y")


def test_promote_the_text_model_edits_its_release_only(repo):
    """The summarizer is pinned in values/model-serving-text.yaml (the text release); promoting it edits
    that line, and only the text release serves the new version."""
    values = repo / "kubernetes/overlays/prod/values"
    common_before = (values / "common.yaml").read_text()
    text = values / "model-serving-text.yaml"
    before = text.read_text()
    (change,) = plan_promotion(repo, "prod", model="summarizer", version=3)
    assert change.path == text
    result = CliRunner().invoke(
        cli, ["promote", "--model", "summarizer", "--version", "3", "--env", "prod", "--root", str(repo)]
    )
    assert result.exit_code == 0, result.output
    assert _changed_lines(before, text.read_text()) == [('  summarizer: "1"', '  summarizer: "3"')]
    assert (values / "common.yaml").read_text() == common_before
    data = {c["metadata"]["name"]: c["data"] for c in by_kind(render_overlay("prod", repo), "ConfigMap")}
    assert data["model-serving-text"]["SERVING_MODELS"] == "summarizer/3"
    assert "summarizer" not in data["model-serving"]["SERVING_MODELS"]
    assert "summarizer" not in data["explainability"]["EXPLAIN_MODELS"]
