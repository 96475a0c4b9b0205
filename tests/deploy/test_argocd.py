"""Argo CD: project, ApplicationSet, root app, settings and RBAC; every path an Application points
at exists and builds. The Argo CD controller cannot run here: the ApplicationSet's list generator
is expanded with Go-template semantics (missingkey=error) by a small expander in this file."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from mlplatform.deploy.render import ENVIRONMENTS, KUSTOMIZE_FLAGS, kustomize_build, parse_documents
from tests.deploy.argocd import (
    ARGO,
    PROMOTION_BRANCH,
    REPO_URL,
    api_group,
    argo_objects,
    expand,
    generated_applications,
    is_cluster_scoped,
    project_allows,
)
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import validate_object


def test_argo_objects_are_schema_valid():
    objects = [*argo_objects(), *generated_applications()]
    assert {o["kind"] for o in objects} >= {"AppProject", "ApplicationSet", "Application", "ConfigMap"}
    errors = [e for o in objects for e in validate_object(o)]
    assert errors == []


def test_applicationset_uses_strict_go_templates():
    (appset,) = [o for o in argo_objects() if o["kind"] == "ApplicationSet"]
    assert appset["spec"]["goTemplate"] is True
    assert appset["spec"]["goTemplateOptions"] == ["missingkey=error"]
    with pytest.raises(KeyError):
        expand(appset["spec"]["template"], {"env": "dev"})  # no revision: must fail, not render ""


def test_one_application_per_environment_overlay():
    apps = generated_applications()
    assert sorted(a["metadata"]["name"] for a in apps) == sorted(f"mlplatform-{e}" for e in ENVIRONMENTS)
    overlays = sorted(p.name for p in (ROOT / "kubernetes" / "overlays").iterdir() if p.is_dir())
    assert sorted(a["spec"]["source"]["path"].rsplit("/", 1)[1] for a in apps) == overlays
    waves = [int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for a in apps]
    assert waves == sorted(waves) and len(set(waves)) == len(waves)


def _applications() -> list[dict[str, Any]]:
    return [o for o in argo_objects() if o["kind"] == "Application"] + generated_applications()


@pytest.mark.parametrize("app", _applications(), ids=lambda a: a["metadata"]["name"])
def test_application_source_exists_builds_and_is_pinned(app):
    spec = app["spec"]
    name = app["metadata"]["name"]
    assert spec["project"] != "default"
    source = spec["source"]
    assert source["repoURL"] == REPO_URL
    revision = source["targetRevision"]
    assert revision and revision.upper() != "HEAD" and "*" not in revision
    if name.startswith("mlplatform-") and name.removeprefix("mlplatform-") in ENVIRONMENTS:
        # Environments follow the promotion branch; their overlays pin exact images and models.
        assert revision == PROMOTION_BRANCH, f"{name} must follow {PROMOTION_BRANCH}"
    else:
        assert re.fullmatch(r"v\d+\.\d+\.\d+", revision), f"{name} must pin a release tag"
    path = ROOT / source["path"]
    assert (path / "kustomization.yaml").is_file(), f"{source['path']} has no kustomization.yaml"
    objects = parse_documents(kustomize_build(path, ROOT))
    assert objects
    sync = spec["syncPolicy"]["automated"]
    assert sync["prune"] is True and sync["selfHeal"] is True
    projects = {o["metadata"]["name"]: o for o in argo_objects() if o["kind"] == "AppProject"}
    project = projects[spec["project"]]["spec"]
    assert source["repoURL"] in project["sourceRepos"]
    dest = spec["destination"]
    assert {"server": dest["server"], "namespace": dest["namespace"]} in project["destinations"]
    # Every object the app renders is allowed by its project.
    for obj in objects:
        group, cluster = api_group(obj), is_cluster_scoped(obj)
        assert project_allows(project, group, obj["kind"], cluster=cluster), (
            f"{spec['project']} does not allow {group}/{obj['kind']}"
        )
        if cluster:
            assert "namespace" not in obj["metadata"], f"cluster-scoped {obj['kind']} with a namespace"
        else:
            assert obj["metadata"].get("namespace", dest["namespace"]) == dest["namespace"]


def test_prod_has_a_sync_window():
    (project,) = [
        o for o in argo_objects() if o["kind"] == "AppProject" and o["metadata"]["name"] == "mlplatform"
    ]
    windows = project["spec"]["syncWindows"]
    prod = [w for w in windows if "mlplatform-prod" in w.get("applications", [])]
    assert prod and prod[0]["kind"] == "allow" and prod[0]["duration"]
    assert len(prod[0]["schedule"].split()) == 5
    assert not any("mlplatform-dev" in w.get("applications", []) for w in windows)


def test_argocd_cm_enables_helm_in_kustomize():
    (cm,) = [o for o in argo_objects() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "argocd-cm"]
    assert cm["data"]["kustomize.buildOptions"].split() == list(KUSTOMIZE_FLAGS)


def _rbac() -> tuple[set[tuple[str, ...]], dict[str, set[str]]]:
    (cm,) = [
        o for o in argo_objects() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "argocd-rbac-cm"
    ]
    assert cm["data"]["policy.default"] == ""
    policies: set[tuple[str, ...]] = set()
    groups: dict[str, set[str]] = {}
    for line in cm["data"]["policy.csv"].splitlines():
        parts = [p.strip() for p in line.split(",")]
        if parts[0] == "p":
            policies.add(tuple(parts[1:]))
        elif parts[0] == "g":
            groups.setdefault(parts[1], set()).add(parts[2])
    return policies, groups


def _can(subject: str, resource: str, action: str, obj: str) -> bool:
    """Casbin-style evaluation of the Argo CD policy: deny wins, roles inherit through g lines."""
    policies, groups = _rbac()
    roles = {subject}
    while True:
        more = {r for s in roles for r in groups.get(s, set())} - roles
        if not more:
            break
        roles |= more

    def match(pattern: str, value: str) -> bool:
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), value) is not None

    effects = [
        eff
        for (sub, res, act, o, eff) in policies
        if sub in roles and res == resource and match(act, action) and match(o, obj)
    ]
    return "allow" in effects and "deny" not in effects


def test_rbac_read_only_versus_sync():
    app = "mlplatform/mlplatform-prod"
    assert _can("mlplatform-viewers", "applications", "get", app)
    assert not _can("mlplatform-viewers", "applications", "sync", app)
    assert _can("mlplatform-operators", "applications", "get", app)
    assert _can("mlplatform-operators", "applications", "sync", app)
    assert _can("mlplatform-operators", "applications", "action/argoproj.io/Rollout/promote-full", app)
    assert not _can("mlplatform-operators", "applications", "delete", app)
    assert not _can("someone-else", "applications", "get", app)
    assert not _can("mlplatform-operators", "applications", "sync", "other-project/app")


def test_root_app_manages_the_apps_folder():
    (root,) = [
        o for o in argo_objects() if o["kind"] == "Application" and o["metadata"]["name"] == "mlplatform-root"
    ]
    assert root["spec"]["source"]["path"] == "argo-cd/apps"
    built = parse_documents(kustomize_build(ROOT / "argo-cd" / "apps", ROOT))
    assert {o["kind"] for o in built} == {"AppProject", "ApplicationSet", "Application"}
    assert all(o["metadata"]["namespace"] == "argocd" for o in built)
    assert yaml.safe_load((ARGO / "bootstrap" / "kustomization.yaml").read_text())["resources"]
    # The root app's project may create every kind of argo-cd/apps, in argocd only.
    (bootstrap,) = [
        o
        for o in argo_objects()
        if o["kind"] == "AppProject" and o["metadata"]["name"] == root["spec"]["project"]
    ]
    for obj in built:
        assert project_allows(bootstrap["spec"], "argoproj.io", obj["kind"], cluster=False), obj["kind"]
    assert not bootstrap["spec"].get("clusterResourceWhitelist")


def test_environments_sync_a_merged_promotion_automatically():
    """Staging and prod follow the branch promotion PRs merge into, with automated sync: merging is
    the only step (prod then waits for its sync window, which automated sync respects)."""
    apps = {a["metadata"]["name"]: a for a in generated_applications()}
    for env in ("staging", "prod"):
        spec = apps[f"mlplatform-{env}"]["spec"]
        assert spec["source"]["targetRevision"] == PROMOTION_BRANCH
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
