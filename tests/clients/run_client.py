"""Run the real V2 clients (tritonclient, kserve SDK) against a server; JSON in on stdin, JSON out on stdout.

Runs in ``.venv-clients`` (``make clients-venv``), not in the project venv: see requirements/clients.txt.
One process runs one client: tritonclient.grpc and kserve both register the ``inference.*`` protobuf
messages in the default descriptor pool and cannot be imported together.

Job (stdin)::

    {"client": "triton-http" | "triton-grpc" | "kserve-rest" | "kserve-grpc",
     "url": "127.0.0.1:8080",            # host:port (http:// is added for the REST clients)
     "headers": {"x-api-key": "..."},   # sent with every call (HTTP headers or gRPC metadata)
     "calls": [
        {"op": "server_live"}, {"op": "server_ready"}, {"op": "server_metadata"},
        {"op": "model_ready", "model": "m"}, {"op": "model_metadata", "model": "m", "version": ""},
        {"op": "infer", "model": "m", "version": "", "id": "req-1",
         "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [...flat...],
                     "binary": true}],
         "outputs": [{"name": "probability", "binary": false}]}   # optional
     ]}

Answer (stdout): ``{"results": [{"ok": true, "result": ...} | {"ok": false, "error": {...}}]}``, one per
call, in order. An infer result is ``{"model_name", "model_version", "id", "outputs": [{"name",
"datatype", "shape", "data"}]}`` with ``data`` flat (BYTES as UTF-8 strings) as the client decoded it;
an error is ``{"kind": <exception class>, "status": <HTTP status or gRPC code name>, "message": ...}``.
Metadata calls (triton only) answer the server's document as the client parsed it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np

_NP = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def to_array(spec: dict[str, Any]) -> np.ndarray:
    """The numpy array a client is handed for one input spec."""
    dt = spec["datatype"]
    data = spec["data"]
    if dt == "BYTES":
        arr = np.array([d.encode() if isinstance(d, str) else bytes(d) for d in data], dtype=np.object_)
    else:
        arr = np.array(data, dtype=_NP[dt])
    return arr.reshape(spec["shape"])


def plain(arr: Any) -> list[Any]:
    """A decoded output as a flat JSON list."""
    if arr is None:
        return None  # type: ignore[return-value]
    flat = np.asarray(arr).reshape(-1)
    if flat.dtype == np.object_ or flat.dtype.kind in "SU":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return obj


# --- tritonclient -------------------------------------------------------------------------------


def run_triton(job: dict[str, Any]) -> list[dict[str, Any]]:
    grpc_client = job["client"] == "triton-grpc"
    if grpc_client:
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    from tritonclient.utils import InferenceServerException

    headers = job.get("headers") or {}
    client = tc.InferenceServerClient(url=job["url"])
    out: list[dict[str, Any]] = []
    for call in job["calls"]:
        op = call["op"]
        try:
            if op == "server_live":
                res: Any = client.is_server_live(headers=headers)
            elif op == "server_ready":
                res = client.is_server_ready(headers=headers)
            elif op == "model_ready":
                res = client.is_model_ready(call["model"], call.get("version", ""), headers=headers)
            elif op == "server_metadata":
                res = (
                    client.get_server_metadata(headers=headers, as_json=True)
                    if grpc_client
                    else client.get_server_metadata(headers=headers)
                )
            elif op == "model_metadata":
                kw: dict[str, Any] = {"headers": headers}
                if grpc_client:
                    kw["as_json"] = True
                res = client.get_model_metadata(call["model"], call.get("version", ""), **kw)
            elif op == "infer":
                inputs = []
                for spec in call["inputs"]:
                    inp = tc.InferInput(spec["name"], list(spec["shape"]), spec["datatype"])
                    if grpc_client:
                        inp.set_data_from_numpy(to_array(spec))
                    else:
                        inp.set_data_from_numpy(to_array(spec), binary_data=spec.get("binary", True))
                    inputs.append(inp)
                outputs = None
                if call.get("outputs") is not None:
                    outputs = [
                        tc.InferRequestedOutput(o["name"])
                        if grpc_client
                        else tc.InferRequestedOutput(o["name"], binary_data=o.get("binary", True))
                        for o in call["outputs"]
                    ]
                result = client.infer(
                    call["model"],
                    inputs,
                    model_version=call.get("version", ""),
                    outputs=outputs,
                    request_id=call.get("id", ""),
                    headers=dict(
                        headers or {}
                    ),  # tritonclient adds Inference-Header-Content-Length to the dict it is given
                )
                resp = result.get_response(as_json=True) if grpc_client else result.get_response()
                res = {
                    "model_name": resp.get("model_name"),
                    "model_version": resp.get("model_version"),
                    "id": resp.get("id"),
                    "outputs": [
                        {
                            "name": o["name"],
                            "datatype": o["datatype"],
                            "shape": [int(d) for d in o["shape"]],
                            "data": plain(result.as_numpy(o["name"])),
                        }
                        for o in resp["outputs"]
                    ],
                }
            else:
                raise ValueError(f"unknown op {op!r}")
            out.append({"ok": True, "result": _jsonable(res)})
        except InferenceServerException as exc:
            status = exc.status()
            if status is not None and str(status).startswith("StatusCode."):
                status = str(status).removeprefix("StatusCode.")
            out.append(
                {
                    "ok": False,
                    "error": {"kind": type(exc).__name__, "status": status, "message": exc.message()},
                }
            )
    client.close()
    return out


# --- kserve SDK ---------------------------------------------------------------------------------


async def run_kserve(job: dict[str, Any]) -> list[dict[str, Any]]:
    import grpc
    import httpx
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    rest = job["client"] == "kserve-rest"
    headers = job.get("headers") or {}
    base_url = f"http://{job['url']}"
    if rest:
        client: Any = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    else:
        client = InferenceGRPCClient(job["url"], timeout=30, retries=0)
    grpc_headers = list(headers.items())
    out: list[dict[str, Any]] = []
    for call in job["calls"]:
        op = call["op"]
        try:
            if op == "server_live":
                res: Any = (
                    await client.is_server_live(base_url, headers=headers)
                    if rest
                    else await client.is_server_live(headers=grpc_headers)
                )
            elif op == "server_ready":
                res = (
                    await client.is_server_ready(base_url, headers=headers)
                    if rest
                    else await client.is_server_ready(headers=grpc_headers)
                )
            elif op == "model_ready":
                res = (
                    await client.is_model_ready(base_url, call["model"], headers=headers)
                    if rest
                    else await client.is_model_ready(call["model"], headers=grpc_headers)
                )
            elif op == "infer":
                inputs = []
                for spec in call["inputs"]:
                    inp = InferInput(spec["name"], list(spec["shape"]), spec["datatype"])
                    arr = to_array(spec)
                    if rest:
                        inp.set_data_from_numpy(arr, binary_data=spec.get("binary", False))
                    else:
                        inp.set_data_from_numpy(arr)
                    inputs.append(inp)
                outputs = None
                if call.get("outputs") is not None:
                    outputs = [
                        RequestedOutput(
                            o["name"], parameters={"binary_data": o.get("binary", False)} if rest else None
                        )
                        for o in call["outputs"]
                    ]
                req = InferRequest(
                    model_name=call["model"],
                    infer_inputs=inputs,
                    request_id=call.get("id") or None,
                    request_outputs=outputs,
                    model_version=call.get("version") or None,
                )
                if rest:
                    resp = await client.infer(
                        base_url,
                        req,
                        model_name=call["model"],
                        headers=dict(headers or {}),  # it adds its own
                    )
                else:
                    resp = await client.infer(req, headers=grpc_headers)
                res = {
                    "model_name": resp.model_name,
                    "model_version": resp.model_version,
                    "id": resp.id,
                    "outputs": [
                        {
                            "name": o.name,
                            "datatype": o.datatype,
                            "shape": [int(d) for d in o.shape],
                            "data": plain(o.as_numpy()),
                        }
                        for o in resp.outputs
                    ],
                }
            else:
                raise ValueError(f"op {op!r} is not offered by the kserve SDK")
            out.append({"ok": True, "result": _jsonable(res)})
        except grpc.aio.AioRpcError as exc:
            out.append(
                {
                    "ok": False,
                    "error": {
                        "kind": type(exc).__name__,
                        "status": exc.code().name,
                        "message": exc.details(),
                    },
                }
            )
        except httpx.HTTPStatusError as exc:
            out.append(
                {
                    "ok": False,
                    "error": {
                        "kind": type(exc).__name__,
                        "status": exc.response.status_code,
                        "message": exc.response.text,
                    },
                }
            )
        except Exception as exc:  # noqa: BLE001 - the SDK's own errors (InferenceError, ValueError ...)
            status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
            out.append(
                {"ok": False, "error": {"kind": type(exc).__name__, "status": status, "message": str(exc)}}
            )
    await client.close()
    return out


def main() -> None:
    job = json.load(sys.stdin)
    if job["client"] in ("triton-http", "triton-grpc"):
        results = run_triton(job)
    elif job["client"] in ("kserve-rest", "kserve-grpc"):
        results = asyncio.run(run_kserve(job))
    else:
        raise SystemExit(f"unknown client {job['client']!r}")
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
