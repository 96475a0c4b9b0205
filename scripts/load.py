"""Locust load and soak runs against the four services, checked against tests/load/slo.toml.

    python scripts/load.py load [--duration 60] [--users 20] [--user-rps 2]
    python scripts/load.py soak [--duration 600] [--users 4] [--user-rps 1]
    python scripts/load.py load --existing        # against a running `make run` (ports 8080-8083)

Without ``--existing`` it trains the demo models into the data dir if needed, starts the four
services on free ports (auth off, serving wired to the feature store and drift detection) and
stops them afterwards. Locust runs as its own process (``locust --headless``); its CSV stats, HTML
report and the services' logs go under ``reports/<mode>-<timestamp>/``. It prints a table per
endpoint (requests, failures, RPS, p50/p95/p99), writes it to ``reports/<mode>-latest.md`` and
exits 1 when an SLO is broken. The soak also samples each service process's RSS with psutil and
the payload-log spool size, and fails if either grows without bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from tests.load.report import (  # noqa: E402
    AGGREGATED,
    check_slos,
    check_soak,
    format_table,
    load_slos,
    parse_stats,
)
from tests.procs import ServiceProcess, start_service  # noqa: E402

DEFAULTS = {
    "load": {"duration": 60, "users": 20, "user_rps": 2.0},
    "soak": {"duration": 600, "users": 4, "user_rps": 1.0},
}
EXISTING = {
    "model-serving": "http://127.0.0.1:8080",
    "feature-store": "http://127.0.0.1:8081",
    "drift-detection": "http://127.0.0.1:8082",
    "explainability": "http://127.0.0.1:8083",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["load", "soak"], help="load: short and hot; soak: long and gentle")
    p.add_argument("--duration", type=int, help="seconds of load (load: 60, soak: 600)")
    p.add_argument("--users", type=int, help="concurrent locust users (load: 20, soak: 4)")
    p.add_argument("--user-rps", type=float, help="requests per second per user (load: 2, soak: 1)")
    p.add_argument("--existing", action="store_true", help="use services already running on 8080-8083")
    p.add_argument("--data-dir", type=Path, help="demo data dir (default: $MLPLATFORM_DATA_DIR or ./data)")
    p.add_argument("--train-rows", type=int, default=200_000, help="rows to generate if training is needed")
    p.add_argument("--reports", type=Path, default=ROOT / "reports", help="output folder")
    p.add_argument("--slo", type=Path, default=ROOT / "tests" / "load" / "slo.toml", help="SLO file")
    p.add_argument("--sample-interval", type=float, default=5.0, help="soak: seconds between RSS samples")
    args = p.parse_args(argv)
    for key, value in DEFAULTS[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def ensure_trained(data_dir: Path, rows: int) -> None:
    from mlplatform.training.pipeline import TrainSettings, run_training

    print(f"== demo models in {data_dir} (training {rows} rows if none are registered)", flush=True)
    run_training(TrainSettings(rows=rows, data_dir=data_dir), force=False, progress=False)


def start_services(data_dir: Path, run_dir: Path) -> tuple[dict[str, ServiceProcess], Path]:
    """Feature store and drift first, then serving and explainability wired to them."""
    spool = run_dir / "spool"
    env = {"MLPLATFORM_DATA_DIR": str(data_dir)}
    for prefix in ("SERVING_", "FEATURES_", "DRIFT_", "EXPLAIN_"):
        env[f"{prefix}AUTH_ENABLED"] = "false"
        env[f"{prefix}LOG_LEVEL"] = "WARNING"
    env["DRIFT_RETRAIN_MODE"] = "off"
    logs = run_dir / "logs"
    started: dict[str, ServiceProcess] = {}

    def start_tier(envs: dict[str, dict[str, str]]) -> None:
        with ThreadPoolExecutor(len(envs)) as pool:
            futures = {
                n: pool.submit(start_service, n, e, logs, ready_timeout=600.0) for n, e in envs.items()
            }
            errors = []
            for name, fut in futures.items():
                try:
                    started[name] = fut.result()
                except Exception as exc:  # noqa: BLE001 - reported after the others are stopped
                    errors.append(f"{name}: {exc}")
            if errors:
                stop_services(started)
                raise RuntimeError("; ".join(errors))

    print("== starting feature-store and drift-detection", flush=True)
    start_tier({"feature-store": env, "drift-detection": env})
    fs, drift = started["feature-store"].url, started["drift-detection"].url
    print("== starting model-serving and explainability", flush=True)
    start_tier(
        {
            "model-serving": {
                **env,
                "SERVING_FEATURE_STORE_URL": fs,
                "SERVING_DRIFT_URL": drift,
                "SERVING_PAYLOAD_SPOOL_DIR": str(spool),
            },
            "explainability": {**env, "EXPLAIN_FEATURE_STORE_URL": fs},
        }
    )
    return started, spool


def stop_services(services: dict[str, ServiceProcess]) -> None:
    for svc in services.values():
        svc.stop()


def listening_pid(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def dir_bytes(path: Path) -> int:
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


class Sampler(threading.Thread):
    """Samples each service's RSS (psutil) and the spool size every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], spool: Path | None, interval: float) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.spool = spool
        self.interval = interval
        self.rss: dict[str, list[float]] = {name: [] for name in pids}
        self.spool_bytes: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for name, proc in self.procs.items():
                try:
                    self.rss[name].append(float(proc.memory_info().rss))
                except psutil.Error:
                    pass
            if self.spool is not None:
                self.spool_bytes.append(dir_bytes(self.spool))
            self.stopped.wait(self.interval)


def run_locust(args: argparse.Namespace, urls: dict[str, str], data_dir: Path, run_dir: Path) -> Path:
    prefix = run_dir / "locust"
    env = {
        **os.environ,
        "LOAD_SERVING_URL": urls["model-serving"],
        "LOAD_FEATURES_URL": urls["feature-store"],
        "LOAD_EXPLAIN_URL": urls["explainability"],
        "LOAD_DATA_DIR": str(data_dir),
        "LOAD_USER_RPS": str(args.user_rps),
    }
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(ROOT / "tests" / "load" / "locustfile.py"),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(max(1, args.users // 2)),
        "--run-time",
        f"{args.duration}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(prefix),
        "--html",
        str(run_dir / "report.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    print(f"== {' '.join(cmd[1:])}", flush=True)
    with open(run_dir / "locust.log", "wb") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust wrote no stats (exit {proc.returncode}); see {run_dir / 'locust.log'}")
    return stats


def machine() -> str:
    return f"{psutil.cpu_count()} CPUs ({platform.machine()}), load average {os.getloadavg()[0]:.1f} at start"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (args.reports / f"{args.mode}-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = (args.data_dir or Path(os.environ.get("MLPLATFORM_DATA_DIR", ROOT / "data"))).resolve()
    slo = load_slos(args.mode, args.slo)
    started_at = machine()
    services: dict[str, ServiceProcess] = {}
    spool: Path | None = None
    if args.existing:
        urls = dict(EXISTING)
        pids = {name: listening_pid(int(url.rsplit(":", 1)[1])) for name, url in urls.items()}
        missing = [n for n, pid in pids.items() if pid is None]
        if missing and args.mode == "soak":
            print(f"cannot find the processes of {', '.join(missing)} (run as their user)", file=sys.stderr)
            return 2
        spool = data_dir / "serving" / "spool"
    else:
        ensure_trained(data_dir, args.train_rows)
        services, spool = start_services(data_dir, run_dir)
        urls = {name: svc.url for name, svc in services.items()}
        pids = {name: svc.proc.pid for name, svc in services.items()}
    sampler = None
    try:
        if args.mode == "soak":
            sampler = Sampler({n: p for n, p in pids.items() if p}, spool, args.sample_interval)
            sampler.start()
        stats_path = run_locust(args, urls, data_dir, run_dir)
    finally:
        if sampler is not None:
            sampler.stopped.set()
            sampler.join()
        stop_services(services)

    stats = parse_stats(stats_path)
    problems = check_slos(stats, slo)
    growth: dict[str, float] = {}
    if sampler is not None:
        soak_problems, growth = check_soak(sampler.rss, sampler.spool_bytes, slo)
        problems += soak_problems
    table = format_table(stats)
    lines = [
        f"# {args.mode}: {args.users} users x {args.user_rps} req/s for {args.duration}s ({stamp})",
        "",
        f"Machine: {started_at}. Command: `python scripts/load.py {' '.join(argv or sys.argv[1:])}`",
        "",
        table,
    ]
    if sampler is not None:
        lines += [
            "",
            "| service | RSS first MiB | RSS last MiB | growth MiB (q4-q2 median) |",
            "|---|---:|---:|---:|",
        ]
        for name, samples in sampler.rss.items():
            lines.append(
                f"| {name} | {samples[0] / 2**20:.0f} | {samples[-1] / 2**20:.0f} | {growth.get(name, 0.0):.1f} |"
            )
        lines.append(f"\nPayload spool peak: {max(sampler.spool_bytes, default=0)} bytes.")
    lines += ["", "SLOs: " + ("all met" if not problems else "BROKEN"), *[f"- {p}" for p in problems]]
    text = "\n".join(lines) + "\n"
    print(text)
    (run_dir / "summary.md").write_text(text)
    (args.reports / f"{args.mode}-latest.md").write_text(text)
    (run_dir / "summary.json").write_text(
        json.dumps(
            {
                "mode": args.mode,
                "stats": [s.__dict__ for s in stats],
                "problems": problems,
                "rss_growth_mib": growth,
                "aggregated": next((s.__dict__ for s in stats if s.name == AGGREGATED), None),
            },
            indent=2,
        )
    )
    print(f"reports: {run_dir} (locust_stats.csv, report.html, logs/)")
    return 1 if problems else 0


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    sys.exit(main())
