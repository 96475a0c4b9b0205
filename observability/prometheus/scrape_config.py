"""Generate a Prometheus scrape config from observability/targets.yaml (the ServiceMonitors' source).

Two shapes from the same source:

- ``static`` (default): one job per service with a static target ``HOST:PORT`` -- what ``make run``
  and the live test in tests/observability use. ``--target NAME=HOST:PORT`` overrides one service's
  address (the test runs services on free ports).
- ``kubernetes``: ``kubernetes_sd_configs`` (role ``endpoints``) keeping the Service whose
  ``app.kubernetes.io/name`` is the service and whose port is named like ``scrape.portName`` --
  for clusters scraped by a plain Prometheus instead of the Operator's ServiceMonitors.

Usage::

    python observability/prometheus/scrape_config.py [--mode static|kubernetes] \
        [--interval 1s] [--rules 'observability/prometheus/rules/*.yaml'] [--target model-serving=127.0.0.1:9000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TARGETS_FILE = ROOT / "observability" / "targets.yaml"
RULES_GLOB = ROOT / "observability" / "prometheus" / "rules" / "*.yaml"


def load_targets(path: Path = TARGETS_FILE) -> dict[str, Any]:
    """The parsed targets file (``scrape`` defaults and the ``services`` list)."""
    return yaml.safe_load(path.read_text())


def render(
    targets: dict[str, Any],
    *,
    mode: str = "static",
    interval: str | None = None,
    timeout: str | None = None,
    addresses: dict[str, str] | None = None,
    rule_files: list[str] | None = None,
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """A Prometheus configuration document scraping every service in ``targets``."""
    scrape = targets["scrape"]
    interval = interval or scrape["interval"]
    timeout = timeout or scrape["timeout"]
    if _seconds(timeout) > _seconds(interval):
        timeout = interval
    addresses = addresses or {}
    unknown = set(addresses) - {s["name"] for s in targets["services"]}
    if unknown:
        raise ValueError(f"--target names unknown services: {sorted(unknown)}")
    jobs: list[dict[str, Any]] = []
    for svc in targets["services"]:
        job: dict[str, Any] = {
            "job_name": svc["name"],
            "metrics_path": scrape["metricsPath"],
            "scrape_interval": interval,
            "scrape_timeout": timeout,
        }
        if mode == "static":
            job["static_configs"] = [
                {"targets": [addresses.get(svc["name"], f"{host}:{svc['port']}")]},
            ]
        elif mode == "kubernetes":
            job["kubernetes_sd_configs"] = [{"role": "endpoints"}]
            job["relabel_configs"] = [
                {
                    "source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_name"],
                    "regex": svc["name"],
                    "action": "keep",
                },
                {
                    "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                    "regex": scrape["portName"],
                    "action": "keep",
                },
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ]
        else:
            raise ValueError(f"mode must be 'static' or 'kubernetes', not {mode!r}")
        jobs.append(job)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": rule_files if rule_files is not None else [str(RULES_GLOB)],
        "scrape_configs": jobs,
    }


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    raise ValueError(f"unsupported duration {duration!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["static", "kubernetes"], default="static")
    parser.add_argument("--interval", help="scrape and evaluation interval (default: targets.yaml)")
    parser.add_argument("--rules", action="append", help="rule file glob (repeatable)")
    parser.add_argument("--target", action="append", default=[], help="NAME=HOST:PORT override")
    parser.add_argument("--host", default="127.0.0.1", help="host of the static targets")
    args = parser.parse_args(argv)
    addresses = dict(t.split("=", 1) for t in args.target)
    doc = render(
        load_targets(),
        mode=args.mode,
        interval=args.interval,
        addresses=addresses,
        rule_files=args.rules,
        host=args.host,
    )
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
