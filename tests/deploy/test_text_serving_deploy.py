"""The text model's serving in the overlays (#20 part 7): the model-serving chart installed a second time
(release ``model-serving-text``) serving only the summarizer, in its own Deployment with its own
resources; in prod on the GPU node pool with the CUDA image; an HPA on generations in flight served by
prometheus-adapter; Argo CD syncs it with the rest of the overlay. Objects are validated against the
Kubernetes 1.32 schemas and the vendored CRD schemas."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlplatform.deploy.render import ENVIRONMENTS, TEXT_RELEASE
from tests.deploy.conftest import ROOT
from tests.deploy.k8s import by_kind, containers, pod_spec, selector_matches, validate_object, workloads
from tests.deploy.rendered import config_maps, workload

GPU = "nvidia.com/gpu"
GENERATION_IN_FLIGHT = "mlplatform_serving_generation_in_flight"
ADAPTER_RULES = ROOT / "observability" / "prometheus-adapter" / "rules.yaml"


def _release_objects(objects: list[dict], release: str) -> list[dict]:
    return [
        o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == release
    ]


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi)", quantity)
    assert match, quantity
    return float(match.group(1)) * units[match.group(2)]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_text_release_serves_only_the_summarizer_in_its_own_deployment(rendered, env):
    objects = rendered[env]
    text = workload(objects, TEXT_RELEASE)
    assert text["kind"] == "Deployment"  # no canary: the analysis' p99 limit is for tabular requests
    own = _release_objects(objects, TEXT_RELEASE)
    assert own and all(validate_object(o) == [] for o in own), [e for o in own for e in validate_object(o)]
    kinds = {o["kind"] for o in own}
    assert {
        "Deployment",
        "ConfigMap",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceMonitor",
    } <= kinds
    # the platform's rules ship once (with the tabular release), the text release has no gRPC port
    assert "PrometheusRule" not in kinds
    assert not any(p.get("name") == "grpc" for c in containers(text) for p in c.get("ports", []))
    cms = config_maps(objects)
    models = cms[TEXT_RELEASE]["SERVING_MODELS"].split(",")
    assert len(models) == 1 and re.fullmatch(r"summarizer[/@]\w+", models[0]), models
    assert not any(m.startswith("summarizer") for m in cms["model-serving"]["SERVING_MODELS"].split(","))
    # the tabular release's identity (ServiceAccount, Vault role): one service, one set of secrets
    tabular = workload(objects, "model-serving")
    assert pod_spec(text)["serviceAccountName"] == pod_spec(tabular)["serviceAccountName"]
    assert not [o for o in own if o["kind"] == "ServiceAccount"]
    assert cms[TEXT_RELEASE].get("VAULT_ROLE") == cms["model-serving"].get("VAULT_ROLE")
    # its own memory (scripts/bench/bench_text_cost.py, docs/deploy.md): on CPU the measured figures,
    # not the tabular pods'; the GPU variant at least as much host memory as the CPU measurement
    (container,) = containers(text)
    (tabular_container,) = containers(tabular)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert _mebibytes(requests["memory"]) <= _mebibytes(limits["memory"])
    own_values = yaml.safe_load(
        (ROOT / "kubernetes" / "overlays" / env / "values" / f"{TEXT_RELEASE}.yaml").read_text()
    )
    if env == "prod":
        (measured,) = containers(workload(rendered["staging"], TEXT_RELEASE))
        assert _mebibytes(requests["memory"]) >= _mebibytes(measured["resources"]["requests"]["memory"])
    else:
        assert own_values["resources"]["requests"]["memory"] == requests["memory"]
        assert container["resources"] != tabular_container["resources"]
    # the Service and the ServiceMonitor select the text pods only
    labels = text["spec"]["template"]["metadata"]["labels"]
    (service,) = [o for o in own if o["kind"] == "Service"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
    assert not selector_matches(
        {"matchLabels": service["spec"]["selector"]}, tabular["spec"]["template"]["metadata"]["labels"]
    )


def test_prod_runs_the_summarizer_on_the_gpu_pool(rendered):
    objects = rendered["prod"]
    text = workload(objects, TEXT_RELEASE)
    spec = pod_spec(text)
    (container,) = containers(text)
    assert re.search(
        r"/mlplatform/model-serving-gpu:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$", container["image"]
    )
    assert container["resources"]["requests"][GPU] == container["resources"]["limits"][GPU] == "1"
    assert spec["nodeSelector"] == {"mlplatform.io/node-pool": "gpu"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # the GPU quota holds every GPU workload at its HPA minimum
    quota = int(by_kind(objects, "ResourceQuota")[0]["spec"]["hard"][f"requests.{GPU}"])
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind(objects, "HorizontalPodAutoscaler")}
    needed = sum(
        hpas[w["metadata"]["name"]]["spec"]["minReplicas"] * int(c["resources"]["requests"][GPU])
        for w in workloads(objects)
        for c in containers(w)
        if GPU in c["resources"].get("requests", {})
    )
    assert 0 < needed <= quota, (needed, quota)
    for env in ("dev", "staging"):
        (cpu,) = containers(workload(rendered[env], TEXT_RELEASE))
        assert GPU not in cpu["resources"].get("requests", {}) and "-gpu:" not in cpu["image"]


def _adapter_rules() -> dict[str, dict]:
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    return {r["name"]["as"]: r for r in rules}


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_hpa_scales_the_summarizer_on_generations_in_flight(rendered, env, monkeypatch):
    objects = rendered[env]
    (hpa,) = [h for h in by_kind(objects, "HorizontalPodAutoscaler") if h["metadata"]["name"] == TEXT_RELEASE]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": TEXT_RELEASE,
    }
    pods = {
        m["pods"]["metric"]["name"]: m["pods"]["target"]
        for m in hpa["spec"]["metrics"]
        if m["type"] == "Pods"
    }
    assert GENERATION_IN_FLIGHT in pods and float(pods[GENERATION_IN_FLIGHT]["averageValue"]) > 0
    # one full decoder batch per pod: the target is the batch size the text runtime reads
    from mlplatform.serving.text.runtime import TextSettings

    text_env = {k: v for k, v in config_maps(objects)[TEXT_RELEASE].items() if k.startswith("SERVING_TEXT_")}
    for key, value in text_env.items():
        monkeypatch.setenv(key, value)
    assert TextSettings().max_batch_size == int(pods[GENERATION_IN_FLIGHT]["averageValue"])
    assert ("DCGM_FI_DEV_GPU_UTIL" in pods) == (env == "prod")
    rules = _adapter_rules()
    assert set(pods) <= set(rules)
    rule = rules[GENERATION_IN_FLIGHT]
    assert rule["seriesQuery"].startswith(f"{GENERATION_IN_FLIGHT}{{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # the tabular HPA keeps its own request signals
    (tabular,) = [
        h for h in by_kind(objects, "HorizontalPodAutoscaler") if h["metadata"]["name"] == "model-serving"
    ]
    assert GENERATION_IN_FLIGHT not in {
        m["pods"]["metric"]["name"] for m in tabular["spec"]["metrics"] if m["type"] == "Pods"
    }


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (APT package prometheus) not installed"
)
def test_adapter_queries_are_valid_promql(tmp_path: Path):
    """Each adapter rule's metricsQuery, with the adapter's template variables filled in as it fills
    them for a Pods metric of one namespace, parses as PromQL (promtool)."""
    records = []
    for name, rule in _adapter_rules().items():
        series = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["seriesQuery"].strip("'\"")).group(0)
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="mlplatform-prod",pod=~"a|b"')
            .replace("<<.GroupBy>>", "pod")
        )
        assert "<<" not in query, query
        records.append({"record": f"adapter:{name}", "expr": query})
    assert any(r["record"] == f"adapter:{GENERATION_IN_FLIGHT}" for r in records)
    tokens = [
        r for r in records if r["record"] == "adapter:mlplatform_serving_generation_output_tokens_per_second"
    ]
    assert tokens and "rate(mlplatform_serving_generation_output_tokens_sum{" in tokens[0]["expr"]
    path = tmp_path / "adapter.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": records}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # promtool is effective: a broken query fails
    records.append({"record": "adapter:broken", "expr": "sum(rate(x[1m]) by (pod)"})
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": records}]}))
    assert subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True).returncode != 0


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_ingress_routes_the_summarizer_to_its_release(rendered, env):
    ingresses = {i["metadata"]["name"]: i for i in by_kind(rendered[env], "Ingress")}

    def paths(name: str) -> list[str]:
        return [p["path"] for r in ingresses[name]["spec"]["rules"] for p in r["http"]["paths"]]

    text_paths = paths(TEXT_RELEASE)
    for route in ("infer", "generate", "generate_stream"):
        assert any(re.fullmatch(p, f"/v2/models/summarizer/{route}") for p in text_paths), route
    assert not any(re.fullmatch(p, "/v2/models/fraud-detector/infer") for p in text_paths)
    # ingress-nginx orders regex locations longest first: the summarizer's path wins over the tabular one
    assert min(map(len, text_paths)) > max(map(len, paths("model-serving")))
    annotations = ingresses[TEXT_RELEASE]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # server-sent events
    assert ingresses[TEXT_RELEASE]["spec"]["tls"]


def test_argo_cd_syncs_the_text_release_with_its_overlay():
    """The ApplicationSet's Application for each environment syncs kubernetes/overlays/<env>, whose
    kustomization installs the text release; the AppProject admits every kind it renders."""
    appset = yaml.safe_load((ROOT / "argo-cd" / "apps" / "applicationset.yaml").read_text())
    assert appset["spec"]["template"]["spec"]["source"]["path"] == "kubernetes/overlays/{{ .env }}"
    envs = {e["env"] for e in appset["spec"]["generators"][0]["list"]["elements"]}
    assert envs == set(ENVIRONMENTS)
    project = yaml.safe_load((ROOT / "argo-cd" / "apps" / "appproject.yaml").read_text())
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for env in ENVIRONMENTS:
        kustomization = yaml.safe_load(
            (ROOT / "kubernetes" / "overlays" / env / "kustomization.yaml").read_text()
        )
        (entry,) = [c for c in kustomization["helmCharts"] if c["releaseName"] == TEXT_RELEASE]
        assert entry["name"] == "model-serving"
        assert entry["additionalValuesFiles"][-1] == "values/model-serving-text.yaml"
    from tests.deploy.rendered import render_overlay

    for obj in _release_objects(render_overlay("prod"), TEXT_RELEASE):
        group = obj["apiVersion"].rpartition("/")[0]
        assert (group, obj["kind"]) in allowed, obj["kind"]


def test_adapter_series_are_what_serving_exports():
    """The series the adapter rules for generation read are samples of model-serving's generation
    metrics (mlplatform.serving.text.metrics), with the labels the rules aggregate away."""
    from prometheus_client import CollectorRegistry

    from mlplatform.serving.text.metrics import GenerationMetrics

    registry = CollectorRegistry()
    metrics = GenerationMetrics(registry)
    metrics.in_flight.labels(model="summarizer").inc()
    metrics.output_tokens.labels(model="summarizer", version="1").observe(32)
    samples = {s.name for family in registry.collect() for s in family.samples}
    generation = {name: rule for name, rule in _adapter_rules().items() if "generation" in name}
    assert set(generation) == {GENERATION_IN_FLIGHT, "mlplatform_serving_generation_output_tokens_per_second"}
    for rule in generation.values():
        series = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["seriesQuery"].strip("'\"")).group(0)
        assert series in samples, series
    assert registry.get_sample_value(GENERATION_IN_FLIGHT, {"model": "summarizer"}) == 1.0
