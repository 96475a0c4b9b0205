"""Cost of a text-serving pod: ready time and resident memory of ``mlplatform serve model-serving``
serving only the summarizer (the chart's ``model-serving-text`` release), and the resources the
overlays should request for it.

Builds the demo summarizer (``mlplatform.training.text``: the small T5 and its tokenizer, the same
architecture and size ``mlplatform train`` registers; ``--train-seconds 0`` skips the training steps,
which change weights, not memory) into a throw-away SQLite MLflow registry, then starts the real
serving process from the project venv ``--starts`` times with ``SERVING_MODELS=summarizer@champion``
(as the text release's ConfigMap does) and the rest of the settings the rendered prod overlay gives
model-serving (INFO access log, tracing with prod's sampler to a local OTLP receiver, payload logging
to a local acknowledging receiver, API keys on; ``bench_serving.deployed_env``), and measures, like
scripts/bench/bench_cost.py:

* ``ready s``: from ``Popen`` to the first 200 of ``/v2/health/ready``;
* ``peak``: the largest RSS of the process tree sampled while it started;
* ``RSS load``: once ready; ``RSS req``: after ``--requests`` sequential ``generate`` calls (a
  200-token article, ``max_tokens`` 32) and ``--rounds`` rounds of 8 concurrent ones.

It prints the medians and the chart resources by the rule the charts use (values.yaml, "CPU/memory
requests"): request = 1.5 x RSS req, limit = 2 x max(peak, RSS req), each rounded up to 64 MiB.

    .venv/bin/python scripts/bench/bench_text_cost.py [--starts 3] [--requests 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import math
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from bench_cost import free_port, rss_mb, serve_cmd, start, stop  # noqa: E402
from bench_serving import BENCH_KEY, DRIFT_SINK_APP, deployed_env, start_helper  # noqa: E402

MODEL = "summarizer"
CONCURRENCY = 8


def _generate(url: str, body: dict) -> None:
    with httpx.Client(base_url=url, timeout=300, headers={"x-api-key": BENCH_KEY}) as client:
        r = client.post(f"/v2/models/{MODEL}/generate", json=body)
        r.raise_for_status()
        assert r.json()["text_output"] is not None


def round_up_64(mib: float) -> int:
    return int(math.ceil(mib / 64) * 64)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=3, help="process starts (medians are printed)")
    parser.add_argument("--requests", type=int, default=20, help="sequential generate calls before 'RSS req'")
    parser.add_argument(
        "--rounds", type=int, default=2, help=f"rounds of {CONCURRENCY} concurrent generate calls"
    )
    parser.add_argument(
        "--train-seconds", type=float, default=0.0, help="summarizer training time (0: untrained)"
    )
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from mlplatform.training.text import article_of_tokens, build_text_model, log_and_register_text_model

    with tempfile.TemporaryDirectory(prefix="bench-text-cost-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "mlflow").mkdir()
        uri = f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}"
        print(f"building the summarizer (train_seconds={args.train_seconds}) ...", flush=True)
        model_dir = build_text_model(tmp / "summarizer", train_seconds=args.train_seconds)
        log_and_register_text_model(model_dir, uri)  # summarizer@champion, as `mlplatform train`
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        body = {"text_input": article_of_tokens(tokenizer, 200), "parameters": {"max_tokens": 32}}

        from tests.observability.otlp import OtlpReceiver

        stack = contextlib.ExitStack()
        atexit.register(stack.close)  # also on an error below (closing twice is a no-op)
        otlp = stack.enter_context(OtlpReceiver())
        drift, drift_url = start_helper(DRIFT_SINK_APP, False)
        stack.callback(drift.kill)
        deployed, notes = deployed_env(tmp / "deployed", uri, otlp.endpoint, drift_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        env.update(deployed)
        env.update({"PYTHONUNBUFFERED": "1", "SERVING_MODELS": f"{MODEL}@champion", "HF_HUB_OFFLINE": "1"})
        print(
            "settings: prod overlay ("
            + "; ".join(n for n in notes if not n.startswith("SERVING_MODELS="))
            + ")"
        )
        ready, peak, load, req = [], [], [], []
        for i in range(args.starts):
            data_dir = tmp / f"data-{i}"
            data_dir.mkdir()
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = tmp / f"serve-{i}.log"
            proc, seconds, top = start(
                serve_cmd("model-serving", port), {**env, "MLPLATFORM_DATA_DIR": str(data_dir)}, url,
                "/v2/health/ready", log,
            )  # fmt: skip
            try:
                load.append(rss_mb(proc.pid))
                for _ in range(args.requests):
                    _generate(url, body)
                for _ in range(args.rounds):
                    threads = [
                        threading.Thread(target=_generate, args=(url, body)) for _ in range(CONCURRENCY)
                    ]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                req.append(rss_mb(proc.pid))
                ready.append(seconds)
                peak.append(max(top, req[-1]))
                print(
                    f"  start {i + 1}: ready {seconds:.2f}s, RSS {load[-1]:.0f} / {req[-1]:.0f} MiB, "
                    f"peak {peak[-1]:.0f}",
                    flush=True,
                )
            finally:
                stop(proc)
        stack.close()
        med = statistics.median
        print(
            f"\nmodel-serving serving {MODEL}@champion only ({args.starts} starts, medians; "
            f"{args.requests} sequential + {args.rounds}x{CONCURRENCY} concurrent generate calls, "
            "200-token input, 32 new tokens):"
        )
        print(
            f"  ready {med(ready):.2f} s | RSS load {med(load):.0f} MiB | RSS req {med(req):.0f} MiB | peak {med(peak):.0f} MiB"
        )
        request = round_up_64(1.5 * med(req))
        limit = round_up_64(2 * max(med(peak), med(req)))
        print(
            f"  chart resources (1.5 x RSS req, 2 x max(peak, RSS req), 64 MiB steps): requests.memory {request}Mi, limits.memory {limit}Mi"
        )
    return 0


if __name__ == "__main__":
    from mlplatform.core.environment import apply_environment_defaults

    apply_environment_defaults()  # a process entry point, like the mlplatform command
    sys.exit(main())
