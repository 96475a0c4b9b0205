"""Live check: a real Prometheus scrapes the four real services with the generated scrape config and
evaluates the repo's rules; every recording rule, every dashboard panel query and the drift alert's
expression must return data for real traffic (good, bad and drifted requests).
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import v2_body
from tests.observability.promql import (
    alert_rules,
    dashboards,
    is_external,
    is_text_model,
    metric_names,
    prometheus_targets,
    recording_rules,
    substitute,
)
from tests.observability.traffic import (
    FEATURE_SERVICE,
    MODEL,
    entity_rows,
    post,
    reference_rows,
    shifted,
)

# The shared stack's start-up (training, four services) counts against the first test's timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

# Which service a metric prefix belongs to (a panel on a service that is not running yet skips).
PREFIX_SERVICE = {
    "mlplatform_serving_": ("model-serving",),
    "mlplatform_features_": ("feature-store",),
    "mlplatform_feature_client_": ("model-serving", "feature-store"),
    "mlplatform_payload_": ("model-serving", "drift-detection"),
    "mlplatform_drift_": ("drift-detection", "model-serving"),
    "mlplatform_explain_": ("explainability",),
}
SERVICE_LABEL = re.compile(r'service="([a-z-]+)"')


@pytest.fixture(scope="session")
def traffic(stack) -> dict[str, Any]:  # noqa: ANN001
    """Drive every running service once: good requests, client errors and a drift episode."""
    sent: dict[str, Any] = {"drift_episode": False}
    ref = reference_rows(stack.data_dir, 240)
    with httpx.Client(timeout=60.0) as client:
        if "explainability" in stack.services:
            url = stack.services["explainability"].url
            for i in range(3):
                post(client, f"{url}/v2/models/{MODEL}/explain", v2_body(ref.iloc[i * 5 : i * 5 + 5]), {200})
            client.get(f"{url}/v2/models/{MODEL}/importance").raise_for_status()
            post(client, f"{url}/v2/models/{MODEL}/explain", {"inputs": "nope"}, {400, 422})
            post(client, f"{url}/v2/models/no-such-model/explain", v2_body(ref.iloc[:1]), {404})
        if "feature-store" in stack.services:
            url = stack.services["feature-store"].url
            rows = entity_rows(stack.data_dir, 5).to_dict(orient="records")
            for _ in range(3):
                post(
                    client,
                    f"{url}/v1/features/online",
                    {"feature_service": FEATURE_SERVICE, "rows": rows},
                    {200},
                )
            post(
                client,
                f"{url}/v1/features/online",
                {"feature_service": "no_such_service", "rows": rows},
                {404, 422},
            )
            post(client, f"{url}/v1/features/online", {"rows": "nope"}, {400, 422})
        if "model-serving" in stack.services:
            url = stack.services["model-serving"].url
            infer = f"{url}/v2/models/{MODEL}/infer"
            # In-distribution traffic first: it fills the reference-like windows.
            for i in range(0, 120, 10):
                post(client, infer, v2_body(ref.iloc[i : i + 10]), {200})
            if "feature-store" in stack.services:
                post(client, infer, v2_body(entity_rows(stack.data_dir, 5)), {200})
            post(client, infer, {"inputs": [{"name": "amount"}]}, {400, 422})
            post(client, f"{url}/v2/models/no-such-model/infer", v2_body(ref.iloc[:1]), {404})
            # V2 over gRPC (NVIDIA's client, from the client environment): the protocol panel's other half
            if "grpc" in stack.notes:
                from tests.clients.harness import run_clients

                call = {"op": "infer", "model": MODEL, "inputs": v2_body(ref.iloc[:5])["inputs"]}
                (result,) = run_clients("triton-grpc", str(stack.notes["grpc"]), [call])
                assert result["ok"], result
            # Drift episode: shifted inputs, enough rows for several closed windows.
            if "drift-detection" in stack.services:
                drifted = shifted(ref)
                answered: list[tuple[str, list[int]]] = []
                for i in range(0, len(drifted), 20):
                    doc = post(client, infer, v2_body(drifted.iloc[i : i + 20]), {200}).json()
                    labels = next(o["data"] for o in doc["outputs"] if o["name"] == "label")
                    answered.append((doc["parameters"]["prediction_id"], labels))
                sent["drift_episode"] = True
                _send_labels(client, stack.services["drift-detection"].url, answered)
    sent["at"] = time.time()
    return sent


def _send_labels(client: httpx.Client, drift_url: str, answered: list[tuple[str, list[int]]]) -> None:
    """Ground truth for the drift episode's predictions (delayed labels): the predicted label, flipped
    on every third row, so both classes and both kinds of error occur. Sent once drift detection has
    stored the predictions (the payload logger delivers within a second)."""
    labels = [
        {"prediction_id": pid, "row_index": i, "label": int(bool(lab)) ^ int(i % 3 == 0)}
        for pid, predicted in answered
        for i, lab in enumerate(predicted)
    ]
    url = f"{drift_url}/v1/models/{MODEL}/labels"
    end = time.monotonic() + 30
    while True:
        doc = post(client, url, {"labels": labels}, {200}).json()
        if doc["unknown"] == 0 or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert doc["unknown"] == 0, doc


def _wait_data(stack, expr: str, deadline_s: float = 30.0) -> list[dict[str, Any]]:  # noqa: ANN001
    try:
        return stack.prometheus.wait_for(expr, deadline_s)
    except TimeoutError:
        raise AssertionError(f"no data for: {expr}") from None


def test_scrape_targets_up(stack) -> None:  # noqa: ANN001
    end = time.monotonic() + 30
    jobs: set[str] = set()
    while time.monotonic() < end and jobs != set(stack.services):
        jobs = {s["metric"]["job"] for s in stack.prometheus.query("up == 1")}
        time.sleep(0.25)
    assert jobs == set(stack.services), f"targets up: {jobs}, running: {set(stack.services)}"
    for target in stack.prometheus.targets():
        assert target["scrapeUrl"].endswith("/metrics")


def test_rules_load_without_errors(stack) -> None:  # noqa: ANN001
    rules = stack.prometheus.rule_health()
    assert len(rules) == len(recording_rules()) + len(alert_rules())
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") == "err"]
    assert not bad, bad


@pytest.mark.parametrize("rule", recording_rules(), ids=lambda r: r["record"])
def test_recording_rule_returns_data(stack, traffic, rule) -> None:  # noqa: ANN001
    _skip_if_service_missing(stack, rule["expr"])
    _wait_data(stack, rule["record"])


def _panel_params() -> list[Any]:
    params = []
    for file, dash in dashboards().items():
        for title, expr in prometheus_targets(dash):
            params.append(pytest.param(expr, id=f"{file}:{title}:{len(params)}"))
    return params


@pytest.mark.parametrize("expr", _panel_params())
def test_dashboard_panel_query_returns_data(stack, traffic, expr: str) -> None:  # noqa: ANN001
    names = metric_names(expr)
    if names and all(is_external(n) and n != "up" for n in names):
        pytest.skip("reads a cluster exporter (DCGM / kube-state-metrics); covered by promtool unit tests")
    if any(is_text_model(n) for n in names):
        # the live stack serves the tabular demo models only: generating with the summarizer (a trained T5
        # model, torch) is beyond this test's budget; test_text_panels.py checks these panels' metric and
        # label names against the registries model-serving and drift-detection build
        pytest.skip("text model panel (generation metrics / text descriptors); see test_text_panels.py")
    _skip_if_service_missing(stack, expr)
    if "mlplatform_drift_disparate_impact_ratio" in expr:
        # needs two values of a segment column with >= 30 rows each in one window and some positive
        # predictions: the live stack's 60-row windows rarely have that (tests/unit/drift/
        # test_quality_service.py::test_segments_and_fairness_per_window checks the gauge)
        pytest.skip("disparate impact needs larger windows than the live stack's; unit-tested")
    _wait_data(stack, substitute(expr))


@pytest.mark.parametrize("service", ["model-serving", "feature-store", "drift-detection", "explainability"])
def test_latency_exemplars_link_to_traces(stack, traffic, service: str) -> None:  # noqa: ANN001
    """The latency histogram carries trace_id exemplars (OpenMetrics) that Grafana turns into Tempo links."""
    url = stack.url(service)
    httpx.get(f"{url}/v2/models/no-such-model/anything", timeout=10)  # a fresh traced request (404)
    expr = f'mlplatform_http_request_duration_seconds_bucket{{service="{service}"}}'
    end = time.monotonic() + 30
    found: list[str] = []
    while time.monotonic() < end and not found:
        for series in stack.prometheus.exemplars(expr, seconds=3600):
            found += [e["labels"].get("trace_id", "") for e in series["exemplars"]]
        time.sleep(0.5)
    if not found:
        everything = stack.prometheus.client.get(
            "/api/v1/query_exemplars",
            params={"query": '{__name__=~".+"}', "start": time.time() - 3600, "end": time.time() + 5},
        ).text[:2000]
        own = "\n".join(
            line for line in stack.prometheus.client.get("/metrics").text.splitlines() if "exemplar" in line
        )
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        exposed = httpx.get(f"{url}/metrics", headers={"accept": accept}, timeout=10)
        with_ex = [line for line in exposed.text.splitlines() if "trace_id" in line][:3]
        raise AssertionError(
            f"no exemplars for {expr}; all exemplars: {everything}\nprometheus: {own}\n"
            f"service content-type {exposed.headers.get('content-type')}: {with_ex}"
        )
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in found), found[:5]


def test_client_errors_are_counted_as_4xx(stack, traffic) -> None:  # noqa: ANN001
    result = _wait_data(stack, 'sum by (service) (mlplatform_http_requests_total{code=~"4.."})')
    assert {s["metric"]["service"] for s in result} == set(stack.services)


def test_drift_alert_expression_true_during_episode(stack, traffic) -> None:  # noqa: ANN001
    stack.need("drift-detection", "model-serving")
    assert traffic["drift_episode"]
    rule = next(r for r in alert_rules() if r["alert"] == "DatasetDriftDetected")
    _wait_data(stack, rule["expr"], deadline_s=60)


def _services_needed(expr: str, depth: int = 0) -> set[str]:
    """Services whose metrics an expression needs (following recording rules to their inputs)."""
    recorded = {r["record"]: r["expr"] for r in recording_rules()}
    needed = set(SERVICE_LABEL.findall(expr))
    for name in metric_names(expr):
        if name in recorded and depth < 5:
            needed |= _services_needed(recorded[name], depth + 1)
        for prefix, services in PREFIX_SERVICE.items():
            if name.startswith(prefix):
                needed.update(services)
    return needed


def _skip_if_service_missing(stack, expr: str) -> None:  # noqa: ANN001
    for service in sorted(_services_needed(expr)):
        stack.url(service)


def test_generated_scrape_config_is_what_prometheus_runs(stack) -> None:  # noqa: ANN001
    loaded = yaml.safe_load(stack.prometheus.config_path.read_text())
    assert {j["job_name"] for j in loaded["scrape_configs"]} == set(stack.services)
    assert all(j["metrics_path"] == "/metrics" for j in loaded["scrape_configs"])
