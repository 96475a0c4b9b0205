"""The release pipeline (.github/workflows/release.yaml): it cannot run here (no Docker, no GitHub),
so its structure is checked: a v* tag builds and pushes every service image and GPU variant of
services/images.txt from services/Dockerfile with services/base.env's build arguments (as
services/build.sh passes them), to the
registry the charts pull from, and `mlplatform promote` pins, per environment, the tag and the
digest each build step reported, in a pull request against the branch Argo CD follows."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from mlplatform.deploy.promote import SERVICES as PROMOTE_SERVICES
from tests.deploy.argocd import PROMOTION_BRANCH, generated_applications
from tests.deploy.conftest import ROOT
from tests.deploy.images import base_env as _base_env
from tests.deploy.images import images

WORKFLOW = ROOT / ".github" / "workflows" / "release.yaml"
BUILD_PUSH = "docker/build-push-action"
# build.sh: target cpu -> TORCH_CPU_*, target gpu -> the CUDA wheel index and version.
TORCH_ARGS = {
    "cpu": {"TORCH_INDEX": "TORCH_CPU_INDEX", "TORCH_VERSION": "TORCH_CPU_VERSION"},
    "gpu": {"TORCH_INDEX": "TORCH_CUDA_INDEX", "TORCH_VERSION": "TORCH_CUDA_VERSION"},
}
OUTPUT_REF = re.compile(r"^\$\{\{\s*needs\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}$")


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, step) for job_id, job in workflow["jobs"].items() for step in job["steps"]]


def _build_args(step: dict[str, Any]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in step["with"]["build-args"].strip().splitlines())


def _builds(workflow: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """{<service>/<target>: (job id, build step)}."""
    out = {}
    for job_id, step in _steps(workflow):
        if step.get("uses", "").startswith(f"{BUILD_PUSH}@"):
            assert step["with"]["file"] == "services/Dockerfile", step["with"]["file"]
            key = f"{_build_args(step)['SERVICE']}/{step['with']['target']}"
            assert key not in out, f"{key} is built twice"
            out[key] = (job_id, step)
    return out


def test_runs_on_a_version_tag_and_refuses_anything_but_vx_y_z(workflow):
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert on == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"] == {"contents": "read"}
    (version,) = [s for _, s in _steps(workflow) if s.get("id") == "version"]
    assert "^[0-9]+\\.[0-9]+\\.[0-9]+$" in version["run"] and "exit 1" in version["run"]


def test_every_action_is_pinned_by_commit_sha():
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", WORKFLOW.read_text(), re.M)
    assert uses
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", comment), f"{ref}: say which version the SHA is"


def test_builds_every_service_image_and_gpu_variant(workflow):
    table = images()
    expected = sorted([f"{s}/cpu" for s in table] + [f"{s}/gpu" for s, i in table.items() if i.gpu])
    assert sorted(_builds(workflow)) == expected
    assert set(table) == set(PROMOTE_SERVICES)


def test_images_go_where_the_charts_pull_from(workflow):
    env = workflow["env"]
    for file, (_, step) in _builds(workflow).items():
        service, target = file.split("/")
        values = yaml.safe_load((ROOT / "charts" / service / "values.yaml").read_text())
        image = values["gpu"]["image"] if target == "gpu" else values["image"]
        registry = image.get("registry") or values["image"]["registry"]
        assert step["with"]["push"] is True
        assert step["with"]["context"] == "."
        tag = step["with"]["tags"].replace("${{ env.IMAGE_PREFIX }}", env["IMAGE_PREFIX"])
        assert tag == f"{registry}/{image['repository']}:${{{{ needs.version.outputs.version }}}}", file


def test_build_args_are_base_env_and_images_txt_as_build_sh_passes_them(workflow):
    base = _base_env()
    table = images()
    build_sh = (ROOT / "services" / "build.sh").read_text()
    base_steps = {job: s for job, s in _steps(workflow) if s.get("id") == "base"}
    for file, (job, step) in _builds(workflow).items():
        service, target = file.split("/")
        assert "services/base.env" in base_steps[job]["run"], f"{job} does not read services/base.env"
        args = _build_args(step)
        expected = {"PYTHON_IMAGE": "PYTHON_IMAGE", **TORCH_ARGS[target]}
        assert set(args) == {*expected, "SERVICE", "PORT", "EXTRA"}, file
        assert (args["PORT"], args["EXTRA"]) == (str(table[service].port), table[service].extra), file
        for arg, key in expected.items():
            assert key in base, f"services/base.env has no {key}"
            assert args[arg] == f"${{{{ steps.base.outputs.{key} }}}}", (file, arg)
            assert f'"{arg}=${{{key}}}"' in build_sh, f"build.sh passes {arg} differently"
        assert f"--target {target}" in build_sh


def test_promotes_every_environment_with_a_digest_per_image(workflow):
    promote_job = workflow["jobs"]["promote"]
    assert promote_job["strategy"]["matrix"]["env"] == ["staging", "prod"]
    (step,) = [s for s in promote_job["steps"] if "mlplatform promote" in s.get("run", "")]
    env = step["env"]
    words = shlex.split(step["run"].replace("\\\n", " "))
    assert words[:2] == ["mlplatform", "promote"]

    def resolve(word: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)

    options: dict[str, list[str]] = {}
    for option, value in zip(words[2::2], words[3::2], strict=True):
        options.setdefault(option, []).append(resolve(value))
    assert options["--env"] == ["${{ matrix.env }}"]
    assert options["--image-tag"] == ["${{ needs.version.outputs.version }}"]
    builds = _builds(workflow)
    for option, target in (("--image-digest", "cpu"), ("--gpu-image-digest", "gpu")):
        given = dict(v.split("=", 1) for v in options[option])
        built = {f.split("/")[0] for f in builds if f.endswith(f"/{target}")}
        assert set(given) == built, option
        for service, ref in given.items():
            # needs.<job>.outputs.<name> -> that job's output -> the digest of the step building the image
            job, output = OUTPUT_REF.match(ref).groups()
            assert job in promote_job["needs"]
            step_ref = workflow["jobs"][job]["outputs"][output]
            step_id = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.digest\s*\}\}", step_ref).group(1)
            build_job, build_step = builds[f"{service}/{target}"]
            assert (build_job, build_step["id"]) == (job, step_id), (option, service)


def test_opens_the_pull_request_against_the_branch_argo_cd_follows(workflow):
    promote_job = workflow["jobs"]["promote"]
    (pr,) = [
        s for s in promote_job["steps"] if s.get("uses", "").startswith("peter-evans/create-pull-request@")
    ]
    assert pr["with"]["base"] == PROMOTION_BRANCH
    assert pr["with"]["add-paths"] == "kubernetes/overlays/${{ matrix.env }}/values"
    assert "${{ matrix.env }}" in pr["with"]["branch"]
    (checkout,) = [s for s in promote_job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["ref"] == PROMOTION_BRANCH
    assert promote_job["permissions"] == {"contents": "write", "pull-requests": "write"}
    apps = {a["metadata"]["name"]: a["spec"] for a in generated_applications()}
    for env in promote_job["strategy"]["matrix"]["env"]:
        assert apps[f"mlplatform-{env}"]["source"]["targetRevision"] == PROMOTION_BRANCH
        assert apps[f"mlplatform-{env}"]["syncPolicy"]["automated"]["prune"] is True
