"""Online feature read latency for one entity: the feature-store service vs `feast serve`.

Both serve the same Feast repository and the same SQLite online store (a demo repository built
here in a temporary data directory). Requests are sent one at a time over a keep-alive connection;
the table shows client-side latency percentiles.

    .venv/bin/python scripts/bench/bench_features.py [--requests 2000] [--rows 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.procs import free_port, running_service, wait_ready  # noqa: E402

from mlplatform.features.store import FeatureRepoPaths, apply_definitions, open_store, write_sources  # noqa: E402
from mlplatform.training.data import generate_transactions  # noqa: E402
from mlplatform.training.features import entity_snapshots  # noqa: E402


def build_repo(data_dir: Path, rows: int) -> tuple[list[int], list[int]]:
    tx = generate_transactions(rows, seed=7)
    paths = FeatureRepoPaths(data_dir)
    write_sources(entity_snapshots(tx), paths)
    store = open_store(paths)
    apply_definitions(store, paths)
    ts = tx["event_timestamp"]
    store.materialize(
        ts.min().to_pydatetime() - timedelta(days=31), ts.max().to_pydatetime() + timedelta(days=1)
    )
    return tx["user_id"].tolist(), tx["merchant_id"].tolist()


def measure(url: str, bodies: list[dict], warmup: int) -> list[float]:
    out = []
    with httpx.Client(timeout=60.0) as client:
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:300]}")
            if i >= warmup:
                out.append(dt * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per server")
    parser.add_argument("--rows", type=int, default=20_000, help="generated transactions behind the repo")
    args = parser.parse_args()
    warmup = 200
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        print(f"building the demo feature repository ({args.rows} transactions) ...", flush=True)
        users, merchants = build_repo(data_dir, args.rows)
        n = args.requests + warmup
        pairs = [(users[(i * 7919) % len(users)], merchants[(i * 104729) % len(merchants)]) for i in range(n)]
        ours = [
            {
                "feature_service": "fraud_detection_v1",
                "rows": [{"user_id": u, "merchant_id": m, "amount": 42.0}],
            }
            for u, m in pairs
        ]
        feast_bodies = [
            {
                "feature_service": "fraud_detection_v1",
                "entities": {"user_id": [u], "merchant_id": [m], "amount": [42.0]},
            }
            for u, m in pairs
        ]
        env = {
            "MLPLATFORM_DATA_DIR": str(data_dir),
            "FEATURES_AUTH_ENABLED": "false",
            "FEATURES_LOG_LEVEL": "WARNING",
        }
        with running_service("feature-store", env, Path(tmp) / "logs") as svc:
            print(f"feature-store service on {svc.url}", flush=True)
            ours_ms = measure(svc.url + "/v1/features/online", ours, warmup)
            ours_first = httpx.post(svc.url + "/v1/features/online", json=ours[0]).json()["rows"][0]
        port = free_port()
        repo_dir = FeatureRepoPaths(data_dir).repo_dir
        feast_cmd = [
            str(ROOT / ".venv/bin/feast"),
            "-c",
            str(repo_dir),
            "serve",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--no-access-log",
        ]
        log = open(Path(tmp) / "feast-serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(feast_cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            wait_ready(f"http://127.0.0.1:{port}", 180, proc, path="/health")
            print(f"feast serve on http://127.0.0.1:{port}", flush=True)
            feast_ms = measure(f"http://127.0.0.1:{port}/get-online-features", feast_bodies, warmup)
            answer = httpx.post(f"http://127.0.0.1:{port}/get-online-features", json=feast_bodies[0]).json()
            names = answer["metadata"]["feature_names"]
            feast_first = {n: r["values"][0] for n, r in zip(names, answer["results"], strict=True)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    print()
    print(
        f"one entity (user + merchant + request field), feature service fraud_detection_v1, SQLite online store, "
        f"{args.requests} sequential requests after {warmup} warm-up"
    )
    print(f"{'server':<28}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, ms in (("mlplatform feature-store", ours_ms), ("feast serve", feast_ms)):
        print(
            f"{name:<28}{pct(ms, 0.5):>10.2f}{pct(ms, 0.9):>10.2f}{pct(ms, 0.99):>10.2f}{statistics.mean(ms):>10.2f}"
        )
    same = all(
        feast_first.get(k) == v or abs((feast_first.get(k) or 0) - (v or 0)) < 1e-9
        for k, v in ours_first.items()
    )
    print(f"\nsame values as feast serve for the first entity: {'yes' if same else 'NO'}")
    if not same:
        print(f"  ours:  {ours_first}\n  feast: {feast_first}")
    print(
        f"command: .venv/bin/python scripts/bench/bench_features.py --requests {args.requests} --rows {args.rows}"
    )


if __name__ == "__main__":
    main()
