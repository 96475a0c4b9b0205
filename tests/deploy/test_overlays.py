"""Every overlay builds with kustomize (+ the charts via Helm 3) and renders valid, hardened objects.

The Kubernetes API server cannot run here: objects are validated against the Kubernetes 1.32
OpenAPI schemas (kubernetes-validate, strict) and the vendored CRD JSON schemas instead.
"""

from __future__ import annotations

import copy
import re
from functools import partial

import pytest
import yaml

from mlplatform.deploy.render import ENVIRONMENTS, RELEASES, SERVICE_CHARTS, TEXT_RELEASE
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import (
    Pod,
    by_kind,
    containers,
    flow_allowed,
    pod_spec,
    pods_of,
    selector_matches,
    validate_object,
    workloads,
)

REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
GPU = "nvidia.com/gpu"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_renders_all_services(rendered, env):
    objects = rendered[env]
    names = {w["metadata"]["name"] for w in workloads(objects)}
    assert names == set(RELEASES)
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        f"mlplatform-{env}"
    }
    (ns,) = by_kind(objects, "Namespace")
    assert ns["metadata"]["name"] == f"mlplatform-{env}"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert by_kind(objects, "ResourceQuota") and by_kind(objects, "LimitRange")
    deny = [n for n in by_kind(objects, "NetworkPolicy") if n["spec"]["podSelector"] == {}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_object_is_schema_valid(rendered, env):
    errors = [e for obj in rendered[env] for e in validate_object(obj)]
    assert errors == []


def test_schema_validation_catches_mistakes(rendered):
    """The validators are strict: an unknown field or a wrong type in a built-in or CRD fails."""
    objects = rendered["prod"]
    deployment = copy.deepcopy(by_kind(objects, "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    assert validate_object(deployment)
    monitor = copy.deepcopy(by_kind(objects, "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert validate_object(monitor)
    rollout = copy.deepcopy(by_kind(objects, "Rollout")[0])
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "ten"
    assert validate_object(rollout)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_object_has_the_standard_labels(rendered, env):
    missing = [
        (o["kind"], o["metadata"]["name"], label)
        for o in rendered[env]
        for label in REQUIRED_LABELS
        if not o["metadata"].get("labels", {}).get(label)
    ]
    assert missing == []
    for w in workloads(rendered[env]):
        pod_labels = w["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(label) for label in REQUIRED_LABELS), w["metadata"]["name"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_containers_are_hardened_and_bounded(rendered, env):
    for w in workloads(rendered[env]):
        spec = pod_spec(w)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        mounts = {v["name"]: v for v in spec["volumes"]}
        for c in containers(w):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (w["metadata"]["name"], kind)
            # Writable paths are emptyDirs: the data dir and /tmp.
            written = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "/tmp" in written and "emptyDir" in mounts[written["/tmp"]]
            env_from = c["envFrom"][0]["configMapRef"]["name"]
            (cm,) = [m for m in by_kind(rendered[env], "ConfigMap") if m["metadata"]["name"] == env_from]
            assert "emptyDir" in mounts[written[cm["data"]["MLPLATFORM_DATA_DIR"]]]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_images_are_pinned(rendered, env):
    for w in workloads(rendered[env]):
        for c in containers(w):
            image = c["image"]
            name, _, tag = image.split("@")[0].rpartition(":")
            assert name and tag and tag != "latest", image
            # A digest is optional (the release pipeline writes real ones); when there is one it
            # is a well-formed sha256 after the tag.
            assert "@" not in image or re.search(r":[^:/@]+@sha256:[0-9a-f]{64}$", image), image
            if env == "prod":
                assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"prod tag is not an exact release: {image}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_gpu_requests_only_on_the_gpu_pool(rendered, env):
    gpu_workloads = set()
    for w in workloads(rendered[env]):
        spec = pod_spec(w)
        for c in containers(w):
            requested = GPU in c["resources"].get("requests", {}) or GPU in c["resources"].get("limits", {})
            if requested:
                gpu_workloads.add(w["metadata"]["name"])
                assert c["resources"]["requests"][GPU] == c["resources"]["limits"][GPU]
                assert spec.get("nodeSelector"), w["metadata"]["name"]
                assert any(
                    t.get("key") == GPU and t.get("effect") == "NoSchedule"
                    for t in spec.get("tolerations", [])
                )
                assert "-gpu:" in c["image"]
    expected = {"model-serving", "explainability", TEXT_RELEASE} if env == "prod" else set()
    assert gpu_workloads == expected
    quota = by_kind(rendered[env], "ResourceQuota")[0]["spec"]["hard"]
    assert (int(quota[f"requests.{GPU}"]) > 0) == bool(expected)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_services_select_their_pods(rendered, env):
    objects = rendered[env]
    for svc in by_kind(objects, "Service"):
        targets = [
            w
            for w in workloads(objects)
            if selector_matches(
                {"matchLabels": svc["spec"]["selector"]}, w["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)} workloads"
        port_names = {p["name"] for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names
        assert targets[0]["metadata"]["name"] == svc["metadata"]["name"]
    for w in workloads(objects):
        assert selector_matches(w["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        assert any(
            selector_matches(pdb["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
            for w in workloads(objects)
        )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_service_urls_point_at_rendered_services(rendered, env):
    """SERVING_FEATURE_STORE_URL & co. name a Service of the overlay on its port."""
    services = {s["metadata"]["name"]: s for s in by_kind(rendered[env], "Service")}
    for cm in by_kind(rendered[env], "ConfigMap"):
        for key, value in cm["data"].items():
            if (
                key.endswith("_URL")
                and value.startswith("http://")
                and "." not in value.split("//")[1].split(":")[0]
            ):
                host = value.split("//")[1].split("/")[0]
                name, _, port = host.partition(":")
                assert name in services, f"{key}={value}"
                assert int(port or 80) in {p["port"] for p in services[name]["spec"]["ports"]}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_ingress_always_has_tls(rendered, env):
    ingresses = by_kind(rendered[env], "Ingress")
    names = {i["metadata"]["name"] for i in ingresses}
    assert names == {"model-serving", "explainability", "model-serving-grpc", TEXT_RELEASE}
    for ing in ingresses:
        if ing["metadata"]["name"] == "model-serving-grpc":  # tests/deploy/test_serving_grpc_deploy.py
            assert ing["spec"]["tls"] and ing["spec"]["rules"][0]["host"] in ing["spec"]["tls"][0]["hosts"]
            continue
        hosts = {r["host"] for r in ing["spec"]["rules"]}
        tls_hosts = {h for t in ing["spec"]["tls"] for h in t["hosts"]}
        assert hosts <= tls_hosts
        annotations = ing["metadata"]["annotations"]
        assert annotations["cert-manager.io/cluster-issuer"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert int(annotations["nginx.ingress.kubernetes.io/limit-rps"]) > 0
        paths = [p["path"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
        if ing["metadata"]["name"] == TEXT_RELEASE:  # tests/deploy/test_text_serving_deploy.py
            assert all(re.fullmatch(p, "/v2/models/summarizer/generate") for p in paths)
            continue
        suffix = "infer" if ing["metadata"]["name"] == "model-serving" else "explain"
        assert all(re.fullmatch(p, f"/v2/models/fraud-detector/{suffix}") for p in paths)
        assert not any(re.fullmatch(p, "/metrics") for p in paths)


def test_environment_differences(rendered):
    def cm(env: str, name: str) -> dict[str, str]:
        return next(c for c in by_kind(rendered[env], "ConfigMap") if c["metadata"]["name"] == name)["data"]

    assert cm("dev", "feature-store").get("FEATURES_ONLINE_STORE") != "redis"
    for env in ("staging", "prod"):
        assert cm(env, "feature-store")["FEATURES_ONLINE_STORE"] == "redis"
    assert cm("prod", "model-serving")["SERVING_MODELS"] == cm("prod", "explainability")["EXPLAIN_MODELS"]
    assert re.fullmatch(r"([\w.-]+/\d+)(,[\w.-]+/\d+)*", cm("prod", "model-serving")["SERVING_MODELS"])
    assert cm("prod", "model-serving")["SERVING_SECRETS_BACKEND"] == "vault"
    assert cm("prod", "model-serving")["VAULT_ADDR"] and cm("prod", "model-serving")["VAULT_ROLE"]
    assert cm("dev", "model-serving")["SERVING_SECRETS_BACKEND"] == "env"
    for env in ENVIRONMENTS:
        for name in SERVICE_CHARTS:
            assert cm(env, name)["MLPLATFORM_ENV"] == env
    assert not by_kind(rendered["dev"], "HorizontalPodAutoscaler")
    assert {r["metadata"]["name"] for r in by_kind(rendered["prod"], "Rollout")} == {"model-serving"}
    assert not by_kind(rendered["dev"], "Rollout")
    prod_hpa = {h["metadata"]["name"]: h for h in by_kind(rendered["prod"], "HorizontalPodAutoscaler")}
    assert prod_hpa["model-serving"]["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    assert prod_hpa["feature-store"]["spec"]["minReplicas"] >= 3


def _adapter_metric_names() -> set[str]:
    rules = yaml.safe_load((ROOT / "observability" / "prometheus-adapter" / "rules.yaml").read_text())[
        "rules"
    ]
    names = set()
    for rule in rules:
        series = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["seriesQuery"].strip("'\"")).group(0)
        as_ = rule.get("name", {}).get("as", series)
        names.add(re.sub(r"\$\{?1\}?", series, as_))
        assert set(rule["resources"]["overrides"]) >= {"namespace", "pod"}, rule["seriesQuery"]
    return names


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_hpa_custom_metrics_are_served_by_the_adapter(rendered, env):
    adapter = _adapter_metric_names()
    for hpa in by_kind(rendered[env], "HorizontalPodAutoscaler"):
        kinds = [m["type"] for m in hpa["spec"]["metrics"]]
        assert "Resource" in kinds and "Pods" in kinds
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in adapter
        behavior = hpa["spec"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] > 0 and behavior["scaleUp"]["policies"]
    gpu_hpas = [
        h["metadata"]["name"]
        for h in by_kind(rendered[env], "HorizontalPodAutoscaler")
        if any(
            m.get("pods", {}).get("metric", {}).get("name") == "DCGM_FI_DEV_GPU_UTIL"
            for m in h["spec"]["metrics"]
        )
    ]
    assert sorted(gpu_hpas) == (["explainability", "model-serving", TEXT_RELEASE] if env == "prod" else [])


def test_in_flight_metric_exists_in_core():
    """The HPA metric the adapter serves is the one core/metrics.py exports."""
    from prometheus_client import CollectorRegistry

    from mlplatform.core.metrics import HttpMetrics

    registry = CollectorRegistry()
    HttpMetrics(registry, "model-serving").inc_in_flight()
    assert (
        registry.get_sample_value("mlplatform_http_requests_in_flight", {"service": "model-serving"}) == 1.0
    )
    assert "mlplatform_http_requests_in_flight" in _adapter_metric_names()


def test_canary_analysis_queries_the_platform_metrics(rendered):
    (template,) = by_kind(rendered["prod"], "AnalysisTemplate")
    (rollout,) = by_kind(rendered["prod"], "Rollout")
    analysis = rollout["spec"]["strategy"]["canary"]["analysis"]
    assert analysis["templates"][0]["templateName"] == template["metadata"]["name"]
    declared = {a["name"] for a in template["spec"]["args"]}
    assert {a["name"] for a in analysis["args"]} == declared
    queries = {m["name"]: m["provider"]["prometheus"]["query"] for m in template["spec"]["metrics"]}
    assert (
        "mlplatform_http_requests_total" in queries["error-rate"] and 'code=~"5.."' in queries["error-rate"]
    )
    assert "histogram_quantile(0.99" in queries["p99-latency"]
    assert "mlplatform_http_request_duration_seconds_bucket" in queries["p99-latency"]
    for query in queries.values():
        assert 'namespace="mlplatform-prod"' in query and 'service="model-serving"' in query
        assert set(re.findall(r"\{\{args\.([\w-]+)\}\}", query)) <= declared
    # The canary pods' hash label reaches the metrics through the ServiceMonitor.
    monitor = next(
        m for m in by_kind(rendered["prod"], "ServiceMonitor") if m["metadata"]["name"] == "model-serving"
    )
    assert "rollouts-pod-template-hash" in monitor["spec"]["podTargetLabels"]


def test_core_exports_the_metrics_the_analysis_uses():
    from prometheus_client import CollectorRegistry

    from mlplatform.core.metrics import HttpMetrics

    registry = CollectorRegistry()
    HttpMetrics(registry, "model-serving").observe("/v2/models/{name}/infer", "POST", 500, 0.01)
    labels = {"service": "model-serving", "route": "/v2/models/{name}/infer", "method": "POST"}
    assert registry.get_sample_value("mlplatform_http_requests_total", {**labels, "code": "500"}) == 1.0
    assert (
        registry.get_sample_value("mlplatform_http_request_duration_seconds_bucket", {**labels, "le": "+Inf"})
        == 1.0
    )


def _external(namespace: str, name: str, **ports: int) -> Pod:
    return Pod(namespace, {"app.kubernetes.io/name": name}, dict(ports))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_network_policies_allow_exactly_the_needed_flows(rendered, env):
    objects = rendered[env]
    policies = by_kind(objects, "NetworkPolicy")
    pods = pods_of(objects)
    serving, features, drift, explain = (pods[n] for n in SERVICE_CHARTS)
    nginx = _external("ingress-nginx", "ingress-nginx")
    prometheus = _external("monitoring", "prometheus")
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    mlflow = _external("mlflow", "mlflow")
    otel = _external("observability", "opentelemetry-collector")
    vault = _external("vault", "vault")
    redis = _external("redis", "redis")
    stranger = Pod(f"mlplatform-{env}", {"app": "debug"})
    allowed = partial(flow_allowed, policies)  # allowed(src, dst, port, protocol="TCP")
    # Client API through the ingress controller: serving and explain only.
    assert allowed(nginx, serving, 8080) and allowed(nginx, explain, 8083)
    assert not allowed(nginx, features, 8081) and not allowed(nginx, drift, 8082)
    # Service to service.
    assert allowed(serving, features, 8081) and allowed(serving, drift, 8082)
    assert allowed(explain, features, 8081)
    assert not allowed(explain, drift, 8082) and not allowed(features, serving, 8080)
    assert not allowed(drift, features, 8081) and not allowed(serving, explain, 8083)
    assert not allowed(serving, features, 9999)
    # Prometheus scrapes every service; nothing else in the namespace reaches them.
    for pod, port in ((serving, 8080), (features, 8081), (drift, 8082), (explain, 8083)):
        assert allowed(prometheus, pod, port)
        assert not allowed(stranger, pod, port)
        assert allowed(pod, dns, 53, "UDP") and allowed(pod, dns, 53, "TCP")
        assert allowed(pod, mlflow, 5000) and allowed(pod, otel, 4318)
        assert allowed(pod, vault, 8200) == (env == "prod")
        assert not allowed(pod, _external("default", "anything"), 443)
    assert allowed(features, redis, 6379) == (env in ("staging", "prod"))
    assert not allowed(serving, redis, 6379)
    # Default deny covers pods no chart policy selects.
    assert not allowed(stranger, Pod("elsewhere", {"x": "y"}), 80)


def test_network_policy_evaluator_sees_a_missing_rule(rendered):
    """Removing serving's egress rule to feature-store makes that flow denied (the check can fail)."""
    objects = copy.deepcopy(rendered["dev"])
    policies = by_kind(objects, "NetworkPolicy")
    serving_np = next(p for p in policies if p["metadata"]["name"] == "model-serving")
    serving_np["spec"]["egress"] = [
        r for r in serving_np["spec"]["egress"] if all(p.get("port") != 8081 for p in r.get("ports", []))
    ]
    pods = pods_of(objects)
    assert not flow_allowed(policies, pods["model-serving"], pods["feature-store"], 8081)


def test_rendered_env_values_reach_pods(rendered):
    """Config changes roll pods: the pod template carries a checksum of its ConfigMap."""
    checksums: dict[str, set[str]] = {}
    for objects in rendered.values():
        for w in workloads(objects):
            checksums.setdefault(w["metadata"]["name"], set()).add(
                w["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            )
    assert all(len(values) == len(ENVIRONMENTS) for values in checksums.values())
