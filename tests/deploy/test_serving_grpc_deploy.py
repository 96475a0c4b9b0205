"""model-serving's V2 gRPC endpoint as deployed, in every overlay: the ConfigMap turns it on at the
chart's port, the pods declare the container port ``grpc``, the Service has port ``grpc`` (appProtocol
grpc) to it, the NetworkPolicy lets the ingress controller reach it and nobody else, and the gRPC Ingress
routes ``/inference.GRPCInferenceService/`` on the REST host to it with nginx's GRPC backend protocol.
No cluster: objects are checked against the Kubernetes 1.32 schemas and the NetworkPolicy evaluator of
tests/deploy/k8s.py."""

from __future__ import annotations

import copy

import pytest

from mlplatform.deploy.render import ENVIRONMENTS, helm_template
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import Pod, by_kind, flow_allowed, pods_of, validate_object
from tests.deploy.rendered import config_maps, find, render_overlay

SERVING = "model-serving"
GRPC = "model-serving-grpc"
PORT = 8081
NGINX = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_grpc_service_policy_and_ingress(env):
    objects = render_overlay(env)
    assert config_maps(objects)[SERVING]["SERVING_GRPC_PORT"] == str(PORT)
    svc = find(objects, "Service", SERVING)
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"] == {
        "name": "grpc",
        "port": PORT,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert ports["http"]["targetPort"] == "http"
    pods = pods_of(objects)
    assert pods[SERVING].ports == {"http": 8080, "grpc": PORT}

    policies = by_kind(objects, "NetworkPolicy")
    serving = pods[SERVING]
    assert flow_allowed(policies, NGINX, serving, PORT)
    stranger = Pod(f"mlplatform-{env}", {"app": "debug"})
    for other in (stranger, pods["feature-store"], pods["drift-detection"], pods["explainability"]):
        assert not flow_allowed(policies, other, serving, PORT)
    assert not flow_allowed(
        policies, Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}), serving, PORT
    )

    rest = find(objects, "Ingress", SERVING)
    ing = find(objects, "Ingress", GRPC)
    notes = ing["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert "cert-manager.io/cluster-issuer" not in notes  # the REST Ingress has the certificate issued
    for key in ("proxy-body-size", "limit-rps", "limit-connections", "proxy-read-timeout"):
        full = f"nginx.ingress.kubernetes.io/{key}"
        assert notes[full] == rest["metadata"]["annotations"][full]
    assert ing["spec"]["tls"] == rest["spec"]["tls"]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == rest["spec"]["rules"][0]["host"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/inference.GRPCInferenceService/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": SERVING, "port": {"name": "grpc"}}
    for obj in (svc, ing, find(objects, "NetworkPolicy", SERVING)):
        assert validate_object(obj) == []
    # the other services have no such port
    for name in ("feature-store", "drift-detection", "explainability"):
        assert [p["name"] for p in find(objects, "Service", name)["spec"]["ports"]] == ["http"]


def test_the_policy_check_can_fail():
    """Without the `grpc` port in serving's ingress rules the controller cannot reach it (default deny)."""
    objects = copy.deepcopy(render_overlay("dev"))
    policies = by_kind(objects, "NetworkPolicy")
    serving_np = next(p for p in policies if p["metadata"]["name"] == SERVING)
    for rule in serving_np["spec"]["ingress"]:
        rule["ports"] = [p for p in rule.get("ports", []) if p["port"] != "grpc"]
    assert not flow_allowed(policies, NGINX, pods_of(objects)[SERVING], PORT)
    assert flow_allowed(policies, NGINX, pods_of(objects)[SERVING], 8080)


def test_grpc_disabled_renders_nothing_and_port_zero(tmp_path):
    values = tmp_path / "off.yaml"
    values.write_text("grpc:\n  enabled: false\ningress:\n  enabled: true\n")
    objects = helm_template(SERVING, [values], release=SERVING, root=ROOT)
    assert not [o for o in objects if o["metadata"]["name"] == GRPC]
    assert [p["name"] for p in find(objects, "Service", SERVING)["spec"]["ports"]] == ["http"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == SERVING]
    assert [p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]] == ["http"]
    assert config_maps(objects)[SERVING]["SERVING_GRPC_PORT"] == "0"
