"""Build the Grafana dashboards in observability/grafana/dashboards/*.json from the panel lists below.

The JSON files are committed (the charts load them with ``.Files.Glob``, the kustomization wraps
them in ConfigMaps); this script is how they are edited. ``--check`` exits 1 when a committed file
differs from what the script builds (tests/observability runs it).

Conventions every panel follows (tests/observability checks them):

- datasources are template variables: ``${datasource}`` (Prometheus), ``${loki}`` (Loki);
- every Prometheus query filters ``namespace=~"$namespace"`` where the metric comes from our
  services, so one Grafana serves several installs;
- latency panels query the raw ``mlplatform_http_request_duration_seconds_bucket`` histogram with
  ``exemplar: true`` (the services attach ``trace_id`` exemplars; the Prometheus datasource's
  ``exemplarTraceIdDestinations`` turns them into links to Tempo);
- log panels query Loki by the ``service`` label and filter on ``$trace_id``.

Usage: ``python observability/grafana/build_dashboards.py [--check]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}
NS = 'namespace=~"$namespace"'


# --------------------------------------------------------------------------- panel helpers


def target(expr: str, legend: str = "", *, exemplar: bool = False, instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": PROM,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if exemplar:
        t["exemplar"] = True
    return t


def timeseries(
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    description: str = "",
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    thresholds: list[tuple[str, float | None]] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROM,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom, "thresholds": _thresholds(thresholds)},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": targets,
    }


def stat(
    title: str,
    expr: str,
    *,
    unit: str = "short",
    description: str = "",
    w: int = 6,
    h: int = 4,
    thresholds: list[tuple[str, float | None]] | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "thresholds": _thresholds(thresholds)}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROM,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
        },
        "targets": [target(expr, instant=True)],
    }


def table(title: str, expr: str, *, description: str = "", w: int = 12, h: int = 8) -> dict[str, Any]:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": PROM,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "labelsToFields", "options": {}}, {"id": "merge", "options": {}}],
        "targets": [{**target(expr, instant=True), "format": "table"}],
    }


def state_timeline(title: str, expr: str, legend: str, *, w: int = 24, h: int = 8) -> dict[str, Any]:
    """0/1 series as coloured bands over time (green 0, red 1)."""
    return {
        "type": "state-timeline",
        "title": title,
        "description": "Red: the feature drifted in the window that closed at that time.",
        "datasource": PROM,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {
            "defaults": {
                "thresholds": _thresholds([("green", None), ("red", 1)]),
                "color": {"mode": "thresholds"},
                "mappings": [{"type": "value", "options": {"0": {"text": "ok"}, "1": {"text": "drift"}}}],
            },
            "overrides": [],
        },
        "options": {"showValue": "never", "mergeValues": True, "alignValue": "left"},
        "targets": [target(expr, legend)],
    }


def logs(service: str, *, w: int = 24, h: int = 10) -> dict[str, Any]:
    return {
        "type": "logs",
        "title": f"{service} logs (filter with the trace_id variable)",
        "description": (
            "JSON log lines from Loki, stream label service. The trace_id field links to Tempo "
            "(Loki datasource derived field)."
        ),
        "datasource": LOKI,
        "gridPos": {"w": w, "h": h},
        "options": {
            "showTime": True,
            "wrapLogMessage": True,
            "prettifyLogMessage": False,
            "enableLogDetails": True,
            "sortOrder": "Descending",
            "dedupStrategy": "none",
        },
        "targets": [
            {
                "datasource": LOKI,
                "expr": f'{{service="{service}", namespace=~"$namespace"}} |~ "$trace_id" | json',
                "queryType": "range",
            }
        ],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def _thresholds(steps: list[tuple[str, float | None]] | None) -> dict[str, Any]:
    steps = steps or [("green", None)]
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def latency_panel(title: str, selector: str, by: str, *, w: int = 12) -> dict[str, Any]:
    """p50/p95/p99 of the core HTTP histogram with exemplars (click a dot to open the trace in Tempo)."""
    metric = "mlplatform_http_request_duration_seconds_bucket"
    return timeseries(
        title,
        [
            target(
                f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
                f"(rate({metric}{{{selector}, {NS}}}[$__rate_interval])))",
                f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
                exemplar=True,
            )
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
        w=w,
        description="Quantiles from the request-latency histogram. Dots are exemplars: click one to open its trace in Tempo.",
    )


# --------------------------------------------------------------------------- variables


def variables(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            {
                "name": "loki",
                "label": "Loki",
                "type": "datasource",
                "query": "loki",
                "current": {},
                "hide": 0,
            },
            {
                "name": "namespace",
                "label": "Namespace",
                "type": "query",
                "datasource": PROM,
                "query": {
                    "query": "label_values(mlplatform_http_requests_in_flight, namespace)",
                    "refId": "ns",
                },
                "definition": "label_values(mlplatform_http_requests_in_flight, namespace)",
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "refresh": 2,
                "hide": 0,
            },
            *extra,
            {
                "name": "trace_id",
                "label": "Trace id (logs)",
                "type": "textbox",
                "query": "",
                "current": {"text": "", "value": ""},
                "hide": 0,
            },
        ]
    }


def query_var(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "hide": 0,
    }


def dashboard(
    uid: str, title: str, description: str, panels: list[dict[str, Any]], *extra_vars: Any
) -> dict[str, Any]:
    laid_out = _layout(panels)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mlplatform"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [
            {
                "title": "mlplatform dashboards",
                "type": "dashboards",
                "tags": ["mlplatform"],
                "asDropdown": True,
            }
        ],
        "templating": variables(*extra_vars),
        "panels": laid_out,
    }


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every panel an id and an x/y position, left to right, wrapping at 24 columns."""
    x = y = row_h = 0
    out = []
    for i, panel in enumerate(panels, start=1):
        pos = panel["gridPos"]
        if panel["type"] == "row" or x + pos["w"] > 24:
            y += row_h
            x = row_h = 0
        panel = {"id": i, **panel, "gridPos": {**pos, "x": x, "y": y}}
        x += pos["w"]
        row_h = max(row_h, pos["h"])
        if panel["type"] == "row":
            y += pos["h"]
            x = row_h = 0
        out.append(panel)
    return out


# --------------------------------------------------------------------------- dashboards

SERVING = 'service="model-serving"'
#: the route templates of V2 gRPC calls (model-serving's GRPCInferenceService)
GRPC_ROUTES = '"/inference.GRPCInferenceService/.+"'


def overview() -> dict[str, Any]:
    return dashboard(
        "mlplatform-overview",
        "mlplatform / Platform overview",
        "Client-API SLOs (model-serving: 99.9% without 5xx, 99% within 250 ms over 30 days), error budgets and every service's traffic.",
        [
            row("Client API SLOs (model-serving)"),
            stat(
                "Availability, 30 days",
                '1 - service:mlplatform_slo_errors:ratio_rate30d{service="model-serving"}',
                unit="percentunit",
                decimals=3,
                thresholds=[("red", None), ("orange", 0.999), ("green", 0.9995)],
            ),
            stat(
                "Availability error budget left",
                "service:mlplatform_slo_availability_budget_remaining:ratio",
                unit="percentunit",
                thresholds=[("red", None), ("orange", 0.25), ("green", 0.5)],
            ),
            stat(
                "Within 250 ms, 30 days",
                '1 - service:mlplatform_slo_slow_requests:ratio_rate30d{service="model-serving"}',
                unit="percentunit",
                decimals=3,
                thresholds=[("red", None), ("orange", 0.99), ("green", 0.995)],
            ),
            stat(
                "Latency error budget left",
                "service:mlplatform_slo_latency_budget_remaining:ratio",
                unit="percentunit",
                thresholds=[("red", None), ("orange", 0.25), ("green", 0.5)],
            ),
            timeseries(
                "Availability burn rate (1 = budget lasts exactly 30 days)",
                [
                    target(
                        f'service:mlplatform_slo_errors:ratio_rate{w}{{service="model-serving"}} / 0.001', w
                    )
                    for w in ("5m", "1h", "6h", "1d")
                ],
                thresholds=[("green", None), ("orange", 6), ("red", 14.4)],
                description="Page at 14.4x (1h and 5m) or 6x (6h and 30m); ticket at 3x (1d and 2h) or 1x (3d and 6h).",
            ),
            timeseries(
                "Latency burn rate (1 = budget lasts exactly 30 days)",
                [
                    target(
                        f'service:mlplatform_slo_slow_requests:ratio_rate{w}{{service="model-serving"}} / 0.01',
                        w,
                    )
                    for w in ("5m", "1h", "6h", "1d")
                ],
                thresholds=[("green", None), ("orange", 6), ("red", 14.4)],
            ),
            row("Services"),
            timeseries(
                "Requests per second by service",
                [target("service:mlplatform_http_requests:rate5m", "{{service}}")],
                unit="reqps",
                w=8,
            ),
            timeseries(
                "5xx ratio by service (5m)",
                [target("service:mlplatform_slo_errors:ratio_rate5m", "{{service}}")],
                unit="percentunit",
                w=8,
            ),
            timeseries(
                "p99 latency by service",
                [target("service:mlplatform_http_request_duration_seconds:p99_rate5m", "{{service}}")],
                unit="s",
                w=8,
            ),
            timeseries(
                "Responses per second by service and status code",
                [target("service_code:mlplatform_http_requests:rate5m", "{{service}} {{code}}")],
                unit="reqps",
                w=12,
                stack=True,
            ),
            timeseries(
                "Requests in flight by service",
                [target(f"sum by (service) (mlplatform_http_requests_in_flight{{{NS}}})", "{{service}}")],
                w=12,
                description="The HPAs' per-pod custom metric (prometheus-adapter).",
            ),
            timeseries(
                "Scrape targets up",
                [
                    target(
                        'sum by (job) (up{job=~".*(model-serving|feature-store|drift-detection|explainability).*"})',
                        "{{job}}",
                    )
                ],
                w=12,
            ),
        ],
    )


def serving() -> dict[str, Any]:
    sel = f"{SERVING}, {NS}"
    return dashboard(
        "mlplatform-model-serving",
        "mlplatform / Model serving",
        "model-serving: traffic, latency with exemplars, errors, batching, models, GPU, feature lookups and payload logging.",
        [
            row("Traffic"),
            timeseries(
                "Requests per second by route",
                [
                    target(
                        f"sum by (route) (rate(mlplatform_http_requests_total{{{sel}}}[$__rate_interval]))",
                        "{{route}}",
                    )
                ],
                unit="reqps",
            ),
            timeseries(
                "Requests per second by protocol (REST / gRPC) and code",
                [
                    target(
                        f"sum by (code) (rate(mlplatform_http_requests_total{{{sel}, route!~{GRPC_ROUTES}}}"
                        "[$__rate_interval]))",
                        "REST {{code}}",
                    ),
                    target(
                        f"sum by (code) (rate(mlplatform_http_requests_total{{{sel}, route=~{GRPC_ROUTES}}}"
                        "[$__rate_interval]))",
                        "gRPC {{code}}",
                    ),
                ],
                unit="reqps",
                description="gRPC calls (inference.GRPCInferenceService on SERVING_GRPC_PORT) go through the same "
                "request pipeline as REST: counted as POST /inference.GRPCInferenceService/<method> with the "
                "HTTP status REST would have answered (gRPC INVALID_ARGUMENT as 422, UNAVAILABLE as 503, ...), "
                "so the in-flight gauge the HPA scales on, the SLOs and the 5xx alerts include them.",
            ),
            latency_panel("Latency p50 / p95 / p99", sel, ""),
            timeseries(
                "Responses by status code",
                [
                    target(
                        f"sum by (code) (rate(mlplatform_http_requests_total{{{sel}}}[$__rate_interval]))",
                        "{{code}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            timeseries(
                "Error ratio (4xx and 5xx)",
                [
                    target(
                        f'(sum(rate(mlplatform_http_requests_total{{{sel}, code=~"{c}.."}}[$__rate_interval])) '
                        f"or sum(rate(mlplatform_http_requests_total{{{sel}}}[$__rate_interval])) * 0) "
                        f"/ sum(rate(mlplatform_http_requests_total{{{sel}}}[$__rate_interval]))",
                        f"{c}xx",
                    )
                    for c in ("4", "5")
                ],
                unit="percentunit",
            ),
            row("Models and batching"),
            timeseries(
                "Inferences by model and outcome",
                [
                    target(
                        f'sum by (model, outcome) (rate(mlplatform_serving_requests_total{{model=~"$model", {NS}}}[$__rate_interval]))',
                        "{{model}} {{outcome}}",
                    )
                ],
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Batch size (rows per model call) p50 / p95",
                [
                    target(
                        f"histogram_quantile({q}, sum by (le, model) "
                        f'(rate(mlplatform_serving_batch_size_rows_bucket{{model=~"$model", {NS}}}[$__rate_interval])))',
                        f"p{int(q * 100)} {{{{model}}}}",
                    )
                    for q in (0.5, 0.95)
                ],
                w=8,
            ),
            timeseries(
                "Requests merged per model call (mean)",
                [
                    target(
                        f'sum by (model) (rate(mlplatform_serving_batch_size_requests_sum{{model=~"$model", {NS}}}[$__rate_interval])) '
                        f'/ sum by (model) (rate(mlplatform_serving_batch_size_requests_count{{model=~"$model", {NS}}}[$__rate_interval]))',
                        "{{model}}",
                    )
                ],
                w=8,
            ),
            timeseries(
                "Queue depth (requests waiting for a batch)",
                [
                    target(
                        f'sum by (model) (mlplatform_serving_queue_depth_requests{{model=~"$model", {NS}}})',
                        "{{model}}",
                    )
                ],
                w=8,
                description="The HPA scales on this (prometheus-adapter exposes it as mlplatform_serving_queue_depth).",
            ),
            table(
                "Loaded model versions",
                f'max by (model, version, runtime, instance) (mlplatform_serving_model_info{{model=~"$model", {NS}}})',
                w=8,
                description="One row per pod and loaded version: during a rollout or alias move both versions show.",
            ),
            timeseries(
                "Model load failures (total per pod, 0 when none)",
                [
                    target(
                        f'sum by (model) (mlplatform_serving_model_load_failures_total{{model=~"$model", {NS}}}) '
                        f'or sum by (model) (mlplatform_serving_model_info{{model=~"$model", {NS}}}) * 0',
                        "{{model}}",
                    )
                ],
                w=8,
            ),
            timeseries(
                "Model load time (mean)",
                [
                    target(
                        f'sum by (model) (mlplatform_serving_model_load_duration_seconds_sum{{model=~"$model", {NS}}}) '
                        f'/ sum by (model) (mlplatform_serving_model_load_duration_seconds_count{{model=~"$model", {NS}}})',
                        "{{model}}",
                    )
                ],
                unit="s",
                w=8,
            ),
            timeseries(
                "Feature-store lookup failures by reason (0 when none)",
                [
                    target(
                        f"sum by (reason) (rate(mlplatform_serving_feature_store_failures_total{{{NS}}}[$__rate_interval])) "
                        f"or sum(rate(mlplatform_serving_requests_total{{{NS}}}[$__rate_interval])) * 0",
                        "{{reason}}",
                    )
                ],
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Inference latency inside the service p99 by model",
                [
                    target(
                        "histogram_quantile(0.99, sum by (le, model) "
                        f'(rate(mlplatform_serving_request_duration_seconds_bucket{{model=~"$model", {NS}}}[$__rate_interval])))',
                        "{{model}}",
                    )
                ],
                unit="s",
                w=8,
                description="Parse, feature lookup, queue and predict; the HTTP panel above adds the transport.",
            ),
            timeseries(
                "Feature lookups to the feature store p99 by caller and outcome",
                [
                    target(
                        "histogram_quantile(0.99, sum by (le, job, outcome) "
                        f"(rate(mlplatform_feature_client_request_duration_seconds_bucket{{{NS}}}[$__rate_interval])))",
                        "{{job}} {{outcome}}",
                    )
                ],
                description="Client side of the online lookups (model-serving and explainability), including retries.",
                unit="s",
                w=8,
            ),
            row("Payload logging to drift-detection"),
            timeseries(
                "Payload records sent / spooled / dropped per second",
                [
                    target(
                        f"sum(rate(mlplatform_payload_records_sent_total{{{NS}}}[$__rate_interval]))",
                        "sent",
                    ),
                    target(
                        f"sum(rate(mlplatform_payload_records_spooled_total{{{NS}}}[$__rate_interval]))",
                        "spooled",
                    ),
                    target(
                        f"sum by (reason) (rate(mlplatform_payload_records_dropped_total{{{NS}}}[$__rate_interval])) "
                        f"or sum(rate(mlplatform_payload_records_submitted_total{{{NS}}}[$__rate_interval])) * 0",
                        "dropped {{reason}}",
                    ),
                ],
                w=12,
            ),
            timeseries(
                "Payload spool size and queue",
                [
                    target(
                        f"sum by (instance) (mlplatform_payload_spool_bytes{{{NS}}})", "spool {{instance}}"
                    ),
                ],
                unit="bytes",
                w=6,
                description="Non-zero while drift-detection is unreachable; records are re-sent when it is back.",
            ),
            timeseries(
                "Payload queue (records)",
                [target(f"sum by (instance) (mlplatform_payload_queue_records{{{NS}}})", "{{instance}}")],
                w=6,
            ),
            row("GPU pool (dcgm-exporter)"),
            timeseries(
                "GPU utilisation",
                [
                    target(
                        'avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL{Hostname=~"$gpu_node"})',
                        "{{Hostname}} gpu{{gpu}}",
                    )
                ],
                unit="percent",
                thresholds=[("green", None), ("orange", 80), ("red", 90)],
            ),
            timeseries(
                "GPU memory used",
                [
                    target(
                        'max by (Hostname, gpu) (DCGM_FI_DEV_FB_USED{Hostname=~"$gpu_node"} '
                        '/ (DCGM_FI_DEV_FB_USED{Hostname=~"$gpu_node"} + DCGM_FI_DEV_FB_FREE{Hostname=~"$gpu_node"}))',
                        "{{Hostname}} gpu{{gpu}}",
                    )
                ],
                unit="percentunit",
                thresholds=[("green", None), ("orange", 0.8), ("red", 0.9)],
            ),
            logs("model-serving"),
        ],
        query_var("model", "Model", "label_values(mlplatform_serving_model_info, model)"),
        query_var("gpu_node", "GPU node", "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)"),
    )


def multivariate_panels() -> list[dict[str, Any]]:
    """drift-detection's multivariate row: MMD and domain classifier per window (drift/multivariate.py)."""
    sel = f'model=~"$model", {NS}'
    return [
        row("Multivariate drift (MMD, domain classifier; last closed window)"),
        stat(
            "Model versions with multivariate drift",
            f"sum(max by (model, version) (mlplatform_drift_multivariate_drifted{{{sel}}}))",
            thresholds=[("green", None), ("red", 1)],
            w=6,
            description="Versions where MMD or the domain classifier found the joint distribution moved.",
        ),
        {
            **state_timeline(
                "Multivariate drift over time",
                f"max by (model, method) (mlplatform_drift_multivariate_drifted{{{sel}}})",
                "{{model}} {{method}}",
                w=18,
            ),
            "description": "Red: the test (mmd, domain_classifier) found drift in the window that closed then.",
        },
        timeseries(
            "MMD^2 against its permutation threshold",
            [
                target(
                    f'max by (model, version) (mlplatform_drift_multivariate_score{{method="mmd", {sel}}})',
                    "MMD^2 {{model}} v{{version}}",
                ),
                target(
                    f'max by (model, version) (mlplatform_drift_multivariate_threshold{{method="mmd", {sel}}})',
                    "threshold {{model}} v{{version}}",
                ),
            ],
            w=8,
            description="Drift when MMD^2 exceeds the permuted MMD^2 at the p-value rank (DRIFT_MULTIVARIATE p_value).",
        ),
        timeseries(
            "Domain classifier ROC AUC against its threshold",
            [
                target(
                    f'max by (model, version) (mlplatform_drift_multivariate_score{{method="domain_classifier", {sel}}})',
                    "AUC {{model}} v{{version}}",
                ),
                target(
                    f'max by (model, version) (mlplatform_drift_multivariate_threshold{{method="domain_classifier", {sel}}})',
                    "threshold {{model}} v{{version}}",
                ),
            ],
            w=8,
            description="0.5: reference and window rows cannot be told apart; drift above the bootstrap or fixed threshold.",
        ),
        timeseries(
            "Multivariate p-values / computation time",
            [
                target(
                    f"max by (model, method) (mlplatform_drift_multivariate_p_value{{{sel}}})",
                    "p {{model}} {{method}}",
                ),
                target(
                    f"max by (model, method) (mlplatform_drift_multivariate_compute_seconds{{{sel}}})",
                    "seconds {{model}} {{method}}",
                ),
            ],
            w=8,
        ),
    ]


def quality_panels() -> list[dict[str, Any]]:
    """drift-detection's model-quality row: realized (labels) vs CBPE-estimated performance."""
    sel = f'model=~"$model", metric=~"$metric", {NS}'
    return [
        row("Model quality (realized from labels, estimated by CBPE; newest window)"),
        stat(
            "Model versions with a performance drop",
            f"sum(max by (model, version) (mlplatform_drift_performance_dropped{{model=~\"$model\", {NS}}}))",
            thresholds=[("green", None), ("red", 1)],
            w=6,
            description="Realized performance below the reference by more than DRIFT_PERFORMANCE_DROP.",
        ),
        timeseries(
            "Realized vs estimated vs reference performance",
            [
                target(
                    f"max by (model, version, metric) (mlplatform_drift_realized_performance{{{sel}}})",
                    "realized {{metric}} {{model}} v{{version}}",
                ),
                target(
                    f"max by (model, version, metric) (mlplatform_drift_estimated_performance{{{sel}}})",
                    "estimated {{metric}} {{model}} v{{version}}",
                ),
                target(
                    f"max by (model, version, metric) (mlplatform_drift_reference_performance{{{sel}}})",
                    "reference {{metric}} {{model}} v{{version}}",
                ),
            ],
            w=18,
            description="Estimated (CBPE) arrives with each window; realized once enough labels arrived.",
        ),
        timeseries(
            "Estimation error (estimated - realized)",
            [
                target(
                    f"max by (model, version, metric) (mlplatform_drift_estimation_error{{{sel}}})",
                    "{{metric}} {{model}} v{{version}}",
                )
            ],
            w=8,
        ),
        timeseries(
            "Labelled share of the newest window",
            [
                target(
                    f'max by (model, version) (mlplatform_drift_labeled_ratio{{model=~"$model", {NS}}})',
                    "{{model}} v{{version}}",
                )
            ],
            unit="percentunit",
            w=8,
        ),
        timeseries(
            "Labels received per second by result",
            [
                target(
                    f'sum by (model, result) (rate(mlplatform_drift_labels_total{{model=~"$model", {NS}}}[$__rate_interval]))',
                    "{{model}} {{result}}",
                )
            ],
            w=8,
        ),
    ]


def segment_panels() -> list[dict[str, Any]]:
    """drift-detection's segments and fairness row (DRIFT_SEGMENTS)."""
    sel = f'model=~"$model", segment=~"$segment", {NS}'
    return [
        row("Segments and fairness (newest window)"),
        timeseries(
            "Disparate impact ratio by segment",
            [
                target(
                    f"min by (model, segment) (mlplatform_drift_disparate_impact_ratio{{{sel}}})",
                    "{{model}} {{segment}}",
                )
            ],
            thresholds=[("red", None), ("green", 0.8)],
            w=12,
            description="Lowest over highest positive-prediction rate among a segment's values; below 0.8 "
            "fails the four-fifths rule.",
        ),
        timeseries(
            "Equal-opportunity difference by segment",
            [
                target(
                    f"max by (model, segment) (mlplatform_drift_equal_opportunity_difference{{{sel}}})",
                    "{{model}} {{segment}}",
                )
            ],
            w=12,
            description="Highest minus lowest recall among a segment's values (0 = equal).",
        ),
        table(
            "Per segment value: records, prediction rate, drift share",
            f"max by (model, segment, value) (mlplatform_drift_segment_records{{{sel}}})",
            w=8,
        ),
        timeseries(
            "Prediction rate by segment value",
            [
                target(
                    f"max by (segment, value) (mlplatform_drift_segment_prediction_rate_ratio{{{sel}}})",
                    "{{segment}}={{value}}",
                )
            ],
            unit="percentunit",
            w=8,
        ),
        timeseries(
            "Realized recall and drift share by segment value",
            [
                target(
                    f'max by (segment, value) (mlplatform_drift_segment_realized_performance{{metric="recall", {sel}}})',
                    "recall {{segment}}={{value}}",
                ),
                target(
                    f"max by (segment, value) (mlplatform_drift_segment_drift_share_ratio{{{sel}}})",
                    "drift share {{segment}}={{value}}",
                ),
            ],
            w=8,
        ),
    ]


def drift() -> dict[str, Any]:
    return dashboard(
        "mlplatform-drift",
        "mlplatform / Drift detection",
        "drift-detection: per-feature drift over time, dataset drift share, prediction drift and windows.",
        [
            row("Traffic"),
            timeseries(
                "Requests per second by route",
                [
                    target(
                        f'sum by (route) (rate(mlplatform_http_requests_total{{service="drift-detection", {NS}}}[$__rate_interval]))',
                        "{{route}}",
                    )
                ],
                unit="reqps",
            ),
            latency_panel("Latency p50 / p95 / p99", f'service="drift-detection", {NS}', ""),
            row("Drift (last closed window per model version)"),
            stat(
                "Model versions with dataset drift",
                f'sum(max by (model, version) (mlplatform_drift_dataset_drifted{{model=~"$model", {NS}}}))',
                thresholds=[("green", None), ("red", 1)],
                w=6,
            ),
            timeseries(
                "Dataset drift share (features drifted)",
                [
                    target(
                        f'max by (model, version) (mlplatform_drift_dataset_drift_share_ratio{{model=~"$model", {NS}}})',
                        "{{model}} v{{version}}",
                    )
                ],
                unit="percentunit",
                thresholds=[("green", None), ("red", 0.5)],
                w=18,
                description="Dataset drift when the share reaches DRIFT_DRIFT_SHARE (default 50%).",
            ),
            state_timeline(
                "Per-feature drift over time",
                f'max by (feature) (mlplatform_drift_feature_drifted{{model=~"$model", feature=~"$feature", feature!="prediction", {NS}}})',
                "{{feature}}",
            ),
            timeseries(
                "Drift statistic by feature",
                [
                    target(
                        f'max by (feature, method) (mlplatform_drift_feature_score{{model=~"$model", feature=~"$feature", {NS}}})',
                        "{{feature}} ({{method}})",
                    )
                ],
                description="p-value (ks, chisquare: drift below 0.05) or distance (wasserstein, jensenshannon: drift above 0.1).",
            ),
            timeseries(
                "Population stability index by feature",
                [
                    target(
                        f'max by (feature) (mlplatform_drift_feature_psi{{model=~"$model", feature=~"$feature", {NS}}})',
                        "{{feature}}",
                    )
                ],
                thresholds=[("green", None), ("orange", 0.1), ("red", 0.25)],
            ),
            timeseries(
                "Prediction drift",
                [
                    target(
                        f'max by (model, version) (mlplatform_drift_feature_drifted{{model=~"$model", feature="prediction", {NS}}})',
                        "{{model}} v{{version}}",
                    )
                ],
            ),
            *multivariate_panels(),
            *quality_panels(),
            *segment_panels(),
            row("Windows and ingestion"),
            timeseries(
                "Records in the last closed window / collected for the next",
                [
                    target(
                        f'max by (model, version) (mlplatform_drift_window_size_records{{model=~"$model", {NS}}})',
                        "closed {{model}} v{{version}}",
                    ),
                    target(
                        f'max by (model, version) (mlplatform_drift_open_window_records{{model=~"$model", {NS}}})',
                        "open {{model}} v{{version}}",
                    ),
                ],
                w=8,
            ),
            timeseries(
                "Windows closed per hour",
                [
                    target(
                        f'sum by (model, version) (increase(mlplatform_drift_windows_total{{model=~"$model", {NS}}}[1h]))',
                        "{{model}} v{{version}}",
                    )
                ],
                w=8,
            ),
            timeseries(
                "Drift computation time (last window)",
                [
                    target(
                        f'max by (model, version) (mlplatform_drift_last_compute_seconds{{model=~"$model", {NS}}})',
                        "{{model}} v{{version}}",
                    )
                ],
                unit="s",
                w=8,
            ),
            timeseries(
                "Records ingested / duplicate / rejected per second",
                [
                    target(
                        f'sum by (model) (rate(mlplatform_drift_records_ingested_total{{model=~"$model", {NS}}}[$__rate_interval]))',
                        "ingested {{model}}",
                    ),
                    target(
                        f'sum by (model) (rate(mlplatform_drift_records_duplicate_total{{model=~"$model", {NS}}}[$__rate_interval])) '
                        f'or sum by (model) (rate(mlplatform_drift_records_ingested_total{{model=~"$model", {NS}}}[$__rate_interval])) * 0',
                        "duplicate {{model}}",
                    ),
                    target(
                        f"sum by (reason) (rate(mlplatform_drift_records_rejected_total{{{NS}}}[$__rate_interval])) "
                        f"or sum(rate(mlplatform_drift_records_ingested_total{{{NS}}}[$__rate_interval])) * 0",
                        "rejected {{reason}}",
                    ),
                ],
                w=12,
            ),
            timeseries(
                "Retraining triggers (0 when none)",
                [
                    target(
                        f"sum by (model, mode, outcome) (mlplatform_drift_retraining_triggers_total{{{NS}}}) "
                        f"or sum by (model) (mlplatform_drift_windows_total{{{NS}}}) * 0",
                        "{{model}} {{mode}} {{outcome}}",
                    )
                ],
                w=12,
            ),
            logs("drift-detection"),
        ],
        query_var("model", "Model", "label_values(mlplatform_drift_windows_total, model)"),
        query_var("feature", "Feature", "label_values(mlplatform_drift_feature_drifted, feature)"),
        query_var("metric", "Metric", "label_values(mlplatform_drift_realized_performance, metric)"),
        query_var("segment", "Segment", "label_values(mlplatform_drift_segment_records, segment)"),
    )


def features() -> dict[str, Any]:
    return dashboard(
        "mlplatform-feature-store",
        "mlplatform / Feature store",
        "feature-store: online lookup latency, freshness and materialisation.",
        [
            row("Online lookups"),
            timeseries(
                "Requests per second by route and code",
                [
                    target(
                        f'sum by (route, code) (rate(mlplatform_http_requests_total{{service="feature-store", {NS}}}[$__rate_interval]))',
                        "{{route}} {{code}}",
                    )
                ],
                unit="reqps",
            ),
            latency_panel("Latency p50 / p95 / p99 by route", f'service="feature-store", {NS}', "route"),
            timeseries(
                "Online request latency p99 by feature service (without HTTP)",
                [
                    target(
                        "histogram_quantile(0.99, sum by (le, feature_service) "
                        f"(rate(mlplatform_features_online_request_duration_seconds_bucket{{{NS}}}[$__rate_interval])))",
                        "{{feature_service}}",
                    )
                ],
                unit="s",
            ),
            timeseries(
                "Online store read latency p99 by feature view",
                [
                    target(
                        "histogram_quantile(0.99, sum by (le, store, feature_view) "
                        f"(rate(mlplatform_features_online_store_read_duration_seconds_bucket{{{NS}}}[$__rate_interval])))",
                        "{{store}} {{feature_view}}",
                    )
                ],
                unit="s",
            ),
            row("Freshness and materialisation"),
            timeseries(
                "Freshness by feature view (age of the newest value read)",
                [
                    target(
                        f"max by (feature_view) (mlplatform_features_freshness_seconds{{{NS}}})",
                        "{{feature_view}}",
                    )
                ],
                unit="s",
                thresholds=[("green", None), ("red", 3600)],
                description="FeatureFreshnessStale fires when the freshest read over 30 minutes is older than 1 hour.",
            ),
            timeseries(
                "Entity rows without stored values per second (0 when none)",
                [
                    target(
                        f"sum by (feature_view) (rate(mlplatform_features_missing_entities_total{{{NS}}}[$__rate_interval])) "
                        f"or sum(rate(mlplatform_features_online_request_duration_seconds_count{{{NS}}}[$__rate_interval])) * 0",
                        "{{feature_view}}",
                    )
                ],
            ),
            timeseries(
                "Materialisation runs by outcome (last hour)",
                [
                    target(
                        f"sum by (outcome) (increase(mlplatform_features_materialization_runs_total{{{NS}}}[1h]))",
                        "{{outcome}}",
                    )
                ],
                w=8,
            ),
            timeseries(
                "Rows materialised by feature view (last hour)",
                [
                    target(
                        f"sum by (feature_view) (increase(mlplatform_features_materialized_rows_total{{{NS}}}[1h])) "
                        f"or sum(increase(mlplatform_features_materialization_runs_total{{{NS}}}[1h])) * 0",
                        "{{feature_view}}",
                    )
                ],
                w=8,
            ),
            timeseries(
                "Materialisation duration (mean)",
                [
                    target(
                        f"sum(mlplatform_features_materialization_duration_seconds_sum{{{NS}}}) "
                        f"/ sum(mlplatform_features_materialization_duration_seconds_count{{{NS}}})",
                        "mean",
                    )
                ],
                unit="s",
                w=8,
            ),
            timeseries(
                "Rows pushed per second by push source (0 when none)",
                [
                    target(
                        f"sum by (push_source) (rate(mlplatform_features_pushed_rows_total{{{NS}}}[$__rate_interval])) "
                        f"or sum(rate(mlplatform_features_online_request_duration_seconds_count{{{NS}}}[$__rate_interval])) * 0",
                        "{{push_source}}",
                    )
                ],
            ),
            logs("feature-store"),
        ],
    )


def explain() -> dict[str, Any]:
    sel = f'service="explainability", {NS}'
    return dashboard(
        "mlplatform-explainability",
        "mlplatform / Explainability",
        "explainability: request latency (with exemplars), SHAP explanation time, rows, explainer builds and caches.",
        [
            row("Requests"),
            timeseries(
                "Requests per second by route and code",
                [
                    target(
                        f"sum by (route, code) (rate(mlplatform_http_requests_total{{{sel}}}[$__rate_interval]))",
                        "{{route}} {{code}}",
                    )
                ],
                unit="reqps",
            ),
            latency_panel("Request latency p50 / p95 / p99 by route", sel, "route"),
            row("SHAP"),
            timeseries(
                "Explanation time p95 by model and explainer",
                [
                    target(
                        "histogram_quantile(0.95, sum by (le, model, explainer) "
                        f'(rate(mlplatform_explain_duration_seconds_bucket{{model=~"$model", {NS}}}[$__rate_interval])))',
                        "{{model}} {{explainer}}",
                    )
                ],
                unit="s",
                w=8,
            ),
            timeseries(
                "Rows explained per second",
                [
                    target(
                        f'sum by (model, explainer) (rate(mlplatform_explain_rows_total{{model=~"$model", {NS}}}[$__rate_interval]))',
                        "{{model}} {{explainer}}",
                    )
                ],
                unit="short",
                w=8,
            ),
            timeseries(
                "Cache hit ratio",
                [
                    target(
                        f'sum by (model, cache) (rate(mlplatform_explain_cache_hits_total{{model=~"$model", {NS}}}[$__rate_interval])) '
                        f'/ (sum by (model, cache) (rate(mlplatform_explain_cache_hits_total{{model=~"$model", {NS}}}[$__rate_interval])) '
                        f'+ sum by (model, cache) (rate(mlplatform_explain_cache_misses_total{{model=~"$model", {NS}}}[$__rate_interval])))',
                        "{{model}} {{cache}}",
                    )
                ],
                unit="percentunit",
                w=8,
            ),
            timeseries(
                "Explainer build time (mean)",
                [
                    target(
                        f'sum by (model, version, explainer) (mlplatform_explain_explainer_build_seconds_sum{{model=~"$model", {NS}}}) '
                        f'/ sum by (model, version, explainer) (mlplatform_explain_explainer_build_seconds_count{{model=~"$model", {NS}}})',
                        "{{model}} v{{version}} {{explainer}}",
                    )
                ],
                unit="s",
            ),
            logs("explainability"),
        ],
        query_var("model", "Model", "label_values(mlplatform_explain_rows_total, model)"),
    )


DASHBOARDS = {
    "platform-overview": overview,
    "model-serving": serving,
    "drift-detection": drift,
    "feature-store": features,
    "explainability": explain,
}


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(fn(), indent=2) + "\n" for name, fn in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build observability/grafana/dashboards/*.json")
    parser.add_argument("--check", action="store_true", help="fail if a committed file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in build().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date (run {Path(__file__).name}): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
