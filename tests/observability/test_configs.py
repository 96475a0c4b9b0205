"""Static checks of the observability configs: dashboards, scrape config vs. charts, Grafana
provisioning, the Alloy log pipeline, the Collector/Tempo trace pipeline and the adapter rules."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import json_log
from tests.observability.promql import (
    OBS,
    ROOT,
    dashboards,
    declared_metrics,
    is_external,
    iter_panels,
    load_module,
    metric_names,
    prometheus_targets,
    promtool,
    recording_rules,
    substitute,
)

SERVICES = ["model-serving", "feature-store", "drift-detection", "explainability"]


def _helm() -> str:
    for candidate in (str(ROOT / ".venv" / "bin" / "helm"), shutil.which("helm")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.skip("helm not installed (make tools)")


# --------------------------------------------------------------------------- dashboards


def test_dashboards_are_up_to_date_with_their_builder() -> None:
    builder = load_module(OBS / "grafana" / "build_dashboards.py", "obs_build_dashboards")
    built = builder.build()
    assert set(built) == set(dashboards()), "dashboards/ holds files the builder does not make"
    for name, text in built.items():
        assert (OBS / "grafana" / "dashboards" / name).read_text() == text, (
            f"{name} is stale: run make dashboards"
        )


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_panels_lie_on_the_grid_without_overlapping(name: str) -> None:
    """The SDK's layout wraps a line only once it is full: a panel that does not fit must not overlap."""
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboards()[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{panel['title']} leaves the grid: {pos}"
        for cell in (
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        ):
            assert cell not in taken, f"{panel['title']} overlaps {taken[cell]}"
            taken[cell] = panel["title"]


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_conventions(name: str) -> None:
    dash = dashboards()[name]
    assert dash["uid"].startswith("mlplatform-") and len(dash["uid"]) <= 40
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["loki"]["type"] == "datasource" and variables["loki"]["query"] == "loki"
    ids = [p["id"] for p in iter_panels(dash)]
    assert len(ids) == len(set(ids))
    for panel in iter_panels(dash):
        if panel["type"] == "row":
            continue
        ds = panel["datasource"]
        assert ds["uid"] in ("${datasource}", "${loki}"), f"{panel['title']}: hard-coded datasource {ds}"
        assert panel["targets"], f"{panel['title']} has no query"
        for t in panel["targets"]:
            assert t["datasource"] == ds
        if panel["type"] == "logs":
            (t,) = panel["targets"]
            assert re.match(r'\{service="[a-z-]+", namespace=~"\$namespace"\} \|~ "\$trace_id"', t["expr"])
        if panel["type"] == "timeseries" and panel["fieldConfig"]["defaults"]["unit"] == "s":
            if any("mlplatform_http_request_duration_seconds_bucket" in t["expr"] for t in panel["targets"]):
                assert all(t.get("exemplar") for t in panel["targets"]), f"{panel['title']}: exemplars off"
    assert any(p["type"] == "logs" for p in iter_panels(dash)) or name == "platform-overview.json"


def test_dashboard_queries_are_valid_promql_on_exported_metrics(tmp_path) -> None:
    """Every panel query parses (promtool) and reads only exported, recorded or cluster-exporter metrics."""
    declared = declared_metrics()
    recorded = {r["record"] for r in recording_rules()}
    rules = []
    missing = {}
    for name, dash in dashboards().items():
        for title, expr in prometheus_targets(dash):
            rules.append({"record": f"panel:check:{len(rules)}", "expr": substitute(expr)})
            for metric in metric_names(expr):
                if metric not in declared and metric not in recorded and not is_external(metric):
                    missing.setdefault(f"{name}:{title}", set()).add(metric)
    assert not missing, f"panels read metrics nothing exports: {missing}"
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_kustomization_renders_sidecar_configmaps() -> None:
    kubectl = ROOT / ".venv" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not installed (make tools)")
    out = subprocess.run(
        [str(kubectl), "kustomize", str(OBS / "grafana")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    dash_maps = [d for d in docs if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {key for d in dash_maps for key in d["data"]}
    assert shipped == set(dashboards())
    for d in dash_maps:
        for text in d["data"].values():
            json.loads(text)
    (ds,) = [d for d in docs if d["metadata"]["labels"].get("grafana_datasource") == "1"]
    assert "datasources.yaml" in ds["data"]


# --------------------------------------------------------------------------- scrape config / charts


def _targets() -> dict:
    return yaml.safe_load((OBS / "targets.yaml").read_text())


def test_targets_match_the_service_registry() -> None:
    from mlplatform.services import SERVICES as REGISTRY

    targets = {s["name"]: s["port"] for s in _targets()["services"]}
    assert targets == {name: spec.port for name, spec in REGISTRY.items()}


def _generate(*args: str) -> dict:
    script = [sys.executable, str(OBS / "prometheus" / "scrape_config.py"), *args]
    out = subprocess.run(script, capture_output=True, text=True, timeout=30, check=True)
    return yaml.safe_load(out.stdout)


def test_generated_static_scrape_config_passes_promtool(tmp_path) -> None:
    doc = _generate("--mode", "static", "--target", "feature-store=10.1.2.3:9999")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(doc))
    check = subprocess.run(
        [promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert list(jobs) == SERVICES
    assert jobs["feature-store"]["static_configs"] == [{"targets": ["10.1.2.3:9999"]}]
    assert jobs["model-serving"]["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    assert all(j["metrics_path"] == "/metrics" for j in jobs.values())
    gen = load_module(OBS / "prometheus" / "scrape_config.py", "obs_scrape_config")
    with pytest.raises(ValueError):
        gen.render(gen.load_targets(), addresses={"no-such-service": "x:1"})


def test_generated_kubernetes_scrape_config_keeps_each_service_by_name_and_port() -> None:
    """Debian's promtool is built without kubernetes_sd, so this shape is checked structurally."""
    doc = _generate("--mode", "kubernetes")
    for job in doc["scrape_configs"]:
        assert job["kubernetes_sd_configs"] == [{"role": "endpoints"}]
        keeps = {
            tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"
        }
        assert keeps == {
            ("__meta_kubernetes_service_label_app_kubernetes_io_name",): job["job_name"],
            ("__meta_kubernetes_endpoint_port_name",): "http",
        }


@pytest.mark.parametrize("service", SERVICES)
def test_chart_servicemonitor_agrees_with_targets(service: str) -> None:
    """The chart's rendered ServiceMonitor scrapes the same port, path and interval as targets.yaml."""
    chart = ROOT / "charts" / service
    if not chart.exists():
        pytest.skip(f"charts/{service} not written yet")
    targets = _targets()
    want = next(s for s in targets["services"] if s["name"] == service)
    out = subprocess.run(
        [_helm(), "template", "obs", str(chart)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == targets["scrape"]["metricsPath"]
    assert endpoint["port"] == targets["scrape"]["portName"]
    assert endpoint["interval"] == targets["scrape"]["interval"]
    assert endpoint["scrapeTimeout"] == targets["scrape"]["timeout"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Rollout", "StatefulSet")]
    ports = {
        p["name"]: p["containerPort"]
        for w in workloads
        for c in w["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert ports.get(targets["scrape"]["portName"]) == want["port"]
    (svc,) = [
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == monitor["metadata"]["name"]
    ]
    assert any(p["name"] == targets["scrape"]["portName"] for p in svc["spec"]["ports"])
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items()


# --------------------------------------------------------------------------- prometheus-adapter


def test_adapter_rules_name_exported_metrics() -> None:
    path = OBS / "prometheus-adapter" / "rules.yaml"
    if not path.exists():
        pytest.skip("observability/prometheus-adapter/rules.yaml not written yet")
    declared = declared_metrics()
    for rule in yaml.safe_load(path.read_text())["rules"]:
        for name in metric_names(rule["seriesQuery"]):
            assert name in declared or is_external(name), f"adapter rule reads {name}, which nothing exports"


# --------------------------------------------------------------------------- logs and traces


def _log_line() -> str:
    from opentelemetry.sdk.trace import TracerProvider

    with json_log("model-serving", "obs-test") as (logger, stream):
        with TracerProvider().get_tracer("t").start_as_current_span("s"):
            logger.warning("hello")
    return stream.getvalue().strip()


def test_alloy_pipeline_extracts_the_fields_core_logging_writes() -> None:
    text = (OBS / "loki" / "config.alloy").read_text()
    line = json.loads(_log_line())
    expressions = re.search(r"stage\.json\s*\{\s*expressions\s*=\s*\{(.*?)\}", text, re.S)
    assert expressions
    extracted = dict(re.findall(r'(\w+)\s*=\s*"(\w+)"', expressions.group(1)))
    for key in ("ts", "level", "service", "trace_id", "span_id", "request_id"):
        assert extracted.get(key) == key and key in line, key
    assert re.search(r"stage\.labels\s*\{\s*values\s*=\s*\{[^}]*service\s*=", text)
    metadata = re.search(r"stage\.structured_metadata\s*\{\s*values\s*=\s*\{(.*?)\}", text, re.S)
    assert metadata and "trace_id" in metadata.group(1)
    assert "trace_id" not in re.search(r"stage\.labels\s*\{(.*?)\n  \}", text, re.S).group(1)
    assert text.count("{") == text.count("}")


def test_loki_derived_field_matches_a_real_log_line() -> None:
    doc = yaml.safe_load((OBS / "grafana" / "datasources.yaml").read_text())
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    (field,) = by_uid["loki"]["jsonData"]["derivedFields"]
    assert field["datasourceUid"] == "tempo" and by_uid["tempo"]["type"] == "tempo"
    line = _log_line()
    match = re.search(field["matcherRegex"], line)
    assert match and match.group(1) == json.loads(line)["trace_id"]
    exemplars = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplars == [{"name": "trace_id", "datasourceUid": "tempo"}]


def test_collector_pipelines_reference_defined_components_and_reach_tempo() -> None:
    doc = yaml.safe_load((OBS / "otel-collector" / "config.yaml").read_text())
    for pipeline in doc["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in doc.get(kind, {}) or name in doc.get("connectors", {}), f"{kind} {name}"
    assert doc["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    traces = doc["service"]["pipelines"]["traces"]
    assert "otlp" in traces["receivers"]
    tempo_exporter = doc["exporters"]["otlp/tempo"]["endpoint"]
    tempo = yaml.safe_load((OBS / "tempo" / "tempo.yaml").read_text())
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert tempo_exporter.split(":")[-1] == grpc.split(":")[-1]
    assert "otlp/tempo" in traces["exporters"]


@pytest.mark.parametrize("service", SERVICES)
def test_charts_send_traces_to_the_collector(service: str) -> None:
    values = ROOT / "charts" / service / "values.yaml"
    if not values.exists():
        pytest.skip(f"charts/{service} not written yet")
    endpoints = re.findall(r"otlpEndpoint:\s*(\S+)", values.read_text())
    assert endpoints, "no otlpEndpoint value"
    collector = yaml.safe_load((OBS / "otel-collector" / "config.yaml").read_text())
    port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].split(":")[-1]
    assert all(e.rstrip("/").endswith(f":{port}") and "otel-collector" in e for e in endpoints)


async def test_openmetrics_exposition_carries_trace_id_exemplars() -> None:
    """core's /metrics: OpenMetrics (what Prometheus asks for) carries the request's trace id as an
    exemplar on the latency histogram; the plain text format stays exemplar-free."""
    import httpx
    from fastapi import APIRouter

    from mlplatform.core.app import build_app, build_context
    from mlplatform.core.settings import ServiceSettings

    ctx = build_context("obs-test", ServiceSettings(auth_enabled=False))
    router = APIRouter()

    @router.get("/ping")
    async def ping() -> dict:
        return {}

    app = build_app(ctx, title="obs-test", routers=[router])
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert (await client.get("/ping", headers={"traceparent": traceparent})).status_code == 200
        om = await client.get("/metrics", headers={"accept": accept})
        text = await client.get("/metrics")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    lines = [
        line for line in om.text.splitlines() if "mlplatform_http_request_duration_seconds_bucket" in line
    ]
    assert any('# {trace_id="0af7651916cd43dd8448eb211c80319c"}' in line for line in lines), lines
    assert om.text.rstrip().endswith("# EOF")
    assert text.headers["content-type"].startswith("text/plain") and "trace_id" not in text.text
