"""Read locust's CSV stats, check them against the SLO file, and render the per-endpoint table.

Pure functions (no locust import): the driver ``scripts/load.py`` and the tests use them.
"""

from __future__ import annotations

import csv
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLO_FILE = Path(__file__).with_name("slo.toml")
AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class EndpointStats:
    """One row of locust's ``*_stats.csv`` (times in milliseconds)."""

    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _num(row: dict[str, str], key: str) -> float:
    value = (row.get(key) or "").strip()
    return float(value) if value and value != "N/A" else 0.0


def parse_stats(path: Path) -> list[EndpointStats]:
    """Rows of a locust ``<prefix>_stats.csv``, the ``Aggregated`` row last."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(
                EndpointStats(
                    name=row["Name"],
                    requests=int(_num(row, "Request Count")),
                    failures=int(_num(row, "Failure Count")),
                    rps=_num(row, "Requests/s"),
                    p50_ms=_num(row, "50%"),
                    p95_ms=_num(row, "95%"),
                    p99_ms=_num(row, "99%"),
                    max_ms=_num(row, "Max Response Time"),
                )
            )
    out.sort(key=lambda s: (s.name == AGGREGATED, s.name))
    return out


def load_slos(mode: str, path: Path = SLO_FILE) -> dict[str, Any]:
    """The ``[mode]`` table of the SLO file (``load`` or ``soak``)."""
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    if mode not in doc:
        raise KeyError(f"{path} has no [{mode}] table")
    return doc[mode]


def check_slos(stats: list[EndpointStats], slo: dict[str, Any]) -> list[str]:
    """Every broken objective as a sentence; empty when all hold.

    The error-rate objective applies to the whole run (the Aggregated row) and to each endpoint;
    every endpoint named in ``p99_ms`` must have been exercised and stay under its budget.
    """
    problems = []
    max_rate = float(slo["max_error_rate"])
    by_name = {s.name: s for s in stats}
    total = by_name.get(AGGREGATED)
    if total is None or total.requests == 0:
        return ["no requests were made"]
    for s in stats:
        if s.error_rate >= max_rate:
            problems.append(
                f"{s.name}: error rate {s.error_rate:.4%} ({s.failures}/{s.requests}) is not under {max_rate:.2%}"
            )
    for name, budget in slo.get("p99_ms", {}).items():
        s = by_name.get(name)
        if s is None or s.requests == 0:
            problems.append(f"{name}: no requests recorded (the SLO names it)")
        elif s.p99_ms > float(budget):
            problems.append(f"{name}: p99 {s.p99_ms:.0f} ms is over its {budget} ms budget")
    return problems


def format_table(stats: list[EndpointStats]) -> str:
    """A Markdown table: endpoint, requests, failures, RPS, p50/p95/p99 (ms)."""
    lines = [
        "| endpoint | requests | failures | RPS | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stats:
        lines.append(
            f"| {s.name} | {s.requests} | {s.failures} | {s.rps:.1f} | {s.p50_ms:.0f} | "
            f"{s.p95_ms:.0f} | {s.p99_ms:.0f} |"
        )
    return "\n".join(lines)


def rss_growth_mib(samples: list[float]) -> float:
    """Growth of a process's RSS over a soak (bytes in, MiB out).

    Median of the last quarter of samples minus the median of the second quarter: the first quarter
    is warm-up (caches, lazy imports, allocator arenas filling up) and medians ignore one-off spikes.
    """
    n = len(samples)
    if n < 8:
        raise ValueError(f"need at least 8 RSS samples to judge growth, got {n}")
    q = n // 4
    second = statistics.median(samples[q : 2 * q])
    last = statistics.median(samples[n - q :])
    return (last - second) / (1024 * 1024)


def check_soak(
    rss: dict[str, list[float]], spool_bytes: list[int], slo: dict[str, Any]
) -> tuple[list[str], dict[str, float]]:
    """Soak objectives: bounded RSS growth per service, bounded spool. Returns problems and growths."""
    problems = []
    growth = {name: rss_growth_mib(s) for name, s in rss.items()}
    limit = float(slo["max_rss_growth_mib"])
    for name, g in growth.items():
        if g > limit:
            problems.append(f"{name}: RSS grew {g:.1f} MiB during the soak (limit {limit:.0f} MiB)")
    max_spool = int(slo["max_spool_bytes"])
    peak = max(spool_bytes, default=0)
    if peak > max_spool:
        problems.append(f"payload spool reached {peak} bytes (limit {max_spool})")
    return problems, growth
