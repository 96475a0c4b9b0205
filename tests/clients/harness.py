"""Call the real V2 clients (tritonclient[http,grpc], kserve SDK) from tests.

The clients live in ``.venv-clients`` (``make clients-venv``; pinned in requirements/clients.txt) and
run as a subprocess of :mod:`tests.clients.run_client`, one client per process, JSON in and out (see its
docstring for the job and answer shapes). :func:`arun_clients` is the one to use when the server runs
in the test's own event loop (an in-process grpc.aio or uvicorn server): it does not block the loop.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLIENTS_PY = ROOT / ".venv-clients" / "bin" / "python"
SCRIPT = Path(__file__).with_name("run_client.py")
CLIENTS = ("triton-http", "triton-grpc", "kserve-rest", "kserve-grpc")


def _job(client: str, url: str, calls: list[dict[str, Any]], headers: dict[str, str] | None) -> bytes:
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}")
    if not CLIENTS_PY.exists():
        raise RuntimeError("client environment missing: run `make clients-venv`")
    return json.dumps({"client": client, "url": url, "headers": headers or {}, "calls": calls}).encode()


def _answer(rc: int, out: bytes, err: bytes) -> list[dict[str, Any]]:
    if rc != 0:
        raise RuntimeError(f"client harness failed (rc {rc}):\n{err.decode(errors='replace')[-4000:]}")
    return json.loads(out)["results"]


def run_clients(
    client: str,
    url: str,
    calls: list[dict[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> list[dict[str, Any]]:
    """Run ``calls`` with one real client against ``url`` (``host:port``); one result per call."""
    proc = subprocess.run(
        [str(CLIENTS_PY), str(SCRIPT)],
        input=_job(client, url, calls, headers),
        capture_output=True,
        timeout=timeout_s,
        cwd=ROOT,
    )
    return _answer(proc.returncode, proc.stdout, proc.stderr)


async def arun_clients(
    client: str,
    url: str,
    calls: list[dict[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120,
) -> list[dict[str, Any]]:
    """:func:`run_clients` without blocking the event loop (for servers running in the test's loop)."""
    proc = await asyncio.create_subprocess_exec(
        str(CLIENTS_PY),
        str(SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(_job(client, url, calls, headers)), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return _answer(proc.returncode, out, err)


def infer_call(
    model: str,
    inputs: list[dict[str, Any]],
    *,
    outputs: list[dict[str, Any]] | None = None,
    version: str = "",
    request_id: str = "",
) -> dict[str, Any]:
    """One ``infer`` call for a job: ``inputs`` as ``{"name", "shape", "datatype", "data", "binary"}``."""
    call: dict[str, Any] = {"op": "infer", "model": model, "version": version, "id": request_id}
    call["inputs"] = inputs
    if outputs is not None:
        call["outputs"] = outputs
    return call
