"""Explainability benchmark: single-row and 100-row explanation latency through the running service.

Trains the demo models (``mlplatform.training``: a 100-tree random forest ``fraud-detector`` and the
torch MLP ``fraud-detector-mlp``) into a throw-away SQLite MLflow, starts
``mlplatform serve explainability`` on a free port, then sends sequential
``POST /v2/models/{model}/explain`` requests (one HTTP/1.1 keep-alive connection) with rows from the
model's reference sample, and prints p50/p99 latency per model and batch size.

    .venv/bin/python scripts/bench/bench_explain.py [--rows 30000] [--requests 300]
        [--perturbation interventional|tree_path_dependent|both]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.procs import start_service  # noqa: E402

from mlplatform.explain.settings import ExplainSettings  # noqa: E402

MODELS = ("fraud-detector", "fraud-detector-mlp")


def train(data_dir: Path, rows: int) -> str:
    from mlplatform.training.pipeline import TrainSettings, run_training

    print(f"training the demo models ({rows} rows, 100 trees) ...", flush=True)
    uri = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    run_training(
        TrainSettings(rows=rows, seed=7, data_dir=data_dir, tracking_uri=uri), force=True, progress=False
    )
    return uri


def reference(uri: str, data_dir: Path):  # noqa: ANN201
    import pandas as pd

    from mlplatform.core.registry import download_reference, mlflow_client, parse_model_ref, resolve_version

    client = mlflow_client(uri)
    version = resolve_version(client, parse_model_ref(MODELS[0]))
    return pd.read_parquet(download_reference(client, version, data_dir / "bench-ref")).drop(
        columns=["prediction"]
    )


def body(frame) -> dict:  # noqa: ANN001
    return {
        "inputs": [
            {
                "name": c,
                "shape": [len(frame)],
                "datatype": "INT64" if frame[c].dtype.kind in "iu" else "FP64",
                "data": frame[c].tolist(),
            }
            for c in frame.columns
        ]
    }


def measure(url: str, model: str, payloads: list[dict], requests: int) -> dict[str, float]:
    import httpx
    import numpy as np

    times = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(min(20, requests)):  # warm-up (caches, allocator)
            client.post(f"/v2/models/{model}/explain", json=payloads[i % len(payloads)]).raise_for_status()
        for i in range(requests):
            start = time.perf_counter()
            r = client.post(f"/v2/models/{model}/explain", json=payloads[i % len(payloads)])
            times.append(time.perf_counter() - start)
            r.raise_for_status()
    arr = np.array(times) * 1000
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "n": len(arr)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=30_000, help="transactions to train the demo models on")
    parser.add_argument("--requests", type=int, default=300, help="single-row requests per model")
    parser.add_argument("--batch-requests", type=int, default=20, help="100-row requests per model")
    parser.add_argument(
        "--perturbation",
        choices=("interventional", "tree_path_dependent", "both"),
        default="interventional",
        help="EXPLAIN_TREE_FEATURE_PERTURBATION to measure",
    )
    parser.add_argument(
        "--tree-background",
        type=int,
        default=ExplainSettings.model_fields["tree_background_size"].default,
        help="EXPLAIN_TREE_BACKGROUND_SIZE (background rows of the interventional TreeExplainer)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    results: list[tuple[str, str, str, dict[str, float]]] = []
    try:
        uri = train(work, args.rows)
        ref = reference(uri, work)
        singles = [body(ref.iloc[[i]]) for i in range(50)]
        batches = [body(ref.iloc[i * 100 : (i + 1) * 100]) for i in range(5)]
        modes = (
            ["interventional", "tree_path_dependent"] if args.perturbation == "both" else [args.perturbation]
        )
        for mode in modes:
            env = {
                "MLFLOW_TRACKING_URI": uri,
                "MLPLATFORM_DATA_DIR": str(work),
                "EXPLAIN_MODELS": ",".join(MODELS),
                "EXPLAIN_AUTH_ENABLED": "false",
                "EXPLAIN_LOG_LEVEL": "WARNING",
                "EXPLAIN_TREE_FEATURE_PERTURBATION": mode,
                "EXPLAIN_TREE_BACKGROUND_SIZE": str(args.tree_background),
            }
            svc = start_service("explainability", env, work / "logs", ready_timeout=300)
            try:
                models = MODELS if mode == modes[0] else MODELS[:1]  # the MLP does not depend on the mode
                for model in models:
                    label = f"{mode} ({args.tree_background} bg)" if model == MODELS[0] else "-"
                    print(f"measuring {model} ({label}) ...", flush=True)
                    results.append((model, label, "1", measure(svc.url, model, singles, args.requests)))
                    results.append(
                        (model, label, "100", measure(svc.url, model, batches, args.batch_requests))
                    )
            finally:
                svc.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("explanation latency through the service (sequential requests, one connection)")
    print(f"{'model':<22}{'tree perturbation':<32}{'rows':>6}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for model, mode, rows, r in results:
        print(f"{model:<22}{mode:<32}{rows:>6}{r['n']:>10}{r['p50']:>10.2f}{r['p99']:>10.2f}")
    print()
    print("command: .venv/bin/python scripts/bench/bench_explain.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    main()
