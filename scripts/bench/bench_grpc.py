"""V2 over gRPC beside REST: single-row infer throughput and latency on one model-serving process.

Starts one ``mlplatform serve model-serving`` (``fraud-detector`` from a throw-away SQLite registry, as
scripts/bench/bench_serving.py builds it; API keys on, log level WARNING, no tracing or payload logging)
with gRPC on (``SERVING_GRPC_PORT``), pinned to core 0, and drives, interleaved, ``--repeat`` times:

- REST: ``POST /v2/models/fraud-detector/infer`` (JSON, one row) with ``wrk -t1 -c16`` (as bench_serving);
- gRPC: ``ModelInfer`` with the same row (``raw_input_contents``, as tritonclient.grpc sends it) with
  ``h2load`` (nghttp2's HTTP/2 load generator, C like wrk) sending the framed protobuf as gRPC does
  (``content-type: application/grpc``, ``te: trailers``), 16 connections x 1 stream (as wrk's 16
  connections) and 1 connection x 16 streams (one multiplexed channel, as a gRPC client pool of one).

Load generators run on core 1. h2load reports HTTP status only (a gRPC error is HTTP 200 with a
``grpc-status`` trailer), so every gRPC run is checked against the server's own count:
``mlplatform_http_requests_total{route="/inference.GRPCInferenceService/ModelInfer",code="200"}`` must
grow by exactly the requests h2load completed. Latency percentiles come from h2load's per-request log.
Before the load, one call over each protocol must give the same probability.

    .venv/bin/python scripts/bench/bench_grpc.py [--duration 10] [--repeat 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_serving import (  # noqa: E402
    BENCH_KEY,
    LUA,
    MODEL,
    can_pin,
    cpu_seconds,
    load_average,
    median_row,
    pin,
    prepare_registry,
    request_body,
    run_wrk,
    wrk_command,
)
from tests.procs import free_port, start_service  # noqa: E402

from mlplatform.core.auth import hash_key  # noqa: E402

ROUTE = "/inference.GRPCInferenceService/ModelInfer"


def grpc_request(body: dict) -> bytes:
    """The REST body's row as a serialized ModelInferRequest (raw contents, as tritonclient sends)."""
    import numpy as np

    from mlplatform.v2.grpc_codec import WIRE_DTYPE
    from mlplatform.v2.grpc_gen import open_inference_grpc_pb2 as pb2

    req = pb2.ModelInferRequest(model_name=MODEL)
    for t in body["inputs"]:
        req.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        req.raw_input_contents.append(np.array(t["data"], dtype=WIRE_DTYPE[t["datatype"]]).tobytes())
    return req.SerializeToString()


def check_same_answer(http_url: str, grpc_target: str, body: dict, message: bytes) -> float:
    """One call each way; both must answer the same probability (returned)."""
    import grpc
    import httpx
    import numpy as np

    from mlplatform.v2.grpc_gen import open_inference_grpc_pb2 as pb2
    from mlplatform.v2.grpc_gen import open_inference_grpc_pb2_grpc as pb2_grpc

    rest = httpx.post(
        f"{http_url}/v2/models/{MODEL}/infer", json=body, headers={"x-api-key": BENCH_KEY}, timeout=10
    ).json()
    rest_p = next(o for o in rest["outputs"] if o["name"] == "probability")["data"][0]
    with grpc.insecure_channel(grpc_target) as channel:
        stub = pb2_grpc.GRPCInferenceServiceStub(channel)
        resp = stub.ModelInfer(
            pb2.ModelInferRequest.FromString(message), metadata=(("x-api-key", BENCH_KEY),)
        )
    i = [o.name for o in resp.outputs].index("probability")
    grpc_p = float(np.frombuffer(resp.raw_output_contents[i], dtype="<f8")[0])
    if abs(grpc_p - rest_p) > 1e-12:
        raise SystemExit(f"gRPC answered {grpc_p}, REST {rest_p}: not the same prediction")
    return grpc_p


def served_ok(http_url: str) -> float:
    """The server's count of gRPC ModelInfer calls answered OK."""
    import httpx

    text = httpx.get(f"{http_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("mlplatform_http_requests_total{")
            and f'route="{ROUTE}"' in line
            and 'code="200"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_h2load(
    h2load: str,
    target: str,
    frame: Path,
    conns: int,
    streams: int,
    duration: int,
    pid: int,
    pin: bool,
    tmp: Path,
) -> tuple[dict[str, float], float]:
    """Warm-up 3 s, then the measured run; stats (rps, p50/p90/p99 ms, failed, requests) and CPU us/req."""
    log = tmp / "h2load.log"

    def cmd(seconds: int) -> list[str]:
        c = [
            h2load,
            "-t1",
            f"-c{conns}",
            f"-m{streams}",
            f"-D{seconds}",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-H",
            f"x-api-key: {BENCH_KEY}",
            "-d",
            str(frame),
            "--log-file",
            str(log),
            f"{target}{ROUTE}",
        ]
        return ["taskset", "-c", "1", *c] if pin else c

    subprocess.run(cmd(3), capture_output=True, text=True, check=True)
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(cmd(duration), capture_output=True, text=True, check=True).stdout
    cpu1 = cpu_seconds(pid)
    import re

    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    if m is None or done is None:
        raise SystemExit(f"cannot read h2load's output:\n{out}")
    lat = sorted(int(line.split("\t")[2]) / 1000.0 for line in log.read_text().splitlines() if line.strip())
    n = float(done.group(2))

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    stats = {
        "rps": float(m.group(2)),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "non2xx": float(done.group(3)) + float(done.group(4)),
        "requests": n,
    }
    return stats, ((cpu1 - cpu0) / n * 1e6 if n else float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument(
        "--connections", type=int, default=16, help="concurrent requests (connections or streams)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per target (read the median)")
    parser.add_argument("--rows", type=int, default=20_000, help="training rows for the demo model")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/load generator to cores")
    args = parser.parse_args()
    wrk, h2load = shutil.which("wrk"), shutil.which("h2load")
    if wrk is None or h2load is None:
        print("wrk and h2load are needed: run `make sysdeps` (wrk, nghttp2-client)", file=sys.stderr)
        return 2
    pinned = can_pin(args.no_pin)
    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    svc = None
    try:
        uri = prepare_registry(tmp, args.rows)
        grpc_port = free_port()
        env = {
            "MLPLATFORM_DATA_DIR": str(tmp),
            "MLFLOW_TRACKING_URI": uri,
            "SERVING_MODELS": MODEL,
            "SERVING_AUTH_ENABLED": "true",
            "MLPLATFORM_API_KEYS": f"{hash_key(BENCH_KEY)}:infer",
            "SERVING_LOG_LEVEL": "WARNING",
            "SERVING_HOST": "127.0.0.1",
            "SERVING_GRPC_PORT": str(grpc_port),
            "SERVING_POLL_INTERVAL_S": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        }
        svc = start_service("model-serving", env, tmp / "logs", ready_timeout=300)
        pid = svc.proc.pid
        if pinned:
            pin(pid, 0)
        body, meta = request_body(svc.url)
        message = grpc_request(body)
        frame = tmp / "request.grpc"
        frame.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)  # gRPC length-prefixed message
        proba = check_same_answer(svc.url, f"127.0.0.1:{grpc_port}", body, message)
        lua = tmp / "post.lua"
        lua.write_text(LUA % (BENCH_KEY, json.dumps(body)))
        url = f"{svc.url}/v2/models/{MODEL}/infer"
        wrk_cmd = wrk_command(wrk, lua, url, args.connections, args.duration, pinned)
        c = args.connections
        targets = {
            f"REST JSON (wrk, {c} conns)": None,
            f"gRPC (h2load, {c} conns x 1 stream)": (c, 1),
            f"gRPC (h2load, 1 conn x {c} streams)": (1, c),
        }
        runs: dict[str, list[tuple[dict[str, float], float]]] = {name: [] for name in targets}
        for _ in range(args.repeat):
            for name, shape in targets.items():
                if shape is None:
                    stats, _, us = run_wrk(wrk_cmd, pid)
                else:
                    before = served_ok(svc.url)
                    stats, us = run_h2load(
                        h2load,
                        f"http://127.0.0.1:{grpc_port}",
                        frame,
                        *shape,
                        args.duration,
                        pid,
                        pinned,
                        tmp,
                    )
                    # h2load counts HTTP 200s; the server counts gRPC OKs (warm-up included)
                    counted = served_ok(svc.url) - before
                    if counted < stats["requests"]:
                        raise SystemExit(
                            f"{name}: h2load saw {stats['requests']:.0f} answers, the server {counted:.0f} OK"
                        )
                runs[name].append((stats, us))
        print()
        print(
            f"model {MODEL} v{meta['versions'][0]} runtime={meta['parameters'].get('runtime')}; one row; "
            f"probability {proba:.6f} over both protocols; {args.repeat} interleaved runs of {args.duration}s"
        )
        print(
            f"{'target':<38}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'failed':>8}{'CPU us/req':>12}"
        )
        medians = {}
        for name, rs in runs.items():
            st, us = median_row(rs)
            medians[name] = st
            print(
                f"{name:<38}{st['rps']:>9.0f}{st['p50']:>9.2f}{st['p90']:>9.2f}{st['p99']:>9.2f}{st['non2xx']:>8.0f}{us:>12.0f}"
            )
            each = ", ".join(f"{s['rps']:.0f}" for s, _ in rs)
            print(f"    runs (req/s): {each}")
        rest = medians[f"REST JSON (wrk, {c} conns)"]["rps"]
        for name in list(targets)[1:]:
            print(f"{name} / REST JSON throughput: {medians[name]['rps'] / rest:.2f}")
        print(
            f"server pinned to core 0, load generator on core 1: {pinned}; load average {load_average()}; "
            f"medians of {args.repeat} interleaved runs"
        )
        ok = all(st["non2xx"] == 0 for rs in runs.values() for st, _ in rs)
        return 0 if ok else 1
    finally:
        if svc is not None:
            svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
