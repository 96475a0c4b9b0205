"""Gatekeeper policies: Rego unit tests, template/CRD checks, samples, rendered overlays, bad variants.

Gatekeeper cannot run here (no API server); ``tests/policies/gatekeeper.py`` evaluates each
ConstraintTemplate's Rego in-process with regopy exactly as Gatekeeper's admission review would
(``input.review.object``, ``input.parameters``, the constraint's ``spec.match``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.policies.gatekeeper import (
    REPO,
    Policy,
    deployed_constraints,
    load_policies,
    load_yaml_documents,
    matches,
)

POLICIES = load_policies()
BY_NAME = {p.name: p for p in POLICIES}
CRD_SCHEMA = REPO / "tests" / "policies" / "schemas" / "constrainttemplate_v1.json"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "Pod", "Rollout")
EXPECTED = {
    "k8srequiredlabels",
    "k8scontainerresources",
    "k8sallowedimages",
    "k8spodsecurity",
    "k8srequiredprobes",
    "k8sgpunodepool",
    "k8singresstls",
}
ids = [p.name for p in POLICIES]


def test_every_policy_is_present():
    assert EXPECTED <= set(BY_NAME)


# -- Rego unit tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=ids)
def test_rego_unit_tests_pass(policy: Policy):
    results = policy.run_unit_tests()
    assert len(results) >= 5, f"{policy.name} has only {len(results)} Rego tests"
    failed = {name: why for name, why in results.items() if why is not None}
    assert not failed, f"{policy.name} Rego tests failed: {failed}"


@pytest.mark.parametrize("policy", POLICIES, ids=ids)
def test_rego_unit_tests_can_fail(policy: Policy):
    """With every violation rule switched off, the deny tests must fail (the tests are not vacuous)."""
    neutered = re.sub(r"^violation contains ", "unused_violation contains ", policy.src, flags=re.M)
    neutered += "\nviolation := set()\n"
    results = policy.run_unit_tests(neutered)
    assert any(why is not None for why in results.values())


# -- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=ids)
def test_template_matches_crd_schema_and_names_line_up(policy: Policy):
    schema = json.loads(CRD_SCHEMA.read_text())
    template = policy.template
    jsonschema.validate(template, schema)
    assert template["apiVersion"] == "templates.gatekeeper.sh/v1"
    assert template["kind"] == "ConstraintTemplate"
    assert template["metadata"]["name"] == policy.name == policy.kind.lower() == policy.package
    assert policy.constraint["kind"] == policy.kind
    assert policy.constraint["apiVersion"] == "constraints.gatekeeper.sh/v1beta1"
    target = template["spec"]["targets"]
    assert [t["target"] for t in target] == ["admission.k8s.gatekeeper.sh"]


@pytest.mark.parametrize("policy", POLICIES, ids=ids)
def test_template_rego_is_src_rego_in_rego_v1(policy: Policy):
    assert policy.template_rego == policy.src
    assert "import rego.v1" in policy.src
    assert re.search(r"^violation contains \{\"msg\": msg, \"details\": ", policy.src, re.M)
    # v0-style rule bodies (``violation[{...}] {``) are not allowed
    assert not re.search(r"^\w+(\[[^\]]*\])?\s*\{\s*$", policy.src, re.M)


def _walk_schema(schema: dict[str, Any], path: str):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk_schema(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk_schema(schema["items"], f"{path}[]")


GENERATOR = [sys.executable, str(REPO / "scripts" / "gatekeeper_templates.py")]


def test_committed_templates_are_what_src_rego_generates():
    proc = subprocess.run([*GENERATOR, "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_generator_finds_and_rewrites_a_stale_template(tmp_path: Path):
    """In a scratch copy: an edit of one src.rego makes --check name that template (only), the
    generator rewrites it (only), and the template's Rego is then the new src.rego."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "policies", root / "policies")
    policy = root / "policies" / "k8srequiredprobes"
    others = {p: p.read_bytes() for p in (root / "policies").glob("*/template.yaml") if p.parent != policy}
    src = policy / "src.rego"
    src.write_text(src.read_text() + "\n# a new last line\n")
    check = subprocess.run([*GENERATOR, "--check", "--root", str(root)], capture_output=True, text=True)
    assert check.returncode == 1
    assert check.stderr.splitlines() == [
        "policies/k8srequiredprobes/template.yaml: not what its src.rego generates",
        "run: make policy-templates",
    ]
    write = subprocess.run([*GENERATOR, "--root", str(root)], capture_output=True, text=True)
    assert write.stdout.splitlines() == ["updated policies/k8srequiredprobes/template.yaml"], write.stderr
    assert (
        yaml.safe_load((policy / "template.yaml").read_text())["spec"]["targets"][0]["rego"]
        == src.read_text()
    )
    assert {p: p.read_bytes() for p in others} == others
    assert subprocess.run([*GENERATOR, "--check", "--root", str(root)]).returncode == 0


def test_generator_names_a_template_without_a_rego_block(tmp_path: Path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "policies" / "k8srequiredlabels", root / "policies" / "k8srequiredlabels")
    template = root / "policies" / "k8srequiredlabels" / "template.yaml"
    template.write_text(template.read_text().replace("    rego: |", "    rego: >"))
    proc = subprocess.run([*GENERATOR, "--check", "--root", str(root)], capture_output=True, text=True)
    assert proc.returncode == 2 and "k8srequiredlabels/template.yaml: no 'rego: |' line" in proc.stderr


@pytest.mark.parametrize("policy", POLICIES, ids=ids)
def test_every_parameter_is_typed_and_described(policy: Policy):
    schema = policy.template["spec"]["crd"]["spec"]["validation"]["openAPIV3Schema"]
    assert schema.get("properties"), f"{policy.name} has no parameters"
    for path, node in _walk_schema(schema, "parameters"):
        assert node.get("type"), f"{policy.name}: {path} has no type (structural schema)"
        assert node.get("description"), f"{policy.name}: {path} has no description"
    # every parameter the Rego reads is declared, and the sample constraint validates
    used = set(re.findall(r"input\.parameters\.(\w+)", policy.src))
    used |= set(re.findall(r'object\.get\(input\.parameters, "(\w+)"', policy.src))
    assert used <= set(schema["properties"]), (
        f"{policy.name} reads undeclared {used - set(schema['properties'])}"
    )
    jsonschema.validate(
        policy.constraint["spec"].get("parameters", {}), {**schema, "additionalProperties": False}
    )


# -- samples -----------------------------------------------------------------------------------


SAMPLES = [(p, s) for p in POLICIES for s in p.samples("example_")]


@pytest.mark.parametrize(("policy", "sample"), SAMPLES, ids=[f"{p.name}/{s.name}" for p, s in SAMPLES])
def test_sample_behaves_as_labelled(policy: Policy, sample: Path):
    docs = load_yaml_documents(sample)
    assert docs
    for obj in docs:
        assert matches(policy.constraint["spec"]["match"], obj), f"{sample} is not selected by the constraint"
        violations = policy.admit(obj)
        if sample.name.startswith("example_allowed"):
            assert violations == [], f"{sample.name} was denied: {violations}"
        else:
            assert violations, f"{sample.name} was allowed"
            for v in violations:
                assert v["msg"] and isinstance(v["details"], dict)


@pytest.mark.parametrize("policy", POLICIES, ids=ids)
def test_each_policy_has_allowed_and_disallowed_samples(policy: Policy):
    assert policy.samples("example_allowed") and policy.samples("example_disallowed")


def test_policies_cover_every_workload_kind():
    for name in ("k8scontainerresources", "k8sallowedimages", "k8spodsecurity", "k8sgpunodepool"):
        kinds = {k for entry in BY_NAME[name].constraint["spec"]["match"]["kinds"] for k in entry["kinds"]}
        assert set(WORKLOAD_KINDS) <= kinds, f"{name} misses {set(WORKLOAD_KINDS) - kinds}"


# -- rendered overlays -------------------------------------------------------------------------


def _render(env: str) -> list[dict[str, Any]]:
    render = pytest.importorskip("mlplatform.deploy.render", reason="render_overlay not available yet")
    return render.render_overlay(env)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {env: _render(env) for env in ("dev", "staging", "prod")}


@functools.cache
def _deployed(env: str) -> dict[str, dict[str, Any]]:
    """{policy name: constraint} as Argo CD syncs them for ``env`` (policies/deploy/overlays/<env>)."""
    by_kind = {c["kind"]: c for c in deployed_constraints(env)}
    return {p.name: by_kind[p.kind] for p in POLICIES}


def constraint_for(policy: Policy, env: str) -> dict[str, Any]:
    """The constraint of ``policy`` that Argo CD syncs for ``env`` (not the sample)."""
    return _deployed(env)[policy.name]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_every_rendered_object_passes_every_policy(rendered, env):
    """What Argo CD enforces in ``env`` (policies/deploy) admits what Argo CD deploys there."""
    objects = rendered[env]
    assert objects
    denied: list[str] = []
    checked = 0
    for obj in objects:
        for policy in POLICIES:
            constraint = constraint_for(policy, env)
            if not matches(constraint["spec"]["match"], obj):
                continue
            checked += 1
            for v in policy.violations(obj, constraint["spec"].get("parameters", {})):
                denied.append(f"{obj['kind']}/{obj['metadata']['name']}: [{policy.name}] {v['msg']}")
    assert not denied, "\n".join(denied)
    kinds = {o["kind"] for o in objects}
    assert checked >= 10 and ({"Deployment", "Rollout"} & kinds), f"only {checked} checks ran on {env}"


# -- known-bad variants of our own Deployments -------------------------------------------------


@pytest.fixture(scope="module")
def our_deployment(rendered) -> dict[str, Any]:
    deployments = [o for o in rendered["prod"] if o["kind"] == "Deployment"]
    assert deployments
    return next((d for d in deployments if d["metadata"]["name"] == "feature-store"), deployments[0])


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]


def _messages(obj: dict[str, Any], env: str = "prod") -> dict[str, list[str]]:
    """Violation messages per policy of ``obj`` deployed into ``env``'s namespace."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = f"mlplatform-{env}"
    out: dict[str, list[str]] = {}
    for policy in POLICIES:
        constraint = constraint_for(policy, env)
        if matches(constraint["spec"]["match"], obj):
            msgs = [v["msg"] for v in policy.violations(obj, constraint["spec"].get("parameters", {}))]
            if msgs:
                out[policy.name] = msgs
    return out


def test_our_deployment_is_allowed_before_mutation(our_deployment):
    assert _messages(our_deployment) == {}


def test_privileged_variant_denied(our_deployment):
    bad = copy.deepcopy(our_deployment)
    _containers(bad)[0]["securityContext"]["privileged"] = True
    name, container = bad["metadata"]["name"], _containers(bad)[0]["name"]
    assert _messages(bad) == {
        "k8spodsecurity": [f"Deployment <{name}> container <{container}> is privileged"]
    }


def test_no_limits_variant_denied(our_deployment):
    bad = copy.deepcopy(our_deployment)
    del _containers(bad)[0]["resources"]["limits"]
    msgs = _messages(bad)
    assert set(msgs) == {"k8scontainerresources"}
    assert sorted(msgs["k8scontainerresources"]) == sorted(
        f"Deployment <{bad['metadata']['name']}> container <{_containers(bad)[0]['name']}> has no {r} limit: "
        f"set resources.limits.{r}"
        for r in ("cpu", "memory")
    )


def test_latest_variant_denied(our_deployment):
    bad = copy.deepcopy(our_deployment)
    image = _containers(bad)[0]["image"].split("@")[0].rsplit(":", 1)[0] + ":latest"
    _containers(bad)[0]["image"] = image
    msgs = _messages(bad)
    assert set(msgs) == {"k8sallowedimages"}
    assert any("uses the :latest tag" in m for m in msgs["k8sallowedimages"])
    assert any("is not pinned to an exact version tag" in m for m in msgs["k8sallowedimages"])
    # :latest is reported in dev too (dryrun there)
    assert any("uses the :latest tag" in m for m in _messages(bad, "dev")["k8sallowedimages"])


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_exact_tag_with_or_without_digest_allowed(our_deployment, env):
    """No digest is required until the release pipeline writes one; tag@digest passes as well."""
    image = _containers(our_deployment)[0]["image"].split("@")[0]
    name, _, tag = image.rpartition(":")
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag)
    for ref in (f"{name}:0.2.0", f"{name}:0.2.0@sha256:{'ab' * 32}"):
        variant = copy.deepcopy(our_deployment)
        _containers(variant)[0]["image"] = ref
        assert _messages(variant, env) == {}, ref
    for ref in (f"{name}:main", f"{name}:0.2", f"{name}@sha256:{'ab' * 32}"):
        variant = copy.deepcopy(our_deployment)
        _containers(variant)[0]["image"] = ref
        msgs = _messages(variant, env)["k8sallowedimages"]
        assert any("is not pinned to an exact version tag" in m for m in msgs), ref


def test_foreign_registry_variant_denied(our_deployment):
    bad = copy.deepcopy(our_deployment)
    _containers(bad)[0]["image"] = "docker.io/someone/feature-store:0.1.0"
    assert any("not from an allowed registry" in m for m in _messages(bad, "dev")["k8sallowedimages"])


def test_gpu_without_toleration_variant_denied(our_deployment):
    bad = copy.deepcopy(our_deployment)
    spec = bad["spec"]["template"]["spec"]
    _containers(bad)[0]["resources"].setdefault("limits", {})["nvidia.com/gpu"] = "1"
    spec.pop("tolerations", None)
    spec["nodeSelector"] = {"mlplatform.io/node-pool": "gpu"}
    name = bad["metadata"]["name"]
    assert _messages(bad) == {
        "k8sgpunodepool": [
            f"Deployment <{name}> requests nvidia.com/gpu but has no toleration for the GPU node pool taint "
            "<nvidia.com/gpu> (effect NoSchedule)"
        ]
    }
    spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert _messages(bad) == {}


def test_model_workload_without_probes_denied(rendered):
    rollout = next(
        o
        for o in rendered["prod"]
        if o["kind"] in ("Rollout", "Deployment") and o["metadata"]["name"] == "model-serving"
    )
    bad = copy.deepcopy(rollout)
    for c in _containers(bad):
        c.pop("readinessProbe", None)
    msgs = _messages(bad)
    assert set(msgs) == {"k8srequiredprobes"}
    assert msgs["k8srequiredprobes"][0].endswith("has no readinessProbe")


def test_ingress_without_tls_denied(rendered):
    ingress = next(o for o in rendered["prod"] if o["kind"] == "Ingress")
    bad = copy.deepcopy(ingress)
    bad["spec"].pop("tls", None)
    assert _messages(bad) == {
        "k8singresstls": [
            f"Ingress <{bad['metadata']['name']}> has no TLS: set spec.tls with a certificate secret"
        ]
    }


def test_missing_labels_variant_denied(our_deployment):
    bad = copy.deepcopy(our_deployment)
    del bad["metadata"]["labels"]["app.kubernetes.io/part-of"]
    msgs = _messages(bad)
    assert set(msgs) == {"k8srequiredlabels"}
    assert "missing required labels on metadata" in msgs["k8srequiredlabels"][0]
