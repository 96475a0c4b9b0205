"""Helpers for the deployment tests: schema validation, pod/selector matching, NetworkPolicy evaluation."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

KUBERNETES_VERSION = "1.32.0"
CRD_SCHEMAS = Path(__file__).parent / "crd-schemas"
WORKLOAD_KINDS = ("Deployment", "Rollout", "StatefulSet", "DaemonSet")


def _strict(schema: Any) -> Any:
    """Disallow unknown fields wherever a CRD schema lists properties (what kubeconform -strict does)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    group, _, version = api_version.rpartition("/")
    path = CRD_SCHEMAS / group / f"{kind.lower()}_{version}.json"
    if not path.is_file():
        raise LookupError(f"no vendored CRD schema for {api_version} {kind} (expected {path})")
    schema = _strict(json.loads(path.read_text()))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Schema errors of one object: Kubernetes 1.32 built-ins (strict), else a vendored CRD schema."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    where = f"{kind}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(copy.deepcopy(obj), KUBERNETES_VERSION, strict=True)
        return []
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'/'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        pass
    try:
        validator = crd_validator(api_version, kind)
    except LookupError as exc:
        return [f"{where}: not a Kubernetes {KUBERNETES_VERSION} kind and {exc}"]
    return [
        f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def by_kind(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return by_kind(objects, *WORKLOAD_KINDS)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels + matchExpressions) against labels; {} matches all."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Pod:
    """A pod as NetworkPolicies see it: namespace (with its labels), pod labels, named ports."""

    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.namespace_labels = {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


PG_CLUSTER = "mlplatform-pg"

# Pods outside the platform's workloads that its NetworkPolicies name (labels as their charts set them)
EXTERNAL_PODS = {
    "mlflow": Pod("mlflow", {"app.kubernetes.io/name": "mlflow"}),
    "vault": Pod("vault", {"app.kubernetes.io/name": "vault"}),
    "redis": Pod("redis", {"app.kubernetes.io/name": "redis"}),
    "dns": Pod("kube-system", {"k8s-app": "kube-dns"}),
    "cnpg-operator": Pod("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}),
}


def postgres_pod(objects: list[dict[str, Any]], env: str) -> Pod:
    """A pod of the environment's CloudNativePG cluster (labels it inherits plus the operator's)."""
    (cluster,) = [o for o in objects if o["kind"] == "Cluster" and o["metadata"]["name"] == PG_CLUSTER]
    labels = {**cluster["spec"]["inheritedMetadata"]["labels"], "cnpg.io/cluster": PG_CLUSTER}
    return Pod(f"mlplatform-{env}", labels)


def pods_of(objects: list[dict[str, Any]]) -> dict[str, Pod]:
    """One Pod per workload, keyed by the workload's name."""
    pods: dict[str, Pod] = {}
    for w in workloads(objects):
        ports = {
            p["name"]: p["containerPort"] for c in containers(w) for p in c.get("ports", []) if "name" in p
        }
        pods[w["metadata"]["name"]] = Pod(
            w["metadata"]["namespace"], dict(w["spec"]["template"]["metadata"]["labels"]), ports
        )
    return pods


def _peer_matches(peer: dict[str, Any], policy_ns: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # the tests only reason about pods
    ns_sel = peer.get("namespaceSelector")
    pod_sel = peer.get("podSelector")
    if ns_sel is None:
        ns_ok = pod.namespace == policy_ns
    else:
        ns_ok = selector_matches(ns_sel, pod.namespace_labels)
    pod_ok = True if pod_sel is None else selector_matches(pod_sel, pod.labels)
    return ns_ok and pod_ok


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, target: Pod, protocol: str) -> bool:
    if not rule_ports:
        return True
    for rp in rule_ports:
        if rp.get("protocol", "TCP") != protocol:
            continue
        value = rp.get("port")
        if value is None:
            return True
        number = target.ports.get(value) if isinstance(value, str) else value
        end = rp.get("endPort", number)
        if number is not None and number <= port <= end:
            return True
    return False


def _direction_allows(
    policies: list[dict[str, Any]],
    subject: Pod,
    other: Pod,
    port: int,
    target: Pod,
    direction: str,
    protocol: str,
) -> bool:
    """True when no policy of this direction selects ``subject``, or one of them admits the flow."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    peer_key = "from" if direction == "ingress" else "to"
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and selector_matches(p["spec"]["podSelector"], subject.labels)
        and kind in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(direction, []) or []:
            peers = rule.get(peer_key)
            peer_ok = not peers or any(_peer_matches(peer, subject.namespace, other) for peer in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, target, protocol):
                return True
    return False


def flow_allowed(
    policies: list[dict[str, Any]], src: Pod, dst: Pod, port: int, protocol: str = "TCP"
) -> bool:
    """Whether NetworkPolicies let ``src`` open ``port`` on ``dst`` (egress of src and ingress of dst)."""
    return _direction_allows(policies, src, dst, port, dst, "egress", protocol) and _direction_allows(
        policies, dst, src, port, dst, "ingress", protocol
    )
