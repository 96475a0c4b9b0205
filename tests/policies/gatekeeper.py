"""Evaluate the Gatekeeper policies under ``policies/`` in-process with regopy (rego-cpp).

Gatekeeper itself cannot run here (it needs a Kubernetes API server), so this module does what
its admission path does for one object: pick the constraints whose ``spec.match`` selects the
object (kinds, namespaces with ``prefix-*`` globs, excludedNamespaces, labelSelector), then
evaluate the template's Rego with ``input.review.object`` = the object and ``input.parameters`` =
the constraint's parameters, and collect ``violation`` (``{"msg", "details"}``) results.

Also runs each policy's ``src_test.rego`` unit tests (every ``test_*`` rule must be ``true``).
``template.yaml``'s Rego is generated from ``src.rego`` by ``scripts/gatekeeper_templates.py``.

regopy 1.5.2 notes (why the Rego tests look the way they do): ``with input as {...}`` (replacing
the whole input) trips an internal rego-cpp error, and ``with ... as <rule>`` evaluates to
undefined, so tests use ``with input.review as ... with input.parameters as ...`` and bind rule
values to a local variable first (``p := params``). ``sort(set)`` yields a value that does not
compare equal to an array, so the policies sort array comprehensions.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from regopy import Interpreter
from regopy.rego_shared import rego_get_error

from tests.deploy.k8s import selector_matches

REPO = Path(__file__).resolve().parents[2]
POLICIES_DIR = REPO / "policies"
# What Argo CD syncs (argo-cd/apps/application-policies.yaml): the templates and, per environment,
# the real constraints (policies/deploy/overlays/<env>).
DEPLOY_DIR = POLICIES_DIR / "deploy"

# kind -> API group, for objects that carry only ``kind`` (samples always carry apiVersion).
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Rollout"}


class RegoFailure(AssertionError):
    """The Rego engine rejected a module or a query."""


@dataclass
class Policy:
    name: str
    path: Path
    _interp: Interpreter | None = field(default=None, repr=False)

    @cached_property
    def src(self) -> str:
        return (self.path / "src.rego").read_text()

    @cached_property
    def test_src(self) -> str:
        return (self.path / "src_test.rego").read_text()

    @cached_property
    def template(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "template.yaml").read_text())

    @cached_property
    def constraint(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "samples" / "constraint.yaml").read_text())

    @property
    def kind(self) -> str:
        return self.template["spec"]["crd"]["spec"]["names"]["kind"]

    @property
    def package(self) -> str:
        match = re.search(r"^package\s+(\S+)", self.src, re.M)
        assert match, f"{self.name}/src.rego has no package line"
        return match.group(1)

    @property
    def template_rego(self) -> str:
        return self.template["spec"]["targets"][0]["rego"]

    def samples(self, prefix: str) -> list[Path]:
        return sorted((self.path / "samples").glob(f"{prefix}*.yaml"))

    def test_names(self) -> list[str]:
        return re.findall(r"^(test_\w+)\s+if\b", self.test_src, re.M)

    # -- evaluation --------------------------------------------------------------------------

    def _interpreter(self) -> Interpreter:
        if self._interp is None:
            interp = Interpreter()
            _add_module(interp, f"{self.name}/src.rego", self.template_rego)
            self._interp = interp
        return self._interp

    def violations(
        self, obj: dict[str, Any], parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The template's violations for one object, given as Gatekeeper would give it."""
        interp = self._interpreter()
        review = {
            "object": obj,
            "kind": _gvk(obj),
            "operation": "CREATE",
            "name": obj["metadata"].get("name"),
        }
        interp.set_input_term(json.dumps({"review": review, "parameters": parameters or {}}))
        out = interp.query(f"data.{self.package}.violation")
        if not out.ok():
            raise RegoFailure(f"{self.name}: {rego_get_error(interp._impl)}")
        if not out.results:
            return []
        return list(out.results[0].expressions[0])

    def admit(self, obj: dict[str, Any], constraint: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Violations if the constraint (default: the sample) matches the object, else []."""
        constraint = constraint or self.constraint
        if not matches(constraint.get("spec", {}).get("match", {}), obj):
            return []
        return self.violations(obj, constraint.get("spec", {}).get("parameters", {}))

    def run_unit_tests(self, src: str | None = None) -> dict[str, str | None]:
        """Run every ``test_*`` rule; name -> None when it passed, else the reason."""
        interp = Interpreter()
        _add_module(interp, f"{self.name}/src.rego", src if src is not None else self.src)
        _add_module(interp, f"{self.name}/src_test.rego", self.test_src)
        results: dict[str, str | None] = {}
        for name in self.test_names():
            out = interp.query(f"data.{self.package}.{name}")
            if not out.ok():
                results[name] = f"error: {rego_get_error(interp._impl)}"
            elif not out.results or out.results[0].expressions != [True]:
                results[name] = "undefined or false"
            else:
                results[name] = None
        return results


def _add_module(interp: Interpreter, name: str, source: str) -> None:
    try:
        interp.add_module(name, source)
    except Exception as exc:  # regopy raises RegoError with the rego-cpp error tree
        raise RegoFailure(f"{name} does not compile: {str(exc)[:2000]}") from None


def _gvk(obj: dict[str, Any]) -> dict[str, str]:
    group, _, version = obj.get("apiVersion", "v1").rpartition("/")
    return {"group": group, "version": version, "kind": obj.get("kind", "")}


def matches(match: dict[str, Any], obj: dict[str, Any]) -> bool:
    """Gatekeeper's ``spec.match`` semantics for the fields our constraints use."""
    gvk = _gvk(obj)
    kinds = match.get("kinds")
    if kinds:
        ok = any(
            (gvk["group"] in k.get("apiGroups", []) or "*" in k.get("apiGroups", []))
            and (gvk["kind"] in k.get("kinds", []) or "*" in k.get("kinds", []))
            for k in kinds
        )
        if not ok:
            return False
    namespace = obj.get("metadata", {}).get("namespace")
    if match.get("namespaces") and not (
        namespace and any(fnmatch.fnmatchcase(namespace, pat) for pat in match["namespaces"])
    ):
        return False
    if (
        match.get("excludedNamespaces")
        and namespace
        and any(fnmatch.fnmatchcase(namespace, pat) for pat in match["excludedNamespaces"])
    ):
        return False
    selector = match.get("labelSelector")
    if selector and not selector_matches(selector, obj.get("metadata", {}).get("labels") or {}):
        return False
    return True


def load_policies() -> list[Policy]:
    return [Policy(p.name, p) for p in sorted(POLICIES_DIR.iterdir()) if (p / "src.rego").is_file()]


def deployed_constraints(env: str) -> list[dict[str, Any]]:
    """The constraints Argo CD syncs for ``env``: ``policies/deploy/overlays/<env>``, built with kustomize."""
    from mlplatform.deploy.render import kustomize_build, parse_documents

    return parse_documents(kustomize_build(DEPLOY_DIR / "overlays" / env, REPO))


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
