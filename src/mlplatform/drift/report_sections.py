"""Extra sections of the drift HTML report, in the look of Evidently's widgets.

Evidently's ``Report`` renders the per-column drift; what it has no preset for (multivariate drift
with MMD and a domain classifier) is rendered here as self-contained HTML (no script, inline SVG) and
inserted before ``</body>`` of Evidently's page. Every value shown is escaped.
"""

from __future__ import annotations

import html
from typing import Any

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


def insert_sections(page: str, sections: list[str]) -> str:
    """``page`` with the sections (and their style) inserted before its ``</body>`` (appended if none)."""
    block = _STYLE + "".join(sections)
    at = page.rfind("</body>")
    return page + block if at < 0 else page[:at] + block + page[at:]
