"""Cost per pod: seconds from process start to ready, and resident memory, per service and for MLServer.

Trains the demo models once (``mlplatform.training``: the 100-tree random forest ``fraud-detector``
and the torch MLP) into a throw-away SQLite MLflow registry, then starts each service from the
project venv, one at a time, ``--starts`` times, and measures:

* ``ready s``: from ``Popen`` to the first 200 of the readiness probe (polled every 20 ms);
* ``RSS load``: resident memory of the process tree once ready (psutil, process plus children);
* ``RSS req``: the same after ``--requests`` sequential requests of the service's main route.

model-serving (``SERVING_MODELS=fraud-detector``) is started twice per round: with an empty model
cache (a cold registry fetch: download, conversion, parity check) and then again on the cache the
first start filled (a new pod on a volume that already holds the model). MLServer 1.7.1 with
mlserver-sklearn serves the same forest, exported with joblib to a local folder (its usual setup),
from its own venv (``make bench-mlserver`` builds ``.bench-mlserver``; without it the MLServer row is
skipped). Each figure is the median over the starts of this run.

    .venv/bin/python scripts/bench/bench_cost.py [--starts 3] [--requests 200] [--rows 20000]
        [--services model-serving,feature-store,drift-detection,explainability] [--no-mlserver]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

MODEL = "fraud-detector"
DEMO_MODELS = ("fraud-detector", "fraud-detector-mlp")
MLSERVER_VENV = ROOT / ".bench-mlserver"
SERVICES = ("model-serving", "feature-store", "drift-detection", "explainability")
PREFIX = {
    "model-serving": "SERVING_",
    "feature-store": "FEATURES_",
    "drift-detection": "DRIFT_",
    "explainability": "EXPLAIN_",
}


def free_port() -> int:
    from tests.procs import free_port as fp

    return fp()


def train(data_dir: Path, rows: int) -> str:
    from mlplatform.training.pipeline import TrainSettings, run_training

    (data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    print(f"training the demo models ({rows} rows, 100 trees) ...", flush=True)
    run_training(
        TrainSettings(rows=rows, seed=7, data_dir=data_dir, tracking_uri=uri), force=True, progress=False
    )
    return uri


def reference_rows(uri: str, dest: Path):  # noqa: ANN201
    import pandas as pd

    from mlplatform.core.registry import download_reference, mlflow_client, parse_model_ref, resolve_version

    client = mlflow_client(uri)
    version = resolve_version(client, parse_model_ref(MODEL))
    frame = pd.read_parquet(download_reference(client, version, dest)).drop(columns=["prediction"])
    return frame, version.version


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def start(cmd: list[str], env: dict[str, str], url: str, ready_path: str, log: Path, deadline_s: float = 300):
    """Start ``cmd``; return (process, seconds from Popen to the first 200 on ``ready_path``, peak RSS
    of the process tree sampled while it started, MiB)."""
    fh = open(log, "ab")  # noqa: SIM115 - closed with the process
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=log.parent)
    end = t0 + deadline_s
    peak = 0.0
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() < end:
            peak = max(peak, rss_mb(proc.pid))
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if client.get(url + ready_path).status_code == 200:
                    return proc, time.perf_counter() - t0, peak
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    stop(proc)
    raise TimeoutError(f"{cmd[:4]} not ready after {deadline_s}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def drive(url: str, path: str, bodies: list[dict], n: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(n):
            r = client.post(path, json=bodies[i % len(bodies)])
            if r.status_code != 200:
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")


def v2_body(frame, pandas_content: bool = False) -> dict:  # noqa: ANN001
    inputs = []
    for c in frame.columns:
        kind = frame[c].dtype.kind
        inputs.append(
            {
                "name": c,
                "shape": [len(frame)],
                "datatype": "FP64" if kind == "f" else "INT64",
                "data": frame[c].tolist(),
            }
        )
    body: dict = {"inputs": inputs}
    if pandas_content:
        body["parameters"] = {"content_type": "pd"}
    return body


class Measured:
    def __init__(self, label: str) -> None:
        self.label = label
        self.ready: list[float] = []
        self.rss_load: list[float] = []
        self.rss_req: list[float] = []
        self.peak: list[float] = []

    def row(self) -> str:
        def med(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f}" if xs else "-"

        def medi(xs: list[float]) -> str:
            return f"{statistics.median(xs):.0f}" if xs else "-"

        spread = f"{min(self.ready):.2f}-{max(self.ready):.2f}" if self.ready else "-"
        return (
            f"| {self.label} | {med(self.ready)} ({spread}) | {medi(self.peak)} | {medi(self.rss_load)} "
            f"| {medi(self.rss_req)} |"
        )


def run_once(
    m: Measured,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    log: Path,
    requests: Callable[[str], None],
) -> None:
    url = f"http://127.0.0.1:{port}"
    proc, seconds, peak = start(cmd, env, url, ready_path, log)
    try:
        time.sleep(0.5)  # background work started by readiness (e.g. settle) finishes
        m.ready.append(seconds)
        m.peak.append(peak)
        m.rss_load.append(rss_mb(proc.pid))
        requests(url)
        m.rss_req.append(rss_mb(proc.pid))
        print(
            f"  {m.label}: ready {seconds:.2f}s, RSS {m.rss_load[-1]:.0f} / {m.rss_req[-1]:.0f} MiB, peak {peak:.0f}",
            flush=True,
        )
    finally:
        stop(proc)


def serve_cmd(service: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlplatform.cli",
        "serve",
        service,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]


def export_forest(uri: str, dest: Path) -> Path:
    """The registered forest as MLServer's sklearn runtime reads it: model.joblib + model-settings.json."""
    import joblib

    from mlplatform.core.registry import mlflow_client, parse_model_ref, resolve_version

    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    import mlflow.sklearn

    version = resolve_version(mlflow_client(uri), parse_model_ref(MODEL))
    mlflow.set_tracking_uri(uri)
    forest = mlflow.sklearn.load_model(f"models:/{MODEL}/{version.version}")
    folder = dest / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(forest, folder / "model.joblib")
    (folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": version.version},
            }
        )
    )
    return dest


def mlserver_settings(root: Path, port: int) -> None:
    # parallel_workers 0: inference in the main process (MLServer's worker pool does not start with
    # the current uvloop); metrics on a port of its own, gRPC off.
    (root / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 0,
                "load_models_at_startup": True,
                "debug": False,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=3, help="process starts per row (medians are printed)")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests before 'RSS req'")
    parser.add_argument("--rows", type=int, default=20_000, help="training rows for the demo models")
    parser.add_argument("--services", default=",".join(SERVICES))
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument(
        "--serving-setups",
        default="forest-server,forest-sqlite,demo-server",
        help="model-serving rows: forest-server, forest-sqlite, demo-server (both demo models)",
    )
    parser.add_argument(
        "--warm-only",
        action="store_true",
        help="model-serving: fill the cache unmeasured, time warm starts only",
    )
    parser.add_argument("--data-dir", type=Path, help="reuse a data dir trained by an earlier run")
    args = parser.parse_args()
    services = [s for s in args.services.split(",") if s]
    tmp = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    try:
        data = args.data_dir or tmp / "data"
        uri = f"sqlite:///{data / 'mlflow' / 'mlflow.db'}" if args.data_dir else train(data, args.rows)
        frame, version = reference_rows(uri, tmp / "ref")
        one_row = [v2_body(frame.iloc[i : i + 1]) for i in range(min(64, len(frame)))]
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SERVING_", "FEATURES_", "DRIFT_", "EXPLAIN_"))
        }
        base_env.update({"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"})
        results: list[Measured] = []
        logs = tmp / "logs"
        logs.mkdir()

        def service_env(service: str, data_dir: Path) -> dict[str, str]:
            p = PREFIX[service]
            env = {**base_env, "MLPLATFORM_DATA_DIR": str(data_dir), f"{p}AUTH_ENABLED": "false"}
            env[f"{p}LOG_LEVEL"] = "WARNING"
            return env

        def copy_data(name: str) -> Path:
            dest = tmp / name
            if not dest.exists():
                shutil.copytree(data, dest, ignore=shutil.ignore_patterns("mlflow", "serving"))
            return dest

        if "model-serving" in services:
            from tests.faults.registry import MlflowServer

            server = MlflowServer(uri, free_port(), tmp)
            server.start()
            infer = lambda url: drive(url, f"/v2/models/{MODEL}/infer", one_row, args.requests)  # noqa: E731
            try:
                setups = {
                    "forest-server": ("MLflow server", server.url, MODEL, "forest"),
                    "forest-sqlite": ("SQLite", uri, MODEL, "forest"),
                    "demo-server": ("MLflow server", server.url, ",".join(DEMO_MODELS), "both demo models"),
                }
                chosen = [setups[k] for k in args.serving_setups.split(",") if k]
                for n, (registry, tracking, models, what) in enumerate(chosen):
                    cold = Measured(f"model-serving, {what}, {registry}: cold registry fetch")
                    warm = Measured(f"model-serving, {what}, {registry}: model in the pod cache")
                    for i in range(args.starts):
                        d = copy_data(f"serving-{n}" if args.warm_only else f"serving-{n}-{i}")
                        env = {
                            **service_env("model-serving", d),
                            "MLFLOW_TRACKING_URI": tracking,
                            "SERVING_MODELS": models,
                            "SERVING_POLL_INTERVAL_S": "0",
                        }
                        starts = ((cold, "cold"), (warm, "warm"))
                        if args.warm_only:  # one cold start fills the cache; then warm starts only
                            starts = ((cold, "cold"), (warm, "warm")) if i == 0 else ((warm, "warm"),)
                        for m, kind in starts:
                            port = free_port()
                            log = logs / f"serving-{kind}-{n}-{i}.log"
                            run_once(
                                m, serve_cmd("model-serving", port), env, port, "/v2/health/ready", log, infer
                            )
                    results += [warm] if args.warm_only else [cold, warm]
            finally:
                server.stop()
        if "feature-store" in services:
            m = Measured("feature-store")
            users = [int(u) for u in range(1000, 1064)]
            bodies = [
                {
                    "feature_service": "fraud_detection_v1",
                    "rows": [{"user_id": u, "merchant_id": 50000 + j, "amount": 42.0}],
                }
                for j, u in enumerate(users)
            ]
            for i in range(args.starts):
                d = copy_data("features")
                port = free_port()
                run_once(
                    m,
                    serve_cmd("feature-store", port),
                    service_env("feature-store", d),
                    port,
                    "/v2/health/ready",
                    logs / f"features-{i}.log",
                    lambda url: drive(url, "/v1/features/online", bodies, args.requests),
                )
            results.append(m)
        if "drift-detection" in services:
            m = Measured("drift-detection")
            recs = [
                {
                    "request_id": f"r{i}",
                    "prediction_id": f"p{i}",
                    "model": MODEL,
                    "version": version,
                    "timestamp": time.time(),
                    "inputs": {
                        k: (v.item() if hasattr(v, "item") else v)
                        for k, v in frame.iloc[i % len(frame)].items()
                    },
                    "outputs": {"probability": 0.1, "label": 0},
                }
                for i in range(args.requests * 10)
            ]
            for i in range(args.starts):
                d = copy_data(f"drift-{i}")
                port = free_port()
                bodies = [{"records": recs[j : j + 10]} for j in range(0, len(recs), 10)]
                for b in bodies:  # unique per start: the store keeps each key once
                    for r in b["records"]:
                        r["request_id"] = f"{i}-{r['request_id']}"
                run_once(
                    m,
                    serve_cmd("drift-detection", port),
                    {**service_env("drift-detection", d), "DRIFT_RETRAIN_MODE": "off"},
                    port,
                    "/v2/health/ready",
                    logs / f"drift-{i}.log",
                    lambda url, b=bodies: drive(url, "/v1/records", b, len(b)),
                )
            results.append(m)
        if "explainability" in services:
            m = Measured("explainability (both demo models)")
            for i in range(args.starts):
                d = copy_data(f"explain-{i}")
                port = free_port()
                run_once(
                    m,
                    serve_cmd("explainability", port),
                    service_env("explainability", d),  # both demo models, as the chart serves them
                    port,
                    "/v2/health/ready",
                    logs / f"explain-{i}.log",
                    lambda url: drive(
                        url, f"/v2/models/{MODEL}/explain", one_row, max(1, args.requests // 4)
                    ),
                )
            results.append(m)
        ratio = ""
        if not args.no_mlserver:
            mlserver = MLSERVER_VENV / "bin" / "mlserver"
            if not mlserver.exists():
                print(f"{mlserver} missing (make bench-mlserver): MLServer row skipped", flush=True)
            else:
                m = Measured("MLServer 1.7.1 (same forest, joblib)")
                repo = export_forest(uri, tmp / "mlserver")
                pd_rows = [
                    v2_body(frame.iloc[i : i + 1], pandas_content=True) for i in range(min(64, len(frame)))
                ]
                env = {k: v for k, v in base_env.items() if not k.startswith(("MLFLOW_", "PROMETHEUS"))}
                env["PATH"] = f"{MLSERVER_VENV / 'bin'}:{env.get('PATH', '')}"
                for i in range(args.starts):
                    port = free_port()
                    mlserver_settings(repo, port)
                    run_once(
                        m,
                        [str(mlserver), "start", str(repo)],
                        env,
                        port,
                        f"/v2/models/{MODEL}/ready",
                        logs / f"mlserver-{i}.log",
                        lambda url: drive(url, f"/v2/models/{MODEL}/infer", pd_rows, args.requests),
                    )
                results.append(m)
                served = [r for r in results if r.label.startswith("model-serving, forest")]
                if served:
                    base = statistics.median(m.rss_req)
                    ratio = "\n".join(
                        f"{r.label}: RSS after requests {statistics.median(r.rss_req) / base:.2f}x MLServer's"
                        for r in served
                    )
        print()
        print(
            f"{args.starts} starts per row, medians (min-max of ready); {args.requests} sequential requests "
            f"before 'RSS req'; {os.cpu_count()} cores, load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
        )
        print(
            "| process | ready s after start | peak RSS while starting MiB | RSS after load MiB "
            "| RSS after requests MiB |"
        )
        print("|---|---|---|---|---|")
        for r in results:
            print(r.row())
        if ratio:
            print(ratio)
        print("targets: model-serving ready <= 2 s with the model in the pod cache; RSS <= 1.3x MLServer's")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    sys.exit(main())
