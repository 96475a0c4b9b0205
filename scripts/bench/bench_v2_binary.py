"""V2 REST with 1,000-row requests: JSON against the binary tensor data extension, in one run.

Starts one ``mlplatform serve model-serving`` process with the demo ``fraud-detector`` (API keys on,
log level WARNING: the bare settings of ``bench_serving.py``), builds one 1,000-row request from the
model's metadata twice — JSON ``data``, and binary (every input ``binary_data_size`` after the JSON
header, ``Inference-Header-Content-Length``; every output ``binary_data``) — checks that both answers
are the same, then drives each with ``wrk`` (4 connections, server on core 0, wrk on core 1),
interleaved, and prints requests/s, rows/s, p50/p99 and the request/response sizes.

    .venv/bin/python scripts/bench/bench_v2_binary.py [--rows-per-request 1000] [--duration 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

import bench_serving as bs  # noqa: E402
from tests.procs import start_service  # noqa: E402

from mlplatform.core.auth import hash_key  # noqa: E402
from mlplatform.v2.codec import decode_binary  # noqa: E402

LUA = """
local f = io.open("%s", "rb")
local body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "%s"
wrk.headers["X-API-Key"] = "%s"
%s
"""
WIRE = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


def requests_for(meta: dict, n: int) -> tuple[bytes, bytes, int]:
    """The same ``n`` rows as a JSON body and as a binary body; returns (json, binary, header length)."""
    rng = np.random.default_rng(0)
    inputs_json, inputs_bin, blobs = [], [], []
    for spec in meta["inputs"]:
        dt = spec["datatype"]
        if dt == "BOOL":
            values = rng.integers(0, 2, n).astype(bool)
        elif dt.startswith("INT"):
            values = rng.integers(0, 24, n)
        else:
            values = rng.gamma(2.0, 40.0, n)
        inputs_json.append({"name": spec["name"], "shape": [n], "datatype": dt, "data": values.tolist()})
        blob = np.asarray(values, dtype=WIRE[dt]).tobytes()
        blobs.append(blob)
        inputs_bin.append(
            {
                "name": spec["name"],
                "shape": [n],
                "datatype": dt,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
    outputs = [{"name": o["name"], "parameters": {"binary_data": True}} for o in meta["outputs"]]
    header = json.dumps({"inputs": inputs_bin, "outputs": outputs}).encode()
    return json.dumps({"inputs": inputs_json}).encode(), header + b"".join(blobs), len(header)


def answers(url: str, json_body: bytes, bin_body: bytes, header_len: int) -> tuple[int, int]:
    """Both answers, checked equal; returns the response sizes (JSON, binary)."""
    import httpx

    headers = {"x-api-key": bs.BENCH_KEY, "content-type": "application/json"}
    rj = httpx.post(url, content=json_body, headers=headers, timeout=30)
    rb = httpx.post(
        url,
        content=bin_body,
        headers={**headers, "inference-header-content-length": str(header_len)},
        timeout=30,
    )
    assert rj.status_code == 200 and rb.status_code == 200, (rj.text[:300], rb.text[:300])
    n = int(rb.headers["inference-header-content-length"])
    doc, blob, pos = json.loads(rb.content[:n]), rb.content[n:], 0
    want = {o["name"]: np.asarray(o["data"]) for o in rj.json()["outputs"]}
    for o in doc["outputs"]:
        size = o["parameters"]["binary_data_size"]
        got = decode_binary(blob[pos : pos + size], o["datatype"], o["shape"], o["name"])
        pos += size
        assert np.allclose(got.astype(float), want[o["name"]].astype(float)), o["name"]
    return len(rj.content), len(rb.content)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-request", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20_000, help="training rows for the demo models")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: run `make sysdeps`", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-v2-binary-"))
    pinned = bs.can_pin()
    try:
        uri = bs.prepare_registry(tmp, args.rows)
        env = {
            "MLPLATFORM_DATA_DIR": str(tmp),
            "MLFLOW_TRACKING_URI": uri,
            "SERVING_MODELS": bs.MODEL,
            "MLPLATFORM_API_KEYS": f"{hash_key(bs.BENCH_KEY)}:infer",
            "SERVING_LOG_LEVEL": "WARNING",
            "SERVING_POLL_INTERVAL_S": "0",
        }
        svc = start_service("model-serving", env, tmp / "logs", ready_timeout=300)
        try:
            if pinned:
                bs.pin(svc.proc.pid, 0)
            import httpx

            meta = httpx.get(f"{svc.url}/v2/models/{bs.MODEL}", headers={"x-api-key": bs.BENCH_KEY}).json()
            url = f"{svc.url}/v2/models/{bs.MODEL}/infer"
            json_body, bin_body, header_len = requests_for(meta, args.rows_per_request)
            json_resp, bin_resp = answers(url, json_body, bin_body, header_len)
            targets = {}
            for name, body, ctype, extra in (
                ("JSON", json_body, "application/json", ""),
                (
                    "binary",
                    bin_body,
                    "application/octet-stream",
                    f'wrk.headers["Inference-Header-Content-Length"] = "{header_len}"',
                ),
            ):
                (tmp / f"{name}.body").write_bytes(body)
                lua = tmp / f"{name}.lua"
                lua.write_text(LUA % (tmp / f"{name}.body", ctype, bs.BENCH_KEY, extra))
                targets[name] = bs.wrk_command(wrk, lua, url, args.connections, args.duration, pinned)
            runs: dict[str, list] = {name: [] for name in targets}
            for _ in range(max(1, args.repeat)):
                for name, cmd in targets.items():
                    stats, _, us = bs.run_wrk(cmd, svc.proc.pid)
                    runs[name].append((stats, us))
            load = bs.load_average()
        finally:
            svc.stop()
        sizes = {"JSON": (len(json_body), json_resp), "binary": (len(bin_body), bin_resp)}
        print()
        print(
            f"{args.rows_per_request}-row requests to {bs.MODEL}, {args.connections} connections, {args.duration}s x {args.repeat} interleaved; load average {load}"
        )
        print(
            f"{'encoding':<10}{'req/s':>9}{'rows/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'req bytes':>11}{'resp bytes':>12}"
        )
        med = {}
        for name, rs in runs.items():
            st, us = bs.median_row(rs)
            med[name] = st
            print(
                f"{name:<10}{st['rps']:>9.0f}{st['rps'] * args.rows_per_request:>11.0f}{st['p50']:>9.2f}{st['p99']:>9.2f}"
                f"{us:>12.0f}{sizes[name][0]:>11}{sizes[name][1]:>12}"
            )
        print(f"binary / JSON throughput: {med['binary']['rps'] / med['JSON']['rps']:.2f}x")
        return 0 if all(st["non2xx"] == 0 for rs in runs.values() for st, _ in rs) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
