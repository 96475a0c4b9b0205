"""Argo CD objects under ``argo-cd/`` as the deploy tests read them: every object, the Applications
the ApplicationSet generates (Go-template substitution with ``missingkey=error``, as Argo CD does),
and the AppProject group/kind check Argo CD applies. Argo CD itself cannot run here."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from mlplatform.deploy.render import parse_documents
from tests.deploy.rendered import ROOT

ARGO = ROOT / "argo-cd"
REPO_URL = "https://github.com/mlplatform/mlplatform.git"


def docs(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of ``path``."""
    return parse_documents(path.read_text())


def argo_objects() -> list[dict[str, Any]]:
    """Every object under argo-cd/ (kustomization files left out)."""
    return [o for p in sorted(ARGO.rglob("*.yaml")) if p.name != "kustomization.yaml" for o in docs(p)]


def expand(template: Any, params: dict[str, str]) -> Any:
    """Go-template substitution of ``{{ .key }}`` with missingkey=error."""
    if isinstance(template, dict):
        return {expand(k, params): expand(v, params) for k, v in template.items()}
    if isinstance(template, list):
        return [expand(v, params) for v in template]
    if isinstance(template, str):

        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in params:
                raise KeyError(f"map has no entry for key {key!r}")
            return str(params[key])

        out = re.sub(r"\{\{-?\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}", sub, template)
        assert "{{" not in out, f"unsupported template expression in {template!r}"
        return out
    return template


def generated_applications() -> list[dict[str, Any]]:
    """The Applications the ApplicationSet generates, one per list element."""
    (appset,) = [o for o in argo_objects() if o["kind"] == "ApplicationSet"]
    apps = []
    for generator in appset["spec"]["generators"]:
        for element in generator["list"]["elements"]:
            app = expand(appset["spec"]["template"], element)
            apps.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **app})
    return apps


# The branch the release workflow's promotion pull requests merge into: the environment
# Applications follow it, so a merged promotion is synced without a second step.
PROMOTION_BRANCH = "main"
# Cluster-scoped kinds the apps render (everything else is namespaced).
CLUSTER_SCOPED = {("", "Namespace"), ("templates.gatekeeper.sh", "ConstraintTemplate")}


def api_group(obj: dict[str, Any]) -> str:
    """The API group of ``obj`` ("" for the core group)."""
    return obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""


def is_cluster_scoped(obj: dict[str, Any]) -> bool:
    """Whether ``obj``'s kind is cluster-scoped (of the kinds the apps render)."""
    return (api_group(obj), obj["kind"]) in CLUSTER_SCOPED or api_group(obj) == "constraints.gatekeeper.sh"


def project_allows(project: dict[str, Any], group: str, kind: str, *, cluster: bool) -> bool:
    """Argo CD's group/kind check: whitelists (glob patterns) minus blacklists; for namespaced kinds
    an absent whitelist allows everything, for cluster-scoped kinds it allows nothing."""

    def listed(entries: list[dict[str, str]]) -> bool:
        return any(
            fnmatch.fnmatchcase(group, e["group"]) and fnmatch.fnmatchcase(kind, e["kind"]) for e in entries
        )

    if cluster:
        return listed(project.get("clusterResourceWhitelist") or []) and not listed(
            project.get("clusterResourceBlacklist") or []
        )
    whitelist = project.get("namespaceResourceWhitelist")
    allowed = whitelist is None or listed(whitelist)
    return allowed and not listed(project.get("namespaceResourceBlacklist") or [])
