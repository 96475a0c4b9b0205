"""The load report logic: locust CSV parsing, SLO checks and the soak's growth judgement.

The CSV below has locust 2.47's ``*_stats.csv`` header (``locust.stats.StatsCSV``); the real
files are produced by ``make load``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.load.report import (
    SLO_FILE,
    check_slos,
    check_soak,
    format_table,
    load_slos,
    parse_stats,
    rss_growth_mib,
)

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "locust_stats.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _row(name: str, n: int, fails: int, p50: int, p95: int, p99: int, rps: float = 10.0) -> str:
    kind = "POST" if name != "Aggregated" else ""
    return f"{kind},{name},{n},{fails},{p50},{p50 + 1},1,{p99 + 5},200,{rps},0.0,{p50},{p50},{p50},{p50},{p95},{p95},{p99},{p99},{p99},{p99},{p99 + 5}"


def test_parse_and_pass(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        [
            _row("infer:tensor", 5000, 0, 4, 9, 20),
            _row("infer:entity", 5000, 2, 8, 15, 40),
            _row("features:online", 2500, 0, 5, 10, 30),
            _row("explain", 1200, 0, 60, 200, 400),
            _row("Aggregated", 13700, 2, 6, 40, 200, 40.0),
        ],
    )
    stats = parse_stats(path)
    assert stats[-1].name == "Aggregated"
    entity = next(s for s in stats if s.name == "infer:entity")
    assert (entity.requests, entity.failures, entity.p99_ms) == (5000, 2, 40.0)
    assert check_slos(stats, load_slos("load")) == []
    table = format_table(stats)
    assert "| infer:entity | 5000 | 2 | 10.0 | 8 | 15 | 40 |" in table


def test_error_rate_and_p99_budget_break(tmp_path: Path) -> None:
    slo = load_slos("load")
    budget = slo["p99_ms"]["infer:tensor"]
    path = _csv(
        tmp_path,
        [
            _row("infer:tensor", 1000, 0, 4, 9, budget + 10),
            _row("infer:entity", 1000, 5, 8, 15, 40),
            _row("features:online", 500, 0, 5, 10, 30),
            _row("Aggregated", 2500, 5, 6, 12, 40),
        ],
    )
    problems = check_slos(parse_stats(path), slo)
    text = "\n".join(problems)
    assert f"infer:tensor: p99 {budget + 10} ms is over" in text
    assert "infer:entity: error rate 0.5000%" in text
    assert "Aggregated: error rate" in text
    assert "explain: no requests recorded" in text


def test_no_requests_is_a_failure(tmp_path: Path) -> None:
    path = _csv(tmp_path, [",Aggregated,0,0,0,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A"])
    assert check_slos(parse_stats(path), load_slos("load")) == ["no requests were made"]


def test_soak_growth() -> None:
    mib = 1024 * 1024
    flat = [200 * mib + (i % 3) * mib for i in range(40)]  # noise, no trend
    leak = [200 * mib + i * 4 * mib for i in range(40)]  # 4 MiB per sample
    slo = load_slos("soak")
    assert abs(rss_growth_mib(flat)) < 2
    problems, growth = check_soak({"flat": flat, "leak": leak}, [0, 512, 0], slo)
    assert growth["leak"] == pytest.approx(80.0, abs=8)
    assert len(problems) == 1 and problems[0].startswith("leak: RSS grew")
    problems, _ = check_soak({"flat": flat}, [0, slo["max_spool_bytes"] + 1], slo)
    assert problems and "payload spool" in problems[0]
    with pytest.raises(ValueError):
        rss_growth_mib(flat[:5])


def test_slo_file_names_every_endpoint() -> None:
    for mode in ("load", "soak"):
        slo = load_slos(mode, SLO_FILE)
        assert set(slo["p99_ms"]) == {"infer:tensor", "infer:entity", "features:online", "explain"}
        assert 0 < slo["max_error_rate"] <= 0.001
