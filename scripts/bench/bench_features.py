"""Online feature read latency for one entity: the feature-store service vs `feast serve`.

Both serve the same Feast repository and the same SQLite online store (a demo repository built
here in a temporary data directory). Requests are sent one at a time over a keep-alive connection;
the table shows client-side latency percentiles. The feature-store service is measured on its own
``/v1/features/online`` and on Feast's ``/get-online-features`` (the feature-server API it speaks
beside /v1, with the very bodies sent to `feast serve`), the two in turn request by request.

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

from mlplatform.features.contract import entity_snapshots  # noqa: E402
from mlplatform.features.store import FeatureRepoPaths, apply_definitions, open_store, write_sources  # noqa: E402
from mlplatform.training.data import generate_transactions  # noqa: E402


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


RESETS: dict[str, int] = {}


def measure(url: str, bodies: list[dict], warmup: int) -> list[float]:
    """Sequential timed requests. A connection the server resets (feast serve's gunicorn worker did,
    on the loaded VM) is counted in ``RESETS`` and the request sent again untimed on a new one."""
    out = []
    with httpx.Client(timeout=60.0) as client:
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            try:
                r = client.post(url, json=body)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError):
                RESETS[url] = RESETS.get(url, 0) + 1
                if RESETS[url] > 10:
                    raise
                client.post(url, json=body)
                continue
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:300]}")
            if i >= warmup:
                out.append(dt * 1000)
    return out


def measure_alternating(
    base: str, first: tuple[str, list[dict]], second: tuple[str, list[dict]], warmup: int
) -> tuple[list[float], list[float]]:
    """Two routes of one server, request by request in turn on one connection, so both see the
    same load and the same noise of a shared machine."""
    out: tuple[list[float], list[float]] = ([], [])
    with httpx.Client(timeout=60.0) as client:
        for i, pair in enumerate(zip(first[1], second[1], strict=True)):
            for k, (path, body) in enumerate(((first[0], pair[0]), (second[0], pair[1]))):
                t0 = time.perf_counter()
                r = client.post(base + path, json=body)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {r.status_code} {r.text[:300]}")
                if i >= warmup:
                    out[k].append(dt * 1000)
    return out


def by_name(answer: dict) -> dict[str, dict]:
    """A Feast feature-server answer keyed by feature name (Feast's order within a view is a set's)."""
    return dict(zip(answer["metadata"]["feature_names"], answer["results"], strict=True))


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
            ours_ms, feast_api_ms = measure_alternating(
                svc.url, ("/v1/features/online", ours), ("/get-online-features", feast_bodies), warmup
            )
            ours_first = httpx.post(svc.url + "/v1/features/online", json=ours[0]).json()["rows"][0]
            feast_api_first = by_name(
                httpx.post(svc.url + "/get-online-features", json=feast_bodies[0]).json()
            )
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
            feast_answer = by_name(answer)
            feast_first = {n: r["values"][0] for n, r in feast_answer.items()}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    print()
    print(
        f"one entity (user + merchant + request field), feature service fraud_detection_v1, SQLite online store, "
        f"{args.requests} sequential requests after {warmup} warm-up"
    )
    print(f"{'server':<36}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    rows = (
        ("feature-store /v1/features/online", ours_ms),
        ("feature-store /get-online-features", feast_api_ms),
        ("feast serve", feast_ms),
    )
    for name, ms in rows:
        print(
            f"{name:<36}{pct(ms, 0.5):>10.2f}{pct(ms, 0.9):>10.2f}{pct(ms, 0.99):>10.2f}{statistics.mean(ms):>10.2f}"
        )
    p50 = {name: pct(ms, 0.5) for name, ms in rows}
    print(
        f"p50 ratios: /get-online-features / /v1 = {p50[rows[1][0]] / p50[rows[0][0]]:.2f}; "
        f"feast serve / our /get-online-features = {p50[rows[2][0]] / p50[rows[1][0]]:.2f}"
    )
    if RESETS:
        print(f"connections reset by the server (request resent, not timed): {RESETS}")
    print(
        "same /get-online-features answer as feast serve (names, values, statuses, event times): "
        f"{'yes' if feast_api_first == feast_answer else 'NO'}"
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
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    main()
