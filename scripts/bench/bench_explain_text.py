"""Text explanation benchmark: /explain latency of the demo summarizer through the running service.

Builds the demo summarizer (``mlplatform.training.text.build_text_model``; untrained by default, so
it writes ``--max-tokens`` output tokens for every input, the most the default explains), registers
it as ``summarizer@champion`` in a throw-away SQLite MLflow, starts ``mlplatform serve
explainability`` on a free port and sends sequential ``POST /v2/models/summarizer/explain`` requests
(one keep-alive connection) with a generated article of ``--tokens`` input tokens (end-of-sequence
included), for each ``max_evals`` (the service default first). Prints p50/p99 latency, the model
evaluations spent and the output tokens explained. ``--torch-threads`` starts one service per
setting (``OMP_NUM_THREADS``; ``default`` leaves torch's own choice, one thread per core): on a
machine shared with other work, torch's intra-op threads wait on each other and the tail grows.

The service runs with the settings the rendered prod overlay gives explainability (INFO access log,
tracing with prod's sampler to a local OTLP receiver, API keys on), with what one machine needs
substituted: ``EXPLAIN_MODELS=summarizer@champion`` (prod's overlay keeps the summarizer out of
explainability), the local SQLite MLflow, the env secrets backend for Vault with the same names.

    .venv/bin/python scripts/bench/bench_explain_text.py [--tokens 50] [--requests 10]
        [--max-evals default,100,1000] [--max-tokens 32] [--train-seconds 0] [--torch-threads default,1]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.procs import start_service  # noqa: E402

from mlplatform.explain.settings import ExplainSettings  # noqa: E402

MODEL = "summarizer"
DEFAULT_EVALS = ExplainSettings.model_fields["text_max_evals"].default


def build(work: Path, train_seconds: float) -> tuple[str, str]:
    """Register the summarizer; return the tracking URI and a path its tokenizer loads from."""
    from mlplatform.training.text import build_text_model, log_and_register_text_model

    print(f"building the summarizer (train_seconds={train_seconds}) ...", flush=True)
    model_dir = build_text_model(work / "summarizer", train_seconds=train_seconds)
    (work / "mlflow").mkdir()
    uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    log_and_register_text_model(model_dir, uri)
    return uri, str(model_dir)


BENCH_KEY = "bench-explain-key"


def prod_env(work: Path, tracking_uri: str, otlp_endpoint: str) -> tuple[dict[str, str], list[str]]:
    """explainability's environment as the rendered prod overlay sets it, with the substitutions one
    machine needs; returns it and the prod settings kept (printed with the figures)."""
    from tests.deploy.rendered import container_env, render_overlay

    from mlplatform.core.auth import hash_key

    rendered = container_env(render_overlay("prod"), "explainability")
    env = {k: v for k, v in rendered.items() if isinstance(v, str) and not k.startswith("VAULT_")}
    env.update(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLPLATFORM_DATA_DIR": str(work),
            "EXPLAIN_MODELS": MODEL,
            "EXPLAIN_SECRETS_BACKEND": "env",
            "MLPLATFORM_API_KEYS": f"{hash_key(BENCH_KEY)}:explain",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            "HOME": str(work),
            "XDG_CACHE_HOME": str(work / ".cache"),
            "MPLCONFIGDIR": str(work / ".cache" / "matplotlib"),
        }
    )
    kept = [f"{k}={rendered[k]}" for k in ("EXPLAIN_AUTH_ENABLED", "EXPLAIN_LOG_LEVEL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG") if k in rendered]  # fmt: skip
    return env, kept


def measure(url: str, body: dict, requests: int) -> dict[str, float]:
    import httpx
    import numpy as np

    times = []
    with httpx.Client(base_url=url, timeout=600, headers={"x-api-key": BENCH_KEY}) as client:
        r = client.post(f"/v2/models/{MODEL}/explain", json=body)  # warm-up
        r.raise_for_status()
        row = r.json()["explanations"][0]
        for _ in range(requests):
            start = time.perf_counter()
            r = client.post(f"/v2/models/{MODEL}/explain", json=body)
            times.append(time.perf_counter() - start)
            r.raise_for_status()
    arr = np.array(times) * 1000
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "n": len(arr),
        "evaluations": row["evaluations"],
        "inputs": len(row["input_tokens"]),
        "outputs": len(row["output_tokens"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=50, help="input tokens (end-of-sequence included)")
    parser.add_argument("--requests", type=int, default=10, help="timed requests per max_evals")
    parser.add_argument(
        "--max-evals",
        default="default,100,1000",
        help=f"comma-separated parameters.max_evals; 'default' sends none (EXPLAIN_TEXT_MAX_EVALS={DEFAULT_EVALS})",
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="parameters.max_tokens (output tokens)")
    parser.add_argument("--train-seconds", type=float, default=0, help="train the summarizer first (<= 120)")
    parser.add_argument(
        "--torch-threads",
        default="default,1",
        help="comma-separated OMP_NUM_THREADS of the service, or default",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-explain-text-"))
    results: list[tuple[str, str, dict[str, float]]] = []
    kept: list[str] = []
    from tests.observability.otlp import OtlpReceiver

    stack = contextlib.ExitStack()
    otlp = stack.enter_context(OtlpReceiver())  # receives the traces prod's sampler keeps
    try:
        from transformers import AutoTokenizer

        from mlplatform.training.text import article_of_tokens

        uri, model_dir = build(work, args.train_seconds)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        text = article_of_tokens(tokenizer, args.tokens)
        for threads in args.torch_threads.split(","):
            env, kept = prod_env(work, uri, otlp.endpoint)
            if threads != "default":
                env["OMP_NUM_THREADS"] = threads
            svc = start_service("explainability", env, work / f"logs-{threads}", ready_timeout=300)
            try:
                for evals in args.max_evals.split(","):
                    params: dict[str, int] = {"max_tokens": args.max_tokens}
                    if evals != "default":
                        params["max_evals"] = int(evals)
                    label = f"{DEFAULT_EVALS} (default)" if evals == "default" else evals
                    print(f"measuring max_evals={label}, torch threads {threads} ...", flush=True)
                    body = {
                        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": [text]}],
                        "parameters": params,
                    }
                    results.append((label, threads, measure(svc.url, body, args.requests)))
            finally:
                svc.stop()
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("text explanation latency through the service (summarizer, sequential requests, one connection)")
    print(
        "settings: prod overlay for explainability ("
        + "; ".join(kept)
        + "; OTLP -> local receiver, Vault -> env secrets, API key sent)"
    )
    header = f"{'max_evals':<16}{'threads':>8}{'input tok':>10}{'output tok':>11}{'evals':>7}{'requests':>10}"
    print(f"{header}{'p50 ms':>10}{'p99 ms':>10}")
    for label, threads, r in results:
        print(
            f"{label:<16}{threads:>8}{r['inputs']:>10}{r['outputs']:>11}{r['evaluations']:>7}{r['n']:>10}"
            f"{r['p50']:>10.1f}{r['p99']:>10.1f}"
        )
    print()
    print("command: .venv/bin/python scripts/bench/bench_explain_text.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    main()
