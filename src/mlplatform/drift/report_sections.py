"""Extra sections of the drift HTML report, in the look of Evidently's widgets.

Evidently's ``Report`` renders the per-column drift; what it has no preset for here (multivariate
drift with MMD and a domain classifier; model quality from labels and CBPE; segments and fairness)
is rendered as self-contained HTML (no script, inline SVG) from the same JSON the API returns and
inserted before ``</body>`` of Evidently's page. Every value shown is escaped.
"""

from __future__ import annotations

import html
import logging
from typing import Any

log = logging.getLogger("mlplatform.drift.report")

_STYLE = """
<style>
.mlp-section{font-family:Helvetica,Arial,sans-serif;margin:24px;padding:16px 24px;border-radius:4px;
 background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.2)}
.mlp-section h2{font-size:20px;font-weight:500;margin:0 0 8px}
.mlp-section .mlp-summary{font-size:15px;margin:0 0 12px}
.mlp-section table{border-collapse:collapse;width:100%;font-size:14px}
.mlp-section th,.mlp-section td{border-bottom:1px solid #e0e0e0;padding:6px 8px;text-align:left}
.mlp-drift{color:#d32f2f;font-weight:600}.mlp-ok{color:#388e3c;font-weight:600}
</style>
"""

_NAMES = {"mmd": "MMD (RBF kernel, permutation test)", "domain_classifier": "Domain classifier (ROC AUC)"}


def _fmt(value: Any) -> str:  # noqa: ANN401
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _bar(statistic: float, threshold: float, drifted: bool) -> str:
    """An inline SVG: the statistic's bar against a line at the threshold (same scale)."""
    top = max(abs(statistic), abs(threshold), 1e-12) * 1.25
    width = 240
    x_stat = max(0.0, statistic) / top * width
    x_thr = max(0.0, threshold) / top * width
    colour = "#d32f2f" if drifted else "#4d97e8"
    return (
        f'<svg width="{width}" height="18" role="img" aria-label="statistic against threshold">'
        f'<rect x="0" y="3" width="{x_stat:.1f}" height="12" fill="{colour}"/>'
        f'<line x1="{x_thr:.1f}" x2="{x_thr:.1f}" y1="0" y2="18" stroke="#000" stroke-width="2"/></svg>'
    )


def multivariate_section(result: dict[str, Any] | None) -> str:
    """The "Multivariate drift" section for a window's ``multivariate`` result (as stored)."""
    if not result:
        return (
            '<div class="mlp-section" id="multivariate-drift"><h2>Multivariate drift</h2>'
            '<p class="mlp-summary">Multivariate drift is turned off for this model.</p></div>'
        )
    methods = result.get("methods", {})
    drifted = [m for m, r in methods.items() if r["drifted"]]
    verdict = (
        f'<span class="mlp-drift">detected</span> by {html.escape(", ".join(drifted))}'
        if drifted
        else '<span class="mlp-ok">not detected</span>'
    )
    rows = []
    for name, r in methods.items():
        details = ", ".join(f"{html.escape(str(k))}={_fmt(v)}" for k, v in r.get("details", {}).items())
        rows.append(
            "<tr>"
            f"<td>{html.escape(_NAMES.get(name, name))}</td>"
            f"<td>{_fmt(float(r['statistic']))}</td>"
            f"<td>{_fmt(float(r['threshold']))}</td>"
            f"<td>{_fmt(r.get('p_value'))}</td>"
            f'<td class="{"mlp-drift" if r["drifted"] else "mlp-ok"}">'
            f"{'Detected' if r['drifted'] else 'Not detected'}</td>"
            f"<td>{_bar(float(r['statistic']), float(r['threshold']), bool(r['drifted']))}</td>"
            f"<td>{details}</td>"
            "</tr>"
        )
    columns = ", ".join(html.escape(c) for c in result.get("columns", []))
    return (
        '<div class="mlp-section" id="multivariate-drift"><h2>Multivariate drift</h2>'
        f'<p class="mlp-summary">Joint-distribution drift {verdict} on '
        f"{int(result.get('current_rows', 0))} current vs {int(result.get('reference_rows', 0))} reference rows "
        f"over the columns {columns}.</p>"
        "<table><thead><tr><th>Test</th><th>Statistic</th><th>Threshold</th><th>p-value</th><th>Drift</th>"
        "<th>Statistic vs threshold</th><th>Details</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _line_chart(series: dict[str, list[float | None]], width: int = 480, height: int = 140) -> str:
    """An inline SVG line chart of equally spaced points (oldest left), one polyline per series."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(vs) for vs in series.values())
    colours = ["#4d97e8", "#ed0400", "#2ca02c", "#9467bd"]
    parts = [f'<svg width="{width}" height="{height + 20}" role="img" aria-label="performance per window">']
    for i, (name, vs) in enumerate(series.items()):
        pts = [
            f"{(j / max(n - 1, 1)) * (width - 10) + 5:.1f},{height - (v - lo) / span * (height - 10) - 5:.1f}"
            for j, v in enumerate(vs)
            if v is not None
        ]
        colour = colours[i % len(colours)]
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(pts)}"/>'
            )
        parts.append(
            f'<text x="{5 + 130 * i}" y="{height + 16}" fill="{colour}" font-size="12">{html.escape(name)}</text>'
        )
    parts.append(
        f'<text x="{width - 5}" y="12" text-anchor="end" font-size="11">{hi:.3g}</text>'
        f'<text x="{width - 5}" y="{height}" text-anchor="end" font-size="11">{lo:.3g}</text></svg>'
    )
    return "".join(parts)


def quality_section(history: dict[str, Any] | None, limit: int = 20) -> str:
    """The "Model quality" section: per window (newest first) labels, realized and CBPE-estimated
    performance, estimation error and the performance-drop decision (``GET .../quality`` as JSON)."""
    head = '<div class="mlp-section" id="model-quality"><h2>Model quality</h2>'
    windows = (history or {}).get("windows") or []
    if not windows:
        return head + '<p class="mlp-summary">No closed window has quality results yet.</p></div>'
    metric = str(history.get("metric", "roc_auc")) if history else "roc_auc"
    windows = windows[:limit]
    newest = windows[0]
    dropped = newest.get("performance_dropped")
    verdict = (
        '<span class="mlp-drift">below the reference</span>'
        if dropped
        else '<span class="mlp-ok">not below the reference</span>'
        if dropped is False
        else "not judged yet (too few labels or no labelled reference)"
    )
    metrics = sorted(
        {m for w in windows for part in ("estimated", "realized") for m in (w.get(part) or {})},
        key=lambda m: (m != metric, m),
    )
    rows = []
    for w in windows:
        est, real, err = w.get("estimated") or {}, w.get("realized") or {}, w.get("estimation_error") or {}
        labeled = w["n_labeled"] / w["n_records"] if w.get("n_records") else 0.0
        cells = "".join(
            f"<td>{_fmt(est.get(m))} / {_fmt(real.get(m))}"
            + (f" ({_fmt(err[m])})" if m in err else "")
            + "</td>"
            for m in metrics
        )
        flag = w.get("performance_dropped")
        rows.append(
            f"<tr><td>{int(w['window_id'])}</td><td>{html.escape(str(w['version']))}</td>"
            f"<td>{int(w['n_records'])}</td><td>{labeled:.1%}</td>{cells}"
            f'<td class="{"mlp-drift" if flag else "mlp-ok"}">'
            f"{'Dropped' if flag else 'OK' if flag is False else '–'}</td></tr>"
        )
    oldest_first = list(reversed(windows))
    chart = _line_chart(
        {
            f"estimated {metric}": [(w.get("estimated") or {}).get(metric) for w in oldest_first],
            f"realized {metric}": [(w.get("realized") or {}).get(metric) for w in oldest_first],
        }
    )
    header = "".join(f"<th>{html.escape(m)} estimated / realized (error)</th>" for m in metrics)
    return (
        head + f'<p class="mlp-summary">Newest window (id {int(newest["window_id"])}): {html.escape(metric)} '
        f"{verdict}.</p>{chart}"
        "<table><thead><tr><th>Window</th><th>Version</th><th>Records</th><th>Labelled</th>"
        f"{header}<th>Performance</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def segments_section(segments: dict[str, Any] | None, reason: str = "") -> str:
    """The "Segments and fairness" section: per configured segment column and value the volume,
    prediction rate, realized performance and drift share, with the disparate impact ratio (flagged
    below 0.8, the four-fifths rule) and the equal-opportunity difference (``GET .../segments``)."""
    head = '<div class="mlp-section" id="segments"><h2>Segments and fairness</h2>'
    if not segments or not segments.get("segments"):
        return (
            head + f'<p class="mlp-summary">{html.escape(reason or "No segments for this model.")}</p></div>'
        )
    parts = [
        head + f'<p class="mlp-summary">Window {int(segments["window_id"])} of version '
        f"{html.escape(str(segments['version']))}.</p>"
    ]
    for name, seg in segments["segments"].items():
        di, eod = seg.get("disparate_impact_ratio"), seg.get("equal_opportunity_difference")
        di_cls = "mlp-drift" if di is not None and di < 0.8 else "mlp-ok"
        parts.append(
            f"<h3>{html.escape(name)} (column {html.escape(str(seg['column']))})</h3>"
            f'<p>Disparate impact ratio <span class="{di_cls}">{_fmt(di)}</span>, '
            f"equal-opportunity difference {_fmt(eod)}.</p>"
            "<table><thead><tr><th>Value</th><th>Records</th><th>Reference share</th><th>Prediction rate</th>"
            "<th>Mean score</th><th>Labelled (positives)</th><th>Recall</th><th>Precision</th>"
            "<th>Drift share</th></tr></thead><tbody>"
        )
        for value, v in seg["values"].items():
            real = v.get("realized") or {}
            parts.append(
                f"<tr><td>{html.escape(str(value))}</td><td>{int(v['volume'])}</td>"
                f"<td>{_fmt(v.get('reference_volume_share'))}</td><td>{_fmt(float(v['prediction_rate']))}</td>"
                f"<td>{_fmt(float(v['mean_score']))}</td><td>{int(v['labeled'])} ({int(v['positives'])})</td>"
                f"<td>{_fmt(real.get('recall'))}</td><td>{_fmt(real.get('precision'))}</td>"
                f"<td>{_fmt(v.get('drift_share'))}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</div>")
    return "".join(parts)


async def quality_sections(quality: Any, model: str) -> list[str]:  # noqa: ANN401 - a drift.quality.QualityService
    """The quality and segments sections of ``model`` from the quality service (its API's JSON)."""
    from mlplatform.core.errors import PlatformError

    try:
        history: dict[str, Any] | None = (await quality.history(model, 20, None)).model_dump()
    except PlatformError as exc:
        history = None
        log.info("report of %s without quality: %s", model, exc)
    try:
        segs: dict[str, Any] | None = (await quality.segments(model, None)).model_dump()
        reason = ""
    except PlatformError as exc:
        segs, reason = None, str(exc)
    return [quality_section(history), segments_section(segs, reason)]


def insert_sections(page: str, sections: list[str]) -> str:
    """``page`` with the sections (and their style, once) inserted before its ``</body>`` (appended if
    none)."""
    block = ("" if 'class="mlp-section"' in page else _STYLE) + "".join(sections)
    at = page.rfind("</body>")
    return page + block if at < 0 else page[:at] + block + page[at:]
