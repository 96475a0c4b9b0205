"""Build observability/grafana/dashboards/*.json with Grafana's builder, ``grafana-foundation-sdk``.

The JSON files are committed (the charts load them with ``.Files.Glob``, the kustomization wraps
them in ConfigMaps); this script is how they are edited: ``make dashboards`` rewrites them,
``--check`` exits 1 when a committed file differs from what the script builds (tests/observability
checks the same). The SDK (pinned in requirements/lock.txt, Grafana 11.6 schema) owns the JSON
shape, the grid layout and the defaults; this file only says which panels exist.

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
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import logs as glogs
from grafana_foundation_sdk.builders import loki, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

OUT_DIR = Path(__file__).resolve().parent / "dashboards"

PROM = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = dm.DataSourceRef(type_val="loki", uid="${loki}")
NS = 'namespace=~"$namespace"'
MODEL = f'model=~"$model", {NS}'
RI = "[$__rate_interval]"

LEGEND = (
    VizLegendOptions()
    .show_legend(True)
    .display_mode(cm.LegendDisplayMode.LIST)
    .placement(cm.LegendPlacement.BOTTOM)
)
Panel = Any  # an SDK panel builder (timeseries.Panel, stat.Panel, ...)
Steps = list[tuple[str, float | None]]


# --------------------------------------------------------------------------- queries and panels

Query = str | tuple[str, str] | prometheus.Dataquery  # an expr, (expr, legend), or a built query


def q(expr: str, legend: str = "", *, exemplar: bool = False, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(PROM)
    query = query.instant() if instant else query.range()
    return query.exemplar(True) if exemplar else query


def _query(x: Query) -> prometheus.Dataquery:
    return q(x) if isinstance(x, str) else q(*x) if isinstance(x, tuple) else x


def rate(metric: str, sel: str = NS, by: str = "", window: str = RI) -> str:
    """``sum [by (...)] (rate(metric{sel}[window]))``; ``increase`` when ``window`` is a fixed range."""
    fn = "rate" if window == RI else "increase"
    return f"sum{f' by ({by}) ' if by else ''}({fn}({metric}{{{sel}}}{window}))"


def agg(metric: str, sel: str = MODEL, by: str = "model, version", op: str = "max") -> str:
    """``max by (model, version) (metric{sel})``: one series per model version across pods."""
    return f"{op} by ({by}) ({metric}{{{sel}}})"


def mean(metric: str, sel: str, by: str) -> str:
    """Mean of a histogram: ``sum by (...) (x_sum) / sum by (...) (x_count)``."""
    op = f"sum by ({by}) " if by else "sum"
    return f"{op}({metric}_sum{{{sel}}}) / {op}({metric}_count{{{sel}}})"


def quantiles(metric: str, sel: str, by: str, qs: tuple[float, ...], legend: str = "") -> list[Query]:
    """``histogram_quantile`` of ``metric``'s buckets, one query per quantile (legend ``p<q> <legend>``)."""
    le = f"le, {by}" if by else "le"
    return [
        (
            f"histogram_quantile({x}, sum by ({le}) (rate({metric}_bucket{{{sel}}}{RI})))",
            legend if len(qs) == 1 else f"p{int(x * 100)} {legend}".strip(),
        )
        for x in qs
    ]


def _panel(panel: Panel, title: str, queries: list[Any], w: int, h: int, desc: str, ds: Any = PROM) -> Panel:
    panel = panel.title(title).datasource(ds).span(w).height(h)
    if desc:
        panel = panel.description(desc)
    for ref_id, query in zip(string.ascii_uppercase, queries, strict=False):
        panel = panel.with_target(query.ref_id(ref_id))
    return panel


def _thresholds(steps: Steps | None) -> gd.ThresholdsConfig:
    steps = steps or [("green", None)]
    config = gd.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
    return config.steps([dm.Threshold(color=c, value=v) for c, v in steps])


def ts(
    title: str,
    *queries: Query,
    unit: str = "short",
    desc: str = "",
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    steps: Steps | None = None,
) -> timeseries.Panel:
    panel = (
        _panel(timeseries.Panel(), title, [_query(x) for x in queries], w, h, desc)
        .unit(unit)
        .thresholds(_thresholds(steps))
        .draw_style(cm.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(LEGEND)
        .tooltip(VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.NONE))
    )
    return panel.stacking(StackingConfig().mode(cm.StackingMode.NORMAL).group("A")) if stack else panel


def big(
    title: str, expr: str, *, unit: str = "short", desc: str = "", w: int = 6, h: int = 4,
    steps: Steps | None = None, decimals: int | None = None,
) -> stat.Panel:  # fmt: skip
    """A stat panel: the last value of an instant query, coloured by ``steps``."""
    panel = (
        _panel(stat.Panel(), title, [q(expr, instant=True)], w, h, desc)
        .unit(unit)
        .thresholds(_thresholds(steps))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.AREA)
    )
    return panel if decimals is None else panel.decimals(decimals)


def grid(title: str, expr: str, *, desc: str = "", w: int = 12, h: int = 8) -> table.Panel:
    """A table of an instant query's label sets (one row per series)."""
    query = q(expr, instant=True).format(pm.PromQueryFormat.TABLE)
    merge = [dm.DataTransformerConfig(id_val=t, options={}) for t in ("labelsToFields", "merge")]
    return _panel(table.Panel(), title, [query], w, h, desc).show_header(True).transformations(merge)


def timeline(title: str, expr: str, legend: str, *, desc: str = "", w: int = 24, h: int = 8) -> Panel:
    """0/1 series as coloured bands over time (green 0, red 1)."""
    desc = desc or "Red: the feature drifted in the window that closed at that time."
    ok_drift = {"0": dm.ValueMappingResult(text="ok"), "1": dm.ValueMappingResult(text="drift")}
    return (
        _panel(statetimeline.Panel(), title, [q(expr, legend)], w, h, desc)
        .thresholds(_thresholds([("green", None), ("red", 1)]))
        .color_scheme(gd.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .mappings([dm.ValueMap(options=ok_drift)])
        .show_value(cm.VisibilityMode.NEVER)
        .legend(LEGEND)
        .merge_values(True)
        .align_value("left")
    )


def logs(service: str, *, w: int = 24, h: int = 10) -> glogs.Panel:
    """The service's JSON log lines from Loki, filtered by the ``trace_id`` variable."""
    expr = f'{{service="{service}", {NS}}} |~ "$trace_id" | json'
    query = loki.Dataquery().expr(expr).query_type("range").datasource(LOKI)
    desc = (
        "JSON log lines from Loki, stream label service. The trace_id field links to Tempo "
        "(Loki datasource derived field)."
    )
    return (
        _panel(
            glogs.Panel(), f"{service} logs (filter with the trace_id variable)", [query], w, h, desc, LOKI
        )
        .show_time(True)
        .wrap_log_message(True)
        .prettify_log_message(False)
        .enable_log_details(True)
        .sort_order(cm.LogsSortOrder.DESCENDING)
        .dedup_strategy(cm.LogsDedupStrategy.NONE)
    )


def latency(title: str, sel: str, by: str = "") -> timeseries.Panel:
    """p50/p95/p99 of the core HTTP histogram with exemplars (click a dot to open the trace in Tempo)."""
    legend = f"{{{{{by}}}}}" if by else ""
    queries = quantiles("mlplatform_http_request_duration_seconds", sel, by, (0.5, 0.95, 0.99), legend)
    desc = "Quantiles from the request-latency histogram. Dots are exemplars: click one to open its trace in Tempo."
    return ts(title, *[q(*x, exemplar=True) for x in queries], unit="s", desc=desc)  # type: ignore[misc]


# --------------------------------------------------------------------------- dashboards

Section = tuple[str, list[Panel]]


def query_var(name: str, label: str, query: str) -> gd.QueryVariable:
    return (
        gd.QueryVariable(name)
        .label(label)
        .datasource(PROM)
        .query({"query": query, "refId": name})
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def board(uid: str, title: str, desc: str, sections: list[Section], *variables: gd.QueryVariable) -> Any:
    """A dashboard: the shared variables and links, then each (row title, panels) section in order."""
    builder = (
        gd.Dashboard(title)
        .uid(uid)
        .description(desc)
        .tags(["mlplatform"])
        .timezone("utc")
        .version(1)
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .link(
            gd.DashboardLink("mlplatform dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["mlplatform"])
            .as_dropdown(True)
        )
        .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(gd.DatasourceVariable("loki").label("Loki").type("loki"))
        .with_variable(
            query_var("namespace", "Namespace", "label_values(mlplatform_http_requests_in_flight, namespace)")
        )
    )
    for var in variables:
        builder = builder.with_variable(var)
    trace_id = gd.TextBoxVariable("trace_id").label("Trace id (logs)").default_value("")
    builder = builder.with_variable(trace_id.current(dm.VariableOption(text="", value="")))
    ids = iter(range(1, 1000))
    for row, panels in sections:
        builder = builder.with_row(gd.Row(row).id(next(ids)))
        for panel in panels:
            builder = builder.with_panel(panel.id(next(ids)))
    return builder.build()


HTTP = "mlplatform_http_requests_total"
GREEN_RED = [("green", None), ("red", 1)]
BY_VERSION = "{{model}} v{{version}}"


def overview() -> Any:
    def burn(sli: str, budget: str) -> list[Query]:
        ratio = f"service:mlplatform_slo_{sli}:ratio_rate"
        return [(f'{ratio}{w}{{service="model-serving"}} / {budget}', w) for w in ("5m", "1h", "6h", "1d")]

    page = [("green", None), ("orange", 6), ("red", 14.4)]
    left = [("red", None), ("orange", 0.25), ("green", 0.5)]
    slo = 'service:mlplatform_slo_{}:ratio_rate30d{{service="model-serving"}}'
    slos = [
        big("Availability, 30 days", "1 - " + slo.format("errors"), unit="percentunit", decimals=3,
            steps=[("red", None), ("orange", 0.999), ("green", 0.9995)]),
        big("Availability error budget left", "service:mlplatform_slo_availability_budget_remaining:ratio",
            unit="percentunit", steps=left),
        big("Within 250 ms, 30 days", "1 - " + slo.format("slow_requests"), unit="percentunit", decimals=3,
            steps=[("red", None), ("orange", 0.99), ("green", 0.995)]),
        big("Latency error budget left", "service:mlplatform_slo_latency_budget_remaining:ratio",
            unit="percentunit", steps=left),
        ts("Availability burn rate (1 = budget lasts exactly 30 days)", *burn("errors", "0.001"), steps=page,
           desc="Page at 14.4x (1h and 5m) or 6x (6h and 30m); ticket at 3x (1d and 2h) or 1x (3d and 6h)."),
        ts("Latency burn rate (1 = budget lasts exactly 30 days)", *burn("slow_requests", "0.01"), steps=page),
    ]  # fmt: skip
    up = 'sum by (job) (up{job=~".*(model-serving|feature-store|drift-detection|explainability).*"})'
    services = [
        ts("Requests per second by service", ("service:mlplatform_http_requests:rate5m", "{{service}}"),
           unit="reqps", w=8),
        ts("5xx ratio by service (5m)", ("service:mlplatform_slo_errors:ratio_rate5m", "{{service}}"),
           unit="percentunit", w=8),
        ts("p99 latency by service",
           ("service:mlplatform_http_request_duration_seconds:p99_rate5m", "{{service}}"), unit="s", w=8),
        ts("Responses per second by service and status code",
           ("service_code:mlplatform_http_requests:rate5m", "{{service}} {{code}}"), unit="reqps", stack=True),
        ts("Requests in flight by service",
           (f"sum by (service) (mlplatform_http_requests_in_flight{{{NS}}})", "{{service}}"),
           desc="The HPAs' per-pod custom metric (prometheus-adapter)."),
        ts("Scrape targets up", (up, "{{job}}")),
    ]  # fmt: skip
    return board(
        "mlplatform-overview",
        "mlplatform / Platform overview",
        "Client-API SLOs (model-serving: 99.9% without 5xx, 99% within 250 ms over 30 days), error budgets "
        "and every service's traffic.",
        [("Client API SLOs (model-serving)", slos), ("Services", services)],
    )


def serving() -> Any:
    sel = f'service="model-serving", {NS}'
    grpc = '"/inference.GRPCInferenceService/.+"'  # the route templates of V2 gRPC calls
    errors = [
        (f"({rate(HTTP, code)} or {rate(HTTP, sel)} * 0) / {rate(HTTP, sel)}", f"{c}xx")
        for c, code in (("4", f'{sel}, code=~"4.."'), ("5", f'{sel}, code=~"5.."'))
    ]
    traffic = [
        ts("Requests per second by route", (rate(HTTP, sel, "route"), "{{route}}"), unit="reqps"),
        ts("Requests per second by protocol (REST / gRPC) and code",
           (rate(HTTP, f"{sel}, route!~{grpc}", "code"), "REST {{code}}"),
           (rate(HTTP, f"{sel}, route=~{grpc}", "code"), "gRPC {{code}}"), unit="reqps",
           desc="gRPC calls (inference.GRPCInferenceService on SERVING_GRPC_PORT) go through the same "
           "request pipeline as REST: counted as POST /inference.GRPCInferenceService/<method> with the "
           "HTTP status REST would have answered (gRPC INVALID_ARGUMENT as 422, UNAVAILABLE as 503, ...), "
           "so the in-flight gauge the HPA scales on, the SLOs and the 5xx alerts include them."),
        latency("Latency p50 / p95 / p99", sel),
        ts("Responses by status code", (rate(HTTP, sel, "code"), "{{code}}"), unit="reqps", stack=True),
        ts("Error ratio (4xx and 5xx)", *errors, unit="percentunit"),
    ]  # fmt: skip
    batch = "mlplatform_serving_batch_size_requests"
    info = f"sum by (model) (mlplatform_serving_model_info{{{MODEL}}})"
    models = [
        ts("Inferences by model and outcome",
           (rate("mlplatform_serving_requests_total", MODEL, "model, outcome"), "{{model}} {{outcome}}"),
           unit="reqps", w=8),
        ts("Batch size (rows per model call) p50 / p95",
           *quantiles("mlplatform_serving_batch_size_rows", MODEL, "model", (0.5, 0.95), "{{model}}"), w=8),
        ts("Requests merged per model call (mean)",
           (f"{rate(batch + '_sum', MODEL, 'model')} / {rate(batch + '_count', MODEL, 'model')}", "{{model}}"),
           w=8),
        ts("Queue depth (requests waiting for a batch)",
           (agg("mlplatform_serving_queue_depth_requests", by="model", op="sum"), "{{model}}"), w=8,
           desc="The HPA scales on this (prometheus-adapter exposes it as mlplatform_serving_queue_depth)."),
        grid("Loaded model versions",
             agg("mlplatform_serving_model_info", by="model, version, runtime, instance"), w=8,
             desc="One row per pod and loaded version: during a rollout or alias move both versions show."),
        ts("Model load failures (total per pod, 0 when none)",
           (f"{agg('mlplatform_serving_model_load_failures_total', by='model', op='sum')} or {info} * 0",
            "{{model}}"), w=8),
        ts("Model load time (mean)",
           (mean("mlplatform_serving_model_load_duration_seconds", MODEL, "model"), "{{model}}"), unit="s", w=8),
        ts("Feature-store lookup failures by reason (0 when none)",
           (f"{rate('mlplatform_serving_feature_store_failures_total', by='reason')} "
            f"or {rate('mlplatform_serving_requests_total')} * 0", "{{reason}}"), unit="reqps", w=8),
        ts("Inference latency inside the service p99 by model",
           *quantiles("mlplatform_serving_request_duration_seconds", MODEL, "model", (0.99,), "{{model}}"),
           unit="s", w=8,
           desc="Parse, feature lookup, queue and predict; the HTTP panel above adds the transport."),
        ts("Feature lookups to the feature store p99 by caller and outcome",
           *quantiles("mlplatform_feature_client_request_duration_seconds", NS, "job, outcome", (0.99,),
                      "{{job}} {{outcome}}"), unit="s", w=8,
           desc="Client side of the online lookups (model-serving and explainability), including retries."),
    ]  # fmt: skip
    g = "mlplatform_serving_generation_"  # the text model's generate extension (serving/text, #20)
    text = [
        ts("Time to first token p50 / p99", *quantiles(g + "time_to_first_token_seconds", MODEL, "model, version",
           (0.5, 0.99), BY_VERSION), unit="s", w=8),
        ts("Generation latency p50 / p99", *quantiles(g + "duration_seconds", MODEL, "model, version", (0.5, 0.99),
           BY_VERSION), unit="s", w=8),
        ts("Output tokens per second", (rate(g + "output_tokens_sum", MODEL, "model, version"), f"all {BY_VERSION}"),
           *quantiles(g + "tokens_per_second", MODEL, "model, version", (0.5,), f"p50 per request {BY_VERSION}"),
           w=8, desc="All requests together (rate of the output-token histogram's sum), and the median of each "
           "request's own rate (output tokens per second after its first token)."),
        ts("Input tokens per request p50 / p99", *quantiles(g + "input_tokens", MODEL, "model, version",
           (0.5, 0.99), BY_VERSION), w=8),
        ts("Output tokens per request p50 / p99", *quantiles(g + "output_tokens", MODEL, "model, version",
           (0.5, 0.99), BY_VERSION), w=8),
        ts("Generation errors per second by kind",
           (rate(g + "errors_total", MODEL, "model, kind"), "{{model}} {{kind}}"), w=8),
        ts("Generation requests in flight", (agg(g + "in_flight", by="model", op="sum"), "{{model}}")),
        ts("Generation batch size p50 / p95 (requests per model call)",
           *quantiles(g + "batch_size", MODEL, "model", (0.5, 0.95), "{{model}}")),
    ]  # fmt: skip
    payloads = [
        ts("Payload records sent / spooled / dropped per second",
           (rate("mlplatform_payload_records_sent_total"), "sent"),
           (rate("mlplatform_payload_records_spooled_total"), "spooled"),
           (f"{rate('mlplatform_payload_records_dropped_total', by='reason')} "
            f"or {rate('mlplatform_payload_records_submitted_total')} * 0", "dropped {{reason}}")),
        ts("Payload spool size and queue",
           (agg("mlplatform_payload_spool_bytes", NS, "instance", "sum"), "spool {{instance}}"), unit="bytes",
           w=6, desc="Non-zero while drift-detection is unreachable; records are re-sent when it is back."),
        ts("Payload queue (records)", (agg("mlplatform_payload_queue_records", NS, "instance", "sum"),
           "{{instance}}"), w=6),
    ]  # fmt: skip
    node, gpu = 'Hostname=~"$gpu_node"', "{{Hostname}} gpu{{gpu}}"
    used = f"DCGM_FI_DEV_FB_USED{{{node}}} / (DCGM_FI_DEV_FB_USED{{{node}}} + DCGM_FI_DEV_FB_FREE{{{node}}})"
    gpus = [
        ts("GPU utilisation", (agg("DCGM_FI_DEV_GPU_UTIL", node, "Hostname, gpu", "avg"), gpu), unit="percent",
           steps=[("green", None), ("orange", 80), ("red", 90)]),
        ts("GPU memory used", (f"max by (Hostname, gpu) ({used})", gpu), unit="percentunit",
           steps=[("green", None), ("orange", 0.8), ("red", 0.9)]),
        logs("model-serving"),
    ]  # fmt: skip
    return board(
        "mlplatform-model-serving",
        "mlplatform / Model serving",
        "model-serving: traffic, latency with exemplars, errors, batching, models, GPU, feature lookups and "
        "payload logging.",
        [
            ("Traffic", traffic),
            ("Models and batching", models),
            ("Text generation (generate extension, per model version)", text),
            ("Payload logging to drift-detection", payloads),
            ("GPU pool (dcgm-exporter)", gpus),
        ],
        query_var("model", "Model", "label_values(mlplatform_serving_model_info, model)"),
        query_var("gpu_node", "GPU node", "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)"),
    )


def drift() -> Any:
    d = "mlplatform_drift_"
    sel = f'service="drift-detection", {NS}'
    feat = f'model=~"$model", feature=~"$feature", {NS}'
    traffic = [
        ts("Requests per second by route", (rate(HTTP, sel, "route"), "{{route}}"), unit="reqps"),
        latency("Latency p50 / p95 / p99", sel),
    ]
    univariate = [
        big("Model versions with dataset drift", f"sum({agg(d + 'dataset_drifted')})", steps=GREEN_RED),
        ts("Dataset drift share (features drifted)", (agg(d + "dataset_drift_share_ratio"), BY_VERSION),
           unit="percentunit", steps=[("green", None), ("red", 0.5)], w=18,
           desc="Dataset drift when the share reaches DRIFT_DRIFT_SHARE (default 50%)."),
        timeline("Per-feature drift over time",
                 agg(d + "feature_drifted", f'model=~"$model", feature=~"$feature", feature!="prediction", {NS}',
                     "feature"), "{{feature}}"),
        ts("Drift statistic by feature", (agg(d + "feature_score", feat, "feature, method"),
           "{{feature}} ({{method}})"),
           desc="p-value (ks, chisquare: drift below 0.05) or distance (wasserstein, jensenshannon: drift "
           "above 0.1)."),
        ts("Population stability index by feature", (agg(d + "feature_psi", feat, "feature"), "{{feature}}"),
           steps=[("green", None), ("orange", 0.1), ("red", 0.25)]),
        ts("Prediction drift",
           (agg(d + "feature_drifted", f'model=~"$model", feature="prediction", {NS}'), BY_VERSION)),
    ]  # fmt: skip
    mv = d + "multivariate_"
    multivariate = [
        big("Model versions with multivariate drift", f"sum({agg(mv + 'drifted')})", steps=GREEN_RED,
            desc="Versions where MMD or the domain classifier found the joint distribution moved."),
        timeline("Multivariate drift over time", agg(mv + "drifted", by="model, method"), "{{model}} {{method}}",
                 w=18, desc="Red: the test (mmd, domain_classifier) found drift in the window that closed then."),
        *[
            ts(title, (agg(mv + "score", f'method="{m}", {MODEL}'), f"{s} {BY_VERSION}"),
               (agg(mv + "threshold", f'method="{m}", {MODEL}'), f"threshold {BY_VERSION}"), w=8, desc=desc)
            for title, m, s, desc in (
                ("MMD^2 against its permutation threshold", "mmd", "MMD^2",
                 "Drift when MMD^2 exceeds the permuted MMD^2 at the p-value rank (DRIFT_MULTIVARIATE p_value)."),
                ("Domain classifier ROC AUC against its threshold", "domain_classifier", "AUC",
                 "0.5: reference and window rows cannot be told apart; drift above the bootstrap or fixed "
                 "threshold."),
            )
        ],
        ts("Multivariate p-values / computation time",
           (agg(mv + "p_value", by="model, method"), "p {{model}} {{method}}"),
           (agg(mv + "compute_seconds", by="model, method"), "seconds {{model}} {{method}}"), w=8),
    ]  # fmt: skip
    perf = f'model=~"$model", metric=~"$metric", {NS}'
    by_metric = "{{metric}} {{model}} v{{version}}"
    quality = [
        big("Model versions with a performance drop", f"sum({agg(d + 'performance_dropped')})", steps=GREEN_RED,
            desc="Realized performance below the reference by more than DRIFT_PERFORMANCE_DROP."),
        ts("Realized vs estimated vs reference performance",
           *[(agg(f"{d}{k}_performance", perf, "model, version, metric"), f"{k} {by_metric}")
             for k in ("realized", "estimated", "reference")],
           w=18, desc="Estimated (CBPE) arrives with each window; realized once enough labels arrived."),
        ts("Estimation error (estimated - realized)",
           (agg(d + "estimation_error", perf, "model, version, metric"), by_metric), w=8),
        ts("Labelled share of the newest window", (agg(d + "labeled_ratio"), BY_VERSION), unit="percentunit",
           w=8),
        ts("Labels received per second by result",
           (rate(d + "labels_total", MODEL, "model, result"), "{{model}} {{result}}"), w=8),
    ]  # fmt: skip
    seg = f'model=~"$model", segment=~"$segment", {NS}'
    segments = [
        ts("Disparate impact ratio by segment",
           (agg(d + "disparate_impact_ratio", seg, "model, segment", "min"), "{{model}} {{segment}}"),
           steps=[("red", None), ("green", 0.8)],
           desc="Lowest over highest positive-prediction rate among a segment's values; below 0.8 "
           "fails the four-fifths rule."),
        ts("Equal-opportunity difference by segment",
           (agg(d + "equal_opportunity_difference", seg, "model, segment"), "{{model}} {{segment}}"),
           desc="Highest minus lowest recall among a segment's values (0 = equal)."),
        grid("Per segment value: records, prediction rate, drift share",
             agg(d + "segment_records", seg, "model, segment, value"), w=8),
        ts("Prediction rate by segment value",
           (agg(d + "segment_prediction_rate_ratio", seg, "segment, value"), "{{segment}}={{value}}"),
           unit="percentunit", w=8),
        ts("Realized recall and drift share by segment value",
           (agg(d + "segment_realized_performance", f'metric="recall", {seg}', "segment, value"),
            "recall {{segment}}={{value}}"),
           (agg(d + "segment_drift_share_ratio", seg, "segment, value"), "drift share {{segment}}={{value}}"),
           w=8),
    ]  # fmt: skip
    descriptor = d + "text_descriptor"  # drift/text.py: descriptor means per window
    text = [
        ts(title, (agg(descriptor, f'descriptor="{name}", {feat}', "model, version, feature, window"),
           "{{model}} v{{version}} {{feature}} {{window}}"), unit=unit, w=8, desc=desc)
        for title, name, unit, desc in (
            ("Text length (mean characters per text)", "length", "short", ""),
            ("Out-of-vocabulary word share (mean)", "oov_share", "percentunit",
             "Share of words not in the reference's vocabulary."),
            ("Non-letter character share (mean)", "non_letter_share", "percentunit",
             "Share of characters that are neither letters nor spaces."),
        )
    ]  # fmt: skip
    ingested = rate(d + "records_ingested_total", MODEL, "model")
    windows = [
        ts("Records in the last closed window / collected for the next",
           (agg(d + "window_size_records"), f"closed {BY_VERSION}"),
           (agg(d + "open_window_records"), f"open {BY_VERSION}"), w=8),
        ts("Windows closed per hour", (rate(d + "windows_total", MODEL, "model, version", "[1h]"), BY_VERSION),
           w=8),
        ts("Drift computation time (last window)", (agg(d + "last_compute_seconds"), BY_VERSION), unit="s", w=8),
        ts("Records ingested / duplicate / rejected per second",
           (ingested, "ingested {{model}}"),
           (f"{rate(d + 'records_duplicate_total', MODEL, 'model')} or {ingested} * 0", "duplicate {{model}}"),
           (f"{rate(d + 'records_rejected_total', by='reason')} or {rate(d + 'records_ingested_total')} * 0",
            "rejected {{reason}}")),
        ts("Retraining triggers (0 when none)",
           (f"{agg(d + 'retraining_triggers_total', NS, 'model, mode, outcome', 'sum')} "
            f"or {agg(d + 'windows_total', NS, 'model', 'sum')} * 0", "{{model}} {{mode}} {{outcome}}")),
        logs("drift-detection"),
    ]  # fmt: skip
    return board(
        "mlplatform-drift",
        "mlplatform / Drift detection",
        "drift-detection: per-feature drift over time, dataset drift share, prediction drift and windows.",
        [
            ("Traffic", traffic),
            ("Drift (last closed window per model version)", univariate),
            ("Multivariate drift (MMD, domain classifier; last closed window)", multivariate),
            ("Model quality (realized from labels, estimated by CBPE; newest window)", quality),
            ("Segments and fairness (newest window)", segments),
            ("Text columns: descriptors of the reference and the last closed window", text),
            ("Windows and ingestion", windows),
        ],
        query_var("model", "Model", "label_values(mlplatform_drift_windows_total, model)"),
        query_var("feature", "Feature", "label_values(mlplatform_drift_feature_drifted, feature)"),
        query_var("metric", "Metric", "label_values(mlplatform_drift_realized_performance, metric)"),
        query_var("segment", "Segment", "label_values(mlplatform_drift_segment_records, segment)"),
    )


def features() -> Any:
    f = "mlplatform_features_"
    sel = f'service="feature-store", {NS}'
    lookups = rate(f + "online_request_duration_seconds_count")
    runs = f + "materialization_runs_total"
    online = [
        ts("Requests per second by route and code", (rate(HTTP, sel, "route, code"), "{{route}} {{code}}"),
           unit="reqps"),
        latency("Latency p50 / p95 / p99 by route", sel, "route"),
        ts("Online request latency p99 by feature service (without HTTP)",
           *quantiles(f + "online_request_duration_seconds", NS, "feature_service", (0.99,),
                      "{{feature_service}}"), unit="s"),
        ts("Online store read latency p99 by feature view",
           *quantiles(f + "online_store_read_duration_seconds", NS, "store, feature_view", (0.99,),
                      "{{store}} {{feature_view}}"), unit="s"),
    ]  # fmt: skip
    freshness = [
        ts("Freshness by feature view (age of the newest value read)",
           (agg(f + "freshness_seconds", NS, "feature_view"), "{{feature_view}}"), unit="s",
           steps=[("green", None), ("red", 3600)],
           desc="FeatureFreshnessStale fires when the freshest read over 30 minutes is older than 1 hour."),
        ts("Entity rows without stored values per second (0 when none)",
           (f"{rate(f + 'missing_entities_total', by='feature_view')} or {lookups} * 0", "{{feature_view}}")),
        ts("Materialisation runs by outcome (last hour)", (rate(runs, by="outcome", window="[1h]"), "{{outcome}}"),
           w=8),
        ts("Rows materialised by feature view (last hour)",
           (f"{rate(f + 'materialized_rows_total', by='feature_view', window='[1h]')} "
            f"or {rate(runs, window='[1h]')} * 0", "{{feature_view}}"), w=8),
        ts("Materialisation duration (mean)", (mean(f + "materialization_duration_seconds", NS, ""), "mean"),
           unit="s", w=8),
        # full width: the logs panel below would not fit beside it (the SDK only wraps once a line is full)
        ts("Rows pushed per second by push source (0 when none)",
           (f"{rate(f + 'pushed_rows_total', by='push_source')} or {lookups} * 0", "{{push_source}}"), w=24),
        logs("feature-store"),
    ]  # fmt: skip
    return board(
        "mlplatform-feature-store",
        "mlplatform / Feature store",
        "feature-store: online lookup latency, freshness and materialisation.",
        [("Online lookups", online), ("Freshness and materialisation", freshness)],
    )


def explain() -> Any:
    e = "mlplatform_explain_"
    sel = f'service="explainability", {NS}'
    hits = rate(e + "cache_hits_total", MODEL, "model, cache")
    misses = rate(e + "cache_misses_total", MODEL, "model, cache")
    requests = [
        ts("Requests per second by route and code", (rate(HTTP, sel, "route, code"), "{{route}} {{code}}"),
           unit="reqps"),
        latency("Request latency p50 / p95 / p99 by route", sel, "route"),
    ]  # fmt: skip
    shap = [
        ts("Explanation time p95 by model and explainer",
           *quantiles(e + "duration_seconds", MODEL, "model, explainer", (0.95,), "{{model}} {{explainer}}"),
           unit="s", w=8),
        ts("Rows explained per second",
           (rate(e + "rows_total", MODEL, "model, explainer"), "{{model}} {{explainer}}"), w=8),
        ts("Cache hit ratio", (f"{hits} / ({hits} + {misses})", "{{model}} {{cache}}"), unit="percentunit", w=8),
        # full width: the logs panel below would not fit beside it (the SDK only wraps once a line is full)
        ts("Explainer build time (mean)", (mean(e + "explainer_build_seconds", MODEL, "model, version, explainer"),
           "{{model}} v{{version}} {{explainer}}"), unit="s", w=24),
        logs("explainability"),
    ]  # fmt: skip
    return board(
        "mlplatform-explainability",
        "mlplatform / Explainability",
        "explainability: request latency (with exemplars), SHAP explanation time, rows, explainer builds and "
        "caches.",
        [("Requests", requests), ("SHAP", shap)],
        query_var("model", "Model", "label_values(mlplatform_explain_rows_total, model)"),
    )


DASHBOARDS: dict[str, Callable[[], Any]] = {
    "platform-overview": overview,
    "model-serving": serving,
    "drift-detection": drift,
    "feature-store": features,
    "explainability": explain,
}


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(fn(), cls=JSONEncoder, indent=2) + "\n" for name, fn in DASHBOARDS.items()
    }


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
        sys.stderr.write(f"out of date (run make dashboards): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
