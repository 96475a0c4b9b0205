"""Helpers shared by the observability tests: the repo's rule/dashboard files and PromQL name extraction."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from mlplatform.core.metrics import metric_catalogue

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "observability"
RULES_DIR = OBS / "prometheus" / "rules"
RULE_TESTS_DIR = OBS / "prometheus" / "tests"
DASHBOARDS_DIR = OBS / "grafana" / "dashboards"
RUNBOOKS_DIR = ROOT / "docs" / "runbooks"
RUNBOOK_URL = "https://github.com/mlplatform/mlplatform/blob/main/docs/runbooks/{alert}.md"

# Metrics that come from exporters running in the cluster, not from our services.
EXTERNAL_PREFIXES = ("DCGM_FI_", "kube_", "up", "ALERTS")

# The text model's metrics (#20): model-serving's generate extension and drift's text descriptors.
TEXT_MODEL_PREFIXES = ("mlplatform_serving_generation_", "mlplatform_drift_text_descriptor")

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "le",
}  # fmt: skip


def load_module(path: Path, name: str) -> ModuleType:
    """Import a script under observability/ (not a package) by path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError("promtool not found: install Debian's prometheus package (make sysdeps)")
    return path


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def all_rules() -> list[dict[str, Any]]:
    """Every rule (recording and alerting) in observability/prometheus/rules/."""
    rules = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in all_rules() if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for r in all_rules() if "record" in r]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def iter_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dash.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def prometheus_targets(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every Prometheus query in a dashboard."""
    found = []
    for panel in iter_panels(dash):
        for t in panel.get("targets", []):
            if t.get("datasource", {}).get("type") == "prometheus":
                found.append((panel["title"], t["expr"]))
    return found


def substitute(expr: str, rate_interval: str = "1m") -> str:
    """Replace Grafana template variables the way Grafana does with 'All' selected."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", "15s")
    return re.sub(r"\$\{?(namespace|model|feature|service|instance|gpu_node|metric|segment)\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    """Metric and recording-rule names a PromQL expression selects (labels, functions, keywords removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range/subquery selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


_DECLARED = re.compile(r'"((?:mlplatform|process|python)_[a-z0-9_]+)"')


def declared_metrics() -> set[str]:
    """Metric names declared in the metrics catalogue and in src/ (string literals passed to
    prometheus_client beside their code), with exposed suffixes."""
    names = {m.name for c in metric_catalogue().classes.values() for m in c.metrics}
    for path in (ROOT / "src").rglob("*.py"):
        for name in _DECLARED.findall(path.read_text()):
            names.add(name)
    exposed = set()
    for name in names:
        base = name.removesuffix("_total")
        exposed |= {
            name,
            base,
            f"{base}_total",
            f"{base}_bucket",
            f"{base}_sum",
            f"{base}_count",
            f"{base}_info",
        }
    return exposed


def is_text_model(name: str) -> bool:
    return name.startswith(TEXT_MODEL_PREFIXES)


def is_external(name: str) -> bool:
    return name == "up" or name == "ALERTS" or name.startswith(EXTERNAL_PREFIXES[:2])
