"""Text-generation benchmark: the summarizer served by real ``mlplatform serve model-serving`` processes.

Builds the demo summarizer (``mlplatform.training.text``: the small T5 and its tokenizer that
``mlplatform train`` registers; untrained by default (``--train-seconds 0``): the same architecture
and compute per token, and random weights never end a summary early, so every request writes exactly
``--max-tokens`` tokens) into a throw-away SQLite MLflow registry. Two serving processes run it with
the settings the rendered prod overlay gives model-serving (INFO access log, tracing with prod's
sampler to a local OTLP receiver, payload logging to a local acknowledging receiver, API keys on;
see bench_serving.deployed_env) and ``SERVING_MODELS=summarizer@champion``: one with the generation
scheduler batching (``SERVING_TEXT_BATCHING=true``, the default), one without
(``SERVING_TEXT_BATCHING=false``). Measured, interleaved over ``--repeat`` rounds, medians printed:

* single request: ``POST /generate`` latency p50/p99 for a ``--input-tokens`` (200) token article and
  ``--max-tokens`` (32) output tokens, ``--requests`` sequential requests;
* time to first token: ``/generate_stream``, request sent to first ``data:`` event, sequential, p50/p99;
* throughput: ``--streams`` (8) concurrent ``/generate_stream`` clients for ``--duration`` seconds;
  output tokens/s from the server's ``mlplatform_serving_generation_output_tokens_sum``, plus the
  mean batch size from ``mlplatform_serving_generation_batch_size``.

    .venv/bin/python scripts/bench/bench_text.py [--repeat 2] [--requests 20] [--streams 8] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import httpx  # noqa: E402
from bench_serving import BENCH_KEY, DRIFT_SINK_APP, deployed_env, start_helper  # noqa: E402
from tests.procs import free_port, start_service  # noqa: E402

MODEL = "summarizer"
HEADERS = {"x-api-key": BENCH_KEY}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def server_metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{MODEL}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def single(client: httpx.AsyncClient, url: str, text: str, max_tokens: int, n: int) -> list[float]:
    out = []
    body = {"text_input": text, "parameters": {"max_tokens": max_tokens}}
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.post(f"{url}/v2/models/{MODEL}/generate", json=body)
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
    return out


async def first_token(client: httpx.AsyncClient, url: str, text: str, max_tokens: int) -> float:
    body = {"text_input": text, "parameters": {"max_tokens": max_tokens}}
    t0 = time.perf_counter()
    ttft = None
    async with client.stream("POST", f"{url}/v2/models/{MODEL}/generate_stream", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: ") and ttft is None:
                ttft = time.perf_counter() - t0
    assert ttft is not None
    return ttft


async def throughput(
    client: httpx.AsyncClient, url: str, text: str, max_tokens: int, streams: int, duration: float
) -> tuple[float, float, int]:
    """Output tokens/s (server-side count), mean batch size, requests completed."""
    tokens0 = server_metric(url, "mlplatform_serving_generation_output_tokens_sum")
    bsum0 = server_metric(url, "mlplatform_serving_generation_batch_size_sum")
    bcount0 = server_metric(url, "mlplatform_serving_generation_batch_size_count")
    end = time.perf_counter() + duration
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await first_token(client, url, text, max_tokens)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(streams)))
    wall = time.perf_counter() - t0
    tokens = server_metric(url, "mlplatform_serving_generation_output_tokens_sum") - tokens0
    batches = server_metric(url, "mlplatform_serving_generation_batch_size_count") - bcount0
    mean_batch = (server_metric(url, "mlplatform_serving_generation_batch_size_sum") - bsum0) / max(
        batches, 1
    )
    return tokens / wall, mean_batch, done


def build_registry(tmp: Path, train_seconds: float) -> tuple[str, Path]:
    from mlplatform.training.text import build_text_model, log_and_register_text_model

    (tmp / "mlflow").mkdir(parents=True)
    uri = f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}"
    model_dir = build_text_model(tmp / "summarizer", train_seconds=train_seconds)
    log_and_register_text_model(model_dir, uri)
    return uri, model_dir


async def measure(targets: dict[str, str], args: argparse.Namespace, text: str) -> dict[str, dict[str, list]]:
    results: dict[str, dict[str, list]] = {
        n: {"lat": [], "ttft": [], "tps": [], "batch": []} for n in targets
    }
    limits = httpx.Limits(max_connections=args.streams + 4)
    async with httpx.AsyncClient(headers=HEADERS, timeout=300, limits=limits) as client:
        for url in targets.values():  # warm-up: first requests pay lazy imports and allocator growth
            await single(client, url, text, args.max_tokens, 2)
        for _ in range(args.repeat):
            for name, url in targets.items():  # interleaved: the VM's drift hits both alike
                res = results[name]
                res["lat"] += await single(client, url, text, args.max_tokens, args.requests)
                res["ttft"] += [
                    await first_token(client, url, text, args.max_tokens) for _ in range(args.requests)
                ]
                tps, batch, _ = await throughput(
                    client, url, text, args.max_tokens, args.streams, args.duration
                )
                res["tps"].append(tps)
                res["batch"].append(batch)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-seconds", type=float, default=0.0)
    p.add_argument("--input-tokens", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--requests", type=int, default=20, help="sequential requests per round (latency, TTFT)")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of concurrent streams per round")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    from tests.observability.otlp import OtlpReceiver

    tmp = Path(tempfile.mkdtemp(prefix="bench-text-"))
    uri, model_dir = build_registry(tmp, args.train_seconds)
    from transformers import AutoTokenizer

    from mlplatform.training.text import article_of_tokens

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = article_of_tokens(tokenizer, args.input_tokens)
    n_in = len(tokenizer(text)["input_ids"])
    helper, drift_url = start_helper(DRIFT_SINK_APP, False)
    services = []
    try:
        with OtlpReceiver() as rx:
            deployed, notes = deployed_env(tmp / "deployed", uri, rx.endpoint, drift_url)
            deployed |= {"SERVING_MODELS": f"{MODEL}@champion", "HF_HUB_OFFLINE": "1"}
            notes = [n for n in notes if not n.startswith("SERVING_MODELS=")]
            targets = {}
            for name, batching in (("batching on", "true"), ("batching off", "false")):
                env = {
                    **deployed,
                    "SERVING_TEXT_BATCHING": batching,
                    "MLPLATFORM_DATA_DIR": str(tmp / name[-3:]),
                    "SERVING_GRPC_PORT": str(free_port()),  # gRPC on as in prod; a port per process here
                }
                svc = start_service("model-serving", env, tmp / "logs", ready_timeout=300)
                services.append(svc)
                targets[name] = svc.url
            results = asyncio.run(measure(targets, args, text))
            load = os.getloadavg()
    finally:
        for svc in services:
            svc.stop()
        helper.terminate()
    print()
    print(
        f"summarizer (T5 d_model 128, 2+2 layers; {'untrained' if not args.train_seconds else 'trained'}), "
        f"input {n_in} tokens, max_tokens {args.max_tokens}, CPU (torch {_torch()}), no GPU"
    )
    print(
        "settings: prod overlay for model-serving ("
        + "; ".join(notes)
        + "), SERVING_MODELS=summarizer@champion"
    )
    print(
        f"{args.repeat} interleaved rounds: {args.requests} sequential requests each for latency and TTFT, "
        f"{args.streams} concurrent streams for {args.duration:g} s for throughput; load average {load[0]:.1f}"
    )
    header = f"{'target':<14}{'p50 ms':>9}{'p99 ms':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'tokens/s @8':>13}{'mean batch':>12}"
    print(header)
    for name, r in results.items():
        print(
            f"{name:<14}{1000 * statistics.median(r['lat']):>9.1f}{1000 * pct(r['lat'], 0.99):>9.1f}"
            f"{1000 * statistics.median(r['ttft']):>10.1f}{1000 * pct(r['ttft'], 0.99):>10.1f}"
            f"{statistics.median(r['tps']):>13.1f}{statistics.median(r['batch']):>12.2f}"
        )
    on, off = results["batching on"], results["batching off"]
    print(
        f"throughput with / without batching at {args.streams} streams: {statistics.median(on['tps']) / statistics.median(off['tps']):.2f}x"
    )
    return 0


def _torch() -> str:
    import torch

    return str(torch.__version__)


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    raise SystemExit(main())
